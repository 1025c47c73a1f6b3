"""`aniportrait-face`: AniPortrait's face-landmark maps (MediaPipe face mesh lines).

Face oval (jaw and cheeks, no forehead arc), both eyes, both brows, the lips in eight runs, no
irises; drawn on a 512 x 512 canvas and resized to the frame (core/face.py). AniPortrait draws its
colour tuples into channels 0, 1, 2 (OpenCV style) and passes that array to its pose guider with no
BGR/RGB conversion; these maps keep channel 0 as R, so their R, G, B are the guider's input channels
in order.
"""

from __future__ import annotations

import numpy as np

from ..face import (FACE_OVAL, LEFT_BROW, LEFT_EYE, LIPS_INNER_BOTTOM_LEFT, LIPS_INNER_BOTTOM_RIGHT,
                    LIPS_INNER_TOP_LEFT, LIPS_INNER_TOP_RIGHT, LIPS_OUTER_BOTTOM_LEFT, LIPS_OUTER_BOTTOM_RIGHT,
                    LIPS_OUTER_TOP_LEFT, LIPS_OUTER_TOP_RIGHT, RIGHT_BROW, RIGHT_EYE, draw_face_lines, face_meshes,
                    resize_bilinear)
from . import FACE, Style

# (edges, colour) in AniPortrait's drawing order, each colour AniPortrait's own tuple as written.
PARTS = (
    (FACE_OVAL, (10, 200, 10)),
    (LEFT_EYE, (180, 200, 10)),
    (LEFT_BROW, (180, 220, 10)),
    (RIGHT_EYE, (10, 200, 180)),
    (RIGHT_BROW, (10, 220, 180)),
    (LIPS_OUTER_BOTTOM_LEFT, (10, 180, 20)),
    (LIPS_OUTER_BOTTOM_RIGHT, (20, 10, 180)),
    (LIPS_INNER_BOTTOM_LEFT, (100, 100, 30)),
    (LIPS_INNER_BOTTOM_RIGHT, (100, 150, 50)),
    (LIPS_OUTER_TOP_LEFT, (20, 80, 100)),
    (LIPS_OUTER_TOP_RIGHT, (80, 100, 20)),
    (LIPS_INNER_TOP_LEFT, (120, 100, 200)),
    (LIPS_INNER_TOP_RIGHT, (150, 120, 100)),
)


def draw_faces(faces: list[np.ndarray], width: int, height: int) -> np.ndarray:
    """The map of (478, 3) face landmark arrays in pixels of a width x height frame."""
    return resize_bilinear(draw_face_lines(faces, width, height, PARTS), width, height)


def draw(people, width: int, height: int, depth_order: bool = False) -> np.ndarray:
    return draw_faces(face_meshes(people), width, height)


STYLE = Style("aniportrait-face", "AniPortrait Face", "AniPortrait's face-landmark maps: face oval, eyes, brows, "
                                                      "lips", FACE, draw, number=0)
