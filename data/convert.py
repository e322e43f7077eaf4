"""Plain record -> plain feature dict (the per-image work of the TFRecord creator).

No TensorFlow here: this runs in worker processes (multiprocessing), which then stay
light; the parent turns the returned dict into a tf.train.Example (data/tf_example.py).

Record (what data/sources/* produce; one per image):
    {"image_path": str or "image_bytes": bytes, "filename": str,
     "source_id": str (decimal), "height": int | None, "width": int | None,
     "objects": [object, ...]  or  "load_objects": (function, argument)}
Object:
    {"category_id": int (source id), "is_crowd": bool,
     "segmentation": COCO polygons / RLE, or None when "mask" is given,
     "mask": uint8 [H, W] 0/1 or None, "bbox": [x1, y1, x2, y2] pixels or None,
     "annotation": the source's COCO annotation dict or None}
"""

import collections
import io
import os
import re

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from pycocotools import mask as mask_utils

_JPEG_FORMATS = ("JPEG", "MPO")


class SkipImage(Exception):
    """The image cannot be used; `reason` is a short key for the summary."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def _message(err: Exception) -> str:
    """str(err) without the repr of an in-memory file object (it names no file)."""
    return re.sub(r"\s*<_io\.\w+ object at 0x[0-9a-f]+>", "", str(err))


def _to_rgb(img: Image.Image) -> np.ndarray:
    """Any PIL image -> uint8 [H, W, 3] RGB (16-bit scaled by 1/257, alpha dropped)."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img).astype(np.float64)
        gray = np.clip(np.round(arr / 257.0), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if img.mode == "F":
        gray = np.clip(np.round(np.asarray(img)), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    return np.asarray(img.convert("RGB"))


def load_image(record: dict):
    """Read and check an image.

    Returns (encoded bytes, "jpeg"|"png", height, width, note). The original bytes pass
    through when they are an 8-bit 3-channel JPEG or PNG shown as stored (no EXIF
    orientation, or 1); otherwise the pixels are normalized to RGB, turned as the EXIF
    orientation says (`ImageOps.exif_transpose`: a phone's portrait photo stored
    landscape becomes the portrait every viewer and annotation tool shows, and height /
    width are the displayed ones) and re-encoded without EXIF (JPEG quality 95 for JPEG
    sources, PNG for the rest), so records never need EXIF; `note` names what was
    converted (e.g. "png_RGBA", "exif_orientation_6"), else note is None.
    Raises SkipImage("missing_file" | "unreadable" | "truncated" | "corrupt") whose
    detail names the file (e.g. "corrupt image /d/a.jpg: cannot identify image file").
    """
    data = record.get("image_bytes")
    where = record.get("image_path") or record.get("filename", "")
    if data is None:
        if not os.path.isfile(where):
            raise SkipImage("missing_file", f"image file not found: {where}")
        with open(where, "rb") as f:
            data = f.read()
    try:
        img = Image.open(io.BytesIO(data))
        fmt, mode = img.format, img.mode
        width, height = img.size
        orientation = exif_orientation(img)
        if fmt in _JPEG_FORMATS and mode == "RGB" and orientation == 1:
            # Pass-through candidate: decode at 1/8 scale, which still reads every byte,
            # so a truncated or corrupt file fails here as in a full decode.
            img.draft(mode, (max(width // 8, 1), max(height // 8, 1)))
        img.load()
        if orientation != 1:
            img = ImageOps.exif_transpose(img)
            width, height = img.size
    except UnidentifiedImageError:
        raise SkipImage("unreadable", f"corrupt image {where}: cannot identify image file "
                                      f"({len(data)} bytes)") from None
    except OSError as e:
        reason = "truncated" if "truncated" in str(e).lower() else "corrupt"
        raise SkipImage(reason, f"{reason} image {where}: {_message(e)}") from None
    except Exception as e:  # noqa: BLE001 -- any decoder failure means a bad file
        raise SkipImage("corrupt", f"corrupt image {where}: {type(e).__name__}: "
                                   f"{_message(e)}") from None
    png_depth = data[24] if fmt == "PNG" and len(data) > 25 else 8
    plain = (fmt in _JPEG_FORMATS and mode == "RGB") or (
        fmt == "PNG" and mode == "RGB" and png_depth == 8)
    if plain and orientation == 1:
        return data, "jpeg" if fmt in _JPEG_FORMATS else "png", height, width, None
    bgr = np.ascontiguousarray(_to_rgb(img)[:, :, ::-1])
    notes = [] if plain else [f"{fmt.lower()}_{mode}" + ("_16bit" if png_depth == 16 else "")]
    note = "_".join(notes + ([f"exif_orientation_{orientation}"] if orientation != 1 else []))
    if fmt in _JPEG_FORMATS:
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])
        out_fmt = "jpeg"
    else:
        ok, buf = cv2.imencode(".png", bgr)
        out_fmt = "png"
    if not ok:
        raise SkipImage("corrupt", f"re-encoding the {note} image {where} failed")
    return buf.tobytes(), out_fmt, height, width, note


def exif_orientation(img: Image.Image) -> int:
    """The EXIF orientation tag (1..8) of an opened PIL image; 1 when absent or invalid."""
    try:
        value = int(img.getexif().get(0x0112, 1))
    except Exception:  # noqa: BLE001 -- a damaged EXIF block: shown as stored
        return 1
    return value if 1 <= value <= 8 else 1


def segmentation_to_mask(segmentation, height: int, width: int) -> np.ndarray:
    """COCO polygons, uncompressed RLE or compressed RLE -> uint8 [H, W] 0/1.

    Decoded with pycocotools exactly as COCO.annToMask does. Raises ValueError for an
    empty or malformed segmentation or an RLE whose size is not [height, width].
    """
    if isinstance(segmentation, list):
        polys = [p for p in segmentation
                 if isinstance(p, (list, tuple)) and len(p) >= 6 and len(p) % 2 == 0]
        if not polys:
            raise ValueError(f"no polygon with >= 3 points in {str(segmentation)[:80]}")
        rle = mask_utils.merge(mask_utils.frPyObjects(polys, height, width))
    elif isinstance(segmentation, dict) and "counts" in segmentation:
        size = [int(v) for v in segmentation.get("size", ())]
        if size != [height, width]:
            raise ValueError(f"RLE size {size} != image size {[height, width]}")
        counts = segmentation["counts"]
        if isinstance(counts, list):
            rle = mask_utils.frPyObjects(segmentation, height, width)
        else:
            counts = counts.encode("ascii") if isinstance(counts, str) else counts
            rle = {"size": size, "counts": counts}
    else:
        raise ValueError(f"unknown segmentation format: {str(segmentation)[:80]}")
    return mask_utils.decode(rle)


def _object_mask(obj: dict, height: int, width: int):
    """(uint8 [H, W] 0/1 mask, possibly all zero, None) or (None, drop reason)."""
    mask = obj.get("mask")
    if mask is None:
        seg = obj.get("segmentation")
        if not seg:
            return None, "missing_segmentation"
        try:
            mask = segmentation_to_mask(seg, height, width)
        except (ValueError, TypeError, KeyError):
            return None, "invalid_segmentation"
    mask = np.asarray(mask)
    if mask.shape != (height, width):
        return None, "invalid_segmentation"
    if mask.dtype != np.uint8 or mask.max(initial=0) > 1:
        mask = (mask > 0).astype(np.uint8)
    if not mask.flags.c_contiguous:  # pycocotools returns Fortran order
        mask = cv2.transpose(np.ascontiguousarray(mask.T))
    return mask, None


def clip_box(box, height: int, width: int):
    """[x1, y1, x2, y2] pixels clipped to the image, or None (no box, or none of it inside)."""
    if box is None:
        return None
    x1, y1 = max(float(box[0]), 0.0), max(float(box[1]), 0.0)
    x2, y2 = min(float(box[2]), float(width)), min(float(box[3]), float(height))
    return [x1, y1, x2, y2] if x2 > x1 and y2 > y1 else None


def _object_box(obj: dict, mask: np.ndarray):
    """(pixel box [x1, y1, x2, y2], None) or (None, drop reason).

    Official data/coco.py COCOAnnotationTransform takes the box from the annotation's
    "bbox" ([x, y, w, h] -> x1, y1, x+w, y+h), whatever the mask, so an object whose
    mask rasterizes to nothing is kept with its box. Here that box is clipped to the
    image (the official code clips only in RandomSampleCrop); without a usable bbox the
    box is the pixel extent of the mask (x2/y2 exclusive), and an object with neither
    is dropped.
    """
    height, width = mask.shape
    box = clip_box(obj.get("bbox"), height, width)
    if box is not None:
        return box, None
    if mask.any():
        return [float(v) for v in _extent(mask)], None
    src = obj.get("bbox")
    if src is not None and src[2] > src[0] and src[3] > src[1]:
        return None, "outside_image"  # a real box, but entirely off the image
    return None, "zero_area"


def _extent(mask: np.ndarray):
    """Pixel extent (x1, y1, x2, y2) of a non-empty mask, x2/y2 exclusive."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _json_annotation(obj: dict, mask: np.ndarray, box, is_crowd: bool) -> dict:
    """The COCO annotation written to <split>_annotations.json for a kept object.

    A source annotation is kept as is (segmentation, area, ids) with its bbox set to
    the object's box (the source bbox clipped to the image, or the mask extent);
    objects without one get a compressed RLE of their mask. "id" and "image_id" are
    set by the creator.
    """
    h, w = mask.shape
    x1, y1, x2, y2 = box
    bbox = [float(x1), float(y1), float(x2 - x1), float(y2 - y1)]
    ann = obj.get("annotation")
    if ann is not None:
        return dict(ann, bbox=bbox)
    rle = mask_utils.encode(np.asfortranarray(mask))
    return {
        "category_id": int(obj["category_id"]),
        "segmentation": {"size": [h, w], "counts": rle["counts"].decode("ascii")},
        "area": float(mask.sum()),
        "bbox": bbox,
        "iscrowd": int(is_crowd),
    }


def convert_objects(objects: list, height: int, width: int, label_map: dict):
    """Objects -> (feature lists, json annotations, Counter of drop reasons).

    label_map: {source category id: (contiguous id 1..C, name)}. Masks are clipped to
    the image by construction; boxes come from `_object_box` (source bbox clipped to
    the image, else the mask extent), divided by width/height. An object with a box
    but an empty mask is kept (all-zero mask, area 0), as in the official code.
    """
    feats = {k: [] for k in ("boxes", "labels", "texts", "is_crowd", "areas", "masks")}
    anns, dropped = [], collections.Counter()
    for obj in objects:
        if int(obj["category_id"]) not in label_map:
            dropped["unknown_category"] += 1
            continue
        mask, reason = _object_mask(obj, height, width)
        if mask is not None:
            box, reason = _object_box(obj, mask)
        if reason is not None:
            dropped[reason] += 1
            continue
        label, name = label_map[int(obj["category_id"])]
        x1, y1, x2, y2 = box
        ok, png = cv2.imencode(".png", mask)
        if not ok:
            raise RuntimeError(f"PNG encoding of a {mask.shape} mask failed")
        is_crowd = bool(obj.get("is_crowd", False))
        feats["boxes"].append([x1 / width, y1 / height, x2 / width, y2 / height])
        feats["labels"].append(label)
        feats["texts"].append(name)
        feats["is_crowd"].append(int(is_crowd))
        feats["areas"].append(float(mask.sum()))
        feats["masks"].append(png.tobytes())
        anns.append(_json_annotation(obj, mask, box, is_crowd))
    return feats, anns, dropped


def convert_record(record: dict, label_map: dict) -> dict:
    """One record -> {"ok": True, "features", "annotations", "dropped", "note", "filename"}
    or {"ok": False, "reason", "detail", "filename"} (the image is skipped)."""
    name = record.get("filename", "")
    try:
        encoded, fmt, height, width, note = load_image(record)
        expected = (record.get("height"), record.get("width"))
        if None not in expected and tuple(int(v) for v in expected) != (height, width):
            turned = re.search(r"exif_orientation_([5-8])", note or "")  # axes swapped
            raise SkipImage("size_mismatch",
                            f"{record.get('image_path') or name}: annotation says "
                            f"{expected[0]}x{expected[1]}, image is {height}x{width}"
                            + (f" as displayed (its EXIF orientation {turned.group(1)} "
                               f"turns the stored {width}x{height} pixels; annotations "
                               f"must be in the displayed image's coordinates, as "
                               f"annotation tools show it)" if turned else ""))
        objects = record.get("objects")
        if objects is None:
            fn, arg = record["load_objects"]
            try:
                objects = fn(arg)
            except SkipImage:  # the reader's own reason and detail (sources/index_png.py)
                raise
            except FileNotFoundError as e:
                raise SkipImage("missing_annotation", str(e)) from None
            except Exception as e:  # noqa: BLE001 -- any reader failure: skip the image
                raise SkipImage("unreadable_annotation",
                                f"{arg}: {type(e).__name__}: {e}") from None
        feats, anns, dropped = convert_objects(objects, height, width, label_map)
    except SkipImage as e:
        return {"ok": False, "reason": e.reason, "detail": e.detail, "filename": name}
    feats.update(encoded=encoded, format=fmt, height=height, width=width,
                 filename=name, source_id=str(record["source_id"]))
    return {"ok": True, "features": feats, "annotations": anns, "dropped": dict(dropped),
            "note": note, "filename": name}
