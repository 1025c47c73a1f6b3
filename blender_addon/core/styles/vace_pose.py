"""`vace-pose`: the pose videos of VACE's pose task (its PoseBodyFaceVideoAnnotator).

VACE draws with the DWPose annotator's code (as `dwpose`: limbs of stick width 4, the canvas times
0.6, joints of radius 4, face points white of radius 3), body and face only, no hands, on a canvas of
the frame resized so its short side is 1024 (each side rounded to a multiple of 64); then resizes the
drawing to the frame's size (cv2 INTER_AREA when shrinking, INTER_LANCZOS4 when enlarging) and
reverses its channels (the annotator works in BGR and flips its drawing back), so limb and joint
colours come out with red and blue swapped against `dwpose`.
"""

from __future__ import annotations

import numpy as np

from ..resample import resize_area, resize_lanczos4
from . import POSE, Style
from .dwpose import draw_on_canvas

ANNOTATOR_SHORT_SIDE = 1024


def canvas_size(width: int, height: int) -> tuple[int, int]:
    """The annotator's drawing size for a frame: short side 1024, each side rounded to a multiple of 64."""
    scale = ANNOTATOR_SHORT_SIDE / min(width, height)
    return int(np.round(width * scale / 64.0)) * 64, int(np.round(height * scale / 64.0)) * 64


def draw(people, width: int, height: int, depth_order: bool = False) -> np.ndarray:
    canvas_width, canvas_height = canvas_size(width, height)

    def place(points: np.ndarray) -> np.ndarray:  # normalised by the frame, drawn at the canvas's size
        placed = np.array(points, dtype=np.float64)
        placed[:, 0] = placed[:, 0] / width * canvas_width
        placed[:, 1] = placed[:, 1] / height * canvas_height
        return placed

    canvas = draw_on_canvas(people, canvas_width, canvas_height, depth_order, place, hands=False)
    shrink = width * height <= canvas_width * canvas_height
    resized = (resize_area if shrink else resize_lanczos4)(canvas, width, height)
    return np.ascontiguousarray(resized[..., ::-1])


STYLE = Style("vace-pose", "VACE Pose", "Body and face, drawn at VACE's annotator size and resized, red and blue "
                                        "swapped: the pose videos Wan-VACE was trained on", POSE, draw, number=3)
