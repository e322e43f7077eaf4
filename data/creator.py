"""Dataset on disk -> sharded TFRecords, label map, ground-truth json and a summary.

`create_tfrecords(...)` is the library entry point of `python -m data.coco_tfrecord_creator`.
Per split it writes, in output_dir:
  <split>-0000k-of-0000N.tfrecord   records round-robin over N shards, in source order
  <split>_annotations.json          COCO json of exactly what was written (source ids)
  <split>_summary.json              images written/skipped (reason), instances per class,
                                    dropped annotations (reason), converted images, and
                                    "source_annotations": the COCO json it was made from
and once: label_map.json ({"dataset", "classes": [{"id", "name", "source_id"}]}).
A run is all or nothing: every file is written as <name>.tmp and all are renamed into
place only when every split succeeded, so a failed run (an error, no image written in a
split, Ctrl-C) leaves the folder as it was; .tmp files of a killed run are removed by the
next run into the folder. A split this run does not write is kept only if label_map.json
says it was made with the same label map and dataset; otherwise the run is refused.
Images are converted in `num_workers` processes started with the "spawn" method (no
fork of a process that may run TensorFlow threads, no copy of the parent's memory).
They import data.convert (numpy, OpenCV, PIL, pycocotools, about 0.3 s), never
TensorFlow: the parent imports TF only when it writes shards. Like any spawned worker,
they re-import the caller's __main__ module, so a script calling create_tfrecords with
workers should keep heavy imports (TensorFlow) out of its module level.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import json
import multiprocessing
import os
import time

from tqdm import tqdm

from data import convert
from data import split as val_split
from data.classes import COCO_CLASSES, PASCAL_CLASSES
from data.shards import ShardWriter, _Outputs, check_writable, remove_stale_tmp, split_files
from data.sources import coco, custom, labelme, masks, pascal_sbd, voc, yolo

DATASETS = ("coco", "pascal_sbd", "custom", "auto", "labelme", "yolo", "voc", "masks")

# One line per -dataset value (the CLI's -dataset help).
DATASET_HELP = {
    "coco": "COCO instances json (-{train,val}_annotations_file) + images",
    "pascal_sbd": "Pascal SBD: official COCO-style json, or raw train.txt / val.txt",
    "custom": "COCO-style json with string ids / no categories (renumbered)",
    "auto": "pascal_sbd / coco / custom, picked from the annotation file's content",
    "labelme": "LabelMe .json files beside the images (-{train,val}_image_dir)",
    "yolo": "Ultralytics YOLO segmentation dataset (-yolo_data data.yaml)",
    "voc": "Pascal VOC devkit: SegmentationObject/Class PNGs (-voc_root)",
    "masks": "images + instance mask PNGs (-train_mask_dir, -mask_classes)",
}


_LOADERS = {"coco": coco.load, "pascal_sbd": pascal_sbd.load, "custom": custom.load}


_MAX_LISTED_SKIPS = 200


SPLITS = ("train", "val")


def load_source(dataset: str, annotations_file: str, image_dir: str) -> coco.Source:
    """Read one split; dataset "auto" picks pascal_sbd / coco / custom from the content."""
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {DATASETS}, got {dataset!r}")
    if dataset != "auto":
        return _LOADERS[dataset](annotations_file, image_dir)
    if annotations_file.endswith(".txt"):
        return pascal_sbd.load_raw(annotations_file, image_dir)
    data = coco.read_json(annotations_file)
    names = {str(c.get("name")) for c in data.get("categories") or []}
    ids_ok = all(isinstance(i["id"], int) and not isinstance(i["id"], bool)
                 for i in data["images"])
    path = os.path.abspath(annotations_file)
    if ids_ok and names == set(PASCAL_CLASSES):
        return coco.from_dict(data, image_dir, "pascal_sbd", path)
    if ids_ok and names == set(COCO_CLASSES):
        return coco.from_dict(data, image_dir, "coco", path)
    return custom.from_dict(data, image_dir, annotations_file)


FOLDER_DATASETS = ("labelme", "yolo", "voc", "masks")


def load_folder_splits(dataset: str, train_image_dir: str | None,
                       val_image_dir: str | None, yolo_data: str | None,
                       label_map: str | None) -> dict:
    """{split: Source} of the datasets without annotation files ({} for the others).

    labelme: one folder of json + images per split; yolo: the splits data.yaml names.
    Their classes are names, checked against label_map when given.
    """
    if dataset == "labelme":
        dirs = {s: d for s, d in (("train", train_image_dir), ("val", val_image_dir)) if d}
        return {s: labelme.load(d, label_map) for s, d in dirs.items()}
    if dataset == "yolo":
        if yolo_data is None:
            raise ValueError("-dataset yolo needs -yolo_data path/to/data.yaml")
        return yolo.load(yolo_data, label_map)
    return {}


def load_png_splits(dataset: str, train_image_dir: str | None, val_image_dir: str | None,
                    label_map: str | None, voc_root: str | None = None,
                    train_mask_dir: str | None = None, val_mask_dir: str | None = None,
                    mask_classes: str | None = None) -> dict:
    """{split: Source} of the PNG-mask datasets (voc: -voc_root; masks: image and mask
    dirs + -mask_classes), {} for the others (data/sources/voc.py, masks.py)."""
    if dataset == "voc":
        return voc.load_splits(voc_root)
    if dataset == "masks":
        return masks.load_splits(train_image_dir, train_mask_dir, val_image_dir,
                                 val_mask_dir, mask_classes, label_map)
    return {}


def build_label_map(sources: list, label_map_path: str | None = None) -> list:
    """[{"id": 1..C, "name", "source_id"}], contiguous ids in order of source id.

    With label_map_path (a label_map.json or a COCO json), its classes impose the ids;
    entries without "source_id" are matched to the source categories by name.
    """
    found = {}
    for src in sources:
        for sid, name in src.categories:
            if found.setdefault(sid, name) != name:
                raise ValueError(f"category id {sid} is {found[sid]!r} in one split and "
                                 f"{name!r} in another")
    if label_map_path is None:
        if not found:
            raise ValueError("the annotation files define no categories")
        return [{"id": i + 1, "name": found[sid], "source_id": sid}
                for i, sid in enumerate(sorted(found))]
    data = coco.load_json(label_map_path, "label map")
    if not isinstance(data, dict):
        raise ValueError(f"label map {label_map_path!r} is a {type(data).__name__}, expected "
                         "an object with 'classes' or 'categories'")
    for key in ("classes", "categories"):
        if key in data:
            coco.check_entries(label_map_path, data[key], key, ("id", "name"), "label map")
    if "classes" in data:
        by_name = {name: sid for sid, name in found.items()}
        classes = []
        for c in sorted(data["classes"], key=lambda c: int(c["id"])):
            sid = c.get("source_id", by_name.get(c["name"]))
            if sid is None:
                raise ValueError(f"label map class {c} has no source_id and no source "
                                 f"category is named {c['name']!r}")
            classes.append({"id": int(c["id"]), "name": str(c["name"]), "source_id": int(sid)})
    elif "categories" in data:
        cats = sorted(data["categories"], key=lambda c: int(c["id"]))
        classes = [{"id": i + 1, "name": str(c["name"]), "source_id": int(c["id"])}
                   for i, c in enumerate(cats)]
    else:
        raise ValueError(f"{label_map_path!r} has neither 'classes' nor 'categories'")
    if [c["id"] for c in classes] != list(range(1, len(classes) + 1)):
        raise ValueError(f"label map ids must be 1..C, got {[c['id'] for c in classes]}")
    return classes


def _worker_init():
    import cv2  # noqa: PLC0415

    cv2.setNumThreads(1)


def _imap(fn, items: list, num_workers: int):
    """fn over items in order, in `num_workers` spawned processes (inline if <= 1)."""
    if num_workers <= 1 or len(items) < 2:
        yield from map(fn, items)
        return
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(min(num_workers, len(items)), initializer=_worker_init) as pool:
        yield from pool.imap(fn, items, chunksize=8)


class _Tally:
    """Accumulates the summary and the ground-truth json of one split."""

    def __init__(self, split: str, classes: list):
        self.split, self.classes = split, classes
        self.skipped, self.skip_list = collections.Counter(), []
        self.dropped, self.notes = collections.Counter(), collections.Counter()
        self.per_class = collections.Counter()
        self.crowds = 0
        self.images, self.annotations = [], []

    def skip(self, filename: str, reason: str, detail: str = "") -> None:
        self.skipped[reason] += 1
        if len(self.skip_list) < _MAX_LISTED_SKIPS:
            self.skip_list.append({"filename": filename, "reason": reason, "detail": detail})

    def add(self, result: dict) -> None:
        f = result["features"]
        image_id = int(f["source_id"])
        self.images.append({"id": image_id, "file_name": f["filename"],
                            "height": f["height"], "width": f["width"]})
        for ann in result["annotations"]:
            self.annotations.append(dict(ann, image_id=image_id))
        self.per_class.update(f["texts"])
        self.crowds += sum(f["is_crowd"])
        if result["note"]:
            self.notes[result["note"]] += 1

    def ground_truth(self, categories: list, info: dict) -> dict:
        used = [a["id"] for a in self.annotations if isinstance(a.get("id"), int)]
        next_id = max(used, default=0) + 1
        for ann in self.annotations:
            if not isinstance(ann.get("id"), int):
                ann["id"], next_id = next_id, next_id + 1
        return {"info": info, "licenses": [], "images": self.images,
                "annotations": self.annotations, "categories": categories}

    def summary(self, source: coco.Source, shards: list, seconds: float) -> dict:
        total = len(source.records) + len(source.skipped)
        return {
            "split": self.split, "dataset": source.dataset,
            "source_annotations": source.source_annotations, "images_in_source": total,
            "images_written": len(self.images), "images_skipped": dict(self.skipped),
            "skipped": self.skip_list, "images_normalized": dict(self.notes),
            "instances_per_class": {c["name"]: self.per_class[c["name"]] for c in self.classes},
            "crowd_instances": self.crowds, "annotations_dropped": dict(self.dropped),
            "annotations_dropped_list": source.notes[:_MAX_LISTED_SKIPS],
            **({"split_rule": source.split_rule} if source.split_rule else {}),
            "shards": [os.path.basename(p) for p in shards], "seconds": round(seconds, 3),
            "images_per_second": round(total / seconds, 2) if seconds > 0 else None,
        }

    def nothing_written(self, source: coco.Source, output_dir: str, keep_empty: bool) -> str:
        """The one-line error of a split that ends with no image written."""
        origin = source.annotations_file or "the source"
        parts = [f"[{self.split}] no image written: {len(source.records)} image(s) listed "
                 f"in {origin}"]
        if self.skipped:
            top = self.skipped.most_common(3)
            first = next((s for s in self.skip_list if s["reason"] == top[0][0]),
                         self.skip_list[0])
            parts.append(f"{self.skipped.total()} skipped ("
                         + ", ".join(f"{k}={v}" for k, v in top)
                         + f"), e.g. {first['detail'] or first['reason']}")
        if self.skipped.get("no_annotations") and not keep_empty:
            parts.append("training images without annotations are skipped "
                         "(-keep_empty_train keeps them)")
        if self.dropped:
            parts.append("annotations dropped: "
                         + ", ".join(f"{k}={v}" for k, v in self.dropped.most_common(3)))
        return "; ".join(parts) + f"; nothing was written to {output_dir}"


def convert_split(split: str, source: coco.Source, classes: list, output_dir: str,
                  num_shards: int = 1, num_workers: int = 1, keep_empty: bool = False,
                  show_progress: bool = True, outputs: _Outputs | None = None) -> dict:
    """Write one split's shards, <split>_annotations.json and <split>_summary.json.

    keep_empty: keep images with no (remaining) annotation; always True for val.
    outputs: the _Outputs of a larger run (committed by its owner); by default the
    split's files are committed when it succeeds. Raises ValueError (nothing written)
    when no image of the split can be written. Returns the summary dict.
    """
    from data import tf_example  # noqa: PLC0415 -- TF only in the parent process

    start = time.perf_counter()
    tally = _Tally(split, classes)
    tally.dropped.update(source.dropped)
    for bad in source.skipped:  # files the source could not read (e.g. malformed json)
        tally.skip(bad["filename"], bad["reason"], bad["detail"])
    todo = []
    for rec in source.records:
        if not keep_empty and rec.get("objects") == []:
            tally.skip(rec["filename"], "no_annotations")
        else:
            todo.append(rec)
    label_map = {c["source_id"]: (c["id"], c["name"]) for c in classes}
    fn = functools.partial(convert.convert_record, label_map=label_map)
    shards = max(1, min(num_shards, len(todo)))
    own = contextlib.nullcontext(outputs) if outputs is not None else _Outputs(output_dir)
    with own as outputs:
        with ShardWriter(outputs, split, shards) as writer:
            results = _imap(fn, todo, num_workers)
            for res in tqdm(results, total=len(todo), desc=f"{split} records",
                            disable=not show_progress):
                if not res["ok"]:
                    tally.skip(res["filename"], res["reason"], res["detail"])
                    continue
                tally.dropped.update(res["dropped"])
                if not keep_empty and not res["features"]["labels"]:
                    tally.skip(res["filename"], "no_annotations", "all annotations dropped")
                    continue
                writer.write(tf_example.make_example(res["features"]).SerializeToString())
                tally.add(res)
        if not tally.images:
            raise ValueError(tally.nothing_written(source, output_dir, keep_empty))
        by_sid = {int(c["id"]): c for c in source.category_dicts}
        categories = [dict(by_sid.get(c["source_id"], {}), id=c["source_id"], name=c["name"])
                      for c in classes]
        outputs.write_json(f"{split}_annotations.json",
                           tally.ground_truth(categories, source.info))
        summary = tally.summary(source, writer.paths, time.perf_counter() - start)
        outputs.write_json(f"{split}_summary.json", summary)
    return summary


def format_summary(summary: dict) -> str:
    """Human-readable lines of one split's summary."""
    lines = [f"[{summary['split']}] {summary['images_written']} / "
             f"{summary['images_in_source']} images written to "
             f"{len(summary['shards'])} shard(s) in {summary['seconds']} s "
             f"({summary['images_per_second']} images/s)"]
    for key in ("images_skipped", "images_normalized", "annotations_dropped"):
        if summary[key]:
            lines.append(f"  {key}: " + ", ".join(f"{k}={v}" for k, v in summary[key].items()))
    listed = summary.get("skipped", [])
    for entry in listed[:3]:
        lines.append(f"  skipped {entry['filename']}: {entry['detail'] or entry['reason']}")
    if len(listed) > 3:
        lines.append(f"  ... the first {len(listed)} skipped images are listed in "
                     f"{summary['split']}_summary.json")
    lines.append("  instances per class: " + ", ".join(
        f"{k}={v}" for k, v in summary["instances_per_class"].items()))
    lines.append(f"  crowd instances: {summary['crowd_instances']}")
    return "\n".join(lines)


def _check_images_found(split: str, source: coco.Source, image_dir: str) -> None:
    """Fail early (before converting anything) when no listed image file exists."""
    if not source.records:
        raise ValueError(f"[{split}] {source.annotations_file} lists no images")
    if not os.path.isdir(image_dir):
        raise FileNotFoundError(f"{split} image dir not found: {image_dir}")
    paths = [r["image_path"] for r in source.records if "image_path" in r]
    if paths and not any(os.path.isfile(p) for p in paths):
        raise ValueError(f"[{split}] none of the {len(paths)} images listed in "
                         f"{source.annotations_file} is in {image_dir} (e.g. image file not "
                         f"found: {paths[0]}); check -{split}_image_dir")


def _read_json_or_none(path: str):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _check_kept_splits(output_dir: str, writing, dataset: str, classes: list) -> None:
    """Splits in output_dir that this run does not write must share its label map.

    Their records hold class ids of the label_map.json this run replaces: they are kept
    (and said so) when that file has the same classes and dataset, else ValueError.
    """
    old = _read_json_or_none(os.path.join(output_dir, "label_map.json"))
    for split in SPLITS:
        files = [] if split in writing else split_files(output_dir, split)
        if not files:
            continue
        summary = _read_json_or_none(os.path.join(output_dir, f"{split}_summary.json")) or {}
        names = [c["name"] for c in classes]
        if not isinstance(old, dict):
            problem = "there is no readable label_map.json beside them"
        elif old.get("classes") != classes or old.get("dataset") != dataset:
            old_names = [c.get("name") for c in old.get("classes") or [] if isinstance(c, dict)]
            problem = (f"they were made with dataset {old.get('dataset')!r}, "
                       f"{len(old_names)} classes ({coco.listed(old_names)}), this run has "
                       f"dataset {dataset!r}, {len(names)} classes ({coco.listed(names)})")
        elif "instances_per_class" in summary and list(summary["instances_per_class"]) != names:
            problem = (f"{split}_summary.json counts classes "
                       f"{coco.listed(summary['instances_per_class'])}, this run has "
                       f"{coco.listed(names)}")
        else:
            shards = [f for f in files if f.endswith(".tfrecord")]
            print(f"[{split}] kept: the {len(shards)} existing {split} shard(s) in "
                  f"{output_dir} were made with the same label map", flush=True)
            continue
        raise ValueError(f"{output_dir} holds {split} files this run does not rewrite "
                         f"({coco.listed(os.path.basename(f) for f in files)}) and {problem}; "
                         f"write to a fresh -output_dir, remove them, or convert the "
                         f"{split} split in the same run")


def create_tfrecords(output_dir: str, train_image_dir: str | None = None,
                     val_image_dir: str | None = None,
                     train_annotations_file: str | None = None,
                     val_annotations_file: str | None = None, dataset: str = "auto",
                     num_shards: int = 1, num_workers: int = 1,
                     label_map: str | None = None, keep_empty_train: bool = False,
                     show_progress: bool = True, yolo_data: str | None = None,
                     val_fraction: float = 0.0, split_seed: int = 0,
                     voc_root: str | None = None, train_mask_dir: str | None = None,
                     val_mask_dir: str | None = None, mask_classes: str | None = None) -> dict:
    """Convert the train and/or val split; returns {"label_map": [...], split: summary}.

    A split is converted when both its image dir and annotations file are given.
    dataset: "coco" | "pascal_sbd" | "custom" | "auto". label_map: optional label map or
    COCO json imposing the contiguous ids. Summaries are printed and saved as json.
    User errors (missing or damaged inputs, a split with no image written, a folder
    holding another dataset's split) raise FileNotFoundError / ValueError with a
    one-line message, and leave output_dir as it was.
    """
    if num_shards < 1 or num_workers < 0:
        raise ValueError(f"need num_shards >= 1 and num_workers >= 0, got "
                         f"{num_shards}, {num_workers}")
    check_writable(output_dir)  # before the (slow) annotation files are read
    splits = load_folder_splits(dataset, train_image_dir, val_image_dir, yolo_data,
                                label_map)
    splits.update(load_png_splits(dataset, train_image_dir, val_image_dir, label_map,
                                  voc_root, train_mask_dir, val_mask_dir, mask_classes))
    for split, image_dir, ann in (("train", train_image_dir, train_annotations_file),
                                  ("val", val_image_dir, val_annotations_file)):
        if dataset in FOLDER_DATASETS:  # read by load_folder_splits
            break
        if (image_dir is None) != (ann is None):
            raise ValueError(f"{split}: give both the image dir and the annotations file, "
                             f"got image_dir={image_dir!r}, annotations={ann!r}")
        if image_dir is not None:
            splits[split] = load_source(dataset, ann, image_dir)
            _check_images_found(split, splits[split], image_dir)
    if not splits:
        raise ValueError("nothing to convert: no train or val split given")
    splits = val_split.apply(splits, val_fraction, split_seed)  # -val_fraction
    classes = build_label_map(list(splits.values()), label_map)
    name = next(iter(splits.values())).dataset
    remove_stale_tmp(output_dir)
    _check_kept_splits(output_dir, splits, name, classes)
    out = {"label_map": classes}
    with _Outputs(output_dir) as outputs:
        for split, source in splits.items():
            out[split] = convert_split(split, source, classes, output_dir, num_shards,
                                       num_workers,
                                       keep_empty=keep_empty_train or split != "train",
                                       show_progress=show_progress, outputs=outputs)
        outputs.write_json("label_map.json", {"dataset": name, "classes": classes})
    for split in splits:
        print(format_summary(out[split]), flush=True)
    return out


def create_from_flags(flags_) -> dict:
    """`python -m data.coco_tfrecord_creator`: create_tfrecords from its absl flags."""
    return create_tfrecords(flags_.output_dir, flags_.train_image_dir, flags_.val_image_dir,
                            flags_.train_annotations_file, flags_.val_annotations_file,
                            flags_.dataset, flags_.num_shards, flags_.num_workers,
                            flags_.label_map, flags_.keep_empty_train,
                            yolo_data=flags_.yolo_data, val_fraction=flags_.val_fraction,
                            split_seed=flags_.split_seed, voc_root=flags_.voc_root,
                            train_mask_dir=flags_.train_mask_dir,
                            val_mask_dir=flags_.val_mask_dir, mask_classes=flags_.mask_classes)
