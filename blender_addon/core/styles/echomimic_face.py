"""`echomimic-face`: EchoMimic's pose-mode face maps (its FaceMeshVisualizer with draw_iris=False,
draw_mouse=False).

The same line drawing as `aniportrait-face`, only eyes and brows, in its order (left eye, right
eye, left brow, right brow), then 6 x 6 squares on the pupils (right iris centre 468, left 473; the
eye-contour centres when the face has no irises) and the nose tip (4). No face oval, no mouth: the
mouth is left to the audio. Colours are its tuples as written, channels 0, 1, 2.
"""

from __future__ import annotations

import numpy as np

from ..face import FACE_MAP_CANVAS, LEFT_BROW, LEFT_EYE, RIGHT_BROW, RIGHT_EYE, draw_face_lines, face_meshes, pupils, resize_bilinear
from . import FACE, Style

PARTS = (
    (LEFT_EYE, (180, 200, 10)),
    (RIGHT_EYE, (10, 200, 180)),
    (LEFT_BROW, (180, 220, 10)),
    (RIGHT_BROW, (10, 220, 180)),
)
PUPIL_COLOURS = ((10, 200, 250), (250, 200, 10))  # right (468), left (473)
NOSE_TIP, NOSE_COLOUR = 4, (200, 200, 200)
SQUARE_HALF = 3  # the square spans x - 3 .. x + 2 (6 px)


def draw_faces(faces: list[np.ndarray], width: int, height: int) -> np.ndarray:
    """The map of (478, 3) face landmark arrays in pixels of a width x height frame."""
    canvas = np.zeros((FACE_MAP_CANVAS, FACE_MAP_CANVAS, 3), dtype=np.uint8)
    for face in faces:  # each face whole, its squares over its lines, before the next face
        draw_face_lines([face], width, height, PARTS, canvas)
        squares = list(zip(pupils(face), PUPIL_COLOURS)) + [(face[NOSE_TIP], NOSE_COLOUR)]
        for point, colour in squares:
            if point[2] > 0:
                _paint_square(canvas, point[0] / width, point[1] / height, colour)
    return resize_bilinear(canvas, width, height)


def draw(people, width: int, height: int, depth_order: bool = False) -> np.ndarray:
    return draw_faces(face_meshes(people), width, height)


def _paint_square(canvas: np.ndarray, x: float, y: float, colour: tuple[int, int, int]) -> None:
    """EchoMimic's point marker at normalised (x, y): the canvas slice [py - 3 : py + 3, px - 3 :
    px + 3] with px = int(size * x) (x held in float32, as its landmark list holds it), painted with
    Python's slice rules, so a square whose start falls before the canvas edge is not drawn along
    that axis; points outside [0, 1) are skipped."""
    x, y = float(np.float32(x)), float(np.float32(y))
    if not (0 <= x < 1 and 0 <= y < 1):
        return
    rows, columns = canvas.shape[:2]
    px, py = int(columns * x), int(rows * y)
    canvas[py - SQUARE_HALF:py + SQUARE_HALF, px - SQUARE_HALF:px + SQUARE_HALF] = colour


STYLE = Style("echomimic-face", "EchoMimic Face", "EchoMimic's pose-mode face maps: eyes, brows, pupils and nose, "
                                                  "no mouth", FACE, draw, number=1)
