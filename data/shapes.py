"""The embedded synthetic instance-segmentation dataset, written in COCO format.

`python -m data.shapes -output_dir D -num_train N -num_val M -seed S` writes
D/images/{train,val}/*.jpg and D/annotations/{train,val}.json, ready for
`python -m data.coco_tfrecord_creator`.

Each image has a textured background (noise, gradient or stripes) and objects of the
classes config.SHAPES_CLASSES drawn in random order. Masks are the VISIBLE parts: an
object drawn later hides what lies below it, and a placement that would hide more than
half of an earlier object is rejected, so every annotated object stays mostly visible
and the masks of one image never overlap. Segmentations are laid out as COCO's own
annotation files are (what COCO tools such as TF Model Garden's create_coco_tf_record
expect): polygons for every non-crowd object, uncompressed RLE (counts a list) for crowd
regions (iscrowd=1: a cluster of small shapes under one mask). An unoccluded object gets
the polygon it was drawn from (the image is painted with pycocotools' own rasterization
of it, so it decodes exactly to the drawn pixels); the visible part of an occluded one is
traced (`_visible_polygons`: one polygon per connected piece, holes cut open, degenerate
pieces dropped), and its area and bbox are those of the traced polygons as pycocotools
rasterizes them. Image 0 of each split with >= 2 images has no object. Everything is a
function of the seed.
"""

import json
import os

import cv2
import numpy as np
from absl import app, flags
from pycocotools import mask as mask_utils
from tqdm import tqdm

from data.classes import SHAPES_CLASSES
from yolact.utils.io import write_json_atomic
from yolact.utils.polygons import mask_to_polygons, polygons_to_mask

SPLITS = ("train", "val")
_MIN_VISIBLE = 0.5  # fraction of an object's own area that must stay visible.
_VERTICES = 64  # polygon vertices of circles and ellipses.


def _unit_shape(name: str, rng: np.random.Generator) -> np.ndarray:
    """Vertices float64 [V, 2] of a shape of diameter ~1 centred on 0, randomly rotated."""
    t = np.linspace(0.0, 2 * np.pi, _VERTICES, endpoint=False)
    if name == "circle":
        pts = 0.5 * np.stack([np.cos(t), np.sin(t)], 1)
    elif name == "ellipse":
        pts = 0.5 * np.stack([np.cos(t), rng.uniform(0.35, 0.6) * np.sin(t)], 1)
    elif name == "rectangle":
        w, h = rng.uniform(0.45, 0.85, 2)
        pts = np.array([[-w, -h], [w, -h], [w, h], [-w, h]]) / 2
    elif name == "triangle":
        a = np.deg2rad([90, 210, 330] + rng.uniform(-12, 12, 3))
        pts = 0.5 * np.stack([np.cos(a), np.sin(a)], 1)
    elif name == "star":
        a = np.linspace(0.0, 2 * np.pi, 10, endpoint=False)
        r = np.where(np.arange(10) % 2 == 0, 0.5, 0.5 * rng.uniform(0.38, 0.5))
        pts = np.stack([r * np.cos(a), r * np.sin(a)], 1)
    else:
        raise ValueError(f"unknown shape {name!r}; expected one of {SHAPES_CLASSES}")
    angle = rng.uniform(0, 2 * np.pi)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return pts @ rot.T


def _place(pts: np.ndarray, size: float, h: int, w: int, rng, centre=None, spread=None):
    """Scale unit vertices to `size` px and move them inside the image; None if too big.

    Vertices are rounded to quarter pixels (exact in binary and in the JSON text).
    """
    pts = pts * size
    lo, hi = pts.min(0), pts.max(0)
    if centre is None:
        bounds = [(-lo[0], w - hi[0]), (-lo[1], h - hi[1])]
    else:
        bounds = [(max(-lo[0], centre[0] - spread), min(w - hi[0], centre[0] + spread)),
                  (max(-lo[1], centre[1] - spread), min(h - hi[1], centre[1] + spread))]
    if any(b0 >= b1 for b0, b1 in bounds):
        return None
    offset = [rng.uniform(b0, b1) for b0, b1 in bounds]
    pts = np.round((pts + offset) * 4) / 4
    return np.clip(pts, 0, [w, h])


def _rasterize(poly: np.ndarray, h: int, w: int):
    """Polygon [V, 2] (pixels) -> (y0, x0, bool mask [hh, ww]) of its bounding window.

    pycocotools rasterizes the whole image (its rounding is not translation invariant,
    so a polygon rasterized in a shifted window could differ by a pixel); the window
    is then cut out so later steps only touch the object's neighbourhood.
    """
    full = mask_utils.decode(mask_utils.frPyObjects([poly.reshape(-1).tolist()], h, w))
    x0, y0 = (max(int(v) - 1, 0) for v in poly.min(0))
    x1, y1 = min(int(poly[:, 0].max()) + 2, w), min(int(poly[:, 1].max()) + 2, h)
    window = full[y0:y1, x0:x1, 0].astype(bool)
    if int(window.sum()) != int(full.sum()):
        raise AssertionError(f"polygon {poly.tolist()} rasterized outside its window")
    return y0, x0, window


def _background(rng, h: int, w: int):
    """Textured background uint8 [h, w, 3] and the list of its main colours."""
    c1, c2 = rng.integers(0, 256, (2, 3)).astype(np.float32)
    kind = rng.integers(3)
    a = rng.uniform(0, np.pi)
    if kind == 0:  # smooth blotchy noise around one colour
        low = c1 + rng.uniform(-1, 1, (h // 32 + 2, w // 32 + 2, 3)) * rng.uniform(15, 40)
        low = np.clip(low, 0, 255).astype(np.uint8)
        img = cv2.resize(low, (w, h), interpolation=cv2.INTER_LINEAR)
        colours = [c1]
    elif kind == 1:  # linear gradient (computed at 1/8 size; bilinear resize keeps it linear)
        hs, ws = h // 8 + 2, w // 8 + 2
        proj = np.add.outer(np.arange(hs) * np.sin(a), np.arange(ws) * np.cos(a))
        t = ((proj - proj.min()) / max(float(np.ptp(proj)), 1e-6))[..., None]
        low = (c1 * (1 - t) + c2 * t).astype(np.uint8)
        img = cv2.resize(low, (w, h), interpolation=cv2.INTER_LINEAR)
        colours = [c1, c2]
    else:  # stripes
        proj = np.add.outer(np.arange(h, dtype=np.float32) * np.float32(np.sin(a)),
                            np.arange(w, dtype=np.float32) * np.float32(np.cos(a)))
        phase = proj * np.float32(1.0 / rng.uniform(8, 40))
        on = ((phase - np.floor(phase)) < rng.uniform(0.3, 0.7)).astype(np.uint8)
        table = np.zeros((256, 1, 3), np.uint8)
        table[0, 0], table[1, 0] = c2, c1
        img = cv2.LUT(cv2.merge([on, on, on]), table)
        colours = [c1, c2]
    amp = int(rng.integers(3, 12))  # pixel grain, uniform in [-amp, amp] (saturating)
    grain = rng.integers(0, 2 * amp + 1, (h, w), dtype=np.uint8)
    img = cv2.subtract(cv2.add(np.ascontiguousarray(img), cv2.merge([grain] * 3)),
                       (amp, amp, amp, 0))
    return img, colours


def _colour(rng, avoid: list, min_dist: float = 100.0) -> np.ndarray:
    """A random RGB colour at least `min_dist` from each colour in `avoid` (best of 30)."""
    best, best_d = None, -1.0
    for _ in range(30):
        c = rng.integers(0, 256, 3).astype(np.float32)
        d = min((float(np.linalg.norm(c - a)) for a in avoid), default=1e9)
        if d > best_d:
            best, best_d = c, d
        if d >= min_dist:
            break
    return best


class _Canvas:
    """Image plus an owner map (0 = background, k = layer k) for visible-part masks."""

    def __init__(self, image: np.ndarray):
        self.image = image
        self.owner = np.zeros(image.shape[:2], np.int32)
        self.full_area = [0]  # per layer; index 0 is the background
        self.visible_area = [0]
        self.layers = []  # dicts: class, crowd flag, polygon or None, window

    def _covered(self, y0: int, x0: int, mask: np.ndarray) -> np.ndarray:
        win = self.owner[y0:y0 + mask.shape[0], x0:x0 + mask.shape[1]]
        return np.bincount(win[mask], minlength=len(self.full_area))

    def fits(self, y0: int, x0: int, mask: np.ndarray) -> bool:
        """True if covering `mask` keeps >= _MIN_VISIBLE of every earlier layer visible."""
        covered = self._covered(y0, x0, mask)
        left = np.asarray(self.visible_area) - covered
        return bool(np.all(left[1:] >= _MIN_VISIBLE * np.asarray(self.full_area[1:])))

    def add(self, y0: int, x0: int, mask: np.ndarray, colour, layer: dict) -> None:
        """Paint `mask` (window at y0, x0) on top; colour None leaves the pixels as they are."""
        covered = self._covered(y0, x0, mask)
        self.visible_area = (np.asarray(self.visible_area) - covered).tolist()
        self.layers.append(dict(layer, window=(y0, x0) + mask.shape))
        self.full_area.append(int(mask.sum()))
        self.visible_area.append(int(mask.sum()))
        sl = np.s_[y0:y0 + mask.shape[0], x0:x0 + mask.shape[1]]
        self.owner[sl][mask] = len(self.layers)
        if colour is not None:
            self.image[sl][mask] = colour

    def visible(self, k: int):
        """(y0, x0, bool mask) of layer k's visible part, in its window."""
        y0, x0, hh, ww = self.layers[k - 1]["window"]
        return y0, x0, self.owner[y0:y0 + hh, x0:x0 + ww] == k


def _add_crowd(canvas: _Canvas, rng) -> None:
    """A cluster of small shapes of one class, annotated as one crowd region."""
    h, w = canvas.owner.shape
    side = min(h, w)
    cls = int(rng.integers(len(SHAPES_CLASSES)))
    spread = side * rng.uniform(0.1, 0.2)
    centre = (rng.uniform(0.3, 0.7) * w, rng.uniform(0.3, 0.7) * h)
    union = np.zeros((h, w), bool)
    for _ in range(int(rng.integers(6, 13))):
        pts = _place(_unit_shape(SHAPES_CLASSES[cls], rng), side * rng.uniform(0.05, 0.09),
                     h, w, rng, centre, spread)
        if pts is None:
            continue
        y0, x0, m = _rasterize(pts, h, w)
        sl = np.s_[y0:y0 + m.shape[0], x0:x0 + m.shape[1]]
        canvas.image[sl][m] = _colour(rng, [])
        union[sl] |= m
    if not union.any():
        return
    k = max(3, int(side * 0.06) | 1)
    region = cv2.morphologyEx(union.astype(np.uint8), cv2.MORPH_CLOSE,
                              cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))) > 0
    canvas.add(0, 0, region | union, None, {"class": cls, "crowd": True, "poly": None})


def _add_objects(canvas: _Canvas, rng, count: int, size_range, bg_colours) -> None:
    h, w = canvas.owner.shape
    side = min(h, w)
    colours = list(bg_colours)
    for _ in range(count):
        for _attempt in range(15):
            cls = int(rng.integers(len(SHAPES_CLASSES)))
            pts = _place(_unit_shape(SHAPES_CLASSES[cls], rng),
                         side * rng.uniform(*size_range), h, w, rng)
            if pts is None:
                continue
            y0, x0, mask = _rasterize(pts, h, w)
            if mask.sum() >= 16 and canvas.fits(y0, x0, mask):
                colours.append(_colour(rng, colours))
                canvas.add(y0, x0, mask, colours[-1],
                           {"class": cls, "crowd": False, "poly": pts})
                break


def _uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO uncompressed RLE (column-major runs, starting with zeros) of a bool mask."""
    flat = mask.ravel(order="F").astype(np.int8)
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0] == 1:
        counts = [0] + counts
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": counts}


def _hole_free_parts(mask: np.ndarray) -> list:
    """bool [h, w] -> bool masks [h, w] whose union is `mask`, none with a hole.

    A polygon cannot hold a hole (pycocotools' annToMask unions an object's polygons), so
    each hole (a 4-connected background region not touching the border, as findContours
    sees it) is cut open: the part is split at a column through a hole pixel into the
    columns left of it and the rest, and each side is looked at again.
    """
    parts, todo = [], [mask]
    while todo:
        part = todo.pop()
        count, labels = cv2.connectedComponents((~part).astype(np.uint8), connectivity=4)
        border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0],
                                           labels[:, -1]]))
        holes = np.setdiff1d(np.arange(1, count), border)
        if not len(holes):
            parts.append(part)
            continue
        xs = np.nonzero(labels == holes[0])[1]
        cut = int(xs[len(xs) // 2])
        left, right = part.copy(), part.copy()
        left[:, cut:] = False
        right[:, :cut] = False
        todo += [m for m in (left, right) if m.any()]
    return parts


def _visible_polygons(vis: np.ndarray, y0: int, x0: int, h: int, w: int) -> list:
    """COCO polygons (image pixels) of a visible part bool [hh, ww] at (y0, x0): one per
    connected piece of each hole-free part (`mask_to_polygons`), without the degenerate
    ones (fewer than 3 points, or no pixel once rasterized); the extent box of the part
    when nothing is left."""
    polygons = []
    for part in _hole_free_parts(vis):
        for poly in mask_to_polygons(part):
            xy = np.asarray(poly).reshape(-1, 2) + [x0, y0]
            poly = [round(float(v), 2) for v in xy.reshape(-1)]
            if polygons_to_mask([poly], h, w).any():
                polygons.append(poly)
    if not polygons:
        ys, xs = np.nonzero(vis)
        x1, y1, x2, y2 = xs.min() + x0, ys.min() + y0, xs.max() + 1 + x0, ys.max() + 1 + y0
        polygons = [[float(v) for v in (x1, y1, x2, y1, x2, y2, x1, y2)]]
    return polygons


def _annotations(canvas: _Canvas, image_id: int, next_id: int) -> list:
    """COCO annotations of the visible part of every layer: polygons for objects,
    uncompressed RLE for crowds; area and bbox those of the segmentation as pycocotools
    decodes it."""
    h, w = canvas.owner.shape
    anns = []
    for k, layer in enumerate(canvas.layers, start=1):
        y0, x0, vis = canvas.visible(k)
        if layer["crowd"]:
            full = np.zeros((h, w), bool)
            full[y0:y0 + vis.shape[0], x0:x0 + vis.shape[1]] = vis
            seg = _uncompressed_rle(full)
        elif int(vis.sum()) == canvas.full_area[k]:  # unoccluded: the drawn polygon
            seg = [layer["poly"].reshape(-1).tolist()]
            full = polygons_to_mask(seg, h, w) > 0
        else:
            seg = _visible_polygons(vis, y0, x0, h, w)
            full = polygons_to_mask(seg, h, w) > 0
        ys, xs = np.nonzero(full.any(1))[0], np.nonzero(full.any(0))[0]
        anns.append({
            "id": next_id + len(anns), "image_id": image_id,
            "category_id": layer["class"] + 1, "segmentation": seg,
            "area": float(full.sum()),
            "bbox": [float(xs[0]), float(ys[0]), float(xs[-1] + 1 - xs[0]),
                     float(ys[-1] + 1 - ys[0])],
            "iscrowd": int(layer["crowd"]),
        })
    return anns


def make_image(seed: int, split_index: int, index: int, min_size: int, max_size: int,
               empty: bool = False, crowd_prob: float = 0.06, many_prob: float = 0.1,
               fixed_size=None, num_objects=(1, 6), object_size=(0.15, 0.6)):
    """One synthetic image: its _Canvas (image uint8 RGB [H, W, 3], owner map, layers)
    and its random generator (state after drawing; the annotations use no randomness).

    num_objects (lo, hi): objects drawn when the image is not a "many" image;
    object_size (lo, hi): their size as a fraction of the shorter image side.
    """
    rng = np.random.default_rng([seed, split_index, index])
    h, w = (int(v) for v in rng.integers(min_size, max_size + 1, 2))
    if fixed_size is not None:
        h, w = fixed_size
    image, bg_colours = _background(rng, h, w)
    canvas = _Canvas(image)
    if not empty:
        if rng.random() < crowd_prob:
            _add_crowd(canvas, rng)
        if rng.random() < many_prob:
            _add_objects(canvas, rng, int(rng.integers(8, 16)), (0.1, 0.25), bg_colours)
        else:
            _add_objects(canvas, rng, int(rng.integers(num_objects[0], num_objects[1] + 1)),
                         object_size, bg_colours)
    return canvas, rng


def generate(output_dir: str, num_train: int, num_val: int, seed: int = 0,
             min_size: int = 320, max_size: int = 640, jpeg_quality: int = 90,
             crowd_prob: float = 0.06, many_prob: float = 0.1, fixed_size=None,
             show_progress: bool = True, num_objects=(1, 6),
             object_size=(0.15, 0.6)) -> dict:
    """Write the dataset; returns {split: {"images": n, "annotations": n}}.

    Image sides are drawn independently in [min_size, max_size], unless fixed_size =
    (height, width) is given. crowd_prob / many_prob: chance that an image gets a crowd
    region / 8-15 smaller objects instead of num_objects = (lo, hi) objects whose size
    is drawn in object_size = (lo, hi) times the shorter side.
    """
    if not 32 <= min_size <= max_size:
        raise ValueError(f"need 32 <= min_size <= max_size, got {min_size}, {max_size}")
    if not 1 <= num_objects[0] <= num_objects[1]:
        raise ValueError(f"need 1 <= lo <= hi objects per image, got {tuple(num_objects)}")
    if not 0.02 <= object_size[0] <= object_size[1] <= 1.0:
        raise ValueError(f"need 0.02 <= lo <= hi <= 1 for the object size (fraction of the "
                         f"shorter side), got {tuple(object_size)}")
    for name, prob in (("crowd_prob", crowd_prob), ("many_prob", many_prob)):
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {prob}")
    if num_train < 0 or num_val < 0:
        raise ValueError(f"image counts must be >= 0, got {num_train}, {num_val}")
    categories = [{"id": i + 1, "name": n, "supercategory": "shape"}
                  for i, n in enumerate(SHAPES_CLASSES)]
    os.makedirs(os.path.join(output_dir, "annotations"), exist_ok=True)
    stats = {}
    for split_index, (split, num) in enumerate(zip(SPLITS, (num_train, num_val))):
        image_dir = os.path.join(output_dir, "images", split)
        os.makedirs(image_dir, exist_ok=True)
        images, anns = [], []
        for i in tqdm(range(num), desc=f"shapes {split}", disable=not show_progress):
            canvas, _ = make_image(seed, split_index, i, min_size, max_size,
                                     empty=(i == 0 and num >= 2), crowd_prob=crowd_prob,
                                     many_prob=many_prob, fixed_size=fixed_size,
                                     num_objects=num_objects, object_size=object_size)
            name = f"{split}_{i:06d}.jpg"
            h, w = canvas.owner.shape
            cv2.imwrite(os.path.join(image_dir, name), canvas.image[:, :, ::-1],
                        [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
            images.append({"id": i + 1, "file_name": name, "height": h, "width": w})
            anns += _annotations(canvas, i + 1, len(anns) + 1)
        write_json_atomic(os.path.join(output_dir, "annotations", f"{split}.json"), {
            "info": {"description": "YOLACT synthetic shapes", "seed": seed},
            "licenses": [], "images": images, "annotations": anns, "categories": categories,
        })
        stats[split] = {"images": len(images), "annotations": len(anns)}
    return stats


def _define_flags() -> None:
    """CLI flags (defined only when run as a script, so imports stay side-effect free)."""
    flags.DEFINE_string("output_dir", None, "Where images/ and annotations/ are written.")
    flags.DEFINE_integer("num_train", 2000, "Number of training images.")
    flags.DEFINE_integer("num_val", 200, "Number of validation images.")
    flags.DEFINE_integer("seed", 0, "Random seed; the dataset is a function of it.")
    flags.DEFINE_integer("min_size", 320, "Smallest image side in pixels.")
    flags.DEFINE_integer("max_size", 640, "Largest image side in pixels.")
    flags.DEFINE_integer("jpeg_quality", 90, "JPEG quality of the written images.")
    flags.DEFINE_list("num_objects", ["1", "6"], "lo,hi objects per (non-crowded) image.")
    flags.DEFINE_list("object_size", ["0.15", "0.6"],
                      "lo,hi object size as a fraction of the shorter image side.")
    flags.DEFINE_float("crowd_prob", 0.06, "Chance that an image gets a crowd region.")
    flags.DEFINE_float("many_prob", 0.1,
                       "Chance that an image gets 8-15 small objects instead of num_objects.")
    flags.DEFINE_list("image_size", None,
                      "height,width of every image (e.g. 240,400 for wide images); default: "
                      "sides drawn in [min_size, max_size].")
    flags.mark_flag_as_required("output_dir")


def _pair(values, cast, name: str) -> tuple:
    """A `lo,hi` list flag as a tuple of two `cast` values."""
    if len(values) != 2:
        raise ValueError(f"-{name} needs two values lo,hi; got {','.join(values)!r}")
    try:
        return tuple(cast(v) for v in values)
    except ValueError:
        raise ValueError(f"-{name} needs two {cast.__name__} values lo,hi; got "
                         f"{','.join(values)!r}") from None


def main(argv):
    """A user error (a bad flag value, an unwritable -output_dir) ends with one `error:`
    line and status 2, as in every CLI (yolact.utils.console.run_cli)."""
    del argv
    from yolact.utils.console import run_cli  # noqa: PLC0415

    run_cli("data.shapes", "generate_from_flags", flags.FLAGS, tensorflow=False)


def generate_from_flags(f) -> dict:
    """`python -m data.shapes`: generate() from its absl flags; prints the stats json."""
    stats = generate(f.output_dir, f.num_train, f.num_val, f.seed, f.min_size, f.max_size,
                     f.jpeg_quality, crowd_prob=f.crowd_prob, many_prob=f.many_prob,
                     num_objects=_pair(f.num_objects, int, "num_objects"),
                     object_size=_pair(f.object_size, float, "object_size"),
                     fixed_size=_pair(f.image_size, int, "image_size") if f.image_size else None)
    print(json.dumps(stats))
    return stats


if __name__ == "__main__":
    _define_flags()
    app.run(main)
