"""Image files for the backend: PNG bytes <-> RGB(A) arrays (OpenCV underneath, which is BGR).

Every image is checked from its header against the limits before OpenCV sees it (PNG and JPEG only,
see marionette_core.image_header), and at most DECODE_SLOTS images decode at a time in the process,
so concurrent jobs cannot pile up decoding buffers.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from marionette_core.image_header import (DEFAULT_MAX_PIXELS, DEFAULT_MAX_SIDE, ImageHeaderError, ImageSize,
                                          ImageTooLargeError, check_image_size)

# A decode briefly holds OpenCV's array and its converted copies (about 320 MiB at its peak for a
# 4096x4096 16-bit RGBA PNG); the slots bound that however many jobs arrive at once.
DECODE_SLOTS = 2
_decode_slots = threading.BoundedSemaphore(DECODE_SLOTS)


class ImageError(ValueError):
    """Bytes that are not a readable image."""


class ImageLimitError(ImageError):
    """An image whose header declares more pixels than the limits allow; it was not decoded."""


def check_image(data: bytes, what: str = "image", max_side: int = DEFAULT_MAX_SIDE,
                max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageSize:
    """Format and size of PNG/JPEG bytes from the header alone, checked against the limits."""
    try:
        return check_image_size(data, what, max_side, max_pixels)
    except ImageTooLargeError as error:
        raise ImageLimitError(str(error)) from None
    except ImageHeaderError as error:
        raise ImageError(str(error)) from None


def decode_image(data: bytes, what: str = "image", max_side: int = DEFAULT_MAX_SIDE,
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """(H, W, 3) RGB or (H, W, 4) RGBA uint8 from PNG/JPEG bytes; grey images become RGB.

    The header is checked first (ImageLimitError over the limits, ImageError for anything but a
    PNG or JPEG), so an oversized image costs no memory."""
    check_image(data, what, max_side, max_pixels)
    with _decode_slots:
        try:
            array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        except cv2.error:
            array = None
        if array is None:
            raise ImageError(f"the {what} is not a readable image")
        if array.dtype == np.uint16:
            array = (array >> 8).astype(np.uint8)
        if array.ndim == 2:
            return cv2.cvtColor(array, cv2.COLOR_GRAY2RGB)
        if array.shape[2] == 4:
            return cv2.cvtColor(array, cv2.COLOR_BGRA2RGBA)
        return cv2.cvtColor(array, cv2.COLOR_BGR2RGB)


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of an RGB(A) uint8 array. Frames are written as they are made, so speed matters:
    zlib's run-length strategy at level 1 measured faster than plain deflate and smaller on
    photographic frames, and it still packs flat areas."""
    code = cv2.COLOR_RGBA2BGRA if image.shape[2] == 4 else cv2.COLOR_RGB2BGR
    ok, data = cv2.imencode(".png", cv2.cvtColor(image, code), [
        cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE])
    if not ok:
        raise ImageError("could not encode a PNG")
    return data.tobytes()


def resize_to(image: np.ndarray, width: int, height: int) -> np.ndarray:
    if image.shape[1] == width and image.shape[0] == height:
        return image
    shrinking = width * height < image.shape[0] * image.shape[1]
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


class ImageTrack(Sequence):
    """A per-frame image input as engines index it (control maps, face crops, masks, ...): one
    (H, W, 3) uint8 RGB image per frame, at the output size.

    Each image stays PNG/JPEG bytes (or a file) and is decoded when it is read, so a job holds one
    decoded image at a time rather than all of them (10,000 maps of 4096x4096 would be 500 GB). Its
    header is checked against the limits before each decode; reading an image twice decodes it twice.
    `label` names an image in messages: "control map" -> "the control map 3 is not a readable image".
    """

    def __init__(self, sources: Sequence[bytes | Path], width: int, height: int, label: str = "image",
                 max_side: int = DEFAULT_MAX_SIDE, max_pixels: int = DEFAULT_MAX_PIXELS,
                 numbers: Sequence[int] | None = None):
        self._sources = list(sources)
        self._numbers = range(len(self._sources)) if numbers is None else numbers  # frame indices, for messages
        self.width, self.height, self.label = width, height, label
        self._limits = (max_side, max_pixels)

    def __len__(self) -> int:
        return len(self._sources)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return ImageTrack(self._sources[index], self.width, self.height, self.label, *self._limits,
                              self._numbers[index])
        source = self._sources[index]
        what = f"{self.label} {self._numbers[index]}"
        if isinstance(source, Path):
            try:
                source = source.read_bytes()
            except OSError as error:
                raise ImageError(f"the {what} cannot be read from {source}: {error.strerror or error}") from None
        return resize_to(decode_image(source, what, *self._limits)[..., :3], self.width, self.height)

    def __repr__(self) -> str:
        return f"ImageTrack({len(self)} x {self.label}, {self.width}x{self.height})"
