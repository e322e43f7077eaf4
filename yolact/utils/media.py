"""Reading images, folders, videos and webcams; writing drawn images (OpenCV + numpy).

Images are RGB in this project; OpenCV's BGR is converted here, at the edges. OpenCV
applies an image's EXIF orientation (a phone's portrait photo comes out portrait).

Pixel limit: an image file of a few hundred kB can hold 10000 x 10000 pixels (a PNG of
one colour) and take gigabytes once decoded, and more in the full-size masks of its
detections. `read_image` refuses an image of more than `max_pixels` (height x width;
DEFAULT_MAX_PIXELS = 50 megapixels, below PIL's own decompression-bomb limit of ~89 MP)
from its header, before decoding it: ImageTooLargeError naming the file, its size and
the limit. `check_pixels` is the same test for arrays and video frames.
"""

from __future__ import annotations

import io
import os
import warnings

import cv2
import numpy as np

from yolact.utils.io import write_bytes_atomic

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".jp2", ".ppm")


VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm", ".mpg", ".mpeg", ".wmv")


DEFAULT_MAX_PIXELS = 50_000_000


class ImageReadError(IOError):
    """An input file that OpenCV cannot decode (the message names the file)."""


class ImageTooLargeError(ImageReadError, ValueError):
    """An image of more pixels than the limit (a folder run skips it and reports it)."""


def check_pixels(height: int, width: int, max_pixels: int | None, what: str) -> None:
    """ImageTooLargeError when height x width > max_pixels (None: no limit); `what` names
    the image in the message."""
    if max_pixels is not None and int(height) * int(width) > max_pixels:
        raise ImageTooLargeError(
            f"{what} is {int(width)}x{int(height)} pixels ({int(height) * int(width)}), "
            f"more than the limit of {max_pixels} pixels (-max_pixels / MAX_IMAGE_PIXELS; "
            f"raise it only with the memory for it: about 30 bytes a pixel and 1 byte a "
            f"pixel per detection)")


def header_size(data: bytes):
    """(height, width) of an encoded image read from its header only (PIL, no decoding),
    or None when PIL does not know the format; (0, -1) when PIL refuses it as a
    decompression bomb (more than twice PIL.Image.MAX_IMAGE_PIXELS)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                width, height = img.size
    except Image.DecompressionBombError:
        return 0, -1
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return None
    return height, width


def read_image(path: str, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """uint8 RGB [H, W, 3] (gray and alpha images made 3-channel, EXIF orientation
    applied); ImageReadError if not decodable, ImageTooLargeError (checked from the
    header, before decoding) if it has more than max_pixels pixels (None: no limit)."""
    try:
        data = np.fromfile(path, np.uint8)
    except OSError as err:
        raise ImageReadError(f"cannot read image {path!r}: {err}") from err
    if max_pixels is not None and data.size:
        size = header_size(data.tobytes())
        if size == (0, -1):
            from PIL import Image

            limit = 2 * Image.MAX_IMAGE_PIXELS
            if max_pixels <= limit:
                raise ImageTooLargeError(
                    f"image {path!r} has more than {limit} pixels (PIL's decompression-bomb "
                    f"limit), more than the limit of {max_pixels} pixels (-max_pixels / "
                    f"MAX_IMAGE_PIXELS)")
        elif size is not None:
            check_pixels(*size, max_pixels, f"image {path!r}")
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise ImageReadError(f"cannot read image {path!r}: not a decodable image "
                             f"({data.size} bytes; OpenCV could not decode it)")
    if max_pixels is not None:  # a format PIL could not size
        check_pixels(*image.shape[:2], max_pixels, f"image {path!r}")
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
