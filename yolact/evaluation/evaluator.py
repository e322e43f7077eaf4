"""COCO box and mask mAP over a TFRecord split (pycocotools).

Ground truth, in this order: an explicit annotation file; else the original COCO json
the creator read (``"source_annotations"`` in ``<split>_summary.json``), when it exists
and agrees with the label map; else the COCO json that the creator writes beside the
shards (``<split>_annotations.json``: source image ids and source category ids, boxes
clipped to the image, dropped annotations left out). COCOeval is restricted to the images
actually evaluated, so images the creator skipped are not counted as misses; the metrics
say which ground truth was used. Results use the source ids too, so the results json is
valid for the official COCO server. Masks and boxes are at the original resolution; no
score filter beyond CONF_THRESHOLD (official eval.py COCO path).

Before anything runs, the model's classes (config CLASS_NAMES) are checked against the
label map and the ground truth's categories: model class k is label-map class k+1 and
its category id is that entry's source_id, so any count or name mismatch is an error.
"""

from __future__ import annotations

import dataclasses
import os
import warnings

import numpy as np

from data.label_map import read_label_map
from yolact.detection.instances import instances_to_coco, keep_official_json
from yolact.evaluation.coco import (
    STAT_NAMES,
    _gt_index,
    check_config_classes,
    check_ground_truth_classes,
    coco_metrics,
)
from yolact.utils.io import read_json, write_json_atomic


@dataclasses.dataclass(frozen=True)
class EvalSetup:
    """What `prepare_evaluation` checked: shards, ground truth, class -> category id."""

    split: str
    pattern: str
    ground_truth: str
    ground_truth_kind: str  # "explicit" | "source" | "creator"
    label_map: str | None
    categories: dict  # 0-based model class -> ground-truth category id
    gt_image_ids: frozenset
    note: str | None = None  # why a recorded source annotation file was not used

    def describe(self) -> dict:
        out = {"split": self.split, "ground_truth": self.ground_truth,
               "ground_truth_kind": self.ground_truth_kind, "label_map": self.label_map}
        if self.note:
            out["ground_truth_note"] = self.note
        return out


def _source_annotations(tfrecord_dir: str, split: str) -> str | None:
    """`source_annotations` of <split>_summary.json (relative paths: to tfrecord_dir)."""
    path = os.path.join(tfrecord_dir, f"{split}_summary.json")
    if not os.path.exists(path):
        return None
    source = read_json(path, "split summary").get("source_annotations")
    return os.path.join(tfrecord_dir, source) if source else None


def _check_shards(pattern: str, split: str) -> None:
    """ValueError unless the split has shards with at least one record."""
    import tensorflow as tf

    shards = sorted(tf.io.gfile.glob(pattern))
    if not shards:
        raise ValueError(f"split {split!r}: 0 images found (no TFRecord shard matches "
                         f"{pattern!r})")
    if not any(True for _ in tf.data.TFRecordDataset(shards).take(1)):
        raise ValueError(f"split {split!r}: 0 images found in the {len(shards)} shard(s) "
                         f"matching {pattern!r}")


def prepare_evaluation(cfg, tfrecord_dir: str, split: str = "val",
                       annotations: str | None = None,
                       config_source: str | None = None) -> EvalSetup:
    """Every check that can fail before detection; run once (also for validation).

    - the split has records (else ValueError: 0 images);
    - cfg.CLASS_NAMES == <tfrecord_dir>/label_map.json names in id order;
    - ground truth: `annotations` ("explicit"); else the summary's source_annotations
      ("source") if it exists, has the label map's categories and holds every image of
      the creator's json (else a warning says why and the creator's json is used);
      else <split>_annotations.json ("creator");
    - its categories are the label map's (by source_id and name), nothing more.
    config_source: where cfg came from (a config.json path), for the error messages.
    """
    pattern = os.path.join(tfrecord_dir, f"{split}-*.tfrecord")
    _check_shards(pattern, split)
    label_map = os.path.join(tfrecord_dir, "label_map.json")
    classes = read_label_map(label_map)
    if classes is None:
        label_map_desc = (f"(none at {label_map!r}: config {cfg.NAME!r} class k is "
                          f"category id k+1)")
        classes = [{"id": k + 1, "name": str(n), "source_id": k + 1}
                   for k, n in enumerate(cfg.CLASS_NAMES)]
        label_map = None
    else:
        check_config_classes(cfg.CLASS_NAMES, cfg.NUM_CLASSES, cfg.NAME, classes, label_map,
                             config_source)
        label_map_desc = repr(label_map)

    creator = os.path.join(tfrecord_dir, f"{split}_annotations.json")
    note = None
    if annotations:
        if not os.path.exists(annotations):
            raise FileNotFoundError(f"ground truth {annotations!r} not found")
        kind, path = "explicit", annotations
    else:
        kind, path = "creator", creator
        source = _source_annotations(tfrecord_dir, split)
        if source is not None:
            note = _source_usable(source, classes, label_map_desc, creator)
            if note is None:
                kind, path = "source", source
            else:
                warnings.warn(f"{note}; evaluating against {creator!r} instead", stacklevel=2)
        if kind == "creator" and not os.path.exists(creator):
            raise FileNotFoundError(f"ground truth {creator!r} not found (the TFRecord "
                                    f"creator writes it; or pass -annotations)")
    gt_categories, gt_images = _gt_index(path)
    check_ground_truth_classes(classes, gt_categories, label_map_desc, path)
    if kind == "explicit":
        check_same_images(path, creator, pattern)
    return EvalSetup(split=split, pattern=pattern, ground_truth=os.path.abspath(path),
                     ground_truth_kind=kind, label_map=label_map,
                     categories={c["id"] - 1: c["source_id"] for c in classes},
                     gt_image_ids=frozenset(gt_images), note=note)


def check_same_images(path: str, creator: str, pattern: str) -> None:
    """ValueError when ground truth `path` describes other images than the records: an
    image id both have, with another size or file name (another dataset with the same
    ids and classes would be scored against boxes of other images).

    The records' images are read from the creator's json `creator` when it exists, else
    from the shards matching `pattern` (their height, width, filename and source_id).
    """
    if os.path.exists(creator):
        ours, where = _image_table(read_json(creator, "ground truth")["images"]), creator
    else:
        ours, where = _record_images(pattern), pattern
    theirs = _image_table(read_json(path, "ground truth").get("images") or [])
    shared = sorted(ours.keys() & theirs.keys(), key=lambda i: (len(i), i))
    differ = [i for i in shared if not _same_image(ours[i], theirs[i])]
    if differ:
        first = "; ".join(f"id {i}: {_describe_image(theirs[i])} in the annotations, "
                          f"{_describe_image(ours[i])} in the records" for i in differ[:3])
        raise ValueError(f"ground truth {path!r} describes other images than the records "
                         f"({where!r}): {len(differ)} of {len(shared)} shared image ids "
                         f"differ in size or file name (another dataset?); first: {first}")


def _image_table(images: list) -> dict:
    """{str(id): (height, width, file name without folder)} of COCO image entries."""
    return {_id_key(im["id"]): (im.get("height"), im.get("width"),
                            os.path.basename(str(im.get("file_name") or "")))
            for im in images}


def _record_images(pattern: str) -> dict:
    """`_image_table` of the records matching `pattern` (no image is decoded)."""
    import tensorflow as tf

    from data import tf_example as keys

    spec = {k: keys.FEATURE_SPEC[k] for k in (keys.IMAGE_HEIGHT, keys.IMAGE_WIDTH,
                                               keys.IMAGE_FILENAME, keys.IMAGE_SOURCE_ID)}
    dataset = tf.data.TFRecordDataset(sorted(tf.io.gfile.glob(pattern))).batch(256).map(
        lambda x: tf.io.parse_example(x, spec))
    out = {}
    for batch in dataset.as_numpy_iterator():
        for source_id, h, w, name in zip(batch[keys.IMAGE_SOURCE_ID], batch[keys.IMAGE_HEIGHT],
                                         batch[keys.IMAGE_WIDTH], batch[keys.IMAGE_FILENAME]):
            out[_id_key(source_id.decode())] = (int(h), int(w),
                                                os.path.basename(name.decode()))
    return out


def _id_key(image_id) -> str:
    """An image id as the records and a COCO json both spell it: 10, "10", "010" -> "10"."""
    text = str(image_id)
    return str(int(text)) if text.isdigit() else text


def _same_image(a: tuple, b: tuple) -> bool:
    """Same (height, width, file name), each compared where both sides have it."""
    return all(x == y for x, y in zip(a, b) if x not in (None, "") and y not in (None, ""))


def _describe_image(image: tuple) -> str:
    """"40x50 '10.png'" (height x width, file name)."""
    height, width, name = image
    return f"{height}x{width} {name!r}"


def _source_usable(source: str, classes: list, label_map_desc: str, creator: str):
    """None if the recorded source annotation file can be the ground truth, else why not."""
    if not os.path.exists(source):
        return f"source annotations {source!r} (from the split summary) not found"
    try:
        cats, images = _gt_index(source)
        check_ground_truth_classes(classes, cats, label_map_desc, source)
    except (ValueError, KeyError, TypeError) as e:
        return f"source annotations {source!r} do not fit the label map: {e}"
    if os.path.exists(creator):
        missing = _gt_index(creator)[1] - images
        if missing:
            return (f"source annotations {source!r} lack {len(missing)} image id(s) of "
                    f"{creator!r}, e.g. {sorted(missing, key=str)[:3]}")
    return None


def run_detection(predictor, dataset, categories: dict, max_images=None, progress=True,
                  keep_drawn: int = 0):
    """Predict every batch of an eval dataset -> (results, image_ids, drawn samples).

    Detections with a zero-area integer box are left out (`keep_official_json`).
    """
    from tqdm import tqdm

    results, image_ids, drawn = [], [], []
    with tqdm(total=max_images, desc="eval", unit="img", disable=not progress) as bar:
        for batch in dataset:
            sizes = list(zip(batch["height"].numpy(), batch["width"].numpy()))
            ids = [int(s) for s in batch["source_id"].numpy()]
            if max_images is not None:
                room = max_images - len(image_ids)
                if room <= 0:
                    break
                sizes, ids = sizes[:room], ids[:room]
            instances = predictor.predict_normalized(batch["image"][:len(ids)], sizes)
            for image_id, inst in zip(ids, instances):
                inst = inst.select(keep_official_json(inst.boxes))
                results.extend(instances_to_coco(image_id, inst, categories))
            if len(drawn) < keep_drawn:
                drawn.extend(_draw_batch(predictor, batch["image"][:keep_drawn - len(drawn)]))
            image_ids.extend(ids)
            bar.update(len(ids))
    return results, image_ids, drawn


def _draw_batch(predictor, images) -> list:
    """Predictions drawn on the network-size inputs (for TensorBoard)."""
    from yolact.ops.image import denormalize_image
    from yolact.utils.drawing import draw_instances

    size = predictor.img_size  # (H, W): drawn in network pixels, nothing to map back
    out = []
    for inst, image in zip(predictor.predict_normalized(images, [size] * len(images)),
                           np.asarray(images)):
        inst = inst.select(inst.display_scores >= 0.3)
        out.append(draw_instances(denormalize_image(image, predictor.mean, predictor.std),
                                  inst.boxes, inst.classes, inst.display_scores, inst.masks,
                                  predictor.class_names))
    return out


def evaluate(model, cfg, tfrecord_dir: str, split: str = "val", annotations: str | None = None,
             batch_size: int = 8, max_images: int | None = None, output_json: str | None = None,
             metrics_json: str | None = None, progress: bool = True, use_faster: bool = False,
             predictor=None, keep_drawn: int = 0, setup: EvalSetup | None = None,
             config_source: str | None = None) -> dict:
    """Detect on `<tfrecord_dir>/<split>-*.tfrecord` and compute COCO metrics.

    setup: a `prepare_evaluation` result to reuse (its split and ground truth win over
    `split` / `annotations`); by default the checks run here. COCOeval covers exactly
    the images evaluated (all of the split, or the first max_images). The metrics also
    hold split, ground_truth (path), ground_truth_kind, label_map, num_images and
    num_detections. Raises ValueError when no image was evaluated or an evaluated image
    is not in the ground truth.
    """
    from data.pipeline import build_dataset
    from yolact.detection.predictor import Predictor

    if max_images is not None and max_images < 1:
        raise ValueError(f"max_images must be >= 1 (or None for all), got {max_images}")
    setup = setup or prepare_evaluation(cfg, tfrecord_dir, split, annotations, config_source)
    predictor = predictor or Predictor(model, cfg)
    dataset = build_dataset(setup.pattern, cfg, training=False, batch_size=batch_size)
    results, image_ids, drawn = run_detection(predictor, dataset, setup.categories, max_images,
                                              progress, keep_drawn)
    if not image_ids:
        raise ValueError(f"split {setup.split!r}: 0 images found in {setup.pattern!r}")
    unknown = sorted(set(image_ids) - setup.gt_image_ids)
    if unknown:
        raise ValueError(f"{len(unknown)} evaluated image id(s) are not in the ground truth "
                         f"{setup.ground_truth!r} ({setup.ground_truth_kind}), e.g. "
                         f"{unknown[:3]}")
    if output_json:
        write_json_atomic(output_json, results)
    metrics = coco_metrics(setup.ground_truth, results, image_ids, use_faster=use_faster)
    metrics.update(setup.describe())
    metrics["num_images"] = len(image_ids)
    metrics["num_detections"] = len(results)
    if metrics_json:
        write_json_atomic(metrics_json, metrics)
    if keep_drawn:
        metrics["images"] = drawn
    return metrics


def make_validation_fn(cfg, tfrecord_dir: str, max_images=None, num_draw: int = 4,
                       batch_size: int = 8, split: str = "val", annotations: str | None = None):
    """fn(model, step) -> flat metrics (bbox_AP, segm_AP, ...) + drawn 'images'.

    The checks of `prepare_evaluation` (records, classes, ground truth) run here, once,
    so a mismatch stops training before its first step instead of at the first validation.
    """

    from yolact.detection.predictor import Predictor

    setup = prepare_evaluation(cfg, tfrecord_dir, split, annotations)
    cache = {}

    def validate(model, step):
        if cache.get("model") is not model:  # trace the compiled forward once per model
            cache.update(model=model, predictor=Predictor(model, cfg))
        metrics = evaluate(model, cfg, tfrecord_dir, max_images=max_images, progress=False,
                           batch_size=batch_size, keep_drawn=num_draw,
                           predictor=cache["predictor"], setup=setup)
        flat = {f"{t}_{k}": metrics[t][k] for t in ("bbox", "segm") for k in STAT_NAMES[:6]}
        flat["images"] = np.stack(metrics["images"]) if metrics.get("images") else None
        return flat

    return validate
