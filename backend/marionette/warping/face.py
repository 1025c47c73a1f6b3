"""The warp engine's face: expressions from the 478 face landmarks, on top of the body warp.

The body warp already carries the face with the head. What remains is the expression: each
landmark's offset between where the head motion alone would put it and where the frame's
landmarks say it is. That offset field, defined at the frame's landmark positions (so a landmark's pixel comes exactly from
its reference pixel), resamples the face: the jaw drops, lids close, brows move. The field is a
Shepard (inverse-distance) interpolation with a fading rest term: it passes through every landmark,
never overshoots between close landmarks that move apart (an eyelid against its eye), and is zero
away from the face. Where the inner lips
part further than in the reference, the mouth's inside is painted dark.
"""

from __future__ import annotations

import cv2
import numpy as np

from marionette_core.face import (FACE_OVAL, LEFT_BROW, LEFT_EYE, LIPS_INNER_BOTTOM_LEFT, LIPS_INNER_BOTTOM_RIGHT,
                                  LIPS_INNER_TOP_LEFT, LIPS_INNER_TOP_RIGHT, LIPS_OUTER_BOTTOM_LEFT,
                                  LIPS_OUTER_BOTTOM_RIGHT, LIPS_OUTER_TOP_LEFT, LIPS_OUTER_TOP_RIGHT, RIGHT_BROW,
                                  RIGHT_EYE)

FACE_KEY = "face_mesh_keypoints_2d"
MOUTH_COLOUR = np.array([45, 18, 22], dtype=np.float32)  # the inside of a mouth, RGB
GRID_STEP = 3  # the offset field is evaluated on a coarse grid, then resized
CORE = 2.0  # pixels around a landmark that take its offset unblended


def _ring(*edge_lists) -> list[int]:
    return sorted({index for edges in edge_lists for edge in edges for index in edge})


CONTROL_POINTS = _ring(FACE_OVAL, LEFT_EYE, RIGHT_EYE, LEFT_BROW, RIGHT_BROW, LIPS_OUTER_BOTTOM_LEFT,
                       LIPS_OUTER_BOTTOM_RIGHT, LIPS_OUTER_TOP_LEFT, LIPS_OUTER_TOP_RIGHT, LIPS_INNER_BOTTOM_LEFT,
                       LIPS_INNER_BOTTOM_RIGHT, LIPS_INNER_TOP_LEFT, LIPS_INNER_TOP_RIGHT) + [1, 4, 5, 6, 168, 197]


def _inner_mouth() -> list[int]:
    """The inner lip contour in order: top from the right corner, then the bottom back."""
    top = [LIPS_INNER_TOP_LEFT[0][0]] + [b for _a, b in LIPS_INNER_TOP_LEFT + LIPS_INNER_TOP_RIGHT]
    bottom = [b for _a, b in LIPS_INNER_BOTTOM_LEFT + LIPS_INNER_BOTTOM_RIGHT][::-1][1:-1]
    return top + bottom


INNER_MOUTH = _inner_mouth()


def _polygon_area(points: np.ndarray) -> float:
    x, y = points[:, 0], points[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


class FaceWarp:
    """Expression warp for one reference face (a (478, 3) landmark array in output pixels)."""

    def __init__(self, reference_face: np.ndarray):
        self.reference = reference_face
        usable = [i for i in CONTROL_POINTS if reference_face[i, 2] > 0]
        self.controls = np.array(usable, dtype=np.int64)
        points = reference_face[self.controls, :2]
        self.size = max(float(np.ptp(points[:, 0])), float(np.ptp(points[:, 1])), 8.0)
        self.reach = self.size * 0.08  # pixels: how far a landmark's offset carries
        mouth = reference_face[INNER_MOUTH]
        self.mouth_area = _polygon_area(mouth[:, :2]) if (mouth[:, 2] > 0).all() else None

    def apply(self, image: np.ndarray, frame_face: np.ndarray | None, head: np.ndarray) -> np.ndarray:
        """Resample `image` (the body-warped frame) for the expression of `frame_face`; `head` is the
        head bone's (2, 3) affine map from reference to frame pixels."""
        if frame_face is None or len(self.controls) < 8:
            return image
        keep = frame_face[self.controls, 2] > 0
        if keep.sum() < 8:
            return image
        controls = self.controls[keep]
        carried = self.reference[controls, :2] @ head[:, :2].T + head[:, 2]  # where the head alone puts them
        targets = frame_face[controls, :2]
        back = carried - targets  # output pixel at a target samples the carried point
        if np.abs(back).max() < 0.25:
            return self._mouth(image, frame_face)
        height, width = image.shape[:2]
        margin = self.size * 0.35
        x0, y0 = np.floor(np.maximum(targets.min(axis=0) - margin, 0)).astype(int)
        x1, y1 = np.ceil(np.minimum(targets.max(axis=0) + margin, (width - 1, height - 1))).astype(int)
        if x1 <= x0 or y1 <= y0:
            return image
        gx, gy = np.meshgrid(np.arange(x0, x1 + GRID_STEP, GRID_STEP, dtype=np.float64),
                             np.arange(y0, y1 + GRID_STEP, GRID_STEP, dtype=np.float64))
        coarse = self._field(np.stack([gx.ravel(), gy.ravel()], axis=1), targets, back).reshape(gx.shape + (2,))
        box_w, box_h = x1 - x0 + 1, y1 - y0 + 1
        # Upsample with grid node k at box pixel k * GRID_STEP (corner-aligned, unlike cv2.resize).
        to_grid = np.array([[1.0 / GRID_STEP, 0, 0], [0, 1.0 / GRID_STEP, 0]])
        field = cv2.warpAffine(coarse.astype(np.float32), to_grid, (box_w, box_h),
                               flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)
        ys, xs = np.mgrid[y0:y1 + 1, x0:x1 + 1].astype(np.float32)
        map_x, map_y = xs + field[..., 0], ys + field[..., 1]
        out = image.copy()
        out[y0:y1 + 1, x0:x1 + 1] = cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        return self._mouth(out, frame_face)

    def _field(self, points: np.ndarray, centres: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Offsets at `points`: inverse-distance weights (power 4, local) and a rest term that takes
        over a reach away from every landmark."""
        points, centres = points.astype(np.float32), centres.astype(np.float32)
        distance = np.sqrt(((points[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2))
        # Within a small core a landmark's offset holds alone: the pixels around it move as one.
        weights = 1.0 / (np.maximum(distance - np.float32(CORE), 0.0) ** 2 + np.float32(0.01)) ** 2
        rest = 1.0 / self.reach ** 4
        return (weights @ values.astype(np.float32)) / (weights.sum(axis=1, keepdims=True) + np.float32(rest))

    def _mouth(self, image: np.ndarray, frame_face: np.ndarray) -> np.ndarray:
        """Paint the inside of a mouth opened wider than in the reference."""
        mouth = frame_face[INNER_MOUTH]
        if self.mouth_area is None or not (mouth[:, 2] > 0).all():
            return image
        opened = (_polygon_area(mouth[:, :2]) - self.mouth_area) / max(self.size ** 2 * 0.004, 1.0)
        strength = float(np.clip(opened, 0.0, 1.0))
        if strength <= 0:
            return image
        mask = np.zeros(image.shape[:2], np.uint8)
        cv2.fillPoly(mask, [np.round(mouth[:, :2]).astype(np.int32)], 255)
        # The lips' inner edge stays lip: 2 px on a face of 200 px and more, less on a small face,
        # whose opened mouth is only a few pixels tall.
        radius = min(2, int(self.size / 100))
        if radius:
            mask = cv2.erode(mask, np.ones((2 * radius + 1, 2 * radius + 1), np.uint8))
        mask = cv2.GaussianBlur(mask, (3, 3), 0).astype(np.float32)[..., None] * (strength / 255.0)
        out = image.astype(np.float32)
        colour = np.concatenate([MOUTH_COLOUR, [255.0]])[: image.shape[2]]
        out = out * (1 - mask) + colour * mask
        return out.astype(np.uint8)

