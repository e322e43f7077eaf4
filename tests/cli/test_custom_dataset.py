"""A custom COCO-json dataset (non-contiguous category ids) through every CLI, with the
README's commands: creator -> train -> evaluate -> inference -> export."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests import REPO
from tests.data_utils import ann, rect_poly, save, smooth_image, write_json

ROOT = REPO
CATEGORIES = [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}]
# A small network for the custom dataset (the default is yolact_base: R101 at 550 px).
SMALL = ["BACKBONE=resnet_tiny", "IMG_SIZE=64", "FPN_CHANNELS=16", "PROTONET_CHANNELS=16",
         "HEAD_CHANNELS=16", "NUM_MASK=4", "NUM_MAX_PAD=4", "SCALE_ANCHORS_WITH_IMG_SIZE=true"]


def make_split(root, split, count, seed):
    image_dir = root / "images" / split
    image_dir.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    images, annotations = [], []
    for i in range(count):
        h, w = 80, 96
        image = smooth_image(h, w, seed * 100 + i)
        for k in range(2):
            x1, y1 = int(rng.integers(0, 40)), int(rng.integers(0, 30))
            x2, y2 = x1 + int(rng.integers(20, 50)), y1 + int(rng.integers(20, 45))
            image[y1:y2, x1:x2] = (200, 40, 40) if k == 0 else (40, 40, 200)
            cat = CATEGORIES[k]["id"]
            annotations.append(ann(len(annotations) + 1, 100 + i, cat, rect_poly(x1, y1, x2, y2),
                                   bbox=[x1, y1, x2 - x1, y2 - y1]))
        save(image_dir / f"{i}.jpg", image, "JPEG")
        images.append({"id": 100 + i, "file_name": f"{i}.jpg", "height": h, "width": w})
    path = write_json(root / f"{split}.json", {"images": images, "annotations": annotations,
                                                 "categories": CATEGORIES})
    return str(image_dir), path


def cli(*args):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("YOLACT_DEBUG", None)
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, f"{args}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def custom_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("custom")
    train_dir, train_json = make_split(root, "train", 8, 1)
    val_dir, val_json = make_split(root, "val", 4, 2)
    records, run = root / "records", root / "run"
    cli("-m", "data.coco_tfrecord_creator", "-train_image_dir", train_dir,
        "-train_annotations_file", train_json, "-val_image_dir", val_dir,
        "-val_annotations_file", val_json, "-output_dir", str(records), "-num_shards", "2",
        "-num_workers", "1")
    overrides = [a for o in SMALL for a in ("-override", o)]
    train = cli("train.py", "-name", "my_dataset", "-tfrecord_dir", str(records),
                "-weights", str(run), "-batch_size", "4", "-max_iter", "3",
                "-save_interval", "3", "-print_interval", "1", *overrides)
    return {"root": root, "records": records, "run": run, "val_dir": val_dir,
            "train_stdout": train.stdout}


def test_creator_and_train_with_a_custom_name(custom_run):
    label_map = json.loads((custom_run["records"] / "label_map.json").read_text())
    assert [(c["id"], c["name"], c["source_id"]) for c in label_map["classes"]] == [
        (1, "cat", 3), (2, "dog", 7)]
    saved = json.loads((custom_run["run"] / "config.json").read_text())
    assert (saved["NAME"], saved["CLASS_NAMES"], saved["IMG_SIZE"]) == (
        "my_dataset", ["cat", "dog"], 64)
    summary = json.loads((custom_run["run"] / "train_summary.json").read_text())
    assert summary["step"] == 3 and "segm_AP" in summary["best"]
    assert "Schedule: batch 4," in custom_run["train_stdout"]
    assert "max_iter 3" in custom_run["train_stdout"]


def test_evaluate_with_a_custom_name(custom_run):
    root = custom_run["root"]
    cli("evaluate.py", "-name", "my_dataset", "-tfrecord_dir", str(custom_run["records"]),
        "-weights", str(custom_run["run"]), "-metrics_json", str(root / "metrics.json"),
        "-output_json", str(root / "detections.json"))
    metrics = json.loads((root / "metrics.json").read_text())
    assert metrics["num_images"] == 4
    assert 0.0 <= metrics["segm"]["AP"] <= 1.0 and 0.0 <= metrics["bbox"]["AP"] <= 1.0
    # The original annotation file the creator recorded is the ground truth.
    assert metrics["ground_truth_kind"] == "source"
    assert metrics["ground_truth"] == str(root / "val.json")
    detections = json.loads((root / "detections.json").read_text())
    assert {d["category_id"] for d in detections} <= {3, 7}  # the source ids


def test_inference_with_a_custom_name(custom_run):
    out = custom_run["root"] / "predictions"
    cli("inference.py", "-name", "my_dataset", "-weights", str(custom_run["run"]),
        "-input", custom_run["val_dir"], "-output_dir", str(out), "-save_json",
        "-score_threshold", "0.0")
    drawn = sorted(p.name for p in out.iterdir() if p.suffix in (".jpg", ".png"))
    assert len(drawn) == 4


def test_export_with_a_custom_name(custom_run):
    export = custom_run["root"] / "export"
    cli("export_savedmodel.py", "-name", "my_dataset", "-weights", str(custom_run["run"]),
        "-export_dir", str(export))
    assert (export / "1" / "saved_model.pb").exists()
    assert json.loads((export / "1" / "config.json").read_text())["NAME"] == "my_dataset"


def test_evaluate_names_a_truncated_val_shard(custom_run, tmp_path):
    import shutil

    records = tmp_path / "records"
    shutil.copytree(custom_run["records"], records)
    shard = sorted(records.glob("val-*.tfrecord"))[-1]
    shard.write_bytes(shard.read_bytes()[:-40])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("YOLACT_DEBUG", None)
    proc = subprocess.run([sys.executable, "evaluate.py", "-name", "my_dataset", "-tfrecord_dir",
                           str(records), "-weights", str(custom_run["run"])], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: 1 of ") and f"{shard}: record " in last, last
    assert "Traceback" not in proc.stderr
