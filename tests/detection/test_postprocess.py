"""paste_masks (the host-side mask resize inside each box) against the full-image resize
of `postprocess`, and the Predictor's masks against `postprocess` on a real network."""

import numpy as np
import pytest
from keras import ops

from yolact.detection.postprocess import assemble_masks, paste_masks, postprocess, resize_masks


def cropped_masks(count, size=69, k=8, seed=0):
    """float32 [count, size, size]: sigmoid(proto @ coef) cropped by random boxes, some at
    the image border, one tiny and one covering everything."""
    rng = np.random.default_rng(seed)
    proto = rng.standard_normal((1, size, size, k)).astype(np.float32)
    coef = rng.standard_normal((1, count, k)).astype(np.float32)
    centre = rng.uniform(-0.1, 1.1, (1, count, 2))
    half = rng.uniform(0.005, 0.4, (1, count, 2))
    boxes = np.concatenate([centre - half, centre + half], -1).astype(np.float32)
    boxes[0, 0] = [0.0, 0.0, 1.0, 1.0]
    boxes[0, 1] = [0.5, 0.5, 0.5001, 0.5001]
    return np.asarray(assemble_masks(proto, coef, boxes))[0], boxes


@pytest.mark.parametrize("height, width", [(480, 640), (37, 53), (69, 69), (700, 300)])
def test_paste_masks_equals_the_full_image_resize(height, width):
    lowres, _ = cropped_masks(40)
    full = np.asarray(ops.cast(resize_masks(lowres, height, width) > 0.5, "uint8"))
    ours = paste_masks(lowres, height, width)
    assert ours.dtype == np.uint8 and ours.shape == (40, height, width)
    assert 0.01 < full.mean() < 0.5  # masks with real content
    # The same weights; only exact zeros are skipped, so the 0.5 threshold sees the same
    # sums up to float32 summation order (no pixel flipped in these cases).
    np.testing.assert_array_equal(ours, full)


def test_paste_masks_of_empty_and_zero_masks():
    assert paste_masks(np.zeros((0, 10, 10), np.float32), 20, 30).shape == (0, 20, 30)
    out = paste_masks(np.zeros((2, 10, 10), np.float32), 20, 30)
    assert out.shape == (2, 20, 30) and not out.any()


def test_predictor_masks_equal_postprocess(trained):
    from yolact.detection.predictor import Predictor

    cfg, model = trained
    predictor = Predictor(model, cfg, jit_compile=False)
    x = np.random.default_rng(4).standard_normal((1, cfg.IMG_SIZE, cfg.IMG_SIZE, 3))
    det = predictor.network_and_detect(x.astype(np.float32))
    n = int(det["num_detections"][0])
    assert n > 0
    one = {k: det[k][:, :n] for k in ("boxes", "classes", "scores", "coef")}
    one["num_detections"] = det["num_detections"]
    expected = postprocess(one, det["proto"], 90, 120)
    inst = predictor.postprocess_one(det, 0, 90, 120)
    np.testing.assert_array_equal(inst.masks, np.asarray(expected["masks"])[0])
    np.testing.assert_array_equal(inst.boxes, np.asarray(expected["boxes_px"])[0])
