"""Face landmark conventions: MediaPipe Face Mesh 478 points, the iBUG-68 subset, and the face
landmark maps the face models were trained on: `aniportrait-face` as AniPortrait draws it and
`echomimic-face` as EchoMimic (pose mode) draws it.

Coordinates are pixels, origin top-left, (x, y, c) per point like the body keypoints. Landmark
indices and connections are MediaPipe Face Mesh's (468 mesh points, then the right iris 468-472 and
the left iris 473-477, each centre first); left and right are the subject's own.
"""

from __future__ import annotations

import numpy as np

from .rasterize import paint, thick_line_region

FACE_MESH_COUNT = 478
RIGHT_IRIS = tuple(range(468, 473))  # centre, then four points on the rim
LEFT_IRIS = tuple(range(473, 478))

# MediaPipe index of each iBUG-68 point: jaw 0-16, brows 17-26, nose 27-35, eyes 36-47, mouth 48-67.
IBUG68_FROM_MESH = (
    162, 234, 93, 58, 172, 136, 149, 148, 152, 377, 378, 365, 397, 288, 323, 454, 389,
    71, 63, 105, 66, 107, 336, 296, 334, 293, 301,
    168, 197, 5, 4, 75, 97, 2, 326, 305,
    33, 160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380,
    61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181, 78, 82, 13, 312, 308, 317, 14, 87,
)

RIGHT_EYE = ((33, 7), (7, 163), (163, 144), (144, 145), (145, 153), (153, 154), (154, 155), (155, 133),
             (33, 246), (246, 161), (161, 160), (160, 159), (159, 158), (158, 157), (157, 173), (173, 133))
LEFT_EYE = ((263, 249), (249, 390), (390, 373), (373, 374), (374, 380), (380, 381), (381, 382), (382, 362),
            (263, 466), (466, 388), (388, 387), (387, 386), (386, 385), (385, 384), (384, 398), (398, 362))
RIGHT_BROW = ((46, 53), (53, 52), (52, 65), (65, 55), (70, 63), (63, 105), (105, 66), (66, 107))
LEFT_BROW = ((276, 283), (283, 282), (282, 295), (295, 285), (300, 293), (293, 334), (334, 296), (296, 336))
# AniPortrait's face oval: jaw and cheeks, no forehead arc.
FACE_OVAL = ((176, 149), (150, 136), (356, 454), (58, 132), (152, 148), (361, 288), (251, 389), (132, 93),
             (389, 356), (400, 377), (136, 172), (377, 152), (323, 361), (172, 58), (454, 323), (365, 379),
             (379, 378), (148, 176), (93, 234), (397, 365), (149, 150), (288, 397), (234, 127), (378, 400),
             (127, 162), (162, 21))
LIPS_OUTER_BOTTOM_LEFT = ((61, 146), (146, 91), (91, 181), (181, 84), (84, 17))
LIPS_OUTER_BOTTOM_RIGHT = ((17, 314), (314, 405), (405, 321), (321, 375), (375, 291))
LIPS_INNER_BOTTOM_LEFT = ((78, 95), (95, 88), (88, 178), (178, 87), (87, 14))
LIPS_INNER_BOTTOM_RIGHT = ((14, 317), (317, 402), (402, 318), (318, 324), (324, 308))
LIPS_OUTER_TOP_LEFT = ((61, 185), (185, 40), (40, 39), (39, 37), (37, 0))
LIPS_OUTER_TOP_RIGHT = ((0, 267), (267, 269), (269, 270), (270, 409), (409, 291))
LIPS_INNER_TOP_LEFT = ((78, 191), (191, 80), (80, 81), (81, 82), (82, 13))
LIPS_INNER_TOP_RIGHT = ((13, 312), (312, 311), (311, 310), (310, 415), (415, 308))


# (edges, colour) in AniPortrait's drawing order, each colour AniPortrait's own tuple as written.
# AniPortrait draws the tuples into channels 0, 1, 2 (OpenCV style) and passes that array to its
# pose guider with no BGR/RGB conversion; these maps keep channel 0 as R, so their R, G, B are the
# guider's input channels in order.
ANIPORTRAIT_PARTS = (
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
ANIPORTRAIT_CANVAS = 512
ANIPORTRAIT_THICKNESS = 2

# EchoMimic's pose-mode maps (its FaceMeshVisualizer with draw_iris=False, draw_mouse=False): the
# same line drawing, only eyes and brows, in its order (left eye, right eye, left brow, right brow),
# then 6x6 squares on the pupils (right iris centre 468, left 473) and the nose tip (4). No face
# oval, no mouth: the mouth is left to the audio. Colours are its tuples as written, channels 0, 1, 2.
ECHOMIMIC_PARTS = (
    (LEFT_EYE, (180, 200, 10)),
    (RIGHT_EYE, (10, 200, 180)),
    (LEFT_BROW, (180, 220, 10)),
    (RIGHT_BROW, (10, 220, 180)),
)
ECHOMIMIC_PUPIL_COLOURS = ((10, 200, 250), (250, 200, 10))  # right (468), left (473)
ECHOMIMIC_NOSE_TIP, ECHOMIMIC_NOSE_COLOUR = 4, (200, 200, 200)
ECHOMIMIC_SQUARE_HALF = 3  # the square spans x - 3 .. x + 2 (6 px)

FACE_MAP_STYLES = ("aniportrait-face", "echomimic-face")


def ibug68(mesh_points: np.ndarray) -> np.ndarray:
    """The (68, 3) iBUG points of a (478, 3) face mesh landmark array."""
    return mesh_points[list(IBUG68_FROM_MESH)].copy()


def pupils(mesh_points: np.ndarray) -> np.ndarray:
    """(2, 3) right and left pupil: the iris centres, or the eye-contour centre without irises."""
    result = np.zeros((2, 3))
    for side, (iris, eye) in enumerate(((RIGHT_IRIS, RIGHT_EYE), (LEFT_IRIS, LEFT_EYE))):
        if mesh_points[iris[0], 2] > 0:
            result[side] = mesh_points[iris[0]]
            continue
        ring = sorted({i for edge in eye for i in edge})
        points = mesh_points[ring]
        if (points[:, 2] > 0).all():
            result[side] = (*points[:, :2].mean(axis=0), 1.0)
    return result


def draw_face_map(faces: list[np.ndarray], width: int, height: int, style: str) -> np.ndarray:
    """The face landmark map of one frame in a named style: (height, width, 3) uint8, R, G, B being
    the three channels the model receives (R = the first value of the style's colour tuples).

    Each face is a (478, 3) landmark array in pixels of a width x height frame (origin top-left,
    c = 0 for an absent point). As AniPortrait and EchoMimic do, the map is drawn on a 512 x 512
    canvas from the landmarks scaled by their frame size (lines 2 px thick between floored pixel
    positions), which is then resized to the frame with bilinear filtering.
    `aniportrait-face`: face oval, eyes, brows, lips in eight runs. `echomimic-face`: eyes and brows,
    then 6 x 6 squares on the pupils (the iris centres, or the eye-contour centres when the face has
    no irises) and the nose tip.
    """
    if style not in FACE_MAP_STYLES:
        raise ValueError(f"unknown face map style '{style}'; one of {', '.join(FACE_MAP_STYLES)}")
    size = ANIPORTRAIT_CANVAS
    canvas = np.zeros((size, size, 3), dtype=np.uint8)
    for face in faces:
        visible = face[:, 2] > 0
        pixels = np.stack([np.minimum(np.floor(face[:, 0] / width * size), size - 1),
                           np.minimum(np.floor(face[:, 1] / height * size), size - 1)], axis=1).astype(int)
        for edges, colour in (ANIPORTRAIT_PARTS if style == "aniportrait-face" else ECHOMIMIC_PARTS):
            for a, b in edges:
                if visible[a] and visible[b]:
                    region = thick_line_region(tuple(pixels[a]), tuple(pixels[b]), ANIPORTRAIT_THICKNESS, size, size)
                    paint(canvas, [region], colour)
        if style == "echomimic-face":
            squares = list(zip(pupils(face), ECHOMIMIC_PUPIL_COLOURS))
            squares.append((face[ECHOMIMIC_NOSE_TIP], ECHOMIMIC_NOSE_COLOUR))
            for point, colour in squares:
                if point[2] > 0:
                    _paint_square(canvas, point[0] / width, point[1] / height, colour)
    return resize_bilinear(canvas, width, height)


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
    half = ECHOMIMIC_SQUARE_HALF
    canvas[py - half:py + half, px - half:px + half] = colour


def draw_aniportrait_face(faces: list[np.ndarray], width: int, height: int) -> np.ndarray:
    """The `aniportrait-face` map (draw_face_map with that style)."""
    return draw_face_map(faces, width, height, "aniportrait-face")


def resize_bilinear(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """uint8 bilinear resize with OpenCV's INTER_LINEAR conventions (pixel centres at +0.5, edge
    clamping, 11-bit fixed-point weights), so maps match an OpenCV-resized one."""
    if image.shape[1] == width and image.shape[0] == height:
        return image.copy()
    x0, wx = _linear_taps(image.shape[1], width)
    y0, wy = _linear_taps(image.shape[0], height)
    source = image.astype(np.int64)
    x1 = np.minimum(x0 + 1, image.shape[1] - 1)
    y1 = np.minimum(y0 + 1, image.shape[0] - 1)
    rows = source[:, x0] * wx[0][None, :, None] + source[:, x1] * wx[1][None, :, None]
    out = rows[y0] * wy[0][:, None, None] + rows[y1] * wy[1][:, None, None]
    return ((out + (1 << 21)) >> 22).astype(np.uint8)


def _linear_taps(source: int, target: int) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    scale = source / target
    position = (np.arange(target) + 0.5) * scale - 0.5
    index = np.floor(position).astype(np.int64)
    fraction = position - index
    low = index < 0
    index[low], fraction[low] = 0, 0.0
    high = index >= source - 1
    index[high], fraction[high] = source - 1, 0.0
    second = np.rint(fraction * 2048).astype(np.int64)
    return index, (2048 - second, second)


# Wan2.2-Animate's face crops (its preprocessing's get_face_bboxes): the box of the 68 face points,
# its area scaled by 1.3 keeping the aspect, the extra height mostly above (the forehead).
WAN_FACE_AREA_SCALE = 1.3
FaceBox = tuple[int, int, int, int]  # x1, x2, y1, y2: pixels, origin top-left; the crop is [y1:y2, x1:x2]


def wan_face_box(points: np.ndarray, width: int, height: int, scale: float = WAN_FACE_AREA_SCALE) -> FaceBox:
    """Wan's face box of face points ((N, 2|3) pixels, origin top-left, every row used) in a
    width x height frame: (x1, x2, y1, y2), the crop being frame[y1:y2, x1:x2]."""
    xy = np.asarray(points, dtype=np.float64)[:, :2]
    min_x, min_y = xy.min(axis=0)
    max_x, max_y = xy.max(axis=0)
    # A flat box (all points on one line) has no aspect; the original divides by zero there.
    initial_width, initial_height = max(max_x - min_x, 1.0), max(max_y - min_y, 1.0)
    expanded_area = initial_width * initial_height * scale
    new_width = np.sqrt(expanded_area * (initial_width / initial_height))
    new_height = np.sqrt(expanded_area * (initial_height / initial_width))
    delta_width = (new_width - initial_width) / 2
    delta_height = (new_height - initial_height) / 4
    x1 = max(min_x - delta_width, 0)
    x2 = min(max_x + delta_width, width)
    y1 = max(min_y - 3 * delta_height, 0)
    y2 = min(max_y + delta_height, height)
    return int(x1), int(x2), int(y1), int(y2)
