"""evaluate() on real TFRecords from data.creator: class checks, empty splits, zero-area
detections, which ground truth is used (source json vs the creator's rewritten one).

Detections come from a stand-in predictor that returns fixed Instances per image, keyed
by the original image size (every image here has its own width), so no network runs.
"""

import contextlib
import io
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from data.creator import create_tfrecords
from tests.data_utils import ann, rect_poly, save, smooth_image, write_json
from tests.train_utils import small_config
from yolact.detection.instances import Instances, keep_official_json
from yolact.evaluation import evaluator
from yolact.evaluation.coco import STAT_NAMES
from yolact.evaluation.evaluator import evaluate, make_validation_fn

H = 40
WIDTHS = {10: 50, 11: 52, 12: 54, 13: 56}  # image 13's file is missing: the creator skips it
NAMES = ("square", "bar")  # source category ids 3 and 7 -> label map ids 1 and 2


def source_json():
    """Original annotations; the creator clips #2's box, drops #4 and skips image 13."""
    images = [{"id": i, "file_name": f"{i}.png", "height": H, "width": w}
              for i, w in WIDTHS.items()]
    anns = [
        ann(1, 10, 3, rect_poly(5, 5, 20, 25), [5, 5, 15, 20]),
        ann(2, 10, 7, rect_poly(40, 20, 70, 35), [40, 20, 30, 15]),  # past the right edge
        ann(3, 11, 7, rect_poly(0, 0, 15, 15), [0, 0, 15, 15]),
        ann(4, 11, 7, rect_poly(60, 0, 70, 10), [60, 0, 10, 10]),  # outside the image
        ann(5, 13, 3, rect_poly(10, 10, 30, 30), [10, 10, 20, 20]),
    ]
    for a in anns:
        a["area"] = a["bbox"][2] * a["bbox"][3]
    return {"images": images, "annotations": anns,
            "categories": [{"id": 3, "name": "square"}, {"id": 7, "name": "bar"}]}


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval_checks")
    for image_id, w in WIDTHS.items():
        if image_id != 13:
            save(root / f"{image_id}.png", smooth_image(H, w, image_id), "PNG")
    src = write_json(root / "instances_val.json", source_json())
    out = root / "tfrecords"
    summary = create_tfrecords(str(out), val_image_dir=str(root), val_annotations_file=src,
                               dataset="coco", show_progress=False)["val"]
    assert summary["images_written"] == 3 and summary["images_skipped"] == {"missing_file": 1}
    assert summary["annotations_dropped"] == {"outside_image": 1}
    # The creator may record source_annotations; these records test the default without.
    path = out / "val_summary.json"
    saved = json.loads(path.read_text())
    saved.pop("source_annotations", None)
    path.write_text(json.dumps(saved))
    return {"dir": str(out), "source": src}


def cfg_for(names=NAMES):
    return small_config(NUM_CLASSES=len(names), CLASS_NAMES=tuple(names))


def box_mask(w, x1, y1, x2, y2):
    m = np.zeros((H, w), np.uint8)
    m[y1:y2, x1:x2] = 1
    return m


def perfect_instances(extra_zero_area=False):
    """{(h, w): Instances} equal to the creator's (clipped) ground truth."""
    objects = {10: [(0, (5, 5, 20, 25)), (1, (40, 20, 50, 35))], 11: [(1, (0, 0, 15, 15))],
               12: []}
    if extra_zero_area:  # highest score; its mask is not empty, its integer box is
        objects[10].append((0, (30, 2, 30, 12)))
        objects[11].append((1, (20, 30, 40, 30)))
    out = {}
    for image_id, objs in objects.items():
        w = WIDTHS[image_id]
        masks = [box_mask(w, x1, y1, max(x2, x1 + 3), max(y2, y1 + 3))
                 for _, (x1, y1, x2, y2) in objs]
        scores = [0.99 if b[0] == b[2] or b[1] == b[3] else 0.9 - 0.1 * k
                  for k, (_, b) in enumerate(objs)]
        out[(H, w)] = Instances(np.array([b for _, b in objs], np.int32).reshape(-1, 4),
                                np.array([c for c, _ in objs], np.int32),
                                np.array(scores, np.float32),
                                np.array(masks, np.uint8).reshape(-1, H, w))
    return out


class FakePredictor:
    """predict_normalized(images, sizes) -> the fixed Instances of each original size."""

    def __init__(self, by_size):
        self.by_size = by_size
        self.calls = 0

    def predict_normalized(self, images, sizes):
        self.calls += 1
        return [self.by_size[(int(h), int(w))] for h, w in sizes]


def run_eval(records, cfg=None, predictor=None, **kwargs):
    return evaluate(None, cfg or cfg_for(), records["dir"], batch_size=2, progress=False,
                    predictor=predictor or FakePredictor(perfect_instances()), **kwargs)


def pycocotools_stats(gt_path, results, iou_type, image_ids=None):
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(gt_path)
        ev = COCOeval(gt, gt.loadRes([dict(r) for r in results]), iou_type)
        if image_ids is not None:
            ev.params.imgIds = list(image_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


def copy_records(records, out, skip=()):
    """A copy of the TFRecord folder at `out`, without the files named in `skip`."""
    out.mkdir(parents=True)
    for name in set(os.listdir(records["dir"])) - set(skip):
        (out / name).write_bytes(open(os.path.join(records["dir"], name), "rb").read())
    return out


def with_source_summary(tmp_path, records, source):
    """A copy of the TFRecord folder whose val summary records `source_annotations`."""
    out = copy_records(records, tmp_path / "tfrecords")
    summary = json.loads((out / "val_summary.json").read_text())
    summary["source_annotations"] = source
    (out / "val_summary.json").write_text(json.dumps(summary))
    return {"dir": str(out), "source": records["source"]}


# -- 1. class mismatches ---------------------------------------------------------------------

def test_matching_classes_map_to_source_category_ids(records, tmp_path):
    out = tmp_path / "results.json"
    metrics = run_eval(records, output_json=str(out))
    assert metrics["bbox"]["AP"] == pytest.approx(1.0)
    assert metrics["segm"]["AP"] == pytest.approx(1.0)
    assert metrics["num_images"] == 3 and metrics["num_detections"] == 3
    results = json.loads(out.read_text())
    assert sorted((r["image_id"], r["category_id"]) for r in results) == [
        (10, 3), (10, 7), (11, 7)]


@pytest.mark.parametrize("names, first", [
    (("circle", "rectangle", "triangle", "ellipse", "star"),  # the shapes preset: 5 classes
     "first difference at class 1: 'circle' vs 'square'"),
    (("circle", "rectangle"), "first difference at class 1: 'circle' vs 'square'"),
    (("bar", "square"), "first difference at class 1: 'bar' vs 'square'"),
    (("square",), "first difference at class 2: <none> vs 'bar'"),
])
def test_config_label_map_mismatch_is_an_error(records, names, first):
    label_map = os.path.join(records["dir"], "label_map.json")
    with pytest.raises(ValueError) as err:
        run_eval(records, cfg=cfg_for(names), config_source="runs/x/config.json")
    msg = str(err.value)
    assert "\n" not in msg
    assert "config 'shapes' (runs/x/config.json)" in msg
    assert f"NUM_CLASSES={len(names)}" in msg
    assert f"label map {label_map!r} has 2 classes" in msg
    assert msg.endswith(first)


def test_ground_truth_categories_mismatch_is_an_error(records, tmp_path):
    data = source_json()
    data["categories"].append({"id": 9, "name": "extra"})
    gt = write_json(tmp_path / "gt.json", data)
    with pytest.raises(ValueError, match=r"has 2 classes but ground truth '.*gt\.json' has 3 "
                                         r"categories .*class 3: <none> vs 'extra'"):
        run_eval(records, annotations=gt)
    data["categories"] = [{"id": 3, "name": "square"}, {"id": 7, "name": "stick"}]
    gt = write_json(tmp_path / "gt2.json", data)
    with pytest.raises(ValueError, match="class 2: 'bar' vs 'stick'"):
        run_eval(records, annotations=gt)


def test_without_label_map_config_classes_must_be_category_ids_1_to_c(records, tmp_path):
    out = copy_records(records, tmp_path / "tfrecords", skip=["label_map.json"])
    with pytest.raises(ValueError, match="class 1: 'square' vs '<no category id 1>'"):
        run_eval({"dir": str(out)})


# -- 2. empty splits --------------------------------------------------------------------------

def test_split_without_shards_is_an_error(records):
    pattern = os.path.join(records["dir"], "test-*.tfrecord")
    with pytest.raises(ValueError, match="split 'test': 0 images found") as err:
        run_eval(records, split="test")
    assert repr(pattern) in str(err.value)


def test_split_with_zero_records_is_an_error(tmp_path):
    data = {"images": [{"id": 1, "file_name": "gone.png", "height": H, "width": 50}],
            "annotations": [ann(1, 1, 3, rect_poly(1, 1, 9, 9), [1, 1, 8, 8])],
            "categories": [{"id": 3, "name": "square"}, {"id": 7, "name": "bar"}]}
    src = write_json(tmp_path / "ann.json", data)
    out = tmp_path / "out"
    # The creator refuses to write a split without images ...
    with pytest.raises(ValueError, match="none of the 1 images"):
        create_tfrecords(str(out), val_image_dir=str(tmp_path), val_annotations_file=src,
                         dataset="coco", show_progress=False)
    # ... and shards without records (written by other tools) are refused here.
    out.mkdir(exist_ok=True)
    tf.io.TFRecordWriter(str(out / "val-00000-of-00001.tfrecord")).close()
    write_json(out / "label_map.json", {"dataset": "coco", "classes": [
        {"id": 1, "name": "square", "source_id": 3}, {"id": 2, "name": "bar", "source_id": 7}]})
    with pytest.raises(ValueError, match=r"split 'val': 0 images found in the 1 shard\(s\)"):
        run_eval({"dir": str(out)})
    with pytest.raises(ValueError, match="0 images found"):
        make_validation_fn(cfg_for(), str(out))


def test_max_images_zero_is_an_error(records):
    with pytest.raises(ValueError, match="max_images must be >= 1"):
        run_eval(records, max_images=0)


# -- 3. zero-area detections (official eval.py prep_metrics) ------------------------------

def test_keep_official_json_matches_the_official_rule():
    rng = np.random.default_rng(0)
    boxes = rng.integers(0, 6, (200, 4)).astype(np.int32)
    boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2])  # sanitized: x1 <= x2, y1 <= y2
    reference = np.array([(b[3] - b[1]) * (b[2] - b[0]) > 0 for b in boxes.tolist()])
    assert 20 < (~reference).sum() < 180
    np.testing.assert_array_equal(keep_official_json(boxes), reference)
    assert keep_official_json(np.zeros((0, 4), np.int32)).shape == (0,)


def test_zero_area_detections_are_left_out_of_results_and_metrics(records, tmp_path):
    by_size = perfect_instances(extra_zero_area=True)
    out = tmp_path / "results.json"
    metrics = run_eval(records, predictor=FakePredictor(by_size), output_json=str(out))
    results = json.loads(out.read_text())
    expected = sum(int(keep_official_json(inst.boxes).sum()) for inst in by_size.values())
    assert expected == 3 and len(results) == 3 == metrics["num_detections"]
    assert all(r["bbox"][2] * r["bbox"][3] > 0 for r in results)
    # Kept, they would be top-scored false positives (their masks are not empty).
    assert metrics["bbox"]["AP"] == pytest.approx(1.0)
    assert metrics["segm"]["AP"] == pytest.approx(1.0)


# -- 4. which ground truth -------------------------------------------------------------------

def test_creator_ground_truth_by_default(records, tmp_path):
    metrics = run_eval(records, metrics_json=str(tmp_path / "m.json"))
    creator = os.path.abspath(os.path.join(records["dir"], "val_annotations.json"))
    assert metrics["ground_truth"] == creator and metrics["ground_truth_kind"] == "creator"
    saved = json.loads((tmp_path / "m.json").read_text())
    assert saved["ground_truth"] == creator and saved["ground_truth_kind"] == "creator"


def test_source_annotations_from_the_summary(records, tmp_path):
    src_records = with_source_summary(tmp_path, records, records["source"])
    out = tmp_path / "results.json"
    metrics = run_eval(src_records, output_json=str(out))
    assert metrics["ground_truth"] == os.path.abspath(records["source"])
    assert metrics["ground_truth_kind"] == "source"
    results = json.loads(out.read_text())
    # The unclipped box of #2 (IoU 1/3) and the outside object #4 count against the
    # predictions; image 13, never written, does not.
    for iou_type in ("bbox", "segm"):
        reference = pycocotools_stats(records["source"], results, iou_type, [10, 11, 12])
        ours = [metrics[iou_type][k] for k in STAT_NAMES]
        np.testing.assert_array_equal(ours, reference)
        unrestricted = pycocotools_stats(records["source"], results, iou_type)
        assert unrestricted[8] < reference[8]  # AR100: image 13's square would be a miss
    assert metrics["bbox"]["AP"] < metrics["segm"]["AP"] < 1.0
    creator = run_eval(records)
    assert creator["segm"]["AP"] == pytest.approx(1.0)
    assert creator["bbox"]["AP"] == pytest.approx(1.0)


def test_explicit_annotations_win_over_the_summary(records, tmp_path):
    src_records = with_source_summary(tmp_path, records, records["source"])
    creator = os.path.join(records["dir"], "val_annotations.json")
    metrics = run_eval(src_records, annotations=creator)
    assert metrics["ground_truth_kind"] == "explicit"
    assert metrics["ground_truth"] == os.path.abspath(creator)
    assert metrics["bbox"]["AP"] == pytest.approx(1.0)


@pytest.mark.parametrize("without_creator_json", [False, True])
def test_annotations_of_other_images_are_refused(records, tmp_path, without_creator_json):
    # Another dataset with the same image ids and classes: its images have other sizes
    # and names, so its boxes are not those of the recorded images.
    data = source_json()
    for image in data["images"]:
        image["width"] += 100
        image["file_name"] = f"other_{image['id']}.jpg"
    gt = write_json(tmp_path / "other.json", data)
    if without_creator_json:  # then the records' own sizes and names are compared
        records = {"dir": str(copy_records(records, tmp_path / "tfrecords",
                                           skip=["val_annotations.json"]))}
    with pytest.raises(ValueError, match=r"ground truth '.*other\.json' describes other images "
                                         r"than the records .*: 3 of 3 shared image ids differ"
                                         r".*first: id 10: 40x150 'other_10\.jpg' in the "
                                         r"annotations, 40x50 '10\.png' in the records"):
        evaluator.prepare_evaluation(cfg_for(), records["dir"], annotations=gt)


def test_annotations_with_the_same_images_in_another_folder_are_accepted(records, tmp_path):
    data = source_json()
    for image in data["images"]:
        image["file_name"] = f"val2017/{image['file_name']}"  # compared without the folder
        if image["id"] == 12:
            del image["height"], image["width"]  # not every json has the sizes
    gt = write_json(tmp_path / "same.json", data)
    setup = evaluator.prepare_evaluation(cfg_for(), records["dir"], annotations=gt)
    assert setup.ground_truth_kind == "explicit"


def test_unusable_source_annotations_fall_back_with_a_warning(records, tmp_path):
    gone = with_source_summary(tmp_path / "a", records, str(tmp_path / "nowhere.json"))
    with pytest.warns(UserWarning, match="nowhere.json.*not found"):
        metrics = run_eval(gone)
    assert metrics["ground_truth_kind"] == "creator"
    assert "not found" in metrics["ground_truth_note"]
    data = source_json()
    data["categories"][1]["name"] = "stick"
    other = write_json(tmp_path / "renamed.json", data)
    renamed = with_source_summary(tmp_path / "b", records, other)
    with pytest.warns(UserWarning, match="do not fit the label map.*'bar' vs 'stick'"):
        assert run_eval(renamed)["ground_truth_kind"] == "creator"


def test_max_images_restricts_cocoeval_to_the_evaluated_images(records):
    metrics = run_eval(records, max_images=1)
    assert metrics["num_images"] == 1
    # Image 10 alone, perfectly predicted: no miss from the other images.
    assert metrics["segm"]["AP"] == pytest.approx(1.0)
    assert metrics["ground_truth_kind"] == "creator"


# -- 5. validation during training -------------------------------------------------------

def test_validation_fn_checks_once_and_reports_metrics(records, monkeypatch):
    with pytest.raises(ValueError, match="class mismatch"):
        make_validation_fn(cfg_for(("circle", "rectangle")), records["dir"])
    calls = []
    prepare = evaluator.prepare_evaluation
    monkeypatch.setattr(evaluator, "prepare_evaluation",
                        lambda *a, **k: calls.append(a) or prepare(*a, **k))
    fake = FakePredictor(perfect_instances(extra_zero_area=True))
    monkeypatch.setattr("yolact.detection.predictor.Predictor", lambda model, cfg: fake)
    validate = make_validation_fn(cfg_for(), records["dir"], num_draw=0, batch_size=2)
    assert len(calls) == 1
    model = object()
    for step in (1, 2):
        flat = validate(model, step)
        assert flat["segm_AP"] == pytest.approx(1.0) and flat["bbox_AP"] == pytest.approx(1.0)
        assert flat["images"] is None
    assert len(calls) == 1 and fake.calls == 4
