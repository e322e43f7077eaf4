"""yolact/utils/drawing.py: pixel-exact mask blending, boxes, labels, colours."""

import numpy as np
import pytest

from yolact.utils.drawing import class_color, draw_boxes, draw_instances


def scene():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    masks = np.zeros((2, 60, 80), np.uint8)
    masks[0, 10:30, 5:40] = 1
    masks[1, 25:50, 30:70] = 1  # overlaps mask 0 on rows 25..29, cols 30..39
    boxes = np.array([[5, 10, 40, 30], [30, 25, 70, 50]], np.float32)
    return image, masks, boxes, np.array([0, 2])


def test_masks_only_change_exactly_the_masked_pixels():
    image, masks, boxes, classes = scene()
    out = draw_instances(image, boxes, classes, None, masks, ["a", "b", "c"],
                         show_boxes=False, show_labels=False, alpha=0.45)
    covered = masks.any(0)
    np.testing.assert_array_equal(out[~covered], image[~covered])
    # numpy reference: blend mask 0 then mask 1 on top, round once at the end.
    ref = image.astype(np.float64)
    for mask, cid in zip(masks.astype(bool), classes):
        ref[mask] = 0.55 * ref[mask] + 0.45 * np.array(class_color(int(cid)), np.float64)
    ref = np.clip(np.round(ref), 0, 255).astype(np.uint8)
    np.testing.assert_allclose(out.astype(int), ref.astype(int), atol=1)
    changed = (out != image).any(-1)
    assert changed[covered].mean() > 0.95  # (a pixel equal to its blend could stay)
    assert image.flags.writeable and not np.shares_memory(out, image)


def test_boxes_and_labels_are_drawn_in_class_colour():
    image = np.full((100, 120, 3), 30, np.uint8)
    boxes = np.array([[20, 40, 80, 90]], np.float32)
    out = draw_instances(image, boxes, [1], [0.93], None, ["cat", "dog"], show_labels=False)
    color = class_color(1)
    np.testing.assert_array_equal(out[40, 20:81], np.tile(color, (61, 1)))  # top edge
    np.testing.assert_array_equal(out[40:91, 80], np.tile(color, (51, 1)))  # right edge
    np.testing.assert_array_equal(out[60, 40], [30, 30, 30])  # inside untouched
    labelled = draw_instances(image, boxes, [1], [0.93], None, ["cat", "dog"], show_boxes=False)
    above = (labelled[:40] != 30).any(-1)
    assert above.any() and not (labelled[41:] != 30).any()  # tag sits above the box
    assert (labelled[:40][above] == color).all(-1).mean() > 0.3  # filled in the class colour


def test_class_colours_are_fixed_and_distinct():
    colours = [class_color(i) for i in range(80)]
    assert colours == [class_color(i) for i in range(80)]
    assert len(set(colours)) == 80
    for i in range(79):  # neighbours differ clearly
        assert np.abs(np.subtract(colours[i], colours[i + 1])).sum() > 60


def test_draw_boxes_and_input_checks():
    image = np.zeros((20, 20, 3), np.uint8)
    out = draw_boxes(image, [[2, 3, 10, 12]], color=(255, 0, 0))
    np.testing.assert_array_equal(out[3, 2:11], np.tile([255, 0, 0], (9, 1)))
    assert out[7, 6].tolist() == [0, 0, 0] and (image == 0).all()
    with pytest.raises(ValueError, match="uint8"):
        draw_instances(image.astype(np.float32), np.zeros((0, 4)), [])
    with pytest.raises(ValueError, match=r"masks must be \[N, H, W\]"):
        draw_instances(image, [[0, 0, 5, 5]], [0], masks=np.zeros((1, 10, 10)))
