"""Helpers of the sources whose classes are names (LabelMe, YOLO): categories from the
names found or from `-label_map`, and the Source of a folder of per-image files."""

from __future__ import annotations

from data.label_map import label_map_entries
from data.sources import coco


def categories_from_names(names: list, label_map: str | None, origin: dict) -> list:
    """[(source id, name)] of the class names found.

    names: the names in first-seen order; origin: {name: file it was first seen in}.
    Without a label map the ids are 1..K in that order; with one (a label_map.json or a
    COCO json) its ids and order, and a name it does not hold is a one-line ValueError
    naming the name and a file using it.
    """
    if label_map is None:
        return [(i + 1, name) for i, name in enumerate(names)]
    entries = label_map_entries(label_map)
    known = {str(c["name"]): int(c.get("source_id", c["id"])) for c in entries}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"class {unknown[0]!r} (in {origin.get(unknown[0], '?')}) is not in "
                         f"the label map {label_map!r}; unknown classes: "
                         f"{coco.listed(map(repr, unknown))}; its classes: "
                         f"{coco.listed(map(repr, known))}")
    return [(sid, name) for name, sid in known.items()]


def make_source(dataset: str, categories: list, records: list, skipped: list,
                notes: list, dropped: dict, origin: str, description: str) -> coco.Source:
    """A Source of per-image files: COCO category dicts of `categories`, no source json."""
    category_dicts = [{"id": sid, "name": name, "supercategory": ""}
                      for sid, name in sorted(categories)]
    return coco.Source(dataset, sorted(categories), records, category_dicts,
                       {"description": description}, annotations_file=origin,
                       source_annotations=None, dropped=dict(dropped), skipped=skipped,
                       notes=notes)
