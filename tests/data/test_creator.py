"""data/creator.py (+ data/convert.py, data/sources/coco.py): COCO json -> TFRecords."""

import glob
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from data import tf_example
from data.creator import create_tfrecords
from tests import REPO
from tests.data_utils import (
    ann,
    read_split,
    rect_poly,
    save,
    smooth_image,
    uncompressed_rle,
    write_json,
)

H, W = 40, 50


def test_segmentation_formats_and_noncontiguous_ids(tmp_path):
    save(tmp_path / "a.jpg", smooth_image(H, W, 0), "JPEG")
    crowd = np.zeros((H, W), np.uint8)
    crowd[28:38, 5:20] = 1
    crowd[30:33, 25:27] = 1
    ellipse = cv2.ellipse(np.zeros((H, W), np.uint8), (35, 12), (10, 6), 30, 0, 360, 1, -1)
    compressed = mask_utils.encode(np.asfortranarray(ellipse))
    compressed["counts"] = compressed["counts"].decode("ascii")
    polys = [[3, 2, 20, 2, 20, 15, 3, 15], [22.5, 18.5, 30.25, 20, 26, 26.75]]
    anns = [ann(1, 7, 90, polys, [3, 2, 27.25, 24.75]),
            ann(2, 7, 3, uncompressed_rle(crowd), [5, 28, 22, 10], crowd=1),
            ann(3, 7, 17, compressed, [25, 6, 20, 12])]
    cats = [{"id": 90, "name": "zebra"}, {"id": 3, "name": "cat"},
            {"id": 50, "name": "unused"}, {"id": 17, "name": "dog"}]
    path = write_json(tmp_path / "ann.json", {"images": [
        {"id": 7, "file_name": "a.jpg", "height": H, "width": W}],
        "annotations": anns, "categories": cats})
    out = tmp_path / "out"
    create_tfrecords(str(out), str(tmp_path), str(tmp_path), path, path,
                     dataset="coco", show_progress=False)

    with open(out / "label_map.json") as f:
        label_map = json.load(f)
    assert label_map == {"dataset": "coco", "classes": [
        {"id": 1, "name": "cat", "source_id": 3}, {"id": 2, "name": "dog", "source_id": 17},
        {"id": 3, "name": "unused", "source_id": 50},
        {"id": 4, "name": "zebra", "source_id": 90}]}
    coco = COCO(path)
    for split in ("train", "val"):
        (rec,) = read_split(out, split)
        assert rec["source_id"] == b"7"
        np.testing.assert_array_equal(rec["gt_classes"], [4, 1, 2])
        np.testing.assert_array_equal(rec["gt_is_crowd"], [False, True, False])
        for k, a in enumerate(anns):
            expected = coco.annToMask(coco.anns[a["id"]])
            np.testing.assert_array_equal(rec["gt_masks"][k], expected)
            x, y, w, h = a["bbox"]  # official: the source box, not the mask extent
            box = [x / W, y / H, (x + w) / W, (y + h) / H]
            np.testing.assert_allclose(rec["gt_boxes"][k], box, rtol=0, atol=1e-7)
            assert rec["gt_areas"][k] == expected.sum()
        np.testing.assert_array_equal(rec["gt_masks"][1], crowd)
        np.testing.assert_array_equal(rec["gt_masks"][2], ellipse)
    gt = COCO(str(out / "val_annotations.json"))
    assert gt.getImgIds() == [7] and sorted(gt.getCatIds()) == [3, 17, 50, 90]
    assert sorted(gt.anns) == [1, 2, 3] and gt.anns[2]["iscrowd"] == 1


def _bad_input_dataset(root):
    """Images of every bad kind, each with one valid box, plus bad annotations."""
    base = smooth_image(H, W, 1)
    save(root / "good.jpg", base, "JPEG")
    save(root / "good.png", base, "PNG")
    save(root / "gray.jpg", base[:, :, 0], "JPEG")
    rgba = np.dstack([base, np.full((H, W), 90, np.uint8)])
    save(root / "rgba.png", rgba, "PNG")
    save(root / "cmyk.jpg", base, "JPEG", mode="CMYK")
    gray16 = (np.arange(H * W, dtype=np.uint16).reshape(H, W) * 31)
    cv2.imwrite(str(root / "gray16.png"), gray16)
    cv2.imwrite(str(root / "rgb16.png"), base[:, :, ::-1].astype(np.uint16) * 257)
    palette = Image.fromarray(base).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    palette.save(str(root / "palette.png"))
    (root / "garbage.jpg").write_bytes(np.random.default_rng(0).bytes(500))
    jpeg = (root / "good.jpg").read_bytes()
    (root / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    names = ["good.jpg", "good.png", "missing.jpg", "garbage.jpg", "truncated.jpg",
             "gray.jpg", "rgba.png", "cmyk.jpg", "gray16.png", "rgb16.png", "palette.png"]
    images = [{"id": i + 1, "file_name": n, "height": H, "width": W}
              for i, n in enumerate(names)]
    anns = [ann(100 + i, i + 1, 1, rect_poly(10, 8, 30, 28), [10, 8, 20, 20])
            for i in range(len(names))]
    anns += [
        ann(1, 1, 1, [[10, 10, 10, 10, 10, 10]], [10, 10, 0, 0]),  # zero area
        ann(2, 1, 1, rect_poly(60, 0, 70, 10), [60, 0, 10, 10]),  # right of the image
        ann(3, 1, 2, rect_poly(40, 20, 70, 35), [40, 20, 30, 15]),  # partly outside
        ann(4, 1, 99, rect_poly(0, 0, 5, 5), [0, 0, 5, 5]),  # unknown category
        ann(5, 1, 1, [], [0, 0, 5, 5]),  # no segmentation
        ann(6, 1, 1, {"size": [10, 10], "counts": [5, 95]}, [0, 0, 5, 5]),  # wrong size
    ]
    cats = [{"id": 1, "name": "thing"}, {"id": 2, "name": "other"}]
    data = {"images": images, "annotations": anns, "categories": cats}
    return write_json(root / "ann.json", data), base, gray16, palette


def test_bad_inputs_are_skipped_or_normalized(tmp_path):
    path, base, gray16, palette = _bad_input_dataset(tmp_path)
    out = tmp_path / "out"
    summary = create_tfrecords(str(out), val_image_dir=str(tmp_path), val_annotations_file=path,
                               num_shards=3, show_progress=False)["val"]
    assert summary["images_skipped"] == {"missing_file": 1, "unreadable": 1, "truncated": 1}
    assert sorted(s["filename"] for s in summary["skipped"]) == [
        "garbage.jpg", "missing.jpg", "truncated.jpg"]
    notes = summary["images_normalized"]
    assert sum(notes.values()) == 6
    for fragment in ("jpeg_L", "png_RGBA", "jpeg_CMYK", "png_P", "png_RGB_16bit", "png_I"):
        assert any(k.startswith(fragment) for k in notes), (fragment, notes)
    assert summary["annotations_dropped"] == {
        "zero_area": 1, "outside_image": 1, "unknown_category": 1,
        "missing_segmentation": 1, "invalid_segmentation": 1}
    assert summary["images_written"] == 8
    assert summary["instances_per_class"] == {"thing": 8, "other": 1}
    with open(out / "val_summary.json") as f:
        assert json.load(f) == json.loads(json.dumps(summary))

    recs = {int(r["source_id"]): r for r in read_split(out, "val")}
    assert sorted(recs) == [1, 2, 6, 7, 8, 9, 10, 11]
    box = [10 / W, 8 / H, 30 / W, 28 / H]
    for r in recs.values():
        assert r["image"].shape == (H, W, 3)
        np.testing.assert_allclose(r["gt_boxes"][0], box, atol=1e-7)
        assert r["gt_masks"][0].sum() == 400  # 20 x 20 pixels
    good = recs[1]
    np.testing.assert_array_equal(good["gt_classes"], [1, 2])
    np.testing.assert_allclose(good["gt_boxes"][1], [40 / W, 20 / H, 1.0, 35 / H], atol=1e-7)
    clipped = np.zeros((H, W), np.uint8)
    clipped[20:35, 40:50] = 1
    np.testing.assert_array_equal(good["gt_masks"][1], clipped)
    np.testing.assert_array_equal(recs[2]["image"], base)  # RGB PNG passes through
    np.testing.assert_array_equal(recs[7]["image"], base)  # alpha dropped
    np.testing.assert_array_equal(recs[11]["image"], np.asarray(palette.convert("RGB")))
    np.testing.assert_array_equal(recs[10]["image"], base)  # (v * 257) / 257
    expected16 = np.round(gray16 / 257.0).astype(np.uint8)
    np.testing.assert_array_equal(recs[9]["image"], np.dstack([expected16] * 3))
    gray = recs[6]["image"].astype(int)
    assert np.array_equal(gray[..., 0], gray[..., 1]) and np.array_equal(gray[..., 0], gray[..., 2])
    assert np.abs(gray[..., 0] - base[..., 0]).max() <= 8  # two JPEG encodings
    assert np.abs(recs[8]["image"].astype(int) - base).mean() < 4  # CMYK -> RGB
    gt = COCO(str(out / "val_annotations.json"))
    assert sorted(gt.getImgIds()) == sorted(recs)
    assert gt.anns[3]["bbox"] == [40.0, 20.0, 10.0, 15.0]  # clipped to the image
    assert not glob.glob(str(out / "*.tmp"))


def _empty_dataset(root):
    for i in range(3):
        save(root / f"{i}.jpg", smooth_image(H, W, i), "JPEG")
    images = [{"id": i + 1, "file_name": f"{i}.jpg", "height": H, "width": W} for i in range(3)]
    anns = [ann(1, 1, 1, rect_poly(2, 2, 12, 12)),
            ann(2, 3, 1, [[5, 5, 5, 5, 5, 5]])]  # image 3: its only annotation is degenerate
    data = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "x"}]}
    return write_json(root / "ann.json", data)


@pytest.mark.parametrize("keep_empty_train", [False, True])
def test_empty_images_kept_for_val_configurable_for_train(tmp_path, keep_empty_train):
    path = _empty_dataset(tmp_path)
    out = tmp_path / "out"
    res = create_tfrecords(str(out), str(tmp_path), str(tmp_path), path, path,
                           keep_empty_train=keep_empty_train, show_progress=False)
    assert [r["source_id"] for r in read_split(out, "val")] == [b"1", b"2", b"3"]
    assert res["val"]["images_written"] == 3
    train = read_split(out, "train")
    if keep_empty_train:
        assert [r["gt_masks"].shape[0] for r in train] == [1, 0, 0]
    else:
        assert [r["source_id"] for r in train] == [b"1"]
        assert res["train"]["images_skipped"] == {"no_annotations": 2}
    with open(out / "val_annotations.json") as f:
        assert [i["id"] for i in json.load(f)["images"]] == [1, 2, 3]


def test_shards_are_atomic(tmp_path, monkeypatch):
    path = _empty_dataset(tmp_path)
    out = tmp_path / "out"
    kwargs = dict(val_image_dir=str(tmp_path), val_annotations_file=path, show_progress=False)
    create_tfrecords(str(out), num_shards=3, **kwargs)
    first = {p: open(p, "rb").read() for p in glob.glob(str(out / "val-*"))}
    assert len(first) == 3

    real, calls = tf_example.make_example, []

    def failing(features):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("disk on fire")
        return real(features)

    monkeypatch.setattr(tf_example, "make_example", failing)
    with pytest.raises(RuntimeError, match="disk on fire"):
        create_tfrecords(str(out), num_shards=2, **kwargs)
    assert not glob.glob(str(out / "*.tmp"))
    assert {p: open(p, "rb").read() for p in glob.glob(str(out / "val-*"))} == first

    monkeypatch.setattr(tf_example, "make_example", real)
    create_tfrecords(str(out), num_shards=2, **kwargs)
    assert sorted(os.listdir(out)) == [
        "label_map.json", "val-00000-of-00002.tfrecord", "val-00001-of-00002.tfrecord",
        "val_annotations.json", "val_summary.json"]
    assert len(read_split(out, "val")) == 3


def test_two_workers_write_the_same_records(tmp_path):
    images, anns = [], []
    for i in range(12):
        save(tmp_path / f"{i}.jpg", smooth_image(H, W, i), "JPEG")
        images.append({"id": i + 1, "file_name": f"{i}.jpg", "height": H, "width": W})
        anns.append(ann(i + 1, i + 1, 1 + i % 2, rect_poly(i, 2, 20 + i, 30)))
    path = write_json(tmp_path / "ann.json", {"images": images, "annotations": anns,
                                              "categories": [{"id": 1, "name": "a"},
                                                             {"id": 2, "name": "b"}]})
    shards = {}
    for workers in (1, 2):
        out = tmp_path / f"out{workers}"
        create_tfrecords(str(out), str(tmp_path), train_annotations_file=path,
                         num_shards=2, num_workers=workers, show_progress=False)
        shards[workers] = [open(p, "rb").read() for p in sorted(glob.glob(str(out / "train-*")))]
    assert len(shards[1]) == 2 and shards[1] == shards[2]


def test_cli_shapes_to_tfrecords(tmp_path):
    root = str(REPO)
    data, out = tmp_path / "shapes", tmp_path / "records"
    subprocess.run([sys.executable, "-m", "data.shapes", "-output_dir", str(data),
                    "-num_train", "4", "-num_val", "3", "-seed", "0", "-min_size", "64",
                    "-max_size", "96"], check=True, cwd=root, capture_output=True)
    args = ["-output_dir", str(out), "-num_workers", "1", "-num_shards", "2"]
    for split in ("train", "val"):
        args += [f"-{split}_image_dir", str(data / "images" / split),
                 f"-{split}_annotations_file", str(data / "annotations" / f"{split}.json")]
    proc = subprocess.run([sys.executable, "-m", "data.coco_tfrecord_creator"] + args,
                          cwd=root, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "[val] 3 / 3 images written" in proc.stdout
    assert "[train] 3 / 4 images written" in proc.stdout  # image 0 is empty
    with open(out / "label_map.json") as f:
        assert [c["name"] for c in json.load(f)["classes"]] == [
            "circle", "rectangle", "triangle", "ellipse", "star"]
    coco = COCO(str(data / "annotations" / "val.json"))
    recs = read_split(out, "val")
    for rec in recs:
        anns = coco.loadAnns(coco.getAnnIds(imgIds=int(rec["source_id"])))
        masks = [coco.annToMask(a) for a in anns]
        masks = np.stack(masks) if masks else np.zeros((0,) + rec["image"].shape[:2])
        np.testing.assert_array_equal(rec["gt_masks"], masks)
        np.testing.assert_array_equal(rec["gt_classes"], [a["category_id"] for a in anns])


def test_boxes_are_the_clipped_source_bbox_and_empty_masks_with_a_box_are_kept(tmp_path):
    """Official data/coco.py: the target box is the annotation's bbox, not the mask's extent."""
    save(tmp_path / "a.jpg", smooth_image(H, W, 3), "JPEG")
    tiny = [[20.2, 20.2, 20.7, 20.2, 20.7, 20.7]]  # rasterizes to no pixel at all
    anns = [ann(1, 5, 1, rect_poly(10, 8, 30, 28), [8.5, 6, 25, 24.5]),  # looser than the mask
            ann(2, 5, 1, rect_poly(40, 30, 50, 40), [40, 30, 20, 20]),  # past the right edge
            ann(3, 5, 1, tiny, [20.2, 20.2, 0.5, 0.5]),  # empty mask, valid box: kept
            ann(4, 5, 1, rect_poly(2, 3, 7, 9)),  # no bbox: the mask extent
            ann(5, 5, 1, tiny, [70, 20, 5, 5]),  # empty mask, box off the image: dropped
            ann(6, 5, 1, tiny)]  # empty mask, no box: dropped
    path = write_json(tmp_path / "ann.json", {
        "images": [{"id": 5, "file_name": "a.jpg", "height": H, "width": W}],
        "annotations": anns, "categories": [{"id": 1, "name": "x"}]})
    out = tmp_path / "out"
    summary = create_tfrecords(str(out), str(tmp_path), train_annotations_file=path,
                               show_progress=False)["train"]
    assert summary["annotations_dropped"] == {"outside_image": 1, "zero_area": 1}
    (rec,) = read_split(out, "train")
    expected = np.array([[8.5, 6, 33.5, 30.5], [40, 30, 50, 40], [20.2, 20.2, 20.7, 20.7],
                         [2, 3, 7, 9]]) / [W, H, W, H]
    np.testing.assert_allclose(rec["gt_boxes"], expected, rtol=0, atol=1e-7)
    assert rec["gt_masks"].sum(axis=(1, 2)).tolist() == [400, 100, 0, 30]
    assert rec["gt_areas"].tolist() == [400, 100, 0, 30]
    with open(out / "train_annotations.json") as f:
        written = {a["id"]: a["bbox"] for a in json.load(f)["annotations"]}
    np.testing.assert_allclose(written[2], [40, 30, 10, 10])
    np.testing.assert_allclose(written[3], [20.2, 20.2, 0.5, 0.5])
    assert written[4] == [2, 3, 5, 6]


def test_summary_names_the_source_annotations(tmp_path):
    path = _empty_dataset(tmp_path)
    other = write_json(tmp_path / "other.json", json.loads(open(path).read()))
    out = tmp_path / "out"
    rel = os.path.relpath(other)  # a relative path is recorded absolute
    res = create_tfrecords(str(out), str(tmp_path), str(tmp_path), path, rel,
                           show_progress=False)
    for split, expected in (("train", path), ("val", other)):
        assert res[split]["source_annotations"] == os.path.abspath(expected)
        with open(out / f"{split}_summary.json") as f:
            assert json.load(f)["source_annotations"] == os.path.abspath(expected)
    data = json.loads(open(path).read())
    for img in data["images"]:
        img["id"] = f"img{img['id']}"  # renumbered: the file's ids are not the records'
    for a in data["annotations"]:
        a["image_id"] = f"img{a['image_id']}"
    custom = write_json(tmp_path / "custom.json", data)
    res = create_tfrecords(str(tmp_path / "custom"), val_image_dir=str(tmp_path),
                           val_annotations_file=custom, dataset="custom", show_progress=False)
    assert res["val"]["source_annotations"] is None
