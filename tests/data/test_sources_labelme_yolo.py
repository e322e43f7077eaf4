"""data/sources/labelme.py, data/sources/yolo.py and data/split.py: the shapes dataset
rendered as LabelMe json and as a YOLO segmentation dataset converts to the records of
the COCO path; bad files are skipped and named; -val_fraction; the CLI end to end."""

import base64
import json
import os
import shutil

import cv2
import numpy as np
import pytest
import yaml

from data import convert
from data import split as val_split
from data.creator import create_tfrecords
from data.shapes import generate
from data.sources import labelme, yolo
from tests.cli.test_custom_dataset import SMALL, cli
from tests.data_utils import read_split, save, smooth_image
from yolact.utils.polygons import mask_to_polygons, polygons_to_mask, yolo_seg_line

SPLITS = ("train", "val")


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """The shapes dataset (6 train / 3 val images) and its COCO path records."""
    root = tmp_path_factory.mktemp("shapes")
    generate(str(root / "data"), 6, 3, seed=3, min_size=64, max_size=128,
             show_progress=False)
    coco = {s: json.loads((root / "data" / "annotations" / f"{s}.json").read_text())
            for s in SPLITS}
    out = root / "coco_records"
    create_tfrecords(str(out), *(str(root / "data" / "images" / s) for s in SPLITS),
                     *(str(root / "data" / "annotations" / f"{s}.json") for s in SPLITS),
                     dataset="coco", keep_empty_train=True, show_progress=False)
    return {"root": root, "coco": coco, "records": {s: read_split(out, s) for s in SPLITS}}


def _objects(data: dict, image_id: int) -> list:
    """The non-crowd annotations of one image (crowds have no LabelMe / YOLO form)."""
    return [a for a in data["annotations"] if a["image_id"] == image_id and not a["iscrowd"]]


def write_labelme(data: dict, image_dir, out_dir) -> None:
    """A COCO split as LabelMe files: one polygon shape per COCO polygon, grouped."""
    out_dir.mkdir(parents=True)
    names = {c["id"]: c["name"] for c in data["categories"]}
    for img in data["images"]:
        shutil.copy(image_dir / img["file_name"], out_dir / img["file_name"])
        shapes = []
        for a in _objects(data, img["id"]):
            for poly in a["segmentation"]:
                shapes.append({"label": names[a["category_id"]], "shape_type": "polygon",
                               "points": np.reshape(poly, (-1, 2)).tolist(), "flags": {},
                               "group_id": a["id"] if len(a["segmentation"]) > 1 else None})
        stem = os.path.splitext(img["file_name"])[0]
        (out_dir / f"{stem}.json").write_text(json.dumps({
            "version": "5.4.1", "flags": {}, "shapes": shapes, "imagePath": img["file_name"],
            "imageData": None, "imageHeight": img["height"], "imageWidth": img["width"]}))


def write_yolo(coco: dict, image_root, root) -> str:
    """The COCO splits as a YOLO segmentation dataset (one line per polygon, written by
    the project's `yolo_seg_line`); returns the data.yaml path."""
    for split in SPLITS:
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for img in coco[split]["images"]:
            shutil.copy(image_root / split / img["file_name"], root / "images" / split)
            lines = [yolo_seg_line(a["category_id"] - 1, poly, img["height"], img["width"])
                     for a in _objects(coco[split], img["id"]) for poly in a["segmentation"]]
            if lines:  # an image without a label file is a background image
                stem = os.path.splitext(img["file_name"])[0]
                (root / "labels" / split / f"{stem}.txt").write_text("\n".join(lines) + "\n")
    names = [c["name"] for c in coco["train"]["categories"]]
    path = root / "data.yaml"
    path.write_text(yaml.safe_dump({"path": ".", "train": "images/train",
                                    "val": "images/val", "names": names}))
    return str(path)


def _iou(a, b) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def expected_instances(rec: dict, data: dict, split_polygons: bool) -> list:
    """(class, pixel box, mask) of the COCO record's non-crowd instances; with
    split_polygons each polygon of a multi-polygon annotation is its own instance."""
    h, w = rec["gt_masks"].shape[1:] if len(rec["gt_masks"]) else (rec["height"], rec["width"])
    scale = np.array([w, h, w, h])
    anns = [a for a in data["annotations"] if a["image_id"] == int(rec["source_id"])]
    out = []
    for k, a in enumerate(anns):
        if a["iscrowd"]:
            continue
        if split_polygons and len(a["segmentation"]) > 1:
            for poly in a["segmentation"]:
                m = polygons_to_mask([poly], h, w)
                ys, xs = np.nonzero(m)
                box = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
                out.append((rec["gt_classes"][k], np.array(box, float), m))
        else:
            out.append((rec["gt_classes"][k], rec["gt_boxes"][k] * scale, rec["gt_masks"][k]))
    return out


def assert_same_records(got: list, expected: list, data: dict, split_polygons=False):
    assert [r["source_id"] for r in got] == [r["source_id"] for r in expected]
    for rec, ref in zip(got, expected):
        assert rec["filename"] == ref["filename"]
        np.testing.assert_array_equal(rec["image"], ref["image"])
        want = expected_instances(ref, data, split_polygons)
        assert len(rec["gt_classes"]) == len(want), rec["filename"]
        scale = np.array([rec["width"], rec["height"]] * 2)
        for k, (cls, box, mask) in enumerate(want):
            assert rec["gt_classes"][k] == cls
            np.testing.assert_allclose(rec["gt_boxes"][k] * scale, box, atol=1.0)
            # YOLO's 6-decimal normalised coordinates can move a vertex lying on a
            # pixel's rasterisation threshold: a pixel or two of a tiny instance.
            differ = int((rec["gt_masks"][k] != mask).sum())
            assert _iou(rec["gt_masks"][k], mask) >= 0.98 or differ <= 2, (
                rec["filename"], k, differ)
        assert not rec["gt_is_crowd"].any()


def test_labelme_gives_the_coco_records(shapes, tmp_path):
    root = shapes["root"]
    for split in SPLITS:
        write_labelme(shapes["coco"][split], root / "data" / "images" / split,
                      tmp_path / "lm" / split)
    # One image only as embedded imageData (its file is gone).
    image = tmp_path / "lm" / "val" / "val_000001.jpg"
    doc = json.loads((tmp_path / "lm" / "val" / "val_000001.json").read_text())
    doc["imageData"] = base64.b64encode(image.read_bytes()).decode("ascii")
    (tmp_path / "lm" / "val" / "val_000001.json").write_text(json.dumps(doc))
    image.unlink()
    out = tmp_path / "records"
    label_map = str(root / "data" / "annotations" / "val.json")  # its categories: the ids
    create_tfrecords(str(out), str(tmp_path / "lm" / "train"), str(tmp_path / "lm" / "val"),
                     dataset="labelme", label_map=label_map, keep_empty_train=True,
                     show_progress=False)
    for split in SPLITS:
        assert_same_records(read_split(out, split), shapes["records"][split],
                            shapes["coco"][split])
    gt = json.loads((out / "val_annotations.json").read_text())
    assert [c["name"] for c in gt["categories"]] == [
        c["name"] for c in shapes["coco"]["val"]["categories"]]
    assert len(gt["images"]) == 3
    # Without -label_map: the labels in first-seen order.
    create_tfrecords(str(tmp_path / "r2"), str(tmp_path / "lm" / "train"),
                     dataset="labelme", show_progress=False)
    seen = []
    for path in labelme.find_files(str(tmp_path / "lm" / "train")):
        for s in json.loads(open(path).read())["shapes"]:
            seen += [s["label"]] if s["label"] not in seen else []
    classes = json.loads((tmp_path / "r2" / "label_map.json").read_text())["classes"]
    assert [c["name"] for c in classes] == seen


def test_yolo_gives_the_coco_records(shapes, tmp_path):
    data_yaml = write_yolo(shapes["coco"], shapes["root"] / "data" / "images", tmp_path / "y")
    out = tmp_path / "records"
    create_tfrecords(str(out), dataset="yolo", yolo_data=data_yaml, keep_empty_train=True,
                     show_progress=False)
    for split in SPLITS:
        assert_same_records(read_split(out, split), shapes["records"][split],
                            shapes["coco"][split], split_polygons=True)
    classes = json.loads((out / "label_map.json").read_text())["classes"]
    assert [c["name"] for c in classes] == [
        c["name"] for c in shapes["coco"]["train"]["categories"]]


def test_shape_types():
    rect, _ = labelme.shape_polygon({"shape_type": "rectangle", "points": [[9, 8], [2, 3]]})
    assert rect == [2, 3, 9, 3, 9, 8, 2, 8]
    circle, _ = labelme.shape_polygon({"shape_type": "circle", "points": [[20, 20], [30, 20]]})
    xy = np.reshape(circle, (-1, 2))
    assert len(xy) == labelme.CIRCLE_POINTS
    np.testing.assert_allclose(np.hypot(xy[:, 0] - 20, xy[:, 1] - 20), 10)
    for kind in ("line", "point", "linestrip"):
        assert labelme.shape_polygon({"shape_type": kind, "points": [[1, 1], [5, 5]]}) == (
            None, "unsupported_shape")
    assert labelme.shape_polygon({"points": [[1, 1], [5, 5]]}) == (None, "degenerate_polygon")


def test_labelme_bad_files_are_skipped_and_named(tmp_path):
    folder = tmp_path / "lm"
    folder.mkdir()
    for i, (h, w) in enumerate([(40, 50), (40, 50), (40, 50)]):
        save(folder / f"{i}.png", smooth_image(h, w, i), "PNG")
        shapes = [{"label": "cat", "points": [[5, 5], [30, 5], [30, 30]],
                   "shape_type": "polygon", "group_id": None},
                  {"label": "cat", "points": [[1, 1], [9, 9]], "shape_type": "line"}]
        (folder / f"{i}.json").write_text(json.dumps({
            "shapes": shapes, "imagePath": f"{i}.png", "imageHeight": 40,
            "imageWidth": 50 if i != 1 else 60}))  # 1.json says another size
    (folder / "broken.json").write_text('{"shapes": [')
    out = tmp_path / "out"
    res = create_tfrecords(str(out), str(folder), dataset="labelme", show_progress=False)
    summary = res["train"]
    assert summary["images_written"] == 2 and summary["images_in_source"] == 4
    assert summary["images_skipped"] == {"malformed_json": 1, "size_mismatch": 1}
    details = {s["filename"]: s["detail"] for s in summary["skipped"]}
    assert "invalid JSON" in details["broken.json"]
    assert "annotation says 40x60, image is 40x50" in details["1.png"]
    assert summary["annotations_dropped"] == {"unsupported_shape": 3}
    assert "shapes[1] ('cat', line" in summary["annotations_dropped_list"][0]["detail"]
    # A label the -label_map does not have: a one-line error naming it and its file.
    (tmp_path / "map.json").write_text(json.dumps({"categories": [{"id": 1, "name": "dog"}]}))
    with pytest.raises(ValueError, match=r"class 'cat' \(in .*0.json\) is not in the label"):
        create_tfrecords(str(tmp_path / "o2"), str(folder), dataset="labelme",
                         label_map=str(tmp_path / "map.json"), show_progress=False)


def test_yolo_bad_lines_are_dropped_and_named(tmp_path):
    for split in SPLITS:
        (tmp_path / "images" / split).mkdir(parents=True)
        (tmp_path / "labels" / split).mkdir(parents=True)
        save(tmp_path / "images" / split / "a.jpg", smooth_image(40, 50, 0), "JPEG")
    (tmp_path / "images" / "train" / "b.jpg").write_bytes(b"not an image")
    (tmp_path / "labels" / "train" / "a.txt").write_text(
        "0 0.1 0.1 0.5 0.1 0.5 0.5\n"       # fine
        "1 0.1 0.1 0.5 0.1 0.5\n"           # odd coordinate count
        "0 0.5 0.5 0.2 0.2\n"               # a box only
        "7 0.1 0.1 0.5 0.1 0.5 0.5\n"       # class id with no name
        "0 0.1 0.1 0.5 0.5 0.3 0.3\n")    # degenerate: no area
    (tmp_path / "labels" / "val" / "a.txt").write_text("1 0.2 0.2 0.8 0.2 0.5 0.9\n")
    path = tmp_path / "data.yaml"
    path.write_text("train: images/train\nval: images/val\nnames: {0: cat, 1: dog}\n")
    res = create_tfrecords(str(tmp_path / "out"), dataset="yolo", yolo_data=str(path),
                           keep_empty_train=True, show_progress=False)
    summary = res["train"]
    assert summary["images_written"] == 1
    assert summary["images_skipped"] == {"unreadable": 1}
    assert summary["annotations_dropped"] == {
        "odd_coordinates": 1, "box_only": 1, "unknown_class": 1, "zero_area": 1}
    details = [n["detail"] for n in summary["annotations_dropped_list"]]
    assert any("a.txt line 2: odd coordinates" in d for d in details)
    assert any("a.txt line 4: unknown class" in d for d in details)
    (rec,) = read_split(tmp_path / "out", "train")
    np.testing.assert_array_equal(rec["gt_classes"], [1])
    assert yolo.label_path("/d/images/x/images/train/a.b.jpg") == "/d/images/x/labels/train/a.b.txt"


def test_save_txt_output_reads_back_as_the_same_instances(tmp_path):
    """inference.py -save_txt lines (mask_to_polygons + yolo_seg_line, as the runner's
    writer) re-imported: same classes, masks at IoU >= 0.95."""
    h, w = 60, 80
    masks = np.zeros((3, h, w), np.uint8)
    masks[0, 5:30, 10:40] = 1
    masks[1] = polygons_to_mask([[50, 10, 75, 20, 60, 50]], h, w)
    masks[2, 35:55, 5:25] = 1
    classes = [2, 0, 1]
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    save(tmp_path / "images" / "a.png", smooth_image(h, w, 1), "PNG")
    lines = [yolo_seg_line(c, mask_to_polygons(m)[0], h, w) for c, m in zip(classes, masks)]
    (tmp_path / "labels" / "a.txt").write_text("".join(line + "\n" for line in lines))
    (tmp_path / "data.yaml").write_text("train: images\nnames: [a, b, c]\n")
    source = yolo.load(str(tmp_path / "data.yaml"))["train"]
    label_map = {sid: (sid, name) for sid, name in source.categories}
    feats, _, dropped = convert.convert_objects(source.records[0]["objects"], h, w, label_map)
    assert not dropped and feats["labels"] == [c + 1 for c in classes]
    for png, mask in zip(feats["masks"], masks):
        got = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_GRAYSCALE)
        assert _iou(got, mask) >= 0.95


def test_val_fraction_is_a_stable_hash_of_the_name(shapes, tmp_path):
    names = [f"img_{i}.jpg" for i in range(200)]
    val = {n for n in names if val_split.in_val(n, 0.25, 7)}
    assert 30 <= len(val) <= 70
    more = names + [f"new_{i}.jpg" for i in range(50)]  # adding images moves no other
    assert {n for n in more if val_split.in_val(n, 0.25, 7)} & set(names) == val
    assert val != {n for n in names if val_split.in_val(n, 0.25, 8)}
    # Any single-split source: here the COCO train split.
    root = shapes["root"] / "data"
    out = tmp_path / "out"
    res = create_tfrecords(str(out), str(root / "images" / "train"),
                           train_annotations_file=str(root / "annotations" / "train.json"),
                           dataset="coco", keep_empty_train=True, val_fraction=0.5,
                           split_seed=1, show_progress=False)
    written = {s: {r["filename"].decode() for r in read_split(out, s)} for s in SPLITS}
    assert written["train"] and written["val"] and not written["train"] & written["val"]
    assert written["val"] == {i["file_name"] for i in shapes["coco"]["train"]["images"]
                              if val_split.in_val(i["file_name"], 0.5, 1)}
    assert res["val"]["split_rule"]["val_fraction"] == 0.5
    saved = json.loads((out / "val_summary.json").read_text())
    assert saved["split_rule"]["split_seed"] == 1
    with pytest.raises(ValueError, match="draws val from a single train split"):
        create_tfrecords(str(tmp_path / "o2"), *(str(root / "images" / s) for s in SPLITS),
                         *(str(root / "annotations" / f"{s}.json") for s in SPLITS),
                         dataset="coco", val_fraction=0.5, show_progress=False)


def test_cli_yolo_creator_train_evaluate(shapes, tmp_path):
    data_yaml = write_yolo(shapes["coco"], shapes["root"] / "data" / "images", tmp_path / "y")
    records, run = tmp_path / "records", tmp_path / "run"
    proc = cli("-m", "data.coco_tfrecord_creator", "-dataset", "yolo", "-yolo_data",
               data_yaml, "-output_dir", str(records), "-num_shards", "1",
               "-num_workers", "1")
    assert "[val] 3 / 3 images written" in proc.stdout
    overrides = [a for o in SMALL for a in ("-override", o)]
    cli("train.py", "-name", "my_dataset", "-tfrecord_dir", str(records), "-weights",
        str(run), "-batch_size", "2", "-max_iter", "2", "-save_interval", "2",
        "-print_interval", "1", *overrides)
    cli("evaluate.py", "-name", "my_dataset", "-tfrecord_dir", str(records), "-weights",
        str(run), "-metrics_json", str(tmp_path / "metrics.json"))
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["num_images"] == 3 and 0.0 <= metrics["segm"]["AP"] <= 1.0
