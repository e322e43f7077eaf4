"""Reading images, folders, videos and webcams; writing drawn images (OpenCV + numpy).

Images are RGB in this project; OpenCV's BGR is converted here, at the edges.
"""

from __future__ import annotations

import os

import cv2
import numpy as np

from yolact.utils.io import write_bytes_atomic

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".jp2", ".ppm")


VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm", ".mpg", ".mpeg", ".wmv")


class ImageReadError(IOError):
    """An input file that OpenCV cannot decode (the message names the file)."""


def read_image(path: str) -> np.ndarray:
    """uint8 RGB [H, W, 3] (gray and alpha images made 3-channel); ImageReadError if not."""
    try:
        data = np.fromfile(path, np.uint8)
    except OSError as err:
        raise ImageReadError(f"cannot read image {path!r}: {err}") from err
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise ImageReadError(f"cannot read image {path!r}: not a decodable image "
                             f"({data.size} bytes; OpenCV could not decode it)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def input_kind(source: str) -> str:
    """'folder', 'video' (by extension), 'image', or 'webcam' (an integer that is no path)."""
    if os.path.isdir(source):
        return "folder"
    if not os.path.exists(source):
        if source.isdigit():
            return "webcam"
        raise FileNotFoundError(f"-input {source!r}: no such file or folder (nor a webcam index)")
    return "video" if source.lower().endswith(VIDEO_EXTENSIONS) else "image"


def write_image_atomic(path: str, image_rgb) -> None:
    """Encode by the path's extension (uint8 RGB [H, W, 3] or gray [H, W]), atomically."""
    ok, data = cv2.imencode(os.path.splitext(path)[1] or ".png",
                            cv2.cvtColor(np.asarray(image_rgb), cv2.COLOR_RGB2BGR)
                            if np.ndim(image_rgb) == 3 else np.asarray(image_rgb))
    if not ok:
        raise IOError(f"OpenCV cannot encode {path!r}")
    write_bytes_atomic(path, data.tobytes())


def list_images(folder: str) -> tuple:
    """(sorted image paths by extension, names of the other files ignored)."""
    names = sorted(n for n in os.listdir(folder) if os.path.isfile(os.path.join(folder, n)))
    images = [os.path.join(folder, n) for n in names if n.lower().endswith(IMAGE_EXTENSIONS)]
    return images, [n for n in names if not n.lower().endswith(IMAGE_EXTENSIONS)]


def _is_webcam(source) -> bool:
    return str(source).isdigit() and not os.path.exists(str(source))


def _open_capture(source):
    capture = cv2.VideoCapture(int(source) if _is_webcam(source) else source)
    if not capture.isOpened():
        kind = "webcam" if _is_webcam(source) else "video file"
        raise IOError(f"cannot open {kind} {source!r} with OpenCV")
    return capture


def _read_frames(capture, count: int) -> list:
    frames = []
    while len(frames) < count:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    return frames
