"""The pixel limit (MAX_IMAGE_PIXELS / -max_pixels, 50 megapixels by default) on every
image entry point: small files holding huge images are refused with an error naming the
limit before any large allocation, under a memory cap (RLIMIT_AS in a subprocess) so
that a decode or a full-size mask of them would fail differently; serving's full-size
masks take only the detections found."""

import json
import os
import subprocess
import sys
import textwrap
import zlib

import numpy as np
import pytest

from tests import REPO

ROOT = str(REPO)
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", KERAS_BACKEND="tensorflow",
           PYTHONPATH=ROOT)


def blank_png(height: int, width: int) -> bytes:
    """A 1-bit gray PNG of zeros, written row by row (a few hundred kB for 10^8 pixels)."""
    def chunk(kind, data):
        return (len(data).to_bytes(4, "big") + kind + data
                + zlib.crc32(kind + data).to_bytes(4, "big"))

    packer = zlib.compressobj(9)
    row = b"\0" * (1 + (width + 7) // 8)
    body = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([1, 0, 0, 0, 0])
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body)
            + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def pngs(tmp_path_factory):
    work = tmp_path_factory.mktemp("bombs")
    (work / "p100m.png").write_bytes(blank_png(10000, 10000))  # 100 MP, 1.2 GB as float
    (work / "p900m.png").write_bytes(blank_png(30000, 30000))  # 900 MP, 2.7 GB decoded
    assert os.path.getsize(work / "p900m.png") < 1_500_000
    return work


def run_capped(script: str, cap_gb: float, *args):
    """Run `script` in a fresh Python whose address space is capped at cap_gb GB more
    than it uses when the script calls cap() (so imports and model building are free)."""
    prelude = textwrap.dedent(f"""
        import resource
        def cap():
            with open("/proc/self/status") as f:
                size = next(int(l.split()[1]) for l in f if l.startswith("VmSize:")) * 1024
            limit = size + int({cap_gb} * 2**30)
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    """)
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(script), *args],
                          cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300, check=False)


def test_read_image_refuses_before_decoding_under_a_memory_cap(pngs):
    proc = run_capped("""
        import sys
        from yolact.utils.media import ImageTooLargeError, read_image
        cap()
        for name in ("p100m.png", "p900m.png"):
            try:
                read_image(f"{sys.argv[1]}/{name}")
                print(name, "read")
            except ImageTooLargeError as err:
                print(name, "refused:", err)
    """, 0.5, str(pngs))
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert "p100m.png refused:" in lines[0] and "is 10000x10000 pixels (100000000), more " \
        "than the limit of 50000000 pixels (-max_pixels / MAX_IMAGE_PIXELS" in lines[0]
    assert "p900m.png refused:" in lines[1] and "limit of 50000000 pixels" in lines[1]


def test_inference_cli_gives_one_error_line(pngs, tmp_path):
    weights = os.path.join(ROOT, "tests", "fixtures", "weights.pth")
    for name, flags in (("p900m.png", []), ("p100m.png", []),
                        ("p100m.png", ["-max_pixels", "1000"])):
        proc = subprocess.run(
            [sys.executable, "inference.py", "-name", "tiny", "-weights", weights, "-input",
             str(pngs / name), "-output_dir", str(tmp_path / "out"), *flags],
            cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300, check=False)
        assert proc.returncode == 2, proc.stderr[-2000:]
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        assert name in errors[0] and "more than the limit of" in errors[0]
        assert not (tmp_path / "out").exists()


def test_predictor_and_video_frames_respect_the_limit(tmp_path):
    import cv2

    from config import get_config
    from tests.serving.stub import stub_model
    from yolact.detection.predictor import Predictor
    from yolact.detection.runner import OutputOptions, run_inference
    from yolact.utils.media import ImageTooLargeError

    cfg = get_config("tiny")
    assert cfg.MAX_IMAGE_PIXELS == 50_000_000
    predictor = Predictor(stub_model(cfg), cfg, jit_compile=False, max_pixels=40 * 50)
    assert len(predictor.predict([np.zeros((40, 50, 3), np.uint8)])) == 1
    with pytest.raises(ImageTooLargeError, match=r"Predictor.predict: image 1 is 50x41 "
                       r"pixels \(2050\), more than the limit of 2000 pixels"):
        predictor.predict([np.zeros((40, 50, 3), np.uint8), np.zeros((41, 50, 3), np.uint8)])
    video = str(tmp_path / "clip.avi")
    writer = cv2.VideoWriter(video, cv2.VideoWriter_fourcc(*"MJPG"), 5, (64, 48))
    for _ in range(3):
        writer.write(np.zeros((48, 64, 3), np.uint8))
    writer.release()
    with pytest.raises(ImageTooLargeError, match="the frames of 'clip.avi' is 64x48"):
        run_inference(predictor, video, str(tmp_path / "out"), OutputOptions(),
                      progress=False)


def test_serving_refuses_a_huge_png_and_sizes_masks_by_detections(pngs, tmp_path):
    from config import get_config
    from tests.serving.stub import stub_model
    from yolact.serving.saved_model import build_archive

    cfg = get_config("tiny")
    build_archive(stub_model(cfg), cfg).write_out(str(tmp_path / "saved"), verbose=False)
    import cv2

    cv2.imwrite(str(tmp_path / "small.png"), np.full((90, 70, 3), 200, np.uint8))
    proc = run_capped("""
        import json, sys
        import numpy as np
        import tensorflow as tf
        loaded = tf.saved_model.load(sys.argv[1] + "/saved")
        small = open(sys.argv[1] + "/small.png", "rb").read()
        big = open(sys.argv[2] + "/p100m.png", "rb").read()
        out = {}
        serve = loaded.signatures["serving_default"]
        serve(images=tf.constant([small]))  # traced before the cap
        cap()
        result = serve(images=tf.constant([small, small]))
        out["shape"] = list(result["masks"].shape)
        out["num"] = result["num_detections"].numpy().tolist()
        for name in ("serving_default", "serving_compact"):
            try:
                loaded.signatures[name](images=tf.constant([small, big]))
                out[name] = None
            except tf.errors.InvalidArgumentError as err:
                out[name] = err.message
        try:
            loaded.signatures["serving_preprocessed"](
                images=tf.zeros([1, 128, 128, 3]),
                image_sizes=tf.constant([[10000, 10000]], tf.int32))
            out["serving_preprocessed"] = None
        except tf.errors.InvalidArgumentError as err:
            out["serving_preprocessed"] = err.message
        print(json.dumps(out))
    """, 1.0, str(tmp_path), str(pngs))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.splitlines()[-1])
    assert out["shape"] == [2, max(out["num"]), 90, 70] and max(out["num"]) < 100
    for name in ("serving_default", "serving_compact"):
        assert (f"{name}: the image at batch index 1 of 2 is 10000x10000 pixels "
                "(100000000), more than the limit of 50000000 pixels (MAX_IMAGE_PIXELS of "
                "the exported config.json") in out[name], out[name]
    assert "more than 50000000 pixels" in out["serving_preprocessed"]
