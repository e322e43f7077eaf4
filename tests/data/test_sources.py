"""data/sources: raw Pascal SBD (.mat), official Pascal json, custom json, label maps."""

import json

import numpy as np
import pytest
import scipy.io

from config import PASCAL_CLASSES
from data import convert
from data.creator import build_label_map, create_tfrecords, load_source
from data.sources import pascal_sbd
from tests.data_utils import ann, read_split, rect_poly, save, smooth_image, write_json


def _write_sbd(root, name: str, seg: np.ndarray, cats: list) -> None:
    """One SBD sample laid out like benchmark_RELEASE/dataset (struct fields as in SBD)."""
    for sub in ("img", "inst", "cls"):
        (root / sub).mkdir(exist_ok=True)
    h, w = seg.shape
    save(root / "img" / f"{name}.jpg", smooth_image(h, w, len(cats)), "JPEG")
    boundaries = np.empty((len(cats), 1), dtype=object)
    for k in range(len(cats)):
        boundaries[k, 0] = np.zeros((h, w), np.uint8)
    scipy.io.savemat(root / "inst" / f"{name}.mat", {"GTinst": {
        "Segmentation": seg.astype(np.uint8),
        "Categories": np.array(cats, np.uint8).reshape(-1, 1),
        "Boundaries": boundaries}})
    cls_seg = np.zeros_like(seg)
    for k, c in enumerate(cats, start=1):
        cls_seg[seg == k] = c
    scipy.io.savemat(root / "cls" / f"{name}.mat", {"GTcls": {
        "Segmentation": cls_seg.astype(np.uint8), "Boundaries": boundaries,
        "CategoriesPresent": np.array(sorted(set(cats)), np.uint8).reshape(-1, 1)}})


def _sbd_dataset(root):
    seg_a = np.zeros((30, 40), np.uint8)
    seg_a[2:12, 3:20] = 1
    seg_a[15:28, 10:35] = 2
    seg_a[14, :] = 255  # boundary / ignore value: in no instance
    seg_a[20:24, 30:38] = 3
    seg_b = np.zeros((24, 36), np.uint8)
    seg_b[5:20, 5:30] = 1
    _write_sbd(root, "2008_000002", seg_a, [15, 12, 15])
    _write_sbd(root, "2009_000123", seg_b, [7])  # one instance: Categories squeezes to a scalar
    save(root / "img" / "2010_000001.jpg", smooth_image(20, 20, 9), "JPEG")  # no .mat
    (root / "train.txt").write_text("2008_000002\n2009_000123\n2010_000001\n")
    return seg_a, seg_b


def test_read_instances_from_mat(tmp_path):
    seg_a, _ = _sbd_dataset(tmp_path)
    objects = pascal_sbd.read_instances(str(tmp_path / "inst" / "2008_000002.mat"))
    assert [o["category_id"] for o in objects] == [15, 12, 15]
    for k, obj in enumerate(objects, start=1):
        np.testing.assert_array_equal(obj["mask"], (seg_a == k).astype(np.uint8))
        assert not obj["is_crowd"]


def test_raw_sbd_to_tfrecords(tmp_path):
    seg_a, seg_b = _sbd_dataset(tmp_path)
    out = tmp_path / "out"
    res = create_tfrecords(str(out), str(tmp_path / "img"),
                           train_annotations_file=str(tmp_path / "train.txt"),
                           num_workers=2,  # the .mat reader travels to spawned workers
                           show_progress=False)  # dataset "auto": a .txt list is raw SBD
    assert res["train"]["dataset"] == "pascal_sbd"
    assert res["train"]["source_annotations"] is None  # no COCO json to evaluate against
    assert res["train"]["images_skipped"] == {"missing_annotation": 1}
    with open(out / "label_map.json") as f:
        lm = json.load(f)
    assert lm["dataset"] == "pascal_sbd"
    assert [(c["id"], c["name"], c["source_id"]) for c in lm["classes"]] == [
        (i + 1, n, i + 1) for i, n in enumerate(PASCAL_CLASSES)]
    a, b = read_split(out, "train")
    assert a["source_id"] == b"2008000002" and b["source_id"] == b"2009000123"
    np.testing.assert_array_equal(a["gt_classes"], [15, 12, 15])  # person, horse, person
    np.testing.assert_array_equal(a["gt_masks"], np.stack([seg_a == k for k in (1, 2, 3)]))
    np.testing.assert_allclose(a["gt_boxes"][1], [10 / 40, 15 / 30, 35 / 40, 28 / 30],
                               atol=1e-7)
    np.testing.assert_array_equal(b["gt_masks"], (seg_b == 1)[None])
    np.testing.assert_array_equal(b["gt_classes"], [7])
    assert res["train"]["instances_per_class"]["person"] == 2
    with open(out / "train_annotations.json") as f:
        gt = json.load(f)
    assert [i["id"] for i in gt["images"]] == [2008000002, 2009000123]
    decoded = convert.segmentation_to_mask(gt["annotations"][1]["segmentation"], 30, 40)
    np.testing.assert_array_equal(decoded, seg_a == 2)


def _coco_style(root, categories, image_ids):
    images, anns = [], []
    for n, image_id in enumerate(image_ids):
        save(root / f"{n}.jpg", smooth_image(20, 24, n), "JPEG")
        images.append({"id": image_id, "file_name": f"{n}.jpg", "height": 20, "width": 24})
        anns.append(ann(n + 1, image_id, categories[n % len(categories)]["id"],
                        rect_poly(2, 3, 12 + n, 15)))
    return write_json(root / "ann.json", {"images": images, "annotations": anns,
                                          "categories": categories})


def test_auto_detects_official_pascal_json_and_custom(tmp_path):
    pascal = [{"id": i + 1, "name": n} for i, n in enumerate(PASCAL_CLASSES)]
    path = _coco_style(tmp_path, pascal, [1, 2])
    for dataset in ("auto", "pascal_sbd"):
        src = load_source(dataset, path, str(tmp_path))
        assert src.dataset == "pascal_sbd" and src.source_annotations == path
    custom = [{"id": 5, "name": "widget"}]
    path = _coco_style(tmp_path, custom, [1, 2])
    assert load_source("auto", path, str(tmp_path)).dataset == "custom"


def test_custom_renumbers_string_image_ids(tmp_path):
    path = _coco_style(tmp_path, [{"id": 5, "name": "widget"}], ["img_a", "img_b", "img_c"])
    with pytest.raises(ValueError, match="image ids must be integers, got 'img_a'"):
        load_source("coco", path, str(tmp_path))
    out = tmp_path / "out"
    res = create_tfrecords(str(out), val_image_dir=str(tmp_path), val_annotations_file=path,
                           dataset="custom", show_progress=False)
    assert res["val"]["images_written"] == 3
    recs = read_split(out, "val")
    assert [r["source_id"] for r in recs] == [b"1", b"2", b"3"]
    assert [r["gt_masks"][0].sum() for r in recs] == [10 * 12, 11 * 12, 12 * 12]
    with open(out / "val_annotations.json") as f:
        gt = json.load(f)
    assert [(i["id"], i["file_name"]) for i in gt["images"]] == [(1, "0.jpg"), (2, "1.jpg"),
                                                                 (3, "2.jpg")]
    assert [a["image_id"] for a in gt["annotations"]] == [1, 2, 3]


def test_label_map_imposes_ids(tmp_path):
    cats = [{"id": 2, "name": "b"}, {"id": 9, "name": "c"}, {"id": 4, "name": "d"}]
    path = _coco_style(tmp_path, cats, [1, 2, 3])
    imposed = write_json(tmp_path / "lm.json", {"classes": [
        {"id": 1, "name": "c", "source_id": 9}, {"id": 2, "name": "b"}]})  # b by name
    out = tmp_path / "out"
    res = create_tfrecords(str(out), val_image_dir=str(tmp_path), val_annotations_file=path,
                           label_map=imposed, show_progress=False)
    assert res["label_map"] == [{"id": 1, "name": "c", "source_id": 9},
                                {"id": 2, "name": "b", "source_id": 2}]
    assert res["val"]["annotations_dropped"] == {"unknown_category": 1}  # "d" not mapped
    recs = read_split(out, "val")
    assert [r["gt_classes"].tolist() for r in recs] == [[2], [1], []]


def test_label_map_errors_quote_the_input(tmp_path):
    path = _coco_style(tmp_path, [{"id": 3, "name": "x"}], [1])
    src = load_source("coco", path, str(tmp_path))
    assert build_label_map([src]) == [{"id": 1, "name": "x", "source_id": 3}]
    bad = write_json(tmp_path / "bad.json", {"classes": [{"id": 2, "name": "x"}]})
    with pytest.raises(ValueError, match=r"ids must be 1..C, got \[2\]"):
        build_label_map([src], bad)
    other = _coco_style(tmp_path, [{"id": 3, "name": "y"}], [1])
    with pytest.raises(ValueError, match="category id 3 is 'x' in one split and 'y'"):
        build_label_map([src, load_source("coco", other, str(tmp_path))])
