"""Dataset on disk -> sharded TFRecords, label map, ground-truth json and a summary.

`create_tfrecords(...)` is the library entry point of `python -m data.coco_tfrecord_creator`.
Per split it writes, in output_dir:
  <split>-0000k-of-0000N.tfrecord   records round-robin over N shards, in source order
  <split>_annotations.json          COCO json of exactly what was written (source ids)
  <split>_summary.json              images written/skipped (reason), instances per class,
                                    dropped annotations (reason), converted images
and once: label_map.json ({"dataset", "classes": [{"id", "name", "source_id"}]}).
Every file is written to <name>.tmp and renamed, so a failure leaves no partial file.
Images are converted in `num_workers` processes started with the "spawn" method (no
fork of a process that may run TensorFlow threads, no copy of the parent's memory).
They import data.convert (numpy, OpenCV, PIL, pycocotools, about 0.3 s), never
TensorFlow: the parent imports TF only when it writes shards. Like any spawned worker,
they re-import the caller's __main__ module, so a script calling create_tfrecords with
workers should keep heavy imports (TensorFlow) out of its module level.
"""

import collections
import functools
import glob
import json
import multiprocessing
import os
import time

from tqdm import tqdm

from config import COCO_CLASSES, PASCAL_CLASSES
from data import convert
from data.sources import coco, custom, pascal_sbd

DATASETS = ("coco", "pascal_sbd", "custom", "auto")
_LOADERS = {"coco": coco.load, "pascal_sbd": pascal_sbd.load, "custom": custom.load}
_MAX_LISTED_SKIPS = 200


def write_json_atomic(path: str, data) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)


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
    if ids_ok and names == set(PASCAL_CLASSES):
        return coco.from_dict(data, image_dir, "pascal_sbd")
    if ids_ok and names == set(COCO_CLASSES):
        return coco.from_dict(data, image_dir, "coco")
    return coco.from_dict(custom.normalize(data), image_dir, "custom")


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
    with open(label_map_path) as f:
        data = json.load(f)
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


class ShardWriter:
    """Round-robin TFRecord writer; shards appear only after a clean exit.

    Each shard is written as <name>.tmp and renamed on success (old shards of the split
    with another shard count are removed); on an exception the .tmp files are deleted.
    """

    def __init__(self, output_dir: str, split: str, num_shards: int):
        import tensorflow as tf  # noqa: PLC0415 -- keeps worker processes TF-free

        self.output_dir, self.split = output_dir, split
        self.paths = [os.path.join(output_dir, f"{split}-{i:05d}-of-{num_shards:05d}.tfrecord")
                      for i in range(num_shards)]
        self._writers = [tf.io.TFRecordWriter(p + ".tmp") for p in self.paths]
        self.count = 0

    def write(self, serialized: bytes) -> None:
        self._writers[self.count % len(self._writers)].write(serialized)
        self.count += 1

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        for w in self._writers:
            w.close()
        for p in self.paths:
            if exc_type is None:
                os.replace(p + ".tmp", p)
            elif os.path.exists(p + ".tmp"):
                os.remove(p + ".tmp")
        if exc_type is None:
            pattern = os.path.join(self.output_dir, f"{self.split}-?????-of-?????.tfrecord")
            for old in set(glob.glob(pattern)) - set(self.paths):
                os.remove(old)
        return False


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

    def summary(self, dataset: str, total: int, shards: list, seconds: float) -> dict:
        return {
            "split": self.split, "dataset": dataset, "images_in_source": total,
            "images_written": len(self.images), "images_skipped": dict(self.skipped),
            "skipped": self.skip_list, "images_normalized": dict(self.notes),
            "instances_per_class": {c["name"]: self.per_class[c["name"]] for c in self.classes},
            "crowd_instances": self.crowds, "annotations_dropped": dict(self.dropped),
            "shards": [os.path.basename(p) for p in shards], "seconds": round(seconds, 3),
            "images_per_second": round(total / seconds, 2) if seconds > 0 else None,
        }


def convert_split(split: str, source: coco.Source, classes: list, output_dir: str,
                  num_shards: int = 1, num_workers: int = 1, keep_empty: bool = False,
                  show_progress: bool = True) -> dict:
    """Write one split's shards, <split>_annotations.json and <split>_summary.json.

    keep_empty: keep images with no (remaining) annotation; always True for val.
    Returns the summary dict.
    """
    from data import tf_example  # noqa: PLC0415 -- TF only in the parent process

    start = time.perf_counter()
    tally = _Tally(split, classes)
    todo = []
    for rec in source.records:
        if not keep_empty and rec.get("objects") == []:
            tally.skip(rec["filename"], "no_annotations")
        else:
            todo.append(rec)
    label_map = {c["source_id"]: (c["id"], c["name"]) for c in classes}
    fn = functools.partial(convert.convert_record, label_map=label_map)
    shards = max(1, min(num_shards, len(todo)))
    with ShardWriter(output_dir, split, shards) as writer:
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
    by_sid = {int(c["id"]): c for c in source.category_dicts}
    categories = [dict(by_sid.get(c["source_id"], {}), id=c["source_id"], name=c["name"])
                  for c in classes]
    write_json_atomic(os.path.join(output_dir, f"{split}_annotations.json"),
                      tally.ground_truth(categories, source.info))
    summary = tally.summary(source.dataset, len(source.records), writer.paths,
                            time.perf_counter() - start)
    write_json_atomic(os.path.join(output_dir, f"{split}_summary.json"), summary)
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
    lines.append("  instances per class: " + ", ".join(
        f"{k}={v}" for k, v in summary["instances_per_class"].items()))
    lines.append(f"  crowd instances: {summary['crowd_instances']}")
    return "\n".join(lines)


def create_tfrecords(output_dir: str, train_image_dir: str | None = None,
                     val_image_dir: str | None = None,
                     train_annotations_file: str | None = None,
                     val_annotations_file: str | None = None, dataset: str = "auto",
                     num_shards: int = 1, num_workers: int = 1,
                     label_map: str | None = None, keep_empty_train: bool = False,
                     show_progress: bool = True) -> dict:
    """Convert the train and/or val split; returns {"label_map": [...], split: summary}.

    A split is converted when both its image dir and annotations file are given.
    dataset: "coco" | "pascal_sbd" | "custom" | "auto". label_map: optional label map or
    COCO json imposing the contiguous ids. Summaries are printed and saved as json.
    """
    splits = {}
    for split, image_dir, ann in (("train", train_image_dir, train_annotations_file),
                                  ("val", val_image_dir, val_annotations_file)):
        if (image_dir is None) != (ann is None):
            raise ValueError(f"{split}: give both the image dir and the annotations file, "
                             f"got image_dir={image_dir!r}, annotations={ann!r}")
        if image_dir is not None:
            splits[split] = load_source(dataset, ann, image_dir)
    if not splits:
        raise ValueError("nothing to convert: no train or val split given")
    if num_shards < 1 or num_workers < 0:
        raise ValueError(f"need num_shards >= 1 and num_workers >= 0, got "
                         f"{num_shards}, {num_workers}")
    os.makedirs(output_dir, exist_ok=True)
    classes = build_label_map(list(splits.values()), label_map)
    name = next(iter(splits.values())).dataset
    write_json_atomic(os.path.join(output_dir, "label_map.json"),
                      {"dataset": name, "classes": classes})
    out = {"label_map": classes}
    for split, source in splits.items():
        out[split] = convert_split(split, source, classes, output_dir, num_shards,
                                   num_workers, keep_empty=keep_empty_train or split != "train",
                                   show_progress=show_progress)
        print(format_summary(out[split]), flush=True)
    return out
