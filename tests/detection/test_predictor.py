"""inference.py and yolact/detection/runner.py: folders with bad files, JSON/PNG round
trips against the in-process Predictor, single-file errors, video in and out.

The model is the 'tiny' preset with the official-format fixture checkpoint
(random official init, perturbed: scores up to ~0.9 on smooth noise images),
given to the CLI as a .pth, so the official-weights path is exercised too.
"""

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from tests import REPO
from yolact.utils.polygons import polygons_to_mask

ROOT = str(REPO)
WEIGHTS = os.path.join(ROOT, "tests", "fixtures", "weights.pth")
THRESHOLD, TOP_K = 0.3, 5


def smooth_image(seed, height, width):
    """uint8 RGB [H, W, 3] blurred noise (JPEG-friendly, non-trivial)."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    return cv2.GaussianBlur(image, (9, 9), 3)


@pytest.fixture(scope="module")
def setup():
    """(cfg, weights path, in-process Predictor without XLA): the tiny preset with the
    official-format fixture checkpoint (tests/fixtures/weights.pth), loaded the way the
    CLI loads it."""
    from config import get_config
    from yolact.detection.predictor import Predictor
    from yolact.modeling import factory
    from yolact.weights.checkpoints import load_weights

    cfg = get_config("tiny")
    model = factory.build_model(cfg)
    load_weights(model, WEIGHTS)
    return cfg, WEIGHTS, Predictor(model, cfg, jit_compile=False)


def reference(predictor, image):
    """Predictor.predict, then the display filter (score > threshold, top_k)."""
    inst = predictor.predict([image])[0]
    keep = np.nonzero(inst.scores > THRESHOLD)[0][:TOP_K]
    return inst.select(keep)


def run_cli(args, timeout=240):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", KERAS_BACKEND="tensorflow")
    return subprocess.run([sys.executable, os.path.join(ROOT, "inference.py")] + args,
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def test_folder_skips_corrupt_file_and_round_trips(setup, tmp_path):
    from pycocotools import mask as mask_util

    from yolact.utils.drawing import draw_instances

    cfg, weights, predictor = setup
    folder, out = tmp_path / "images", tmp_path / "out"
    folder.mkdir()
    images = {"a.png": smooth_image(0, 100, 140), "b.jpg": smooth_image(1, 90, 60)}
    for name, image in images.items():
        cv2.imwrite(str(folder / name), image[..., ::-1])
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    (folder / "notes.txt").write_text("not an image")

    proc = run_cli(["-name", "tiny", "-weights", weights, "-input", str(folder),
                    "-output_dir", str(out), "-score_threshold", str(THRESHOLD),
                    "-top_k", str(TOP_K), "-batch_size", "3", "-save_json", "-save_masks",
                    "-save_txt", "-nojit_compile"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    assert "2 processed, 1 skipped" in log
    assert "broken.jpg" in log and "cannot read image" in log

    results = json.loads((out / "results.json").read_text())
    assert [c["name"] for c in results["categories"]] == list(cfg.CLASS_NAMES)
    assert sorted(im["file_name"] for im in results["images"]) == ["a.png", "b.jpg"]
    total = 0
    for entry in results["images"]:
        name = entry["file_name"]
        # the CLI read the file with OpenCV: the reference reads it the same way
        image = cv2.imread(str(folder / name))[..., ::-1]
        ref = reference(predictor, image)
        assert len(ref) > 0 and ref.masks.sum() > 0  # the test exercises real masks
        assert (entry["height"], entry["width"]) == image.shape[:2]
        anns = [a for a in results["annotations"] if a["image_id"] == entry["id"]]
        masks = np.stack([mask_util.decode(a["segmentation"]) for a in anns])  # [N, H, W]
        classes = np.array([a["category_id"] - 1 for a in anns])
        scores = np.array([a["score"] for a in anns], np.float32)
        boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)])
        # the in-process Predictor ran a batch of 1, the CLI a batch of 3: float noise only
        np.testing.assert_array_equal(classes, ref.classes)
        np.testing.assert_allclose(scores, ref.scores, atol=1e-5)
        assert np.abs(boxes - ref.boxes).max() <= 1
        assert int(np.sum(masks != ref.masks)) <= 5
        assert [a["category_name"] for a in anns] == [cfg.CLASS_NAMES[c] for c in classes]
        assert [a["area"] for a in anns] == [int(m.sum()) for m in masks]
        # polygons (JSON) and YOLO-seg labels (-save_txt) trace the same masks
        for a, m in zip(anns, masks):
            back = polygons_to_mask(a["polygons"], *m.shape)
            if not m.any():  # an empty mask has no polygon
                assert a["polygons"] == []
                continue
            assert (back & m).sum() / (back | m).sum() > 0.9
        labels = (out / "labels" / f"{os.path.splitext(name)[0]}.txt").read_text().splitlines()
        assert [int(line.split()[0]) for line in labels] == [
            c for c, a in zip(classes, anns) if a["polygons"]]
        # PNG masks and the drawing are exactly those of the JSON instances
        pngs = sorted((out / "masks" / name).iterdir())
        assert len(pngs) == len(anns)
        for k, png in enumerate(pngs):
            assert png.name.startswith(f"{k:03d}_{cfg.CLASS_NAMES[classes[k]]}_")
            np.testing.assert_array_equal(cv2.imread(str(png), cv2.IMREAD_UNCHANGED),
                                          masks[k] * 255)
        drawn = cv2.imread(str(out / name))[..., ::-1]
        assert drawn.shape == image.shape
        if name.endswith(".png"):  # lossless
            expected = draw_instances(image, boxes, classes, scores, masks, cfg.CLASS_NAMES)
            np.testing.assert_array_equal(drawn, expected)
        total += len(ref)
    assert len(results["annotations"]) == total
    assert not (out / "broken.jpg").exists() and not (out / "notes.txt").exists()


def test_single_corrupt_file_is_a_clear_error(setup, tmp_path):
    _, weights, _ = setup
    bad = tmp_path / "photo.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    proc = run_cli(["-name", "tiny", "-weights", weights, "-input", str(bad),
                    "-output_dir", str(tmp_path / "out")])
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: cannot read image") and str(bad) in last
    assert "Traceback" not in proc.stderr


def test_folder_without_readable_images_raises(setup, tmp_path):
    from yolact.detection.runner import OutputOptions, run_inference
    from yolact.utils.media import ImageReadError

    _, _, predictor = setup
    (tmp_path / "x.jpg").write_bytes(b"")
    (tmp_path / "y.png").write_bytes(b"garbage")
    with pytest.raises(ImageReadError, match=r"no readable image .* 2 unreadable"):
        run_inference(predictor, str(tmp_path), str(tmp_path / "out"), OutputOptions(),
                      progress=False)
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        run_inference(predictor, str(tmp_path / "missing.jpg"), str(tmp_path / "out"),
                      OutputOptions(), progress=False)
    (tmp_path / "clip.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 broken")
    with pytest.raises(OSError, match="clip.mp4"):
        run_inference(predictor, str(tmp_path / "clip.mp4"), str(tmp_path / "out"),
                      OutputOptions(), progress=False)


def test_video_round_trip(setup, tmp_path):
    from yolact.detection.predictor import Predictor
    from yolact.detection.runner import OutputOptions, run_inference

    cfg, _, predictor = setup
    height, width, num_frames = 72, 96, 5
    source = str(tmp_path / "clip.mp4")
    writer = cv2.VideoWriter(source, cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (width, height))
    for i in range(num_frames):
        writer.write(smooth_image(10 + i, height, width)[..., ::-1])
    writer.release()
    out = tmp_path / "out"
    options = OutputOptions(score_threshold=THRESHOLD, top_k=TOP_K, save_json=True)
    # a Predictor of its own: batches of 2 (the last one padded) -> one traced shape
    video_predictor = Predictor(predictor.model, cfg, jit_compile=False)
    summary = run_inference(video_predictor, source, str(out), options, batch_size=2,
                            progress=False)
    assert summary["kind"] == "video" and summary["num_frames"] == num_frames

    capture = cv2.VideoCapture(str(out / "clip.mp4"))
    assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(10.0)
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    assert len(frames) == num_frames
    assert all(f.shape == (height, width, 3) for f in frames)

    results = json.loads((out / "results.json").read_text())
    assert [im["frame"] for im in results["images"]] == list(range(num_frames))
    # the first frame's detections are those of the Predictor on the decoded frame
    capture = cv2.VideoCapture(source)
    first = capture.read()[1][..., ::-1]
    capture.release()
    ref = reference(predictor, first)
    anns = [a for a in results["annotations"] if a["image_id"] == 0]
    assert [a["category_id"] - 1 for a in anns] == ref.classes.tolist()
    np.testing.assert_allclose([a["score"] for a in anns], ref.scores, atol=1e-5)
    assert not [p for p in os.listdir(out) if p.startswith(".tmp")]
