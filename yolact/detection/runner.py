"""Run a Predictor over an image, a folder, a video file or a webcam (OpenCV + numpy).

Outputs in ``output_dir``:
- drawn images (same file name as the input; a video becomes ``<stem>.mp4``);
- with ``save_masks``: ``masks/<input file name>/[frameNNNNNN_]KKK_<class>_<score>.png``,
  one 0/255 PNG per instance at the image's size;
- with ``save_json``: ``results.json``, COCO style: ``images`` (id, file_name,
  height, width[, frame]), ``categories`` (id = 0-based class + 1, name) and
  ``annotations`` (image_id, category_id, category_name, bbox [x, y, w, h]
  pixels, score, segmentation = COCO RLE at the image's size, polygons = its outer
  contours as COCO polygons in original pixels, area);
- with ``save_txt``: ``labels/<stem>[_frameNNNNNN].txt``, the YOLO segmentation label
  format: one line per instance, ``class x1 y1 x2 y2 ...`` (largest contour, normalized).
Images are RGB in this pipeline; OpenCV's BGR is converted at the edges.
Detections shown and saved: score > score_threshold (official ``prep_display``
rule), then the top_k best; YOLACT++ shows and ranks them by the mask score (score x
predicted mask IoU), as prep_display does.
"""

from __future__ import annotations

import dataclasses
import os
import re

import cv2
import numpy as np

from yolact.utils.io import atomic_path, write_json_atomic, write_text_atomic
from yolact.utils.media import (
    IMAGE_EXTENSIONS,
    ImageReadError,
    _is_webcam,
    _open_capture,
    _read_frames,
    check_pixels,
    input_kind,
    list_images,
    read_image,
    write_image_atomic,
)
from yolact.utils.polygons import mask_to_polygons, yolo_seg_line


@dataclasses.dataclass(frozen=True)
class OutputOptions:
    """What is shown and written. score_threshold: keep score > it; top_k: at most
    this many detections per image (0 = all that pass the threshold)."""

    score_threshold: float = 0.3
    top_k: int = 15
    show_boxes: bool = True
    show_masks: bool = True
    show_labels: bool = True
    save_masks: bool = False
    save_json: bool = False
    save_txt: bool = False


def predict_batch(predictor, images, options: OutputOptions, pad_to: int = 0) -> list:
    """Instances of uint8 RGB images (any sizes), filtered by score and top_k.

    Each image is resized on its own (as Predictor.predict does for mixed
    sizes); the batch is padded with zero images up to `pad_to` so that the
    compiled forward sees one batch shape. Masks are assembled only for the
    detections kept. An image of more than the predictor's max_pixels raises
    ImageTooLargeError before any work.
    """
    for index, image in enumerate(images):
        check_pixels(*image.shape[:2], _max_pixels(predictor), f"image {index} of the batch")
    inputs = [np.asarray(predictor.preprocess(im[None])) for im in images]
    if len(inputs) < pad_to:
        inputs += [np.zeros_like(inputs[0])] * (pad_to - len(inputs))
    det = predictor.network_and_detect(np.concatenate(inputs))
    counts = np.array(det["num_detections"], np.int32, copy=True)
    rescored = predictor.maskiou_net is not None and predictor.cfg.RESCORE_MASK
    for i in range(len(images)):
        n = int(np.sum(det["scores"][i, :counts[i]] > options.score_threshold))
        counts[i] = min(n, options.top_k) if options.top_k > 0 and not rescored else n
    det = dict(det, num_detections=counts)
    out = [predictor.postprocess_one(det, i, *im.shape[:2]) for i, im in enumerate(images)]
    if rescored:  # official prep_display: re-scored, sorted again, then top_k and threshold
        out = [_rescored_top(inst, options) for inst in out]
    return out


def _max_pixels(predictor):
    """The predictor's pixel limit (`Predictor.max_pixels`; None: none)."""
    return getattr(predictor, "max_pixels", None)


def _rescored_top(inst, options: OutputOptions):
    """YOLACT++: the detections by mask score (score x predicted mask IoU), the top_k
    best, those > score_threshold (official eval.py prep_display)."""
    order = np.argsort(-inst.display_scores, kind="stable")
    if options.top_k > 0:
        order = order[:options.top_k]
    return inst.select(order[inst.display_scores[order] > options.score_threshold])


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "_", text).strip("_") or "x"


class ResultWriter:
    """Writes drawn images, PNG masks and accumulates the results JSON."""

    def __init__(self, output_dir: str, class_names, options: OutputOptions):
        self.output_dir, self.class_names, self.options = output_dir, tuple(class_names), options
        self.images, self.annotations = [], []
        os.makedirs(output_dir, exist_ok=True)

    def draw(self, image_rgb, inst):
        from yolact.utils.drawing import draw_instances

        o = self.options
        return draw_instances(image_rgb, inst.boxes, inst.classes, inst.display_scores,
                              inst.masks,
                              self.class_names, show_boxes=o.show_boxes,
                              show_masks=o.show_masks, show_labels=o.show_labels)

    def add(self, file_name: str, image_rgb, inst, frame: int | None = None, drawn_path=None):
        """Record one image's instances; write its drawing to drawn_path when given."""
        if drawn_path is not None:
            write_image_atomic(drawn_path, self.draw(image_rgb, inst))
        if self.options.save_masks:
            self._write_masks(file_name, inst, frame)
        if self.options.save_json:
            self._record(file_name, image_rgb.shape[:2], inst, frame)
        if self.options.save_txt:
            self._write_txt(file_name, image_rgb.shape[:2], inst, frame)

    def _write_txt(self, file_name, size, inst, frame):
        folder = os.path.join(self.output_dir, "labels")
        os.makedirs(folder, exist_ok=True)
        stem = _safe(os.path.splitext(file_name)[0])
        suffix = "" if frame is None else f"_frame{frame:06d}"
        lines = []
        for k in range(len(inst)):
            polygons = mask_to_polygons(inst.masks[k])
            if polygons:
                lines.append(yolo_seg_line(int(inst.classes[k]), polygons[0], *size))
        write_text_atomic(os.path.join(folder, f"{stem}{suffix}.txt"),
                          "".join(line + "\n" for line in lines))

    def _write_masks(self, file_name, inst, frame):
        folder = os.path.join(self.output_dir, "masks", _safe(file_name))
        os.makedirs(folder, exist_ok=True)
        prefix = "" if frame is None else f"frame{frame:06d}_"
        for k in range(len(inst)):
            name = self.class_names[int(inst.classes[k])]
            path = os.path.join(folder, f"{prefix}{k:03d}_{_safe(name)}_{inst.display_scores[k]:.2f}.png")
            write_image_atomic(path, inst.masks[k] * np.uint8(255))

    def _record(self, file_name, size, inst, frame):
        from yolact.detection.instances import instances_to_coco

        image_id = len(self.images)
        entry = {"id": image_id, "file_name": file_name, "height": int(size[0]),
                 "width": int(size[1])}
        if frame is not None:
            entry["frame"] = int(frame)
        self.images.append(entry)
        categories = {i: i + 1 for i in range(len(self.class_names))}
        for k, result in enumerate(instances_to_coco(image_id, inst, categories)):
            result["id"] = len(self.annotations) + 1
            result["category_name"] = self.class_names[result["category_id"] - 1]
            result["area"] = int(inst.masks[k].sum())
            result["polygons"] = mask_to_polygons(inst.masks[k])
            self.annotations.append(result)

    def close(self) -> str | None:
        """Write results.json (atomically) when save_json; returns its path."""
        if not self.options.save_json:
            return None
        path = os.path.join(self.output_dir, "results.json")
        data = {"images": self.images,
                "categories": [{"id": i + 1, "name": n} for i, n in enumerate(self.class_names)],
                "annotations": self.annotations}
        write_json_atomic(path, data)
        return path


def _drawn_name(file_name: str) -> str:
    stem, ext = os.path.splitext(file_name)
    return file_name if ext.lower() in IMAGE_EXTENSIONS else f"{stem}.png"


def run_images(predictor, paths, writer: ResultWriter, batch_size: int = 4,
               progress: bool = True) -> dict:
    """Predict, draw and save image files in batches; unreadable ones are skipped.

    Returns {"processed": [paths], "skipped": [(path, reason)], "num_instances": int}.
    """
    from tqdm import tqdm

    summary = {"processed": [], "skipped": [], "num_instances": 0}
    bar = tqdm(total=len(paths), desc="images", unit="img", disable=not progress)
    for start in range(0, len(paths), batch_size):
        batch, images = [], []
        for path in paths[start:start + batch_size]:
            try:
                images.append(read_image(path, _max_pixels(predictor)))
                batch.append(path)
            except ImageReadError as err:
                summary["skipped"].append((path, str(err)))
                bar.write(f"skipped: {err}")
        if images:
            for path, image, inst in zip(batch, images,
                                         predict_batch(predictor, images, writer.options,
                                                       pad_to=batch_size)):
                name = os.path.basename(path)
                drawn = os.path.join(writer.output_dir, _drawn_name(name))
                if os.path.realpath(drawn) == os.path.realpath(path):
                    raise ValueError(f"the drawn output {drawn!r} would replace the input; "
                                     f"choose another -output_dir")
                writer.add(name, image, inst, drawn_path=drawn)
                summary["processed"].append(path)
                summary["num_instances"] += len(inst)
        bar.update(len(paths[start:start + batch_size]))
    bar.close()
    return summary


def run_video(predictor, source: str, writer: ResultWriter, batch_size: int = 4,
              progress: bool = True) -> dict:
    """Video file or webcam index -> <output_dir>/<stem>.mp4 (mp4v), same fps and size.

    A webcam runs until it stops delivering frames or Ctrl-C. Returns
    {"processed": [output path], "skipped": [], "num_frames", "num_instances", "fps"}.
    """
    import time

    from tqdm import tqdm

    capture = _open_capture(source)
    name = f"webcam{source}" if _is_webcam(source) else os.path.basename(source)
    size = (int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)),
            int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)))
    try:  # the frame size from the container, before a frame is decoded
        check_pixels(*size, _max_pixels(predictor), f"the frames of {name!r}")
    except ImageReadError:
        capture.release()
        raise
    fps = capture.get(cv2.CAP_PROP_FPS) or 30.0
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    out_path = os.path.join(writer.output_dir, os.path.splitext(name)[0] + ".mp4")
    summary = {"num_frames": 0, "num_instances": 0, "skipped": []}
    bar = tqdm(total=total if total and total > 0 else None, desc=name, unit="frame",
               disable=not progress)
    start = time.perf_counter()
    with atomic_path(out_path, suffix=".mp4") as tmp_path:
        try:
            _write_video(predictor, capture, writer, name, fps, batch_size, tmp_path, bar,
                         summary)
        finally:
            capture.release()
            bar.close()
        if not summary["num_frames"]:
            raise IOError(f"{name!r}: OpenCV opened it but could not read a single frame")
    summary.update(processed=[out_path],
                   fps=summary["num_frames"] / max(time.perf_counter() - start, 1e-9))
    return summary


def _write_video(predictor, capture, writer, name, fps, batch_size, path, bar, summary):
    """Frames of `capture` -> predictions -> drawn frames in the mp4 at `path`; Ctrl-C
    ends the video where it is (what was written is kept)."""
    video = None
    try:
        while True:
            frames = _read_frames(capture, batch_size)
            if not frames:
                break
            if video is None:
                height, width = frames[0].shape[:2]
                video = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), fps,
                                        (width, height))
            for frame, inst in zip(frames, predict_batch(predictor, frames, writer.options,
                                                         pad_to=batch_size)):
                writer.add(name, frame, inst, frame=summary["num_frames"])
                video.write(cv2.cvtColor(writer.draw(frame, inst), cv2.COLOR_RGB2BGR))
                summary["num_frames"] += 1
                summary["num_instances"] += len(inst)
            bar.update(len(frames))
    except KeyboardInterrupt:
        bar.write("interrupted: finishing the video written so far")
    finally:
        if video is not None:
            video.release()


def run_inference(predictor, source: str, output_dir: str, options: OutputOptions,
                  batch_size: int = 4, progress: bool = True) -> dict:
    """Dispatch on the kind of `source` (see input_kind); write results.json at the end.

    A single unreadable image raises ImageReadError; a folder skips unreadable
    files and raises ImageReadError only if none could be read.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    kind = input_kind(source)
    writer = ResultWriter(output_dir, predictor.class_names, options)
    if kind in ("video", "webcam"):
        summary = run_video(predictor, source, writer, batch_size, progress)
    elif kind == "image":
        read_image(source, _max_pixels(predictor))  # a clear error before any work
        summary = run_images(predictor, [source], writer, batch_size, progress)
    else:
        paths, ignored = list_images(source)
        if os.path.realpath(source) == os.path.realpath(output_dir):
            raise ValueError(f"-output_dir {output_dir!r} is the input folder; drawn images "
                             f"would replace the inputs")
        summary = run_images(predictor, paths, writer, batch_size, progress)
        summary["ignored"] = ignored
        if not summary["processed"]:
            raise ImageReadError(f"no readable image in folder {source!r} ({len(paths)} image "
                                 f"files, {len(summary['skipped'])} unreadable, "
                                 f"{len(ignored)} other files ignored)")
    summary["kind"] = kind
    summary["results_json"] = writer.close()
    return summary


def format_summary(summary: dict) -> str:
    """A few printable lines: counts, outputs, and every skipped file with its reason."""
    lines = [f"{summary['kind']}: {len(summary['processed'])} processed, "
             f"{len(summary['skipped'])} skipped, {summary['num_instances']} instances"]
    if summary.get("num_frames") is not None:
        lines.append(f"frames: {summary['num_frames']} ({summary.get('fps', 0.0):.1f} fps)")
    lines += [f"  skipped {path}: {reason}" for path, reason in summary["skipped"]]
    if summary.get("results_json"):
        lines.append(f"results: {summary['results_json']}")
    return "\n".join(lines)
