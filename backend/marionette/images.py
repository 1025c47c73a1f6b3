"""Image files for the backend: PNG bytes <-> RGB(A) arrays (OpenCV underneath, which is BGR)."""

from __future__ import annotations

import cv2
import numpy as np


class ImageError(ValueError):
    """Bytes that are not a readable image."""


def decode_image(data: bytes, what: str = "image") -> np.ndarray:
    """(H, W, 3) RGB or (H, W, 4) RGBA uint8 from PNG/JPEG bytes; grey images become RGB."""
    array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) if data else None
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
