"""Face landmark conventions: MediaPipe Face Mesh 478 points, the iBUG-68 subset, the line drawing
that the face-map styles share (styles/aniportrait_face.py, styles/echomimic_face.py), and Wan's
face-crop box.

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


# The face-map styles draw their lines on a canvas of this size from the landmarks scaled by their
# frame size, lines this thick between floored pixel positions, then resize it to the frame.
FACE_MAP_CANVAS = 512
FACE_MAP_THICKNESS = 2
FACE_MESH_KEY = "face_mesh_keypoints_2d"


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


def face_meshes(people) -> list[np.ndarray]:
    """The (478, 3) face landmarks of every person that has a bound face, in pixels."""
    return [person.points[FACE_MESH_KEY] for person in people if FACE_MESH_KEY in person.points]


def draw_face_lines(faces: list[np.ndarray], width: int, height: int, parts,
                    canvas: np.ndarray | None = None) -> np.ndarray:
    """A FACE_MAP_CANVAS square canvas (a new one, or `canvas`) with each face's `parts` ((edges,
    colour) in drawing order) drawn as AniPortrait and EchoMimic draw them: the landmarks of a
    width x height frame scaled to the canvas and floored, each edge with both ends present a line
    FACE_MAP_THICKNESS thick, each colour tuple written into channels 0, 1, 2 as it stands."""
    size = FACE_MAP_CANVAS
    canvas = np.zeros((size, size, 3), dtype=np.uint8) if canvas is None else canvas
    for face in faces:
        visible = face[:, 2] > 0
        pixels = np.stack([np.minimum(np.floor(face[:, 0] / width * size), size - 1),
                           np.minimum(np.floor(face[:, 1] / height * size), size - 1)], axis=1).astype(int)
        for edges, colour in parts:
            for a, b in edges:
                if visible[a] and visible[b]:
                    region = thick_line_region(tuple(pixels[a]), tuple(pixels[b]), FACE_MAP_THICKNESS, size, size)
                    paint(canvas, [region], colour)
    return canvas


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
