"""data/sources/voc.py and masks.py: a shapes dataset rendered as a VOC2012 tree and as
mask-PNG folders converts to the same records as its COCO json, and bad files are
skipped with their name and reason."""

import os
import shutil

import cv2
import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from data.classes import PASCAL_CLASSES, SHAPES_CLASSES
from data.creator import create_tfrecords
from data.shapes import generate
from tests.data_utils import read_split, write_json

SPLITS = ("train", "val")


def _palette_png(path, values: np.ndarray) -> None:
    img = Image.fromarray(values.astype(np.uint8), mode="P")
    img.putpalette([v for i in range(256) for v in ((i * 37) % 256, (i * 91) % 256, i)])
    img.save(str(path))


def _instances(coco: COCO, image_id: int) -> list:
    """[(mask uint8 [H, W], category id 1..5, crowd)] in annotation order."""
    anns = coco.loadAnns(coco.getAnnIds(imgIds=image_id))
    return [(coco.annToMask(a), a["category_id"], bool(a["iscrowd"])) for a in anns]


def _render_voc(data, root) -> str:
    """The shapes dataset as VOC2012 (shapes class k named PASCAL_CLASSES[k - 1])."""
    for sub in ("JPEGImages", "SegmentationObject", "SegmentationClass", "Annotations",
                "ImageSets/Segmentation"):
        os.makedirs(root / sub, exist_ok=True)
    for split in SPLITS:
        coco = COCO(str(data / "annotations" / f"{split}.json"))
        stems = []
        for img in coco.loadImgs(sorted(coco.getImgIds())):
            stem = os.path.splitext(img["file_name"])[0]
            stems.append(stem)
            shutil.copy(data / "images" / split / img["file_name"], root / "JPEGImages")
            inst = np.zeros((img["height"], img["width"]), np.int64)
            cls = inst.copy()
            objects = []
            for k, (mask, cat, crowd) in enumerate(_instances(coco, img["id"]), start=1):
                inst[mask > 0], cls[mask > 0] = k, cat
                ys, xs = np.nonzero(mask)
                objects.append(f"<object><name>{PASCAL_CLASSES[cat - 1]}</name><difficult>"
                               f"{int(crowd)}</difficult><bndbox><xmin>{xs.min() + 1}</xmin>"
                               f"<ymin>{ys.min() + 1}</ymin><xmax>{xs.max() + 1}</xmax>"
                               f"<ymax>{ys.max() + 1}</ymax></bndbox></object>")
            fg = (inst > 0).astype(np.uint8)
            void = (cv2.dilate(fg, np.ones((3, 3), np.uint8)) > 0) & (fg == 0)
            inst[void], cls[void] = 255, 255  # VOC's border: ignored
            _palette_png(root / "SegmentationObject" / f"{stem}.png", inst)
            _palette_png(root / "SegmentationClass" / f"{stem}.png", cls)
            (root / "Annotations" / f"{stem}.xml").write_text(
                f"<annotation><filename>{img['file_name']}</filename>"
                + "".join(objects) + "</annotation>")
        (root / "ImageSets" / "Segmentation" / f"{split}.txt").write_text(
            "\n".join(stems) + "\n")
    return str(root)


def _render_masks(data, root) -> dict:
    """train: instance-id PNGs (16-bit for every other image) + classes.json;
    val: one binary PNG per instance, <stem>_<class>_<k>[_crowd].png."""
    classes = {"classes": list(SHAPES_CLASSES), "instances": {}}
    for split in SPLITS:
        coco = COCO(str(data / "annotations" / f"{split}.json"))
        os.makedirs(root / split, exist_ok=True)
        for n, img in enumerate(coco.loadImgs(sorted(coco.getImgIds()))):
            stem = os.path.splitext(img["file_name"])[0]
            ids = np.zeros((img["height"], img["width"]), np.uint16)
            mapping = {}
            for k, (mask, cat, crowd) in enumerate(_instances(coco, img["id"]), start=1):
                name = SHAPES_CLASSES[cat - 1]
                if split == "val":
                    path = root / split / f"{stem}_{name}_{k}{'_crowd' if crowd else ''}.png"
                    Image.fromarray(mask * 255).save(str(path))
                else:
                    key = 300 + k if n % 2 else k  # ids need not be 1..K
                    ids[mask > 0] = key
                    mapping[str(key)] = {"class": name, "crowd": True} if crowd else name
            if split == "train":
                arr = ids if n % 2 else ids.astype(np.uint8)
                Image.fromarray(arr).save(str(root / split / f"{stem}.png"))
                classes["instances"][stem] = mapping
    return {"classes": write_json(root / "classes.json", classes)}


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """The shapes dataset and its records by the COCO path."""
    tmp = tmp_path_factory.mktemp("voc_masks")
    data = tmp / "shapes"
    generate(str(data), 6, 3, seed=3, min_size=64, max_size=112, crowd_prob=0.5,
             show_progress=False)
    out = tmp / "coco"
    create_tfrecords(str(out), *(str(data / "images" / s) for s in SPLITS),
                     *(str(data / "annotations" / f"{s}.json") for s in SPLITS),
                     dataset="coco", show_progress=False)
    return tmp, data, out


def _by_name(out, split) -> dict:
    return {r["filename"]: r for r in read_split(out, split)}


def _assert_same_records(expected_dir, actual_dir) -> None:
    crowds = 0
    for split in SPLITS:
        expected, actual = _by_name(expected_dir, split), _by_name(actual_dir, split)
        assert sorted(actual) == sorted(expected)
        for name, exp in expected.items():
            got = actual[name]
            np.testing.assert_array_equal(got["image"], exp["image"])
            np.testing.assert_array_equal(got["gt_classes"], exp["gt_classes"])
            np.testing.assert_array_equal(got["gt_is_crowd"], exp["gt_is_crowd"])
            scale = np.array([exp["width"], exp["height"]] * 2, np.float32)
            np.testing.assert_allclose(got["gt_boxes"] * scale, exp["gt_boxes"] * scale,
                                       rtol=0, atol=1.0)
            for m_got, m_exp in zip(got["gt_masks"], exp["gt_masks"]):
                inter = np.logical_and(m_got, m_exp).sum()
                assert inter / np.logical_or(m_got, m_exp).sum() >= 0.98
            crowds += int(exp["gt_is_crowd"].sum())
        gt_exp = COCO(str(expected_dir / f"{split}_annotations.json"))
        gt_got = COCO(str(actual_dir / f"{split}_annotations.json"))
        assert len(gt_got.anns) == len(gt_exp.anns)
        assert sorted(a["iscrowd"] for a in gt_got.anns.values()) == sorted(
            a["iscrowd"] for a in gt_exp.anns.values())
    assert crowds > 0  # the crowd path was exercised


def test_voc_tree_converts_like_the_coco_json(shapes):
    tmp, data, coco_out = shapes
    root = _render_voc(data, tmp / "VOC2012")
    label_map = write_json(tmp / "voc_label_map.json", {"classes": [
        {"id": k, "name": PASCAL_CLASSES[k - 1]} for k in range(1, 6)]})
    out = tmp / "voc"
    summary = create_tfrecords(str(out), dataset="voc", voc_root=root, label_map=label_map,
                               show_progress=False)
    assert [c["name"] for c in summary["label_map"]] == list(PASCAL_CLASSES[:5])
    assert summary["train"]["dataset"] == "voc"
    _assert_same_records(coco_out, out)


def test_mask_pngs_convert_like_the_coco_json(shapes):
    tmp, data, coco_out = shapes
    files = _render_masks(data, tmp / "masks")
    out = tmp / "masks_out"
    summary = create_tfrecords(
        str(out), str(data / "images" / "train"), str(data / "images" / "val"),
        dataset="masks", train_mask_dir=str(tmp / "masks" / "train"),
        val_mask_dir=str(tmp / "masks" / "val"), mask_classes=files["classes"],
        num_workers=2, show_progress=False)
    assert [c["name"] for c in summary["label_map"]] == list(SHAPES_CLASSES)
    _assert_same_records(coco_out, out)


def _square(h, w, y0, x0, side) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    m[y0:y0 + side, x0:x0 + side] = 1
    return m


def _skips(summary) -> dict:
    return {s["filename"]: (s["reason"], s["detail"]) for s in summary["skipped"]}


def test_voc_bad_files_are_skipped_and_named(tmp_path):
    root = tmp_path / "VOC2012"
    for sub in ("JPEGImages", "SegmentationObject", "SegmentationClass",
                "ImageSets/Segmentation"):
        os.makedirs(root / sub)
    h, w = 40, 50
    names = ["2007_000001", "2007_000002", "2007_000003", "2007_000004", "2007_000005"]
    for name in names:
        if name != "2007_000003":  # missing image
            cv2.imwrite(str(root / "JPEGImages" / f"{name}.jpg"),
                        np.full((h, w, 3), 128, np.uint8))
        size = (h + 2, w) if name == "2007_000002" else (h, w)  # wrong size
        inst = _square(*size, 5, 5, 10) + 2 * _square(*size, 20, 25, 10)
        _palette_png(root / "SegmentationObject" / f"{name}.png", inst)
        _palette_png(root / "SegmentationClass" / f"{name}.png", np.where(inst > 0, 8, 0))
    (root / "SegmentationObject" / "2007_000004.png").write_bytes(b"not a png")
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("\n".join(names))
    summary = create_tfrecords(str(tmp_path / "out"), dataset="voc", voc_root=str(root),
                               show_progress=False)["train"]
    assert summary["images_written"] == 2  # 000001 and 000005, no xml: no crowd
    skips = _skips(summary)
    assert skips["2007_000002.jpg"][0] == "size_mismatch"
    assert "SegmentationObject/2007_000002.png is 42x50" in skips["2007_000002.jpg"][1]
    assert skips["2007_000003.jpg"][0] == "missing_file"
    assert skips["2007_000004.jpg"][0] == "unreadable_annotation"
    assert "2007_000004.png" in skips["2007_000004.jpg"][1]
    assert summary["instances_per_class"]["cat"] == 4 and summary["crowd_instances"] == 0
    (rec,) = read_split(tmp_path / "out", "train")[:1]
    assert rec["source_id"] == b"2007000001"


def test_mask_bad_files_are_skipped_and_named(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    os.makedirs(images), os.makedirs(masks)
    h, w = 30, 40
    for stem in ("a", "b", "c", "d", "e_1"):
        cv2.imwrite(str(images / f"{stem}.png"), np.full((h, w, 3), 90, np.uint8))
    two = _square(h, w, 2, 2, 8) + 2 * _square(h, w, 15, 20, 8)
    Image.fromarray(two).save(str(masks / "a.png"))  # good: ids 1, 2
    Image.fromarray(two * 3).save(str(masks / "b.png"))  # id 6 has no class
    Image.fromarray(np.zeros((h + 1, w), np.uint8)).save(str(masks / "c.png"))  # size
    Image.fromarray(two[:, :, None].repeat(3, 2)).save(str(masks / "d.png"))  # RGB
    Image.fromarray(_square(h, w, 1, 1, 5) * 255).save(str(masks / "e_1_dog_1.png"))
    Image.fromarray(np.zeros((h, w), np.uint8)).save(str(masks / "e_1_dog_2.png"))  # empty
    Image.fromarray(two).save(str(masks / "zzz.png"))  # no image
    classes = write_json(tmp_path / "classes.json", {"ids": {"1": "cat", "2": "dog"},
                                                     "instances": {"b": {"3": "cat"}}})
    summary = create_tfrecords(str(tmp_path / "out"), str(images), dataset="masks",
                               train_mask_dir=str(masks), mask_classes=classes,
                               show_progress=False)["train"]
    skips = _skips(summary)
    assert summary["images_written"] == 2, skips  # a and e_1
    assert skips["b.png"][0] == "unmapped_id" and "id(s) 6" in skips["b.png"][1]
    assert skips["c.png"][0] == "size_mismatch" and "31x40" in skips["c.png"][1]
    assert skips["d.png"][0] == "unreadable_annotation" and "RGB" in skips["d.png"][1]
    assert skips["zzz.png"][0] == "missing_file" and "no image" in skips["zzz.png"][1]
    assert summary["annotations_dropped"] == {"zero_area": 1}  # e_1_dog_2 (b is skipped as a whole)
    assert summary["instances_per_class"] == {"cat": 1, "dog": 2}
    with pytest.raises(ValueError, match="class 'bird' .* is not in the label map"):
        label_map = write_json(tmp_path / "lm.json", {"classes": [{"id": 1, "name": "cat"}]})
        write_json(tmp_path / "classes.json", {"ids": {"1": "cat", "2": "bird"}})
        create_tfrecords(str(tmp_path / "out2"), str(images), dataset="masks",
                         train_mask_dir=str(masks), mask_classes=classes,
                         label_map=label_map, show_progress=False)
