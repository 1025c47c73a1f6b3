"""Image resizing as OpenCV's cv2.resize does it, for the styles whose annotator drew on a canvas of
another size and resized the drawing (numpy only: the extension cannot import OpenCV).

Both are separable: out = Wy @ image @ Wx.T per channel, in float64, rounded to the nearest integer
(ties to even, as OpenCV's saturate_cast; halves up where it averages in integers) and clipped to 0..255. OpenCV computes the uint8 Lanczos
case in fixed point, so a pixel may differ from it by one level.
"""

from __future__ import annotations

import math

import numpy as np


def resize_area(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """cv2.INTER_AREA, shrinking: each output pixel the mean of the input area it covers. By a whole
    factor both ways OpenCV averages in integers and rounds halves up."""
    whole = image.shape[1] % width == 0 and image.shape[0] % height == 0
    return _apply(image, _area_weights(image.shape[1], width), _area_weights(image.shape[0], height),
                  halves_up=whole)


def resize_lanczos4(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """cv2.INTER_LANCZOS4: 8 taps of sinc(t) sinc(t/4), normalised, edge pixels repeated."""
    return _apply(image, _lanczos_weights(image.shape[1], width), _lanczos_weights(image.shape[0], height))


def _apply(image: np.ndarray, along_x: np.ndarray, along_y: np.ndarray, halves_up: bool = False) -> np.ndarray:
    values = image.astype(np.float64)
    flat = values.reshape(values.shape[0], values.shape[1], -1)  # (h, w, channels)
    rows = np.tensordot(along_y, flat, axes=(1, 0))  # (H, w, channels)
    out = np.tensordot(rows, along_x, axes=(1, 1)).transpose(0, 2, 1)  # (H, W, channels)
    out = out.reshape((along_y.shape[0], along_x.shape[0]) + values.shape[2:])
    rounded = np.floor(out + 0.5 + 1e-9) if halves_up else np.rint(out)
    return np.clip(rounded, 0, 255).astype(np.uint8)


def _area_weights(size_in: int, size_out: int) -> np.ndarray:
    """OpenCV's area table: output pixel d covers input [d s, (d + 1) s), s = in / out; partial pixels
    at either end weigh by their covered part (below 1e-3 ignored), all divided by the cell width."""
    scale = size_in / size_out
    weights = np.zeros((size_out, size_in))
    for d in range(size_out):
        start = d * scale
        end = start + scale
        cell = min(scale, size_in - start)
        first, last = math.ceil(start), math.floor(end)
        if first - start > 1e-3:
            weights[d, first - 1] = (first - start) / cell
        for s in range(first, min(last, size_in)):
            weights[d, s] = 1.0 / cell
        if last < size_in and end - last > 1e-3:
            weights[d, last] = min(min(end - last, 1.0), cell) / cell
    return weights


def _lanczos_weights(size_in: int, size_out: int) -> np.ndarray:
    scale = size_in / size_out
    weights = np.zeros((size_out, size_in))
    for d in range(size_out):
        position = (d + 0.5) * scale - 0.5
        base = math.floor(position)
        offset = position - base
        for tap, coefficient in enumerate(_lanczos4(offset)):
            weights[d, min(max(base - 3 + tap, 0), size_in - 1)] += coefficient
    return weights


def _lanczos4(offset: float) -> list[float]:
    if offset < np.finfo(np.float32).eps:
        return [0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    taps = []
    for i in range(8):
        t = offset + 3 - i  # distance from the tap
        taps.append(math.sin(math.pi * t) * math.sin(math.pi * t / 4) / (math.pi * math.pi * t * t / 4))
    total = sum(taps)
    return [tap / total for tap in taps]
