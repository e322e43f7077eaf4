"""The TFRecord creator on bad inputs: one clear error, or a summary that says what happened.

Every case writes small real COCO json and image files in tmp_path.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from data.creator import create_tfrecords, format_summary
from tests import REPO
from tests.data_utils import ann, read_split, rect_poly, save, smooth_image, write_json

ROOT = str(REPO)
H, W = 20, 24


def _coco(root, image_ids=(1, 2, 3), cats=({"id": 1, "name": "a"},), name="ann.json",
          images_dir="img", extra_anns=()):
    """Images <images_dir>/<n>.jpg with one box each, and their COCO json."""
    (root / images_dir).mkdir(exist_ok=True)
    images, anns = [], []
    for n, image_id in enumerate(image_ids):
        save(root / images_dir / f"{n}.jpg", smooth_image(H, W, n), "JPEG")
        images.append({"id": image_id, "file_name": f"{n}.jpg", "height": H, "width": W})
        anns.append(ann(n + 1, image_id, cats[0]["id"], rect_poly(2, 3, 12, 15), [2, 3, 10, 12]))
    data = {"images": images, "annotations": anns + list(extra_anns), "categories": list(cats)}
    return write_json(root / name, data), str(root / images_dir)


def _snapshot(folder):
    """{name: bytes} of a folder (None if it does not exist)."""
    if not os.path.isdir(folder):
        return None
    return {n: open(os.path.join(folder, n), "rb").read() for n in sorted(os.listdir(folder))}


def _val(out, images, path, **kw):
    return create_tfrecords(str(out), val_image_dir=images, val_annotations_file=path,
                            show_progress=False, **kw)


# ---------------------------------------------------------------- 1. ids
def test_duplicate_image_ids_are_refused_naming_the_file_and_ids(tmp_path):
    path, images = _coco(tmp_path, image_ids=[1, 2, 2, 3, 3, 3])
    with pytest.raises(ValueError) as err:
        _val(tmp_path / "out", images, path)
    assert str(err.value) == (f"annotations file {path!r} has 2 duplicated image id(s): 2, 3; "
                              "image ids must be unique")
    many, _ = _coco(tmp_path, image_ids=[i // 2 for i in range(14)], name="many.json")
    with pytest.raises(ValueError, match=r"7 duplicated image id\(s\): 0, 1, 2, 3, 4, "
                                         r"\.\.\. \(7 in all\)"):
        _val(tmp_path / "out", images, many)
    strings, _ = _coco(tmp_path, image_ids=["a", "b", "a"], name="strings.json")
    with pytest.raises(ValueError, match=r"1 duplicated image id\(s\): 'a'"):
        _val(tmp_path / "out", images, strings, dataset="custom")  # used to be renumbered
    assert not (tmp_path / "out").exists()


def test_annotations_of_no_image_are_counted_and_printed(tmp_path, capsys):
    orphans = [ann(50, 99, 1, rect_poly(1, 1, 5, 5)), ann(51, 98, 1, rect_poly(1, 1, 5, 5))]
    path, images = _coco(tmp_path, extra_anns=orphans)
    summary = _val(tmp_path / "out", images, path)["val"]
    assert summary["annotations_dropped"] == {"no_such_image": 2}
    assert summary["images_written"] == 3 and summary["instances_per_class"] == {"a": 3}
    assert "annotations_dropped: no_such_image=2" in capsys.readouterr().out
    assert "no_such_image=2" in format_summary(summary)
    # Custom jsons renumber string ids: an annotation of no image must not follow one.
    orphan = [ann(52, "zzz", 1, rect_poly(1, 1, 5, 5))]
    custom, _ = _coco(tmp_path, image_ids=["x", "y"], name="custom.json", extra_anns=orphan)
    summary = _val(tmp_path / "out2", images, custom, dataset="custom")["val"]
    assert summary["annotations_dropped"] == {"no_such_image": 1}
    assert [len(r["gt_classes"]) for r in read_split(tmp_path / "out2", "val")] == [1, 1]


# ---------------------------------------------------------------- 2. empty results
def test_wrong_image_dir_fails_before_converting_and_writes_nothing(tmp_path):
    path, _ = _coco(tmp_path)
    wrong = tmp_path / "elsewhere"
    wrong.mkdir()
    with pytest.raises(ValueError) as err:
        _val(tmp_path / "out", str(wrong), path)
    assert str(err.value) == (
        f"[val] none of the 3 images listed in {path} is in {wrong} (e.g. image file not "
        f"found: {wrong / '0.jpg'}); check -val_image_dir")
    with pytest.raises(FileNotFoundError, match="val image dir not found: .*nowhere"):
        _val(tmp_path / "out", str(tmp_path / "nowhere"), path)
    assert not (tmp_path / "out").exists()


def test_split_with_no_image_written_fails_and_leaves_the_folder_as_it_was(tmp_path):
    good, images = _coco(tmp_path)
    out = tmp_path / "out"
    create_tfrecords(str(out), images, images, good, good, show_progress=False)
    before = _snapshot(out)
    # Same file names, but every val image is damaged: found, then skipped one by one.
    (tmp_path / "bad").mkdir()
    for n in range(3):
        (tmp_path / "bad" / f"{n}.jpg").write_bytes(b"not a jpeg at all")
    with pytest.raises(ValueError) as err:
        create_tfrecords(str(out), images, str(tmp_path / "bad"), good, good,
                         show_progress=False)
    first = tmp_path / "bad" / "0.jpg"
    assert str(err.value) == (
        f"[val] no image written: 3 image(s) listed in {good}; 3 skipped (unreadable=3), "
        f"e.g. corrupt image {first}: cannot identify image file (17 bytes); "
        f"nothing was written to {out}")
    assert _snapshot(out) == before  # train was converted, but not committed either


def test_train_without_annotations_says_how_to_keep_them(tmp_path):
    path, images = _coco(tmp_path)
    data = json.loads(open(path).read())
    data["annotations"] = []
    write_json(path, data)
    with pytest.raises(ValueError, match=r"3 skipped \(no_annotations=3\), e\.g\. "
                                         r"no_annotations; training images without annotations"
                                         r" are skipped \(-keep_empty_train keeps them\)"):
        create_tfrecords(str(tmp_path / "out"), images, train_annotations_file=path,
                         show_progress=False)
    assert not (tmp_path / "out").exists()
    summary = create_tfrecords(str(tmp_path / "out"), images, train_annotations_file=path,
                               keep_empty_train=True, show_progress=False)["train"]
    assert summary["images_written"] == 3


# ---------------------------------------------------------------- 3. splits of another run
def test_split_of_another_label_map_is_refused_same_label_map_is_kept(tmp_path, capsys):
    path, images = _coco(tmp_path)
    out = tmp_path / "out"
    _val(out, images, path)
    before = _snapshot(out)
    other, _ = _coco(tmp_path, cats=({"id": 1, "name": "b"},), name="other.json")
    with pytest.raises(ValueError) as err:
        create_tfrecords(str(out), images, train_annotations_file=other, show_progress=False)
    assert str(err.value) == (
        f"{out} holds val files this run does not rewrite (val-00000-of-00001.tfrecord, "
        "val_annotations.json, val_summary.json) and they were made with dataset 'custom', "
        "1 classes (a), this run has dataset 'custom', 1 classes (b); write to a fresh "
        "-output_dir, remove them, or convert the val split in the same run")
    assert _snapshot(out) == before
    capsys.readouterr()
    create_tfrecords(str(out), images, train_annotations_file=path, show_progress=False)
    assert (f"[val] kept: the 1 existing val shard(s) in {out} were made with the same "
            "label map") in capsys.readouterr().out
    after = _snapshot(out)
    assert {k: v for k, v in after.items() if k.startswith("val")} == {
        k: v for k, v in before.items() if k.startswith("val")}
    assert "train-00000-of-00001.tfrecord" in after
    os.remove(out / "label_map.json")
    with pytest.raises(ValueError, match="there is no readable label_map.json beside them"):
        create_tfrecords(str(out), images, train_annotations_file=path, show_progress=False)


# ---------------------------------------------------------------- 4. killed runs
def test_tmp_files_of_a_killed_run_are_removed_by_the_next_run(tmp_path, capsys):
    path, images = _coco(tmp_path, image_ids=range(1, 7))
    out = tmp_path / "out"
    script = textwrap.dedent(f"""
        import os, signal
        from data import tf_example
        from data.creator import create_tfrecords
        real, calls = tf_example.make_example, []
        def dying(features):
            calls.append(1)
            if len(calls) == 8:  # the 2nd val record: train done, not committed
                os.kill(os.getpid(), signal.SIGKILL)
            return real(features)
        tf_example.make_example = dying
        create_tfrecords({str(out)!r}, {images!r}, {images!r}, {path!r}, {path!r},
                         num_shards=2, show_progress=False)
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    left = sorted(os.listdir(out))
    assert left == ["train-00000-of-00002.tfrecord.tmp", "train-00001-of-00002.tfrecord.tmp",
                    "train_annotations.json.tmp", "train_summary.json.tmp",
                    "val-00000-of-00002.tfrecord.tmp", "val-00001-of-00002.tfrecord.tmp"]
    (out / "notes.tmp").write_text("not ours")
    _val(out, images, path, num_shards=4)
    assert (f"removed 6 temporary file(s) left by an interrupted run in {out}: "
            + ", ".join(left)) in capsys.readouterr().out
    assert sorted(os.listdir(out)) == [
        "label_map.json", "notes.tmp", "val-00000-of-00004.tfrecord",
        "val-00001-of-00004.tfrecord", "val-00002-of-00004.tfrecord",
        "val-00003-of-00004.tfrecord", "val_annotations.json", "val_summary.json"]


# ---------------------------------------------------------------- 5. damaged json files
def _damaged_cases(root):
    path, _ = _coco(root)
    text = open(path).read()
    data = json.loads(text)

    def variant(name, change):
        d = json.loads(text)
        change(d)
        return write_json(root / name, d)

    empty = root / "empty.json"
    empty.write_text("")
    cut = root / "cut.json"
    cut.write_text(text[:40])
    return [
        (str(empty), "is not valid JSON (empty file; line 1 column 1)"),
        (str(cut), "is not valid JSON (Unterminated string starting at"),
        (variant("no_images.json", lambda d: d.pop("images")),
         "is not a COCO instances json: no 'images' key (keys: 'annotations', 'categories')"),
        (variant("no_anns.json", lambda d: d.pop("annotations")),
         "is not a COCO instances json: no 'annotations' key (keys: 'categories', 'images')"),
        (variant("nothing.json", lambda d: d.clear()), "no 'images' key (keys: )"),
        (write_json(root / "list.json", data["images"]),
         "is not a COCO instances json: its top level is a list, expected an object"),
        (variant("cat.json", lambda d: d["categories"].append({"id": 2})),
         ": categories[1] (id 2) has no 'name'"),
        (variant("img.json", lambda d: d["images"][2].pop("file_name")),
         ": images[2] (id 3) has no 'file_name'"),
        (variant("ann.json2", lambda d: d["annotations"][0].pop("category_id")),
         ": annotations[0] (id 1) has no 'category_id'"),
        (variant("type.json", lambda d: d.update(images={"0": data["images"][0]})),
         ": 'images' is a dict, expected a list"),
        (variant("cat_id.json", lambda d: d["annotations"][1].update(category_id="a")),
         ": annotations[1] (id 2) has category_id 'a', expected an integer"),
        (variant("bbox.json", lambda d: d["annotations"][2].update(bbox=[1, 2, 3])),
         ": annotations[2] (id 3) has bbox [1, 2, 3], expected [x, y, width, height]"),
        (variant("name.json", lambda d: d["images"][0].update(file_name=7)),
         ": images[0] (id 1) has file_name 7, expected a file name"),
    ]


def test_damaged_annotation_files_give_one_line_errors(tmp_path):
    images = str(tmp_path / "img")
    for path, fragment in _damaged_cases(tmp_path):
        with pytest.raises(ValueError) as err:
            _val(tmp_path / "out", images, path)
        message = str(err.value)
        assert message.startswith(f"annotations file {path!r}"), message
        assert fragment in message and "\n" not in message, message
    with pytest.raises(FileNotFoundError, match="annotations file not found: '.*gone.json'"):
        _val(tmp_path / "out", images, str(tmp_path / "gone.json"))
    bad_map = tmp_path / "map.json"
    bad_map.write_text('{"classes": [{"id": 1}]}')
    with pytest.raises(ValueError, match=r"label map '.*map.json': classes\[0\] \(id 1\) "
                                         r"has no 'name'"):
        _val(tmp_path / "out", images, str(tmp_path / "ann.json"), label_map=str(bad_map))
    assert not (tmp_path / "out").exists()


def test_cli_prints_one_error_line_and_exits_2(tmp_path):
    path, images = _coco(tmp_path, image_ids=[4, 4])
    args = [sys.executable, "-m", "data.coco_tfrecord_creator", "-output_dir",
            str(tmp_path / "out"), "-val_image_dir", images, "-val_annotations_file", path]
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: annotations file {path!r} has 1 duplicated image id(s): 4; image ids must "
        "be unique")
    assert "Traceback" not in proc.stderr
    debug = subprocess.run(args, cwd=ROOT, capture_output=True, text=True,
                           env=dict(os.environ, YOLACT_DEBUG="1"))
    assert debug.returncode == 1 and "Traceback" in debug.stderr
    assert "ValueError: annotations file" in debug.stderr


# ---------------------------------------------------------------- 6. skip reasons
def test_skip_reasons_name_the_file_and_counts_stay_grouped(tmp_path, capsys):
    path, images = _coco(tmp_path, image_ids=range(1, 7))
    img = tmp_path / "img"
    for n in (0, 1, 2):
        (img / f"{n}.jpg").write_bytes(np.random.default_rng(n).bytes(300))
    jpeg = (img / "3.jpg").read_bytes()
    (img / "3.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    os.remove(img / "4.jpg")
    summary = _val(tmp_path / "out", images, path)["val"]
    assert summary["images_skipped"] == {"unreadable": 3, "truncated": 1, "missing_file": 1}
    details = [s["detail"] for s in summary["skipped"]]
    assert details[:3] == [f"corrupt image {img / f'{n}.jpg'}: cannot identify image file "
                           "(300 bytes)" for n in (0, 1, 2)]
    assert details[3] == f"truncated image {img / '3.jpg'}: Truncated File Read"
    assert details[4] == f"image file not found: {img / '4.jpg'}"
    assert "BytesIO" not in json.dumps(summary)
    printed = capsys.readouterr().out
    assert f"  skipped 0.jpg: corrupt image {img / '0.jpg'}: cannot identify" in printed
    assert "the first 5 skipped images are listed in val_summary.json" in printed
