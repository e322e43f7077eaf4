"""data/shapes.py: the embedded synthetic COCO dataset."""

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO

from config import SHAPES_CLASSES
from data import shapes
from tests import REPO

SMALL = dict(min_size=96, max_size=160)


def _files(root: str) -> dict:
    out = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            with open(os.path.join(dirpath, name), "rb") as f:
                out[os.path.relpath(os.path.join(dirpath, name), root)] = f.read()
    return out


def _seg_kind(seg) -> str:
    if isinstance(seg, list):
        return "polygon"
    return "rle" if isinstance(seg["counts"], list) else "compressed_rle"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("shapes"))
    shapes.generate(root, 40, 4, seed=3, crowd_prob=0.3, many_prob=0.2,
                    show_progress=False, **SMALL)
    return root


def test_deterministic_by_seed(tmp_path):
    a, b, c = (str(tmp_path / n) for n in "abc")
    shapes.generate(a, 5, 3, seed=11, show_progress=False, **SMALL)
    shapes.generate(b, 5, 3, seed=11, show_progress=False, **SMALL)
    shapes.generate(c, 5, 3, seed=12, show_progress=False, **SMALL)
    fa, fb, fc = _files(a), _files(b), _files(c)
    assert sorted(fa) == sorted(fb) == sorted(fc)
    assert len([k for k in fa if k.endswith(".jpg")]) == 8
    assert fa == fb
    assert fa["annotations/train.json"] != fc["annotations/train.json"]
    assert fa["images/train/train_000001.jpg"] != fc["images/train/train_000001.jpg"]


def test_layout_and_pycocotools_validity(dataset):
    for split, num in (("train", 40), ("val", 4)):
        coco = COCO(os.path.join(dataset, "annotations", f"{split}.json"))
        assert len(coco.getImgIds()) == num
        assert [coco.cats[i]["name"] for i in sorted(coco.cats)] == list(SHAPES_CLASSES)
        for img in coco.loadImgs(coco.getImgIds()):
            path = os.path.join(dataset, "images", split, img["file_name"])
            assert cv2.imread(path).shape == (img["height"], img["width"], 3)
            assert 96 <= img["height"] <= 160 and 96 <= img["width"] <= 160
        for ann in coco.loadAnns(coco.getAnnIds()):
            mask = coco.annToMask(ann)
            assert mask.sum() > 0
            assert ann["area"] == mask.sum()
            ys, xs = np.nonzero(mask)
            assert ann["bbox"] == [xs.min(), ys.min(), xs.max() + 1 - xs.min(),
                                   ys.max() + 1 - ys.min()]


def test_content_mix(dataset):
    with open(os.path.join(dataset, "annotations", "train.json")) as f:
        data = json.load(f)
    kinds = {_seg_kind(a["segmentation"]) for a in data["annotations"]}
    assert kinds == {"polygon", "rle"}  # COCO's own layout (test_json_layout_is_cocos_own)
    crowds = [a for a in data["annotations"] if a["iscrowd"]]
    assert crowds and all(_seg_kind(a["segmentation"]) == "rle" for a in crowds)
    per_image = np.bincount([a["image_id"] for a in data["annotations"]], minlength=41)[1:]
    assert per_image[0] == 0  # image 0 of a split is the empty one
    assert per_image.max() >= 8  # some crowded images
    assert {a["category_id"] for a in data["annotations"]} == {1, 2, 3, 4, 5}


def test_masks_are_visible_parts(dataset):
    """Masks of one image never overlap and equal the generator's owner map exactly (the
    traced polygons of occluded parts too, on this seed; test_json_layout_is_cocos_own
    asserts IoU >= 0.9 in general)."""
    coco = COCO(os.path.join(dataset, "annotations", "train.json"))
    overlaps_seen = 0
    for img in coco.loadImgs(coco.getImgIds()):
        anns = sorted(coco.loadAnns(coco.getAnnIds(imgIds=img["id"])), key=lambda a: a["id"])
        masks = [coco.annToMask(a) for a in anns]
        if masks:
            assert np.stack(masks).sum(0).max() <= 1
        canvas, _ = shapes.make_image(3, 0, img["id"] - 1, crowd_prob=0.3, many_prob=0.2,
                                      empty=img["id"] == 1, **SMALL)
        assert len(canvas.layers) == len(anns)
        for k, (ann, mask) in enumerate(zip(anns, masks), start=1):
            np.testing.assert_array_equal(mask, canvas.owner == k)
            overlaps_seen += int(canvas.full_area[k] > mask.sum())
    assert overlaps_seen > 0  # occlusion really happened somewhere


def test_objects_are_solid_and_distinct_from_background(dataset):
    coco = COCO(os.path.join(dataset, "annotations", "train.json"))
    contrast = []
    for ann in coco.loadAnns(coco.getAnnIds(iscrowd=False)):
        img = coco.loadImgs(ann["image_id"])[0]
        pixels = cv2.imread(os.path.join(dataset, "images", "train", img["file_name"]))
        mask = coco.annToMask(ann)
        inner = cv2.erode(mask, np.ones((5, 5), np.uint8)) > 0
        ring = (cv2.dilate(mask, np.ones((9, 9), np.uint8)) > 0) & ~(
            cv2.dilate(mask, np.ones((5, 5), np.uint8)) > 0)
        if inner.sum() < 20:
            continue
        inside = pixels[inner].astype(float)
        assert inside.std(0).max() < 12  # one flat colour (plus JPEG noise)
        contrast.append(np.linalg.norm(inside.mean(0) - pixels[ring].astype(float).mean(0)))
    assert len(contrast) > 50
    # Colours are drawn >= 100 (RGB distance) from the background and earlier objects.
    assert np.median(contrast) > 60 and np.mean(np.asarray(contrast) > 25) > 0.9


def test_cli_writes_the_creator_layout(tmp_path):
    cmd = [sys.executable, "-m", "data.shapes", "-output_dir", str(tmp_path), "-num_train",
           "3", "-num_val", "2", "-seed", "5", "-min_size", "64", "-max_size", "80"]
    root = str(REPO)
    subprocess.run(cmd, check=True, cwd=root, capture_output=True)
    assert sorted(os.listdir(tmp_path / "images" / "train")) == [
        f"train_{i:06d}.jpg" for i in range(3)]
    assert len(os.listdir(tmp_path / "images" / "val")) == 2
    with open(tmp_path / "annotations" / "val.json") as f:
        assert len(json.load(f)["images"]) == 2


def test_invalid_arguments_raise(tmp_path):
    with pytest.raises(ValueError, match="min_size <= max_size, got 200, 100"):
        shapes.generate(str(tmp_path), 1, 1, min_size=200, max_size=100)
    with pytest.raises(ValueError, match="got -1, 1"):
        shapes.generate(str(tmp_path), -1, 1)
    with pytest.raises(ValueError, match=r"objects per image, got \(3, 2\)"):
        shapes.generate(str(tmp_path), 1, 1, num_objects=(3, 2))
    with pytest.raises(ValueError, match=r"got \(0.5, 1.5\)"):
        shapes.generate(str(tmp_path), 1, 1, object_size=(0.5, 1.5))
    with pytest.raises(ValueError, match="many_prob must be in"):
        shapes.generate(str(tmp_path), 1, 1, many_prob=2.0)


def test_object_count_and_size_options(tmp_path):
    # 2-3 objects of 0.3-0.5 of the shorter side, no crowd or "many" images: every
    # non-empty image (image 0 is the empty one) has 2-3 annotations, and the bounding
    # boxes stay within the requested size range.
    shapes.generate(str(tmp_path), 12, 0, seed=4, min_size=100, max_size=100, crowd_prob=0.0,
                    many_prob=0.0, num_objects=(2, 3), object_size=(0.3, 0.5),
                    show_progress=False)
    with open(tmp_path / "annotations" / "train.json") as f:
        data = json.load(f)
    counts = np.bincount([a["image_id"] for a in data["annotations"]], minlength=13)[1:]
    assert counts[0] == 0 and set(counts[1:]) <= {2, 3}, counts
    assert not any(a["iscrowd"] for a in data["annotations"])
    # The largest side of any box never exceeds 0.5 x 100 px (+1 px of rasterization).
    assert max(max(a["bbox"][2:]) for a in data["annotations"]) <= 51
    # Every object (at least half of it stays visible) is still >= 13.5 px long.
    assert min(max(a["bbox"][2:]) for a in data["annotations"]) >= 0.3 * 100 * 0.45


def test_json_layout_is_cocos_own(dataset, tmp_path):
    """Non-crowd objects are polygon lists (several for a split visible part), crowds
    uncompressed RLE (counts a list), as in COCO's own files (TF Model Garden's
    create_coco_tf_record reads nothing else). Measured: the IoU of pycocotools' annToMask
    of each polygon annotation with the visible mask the generator drew (its owner map),
    >= 0.9 each (1.0 on the 811 objects of the demo's val split, seed 0); area and bbox
    are those of the decoded polygons. The TFRecord creator converts the split."""
    from data.creator import create_tfrecords

    coco = COCO(os.path.join(dataset, "annotations", "train.json"))
    ious, pieces = [], 0
    for img in coco.loadImgs(coco.getImgIds()):
        canvas, _ = shapes.make_image(3, 0, img["id"] - 1, crowd_prob=0.3, many_prob=0.2,
                                      empty=img["id"] == 1, **SMALL)
        anns = sorted(coco.loadAnns(coco.getAnnIds(imgIds=img["id"])), key=lambda a: a["id"])
        for k, ann in enumerate(anns, start=1):
            seg = ann["segmentation"]
            if ann["iscrowd"]:
                assert isinstance(seg, dict) and isinstance(seg["counts"], list), ann["id"]
                assert all(isinstance(c, int) for c in seg["counts"])
                continue
            assert isinstance(seg, list) and seg, ann["id"]
            assert all(isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0 for p in seg)
            pieces += len(seg) > 1
            mask, drawn = coco.annToMask(ann) > 0, canvas.owner == k
            ious.append((mask & drawn).sum() / (mask | drawn).sum())
            assert ann["area"] == mask.sum()
    assert len(ious) > 100 and min(ious) >= 0.9, sorted(ious)[:5]
    assert pieces > 0  # some occluded objects are split in several pieces
    summary = create_tfrecords(str(tmp_path / "records"), val_image_dir=os.path.join(
        dataset, "images", "train"), val_annotations_file=os.path.join(
        dataset, "annotations", "train.json"), show_progress=False)
    assert summary["val"]["images_written"] == 40 and not summary["val"]["annotations_dropped"]
    assert sum(summary["val"]["instances_per_class"].values()) == len(coco.getAnnIds())


def test_holes_are_cut_open():
    """A ring (a square with a hole) becomes polygons whose union is the ring, not the
    filled square."""
    from yolact.utils.polygons import polygons_to_mask

    vis = np.zeros((20, 20), bool)
    vis[2:18, 3:17] = True
    vis[7:12, 8:11] = False
    polys = shapes._visible_polygons(vis, 5, 4, 40, 40)
    assert len(polys) >= 2
    expected = np.zeros((40, 40), bool)
    expected[5:25, 4:24] = vis
    np.testing.assert_array_equal(polygons_to_mask(polys, 40, 40) > 0, expected)
