"""The face-box mask EchoMimic's audio mode feeds its face locator: one frame, the face region.

The release finds the face box with a face detector on the reference image and fills it, enlarged
by 10% of its height above and below and 10% of its width left and right, with 255 in a uint8 mask
the size of the image (outside: 0); the face locator receives mask / 255. Here the box comes from
the face landmarks of the rig posed over the reference (or is given), in pixels, origin top-left.
"""

from __future__ import annotations

import numpy as np

from ...images import resize_to

FACE_MASK_DILATION = 0.1  # the release's facemusk_dilation_ratio


def landmark_box(points: np.ndarray) -> tuple[float, float, float, float] | None:
    """(x0, y0, x1, y1) bounding box, pixels, of the (N, 3) landmarks with c > 0 (e.g. the 68 iBUG
    points of the reference pose); None when none is present."""
    points = np.asarray(points, dtype=np.float64)
    present = points[points[:, 2] > 0] if points.shape[1] > 2 else points
    if len(present) == 0:
        return None
    return (float(present[:, 0].min()), float(present[:, 1].min()), float(present[:, 0].max()),
            float(present[:, 1].max()))


def face_box_mask(width: int, height: int, box: tuple[float, float, float, float] | None,
                  dilation: float = FACE_MASK_DILATION) -> np.ndarray:
    """(height, width) uint8 mask, 255 inside the face box enlarged by `dilation` of its width (left
    and right) and height (above and below), 0 outside; as the release builds it: the box corners
    rounded to whole pixels (half to even), the margins int(size * dilation), rows y0 - margin up
    to (not including) y1 + margin, clipped to the image. No box: the whole frame (the release's
    choice when it finds no face)."""
    mask = np.zeros((height, width), dtype=np.uint8)
    if box is None:
        mask[:] = 255
        return mask
    x0, y0, x1, y1 = (int(v) for v in np.round(np.asarray(box, dtype=np.float64)))
    row_margin, column_margin = int((y1 - y0) * dilation), int((x1 - x0) * dilation)
    mask[max(0, y0 - row_margin):max(0, y1 + row_margin), max(0, x0 - column_margin):max(0, x1 + column_margin)] = 255
    return mask


def face_mask_from_landmarks(points: np.ndarray, width: int, height: int,
                             dilation: float = FACE_MASK_DILATION) -> np.ndarray:
    """The face-box mask of (N, 3) face landmarks in pixels of a width x height frame."""
    return face_box_mask(width, height, landmark_box(points), dilation)


def face_mask_from_image(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """A mask image given by the user ((H, W) or (H, W, 3|4) uint8, white = face) as the (height,
    width) uint8 mask the face locator takes: its first channel, resized if needed."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"a face mask image must be uint8, not {image.dtype}")
    channel = image if image.ndim == 2 else image[..., 0]
    return np.ascontiguousarray(resize_to(np.ascontiguousarray(channel), width, height))
