"""CLI: COCO / Pascal SBD / custom datasets -> sharded TFRecords (see data/creator.py).

python -m data.coco_tfrecord_creator -train_image_dir D/images/train \
    -train_annotations_file D/annotations/train.json -val_image_dir D/images/val \
    -val_annotations_file D/annotations/val.json -output_dir tfrecords -num_workers 2

User errors (missing or damaged inputs, nothing written, a folder holding another
dataset's split) print one line `error: <message>` on stderr and exit with status 2
(yolact.console.run_cli, as every CLI here); set YOLACT_DEBUG=1 to get the traceback.
"""

from absl import app, flags

from data.creator import DATASET_HELP, DATASETS, create_tfrecords

__all__ = ["create_tfrecords"]


def _define_flags() -> None:
    """Flags (defined only when run as a script, so importing stays side-effect free)."""
    flags.DEFINE_string("train_image_dir", None, "Folder of the training images.")
    flags.DEFINE_string("val_image_dir", None, "Folder of the validation images.")
    flags.DEFINE_string("train_annotations_file", None,
                        "COCO-style json, or an SBD split list (train.txt).")
    flags.DEFINE_string("val_annotations_file", None,
                        "COCO-style json, or an SBD split list (val.txt).")
    flags.DEFINE_string("output_dir", None, "Where shards, label map and summaries go.")
    flags.DEFINE_enum("dataset", "auto", list(DATASETS), "Source format:\n" + "\n".join(
        f"  {name}: {DATASET_HELP.get(name, '')}" for name in DATASETS))
    flags.DEFINE_string("yolo_data", None, "-dataset yolo: the Ultralytics data.yaml.")
    flags.DEFINE_string("voc_root", None, "-dataset voc: the VOC2012 folder (JPEGImages, "
                        "SegmentationObject, SegmentationClass, ImageSets, Annotations).")
    flags.DEFINE_string("train_mask_dir", None, "-dataset masks: mask PNGs of the training "
                        "images: <stem>.png instance ids, or <stem>_<class>_<k>.png binary.")
    flags.DEFINE_string("val_mask_dir", None, "-dataset masks: mask PNGs of the val images.")
    flags.DEFINE_string("mask_classes", None, "-dataset masks: json mapping instance ids to "
                        "classes: {\"classes\": [...], \"ids\": {id: class}, \"instances\": "
                        "{stem: {id: class}}} (data/sources/masks.py).")
    flags.DEFINE_float("val_fraction", 0.0, "Draw this fraction of a single (train) split's "
                       "images as val, by a hash of each file name (data/split.py).")
    flags.DEFINE_integer("split_seed", 0, "Seed of the -val_fraction draw.")
    flags.DEFINE_integer("num_shards", 4, "Shards per split (fewer if fewer images).")
    flags.DEFINE_integer("num_workers", 2, "Encoding processes (<= 1: in-process).")
    flags.DEFINE_string("label_map", None, "Optional label map / COCO json imposing ids.")
    flags.DEFINE_bool("keep_empty_train", False, "Keep training images with no annotation.")
    flags.mark_flag_as_required("output_dir")


def main(argv):
    del argv
    from yolact.utils.console import run_cli  # noqa: PLC0415

    run_cli("data.creator", "create_from_flags", flags.FLAGS)


if __name__ == "__main__":
    _define_flags()
    app.run(main)
