"""The drawing conventions of DESIGN.md written with OpenCV, as the annotators draw them.

Test oracle for the numpy rasteriser: this file draws with cv2 calls only and shares no drawing
code with `marionette_core.rasterize`.
"""

import math

import cv2
import numpy as np

LIMBS_1_INDEXED = [[2, 3], [2, 6], [3, 4], [4, 5], [6, 7], [7, 8], [2, 9], [9, 10], [10, 11], [2, 12],
                   [12, 13], [13, 14], [2, 1], [1, 15], [15, 17], [1, 16], [16, 18]]
COLORS = [[255, 0, 0], [255, 85, 0], [255, 170, 0], [255, 255, 0], [170, 255, 0], [85, 255, 0],
          [0, 255, 0], [0, 255, 85], [0, 255, 170], [0, 255, 255], [0, 170, 255], [0, 85, 255],
          [0, 0, 255], [85, 0, 255], [170, 0, 255], [255, 0, 255], [255, 0, 170], [255, 0, 85]]
HAND_EDGES = [[0, 1], [1, 2], [2, 3], [3, 4], [0, 5], [5, 6], [6, 7], [7, 8], [0, 9], [9, 10],
              [10, 11], [11, 12], [0, 13], [13, 14], [14, 15], [15, 16], [0, 17], [17, 18], [18, 19], [19, 20]]


def _hsv_to_rgb(h):
    i = int(h * 6.0)
    f = h * 6.0 - i
    p, q, t = 0.0, 1.0 - f, f
    return [(1.0, t, p), (q, 1.0, p), (p, 1.0, t), (p, q, 1.0), (t, p, 1.0), (1.0, p, q)][i % 6]


def _limb(canvas, a, b, color, stickwidth=4):
    xs, ys = [a[0], b[0]], [a[1], b[1]]
    mx, my = np.mean(xs), np.mean(ys)
    length = ((ys[0] - ys[1]) ** 2 + (xs[0] - xs[1]) ** 2) ** 0.5
    angle = math.degrees(math.atan2(ys[0] - ys[1], xs[0] - xs[1]))
    polygon = cv2.ellipse2Poly((int(mx), int(my)), (int(length / 2), stickwidth), int(angle), 0, 360, 1)
    cv2.fillConvexPoly(canvas, polygon, color)


def draw_dwpose(bodies, hands, faces, width, height):
    """bodies: list of (18, 3); hands: list of (21, 3); faces: list of (68, 3); pixels.

    As the DWPose annotator draws: it holds keypoints divided by the frame size and multiplies
    them back while drawing; it tests each hand or face point with `px > eps and py > eps` on the
    whole-pixel coordinates (eps = 0.01), so one in column 0 or row 0 is skipped along with the
    hand edges that touch it. Body points are not tested.
    """
    eps = 0.01

    def normalised(points):
        points = np.array(points, dtype=np.float64)
        return np.stack([points[:, 0] / width, points[:, 1] / height, points[:, 2]], axis=1)

    def pixel(point):
        return int(point[0] * width), int(point[1] * height)

    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    bodies = [normalised(body) for body in bodies]
    for i, (ja, jb) in enumerate(LIMBS_1_INDEXED):
        for body in bodies:
            a, b = body[ja - 1], body[jb - 1]
            if a[2] > 0 and b[2] > 0:
                _limb(canvas, (a[0] * width, a[1] * height), (b[0] * width, b[1] * height), COLORS[i])
    canvas = (canvas * 0.6).astype(np.uint8)
    for i in range(18):
        for body in bodies:
            if body[i][2] > 0:
                cv2.circle(canvas, pixel(body[i]), 4, COLORS[i], thickness=-1)
    for hand in map(normalised, hands):
        pixels = [pixel(point) for point in hand]
        kept = [point[2] > 0 and px > eps and py > eps for point, (px, py) in zip(hand, pixels)]
        for e, (i, j) in enumerate(HAND_EDGES):
            if kept[i] and kept[j]:
                color = [v * 255 for v in _hsv_to_rgb(e / float(len(HAND_EDGES)))]
                cv2.line(canvas, pixels[i], pixels[j], color, thickness=2)
        for xy, keep in zip(pixels, kept):
            if keep:
                cv2.circle(canvas, xy, 4, (0, 0, 255), thickness=-1)
    for face in map(normalised, faces):
        for point in face:
            px, py = pixel(point)
            if point[2] > 0 and px > eps and py > eps:
                cv2.circle(canvas, (px, py), 3, (255, 255, 255), thickness=-1)
    return canvas


def draw_openpose(bodies, width, height):
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    for i in range(18):
        for body in bodies:
            x, y, c = body[i]
            if c > 0:
                cv2.circle(canvas, (int(x), int(y)), 4, COLORS[i], thickness=-1)
    for i, (ja, jb) in enumerate(LIMBS_1_INDEXED):
        for body in bodies:
            a, b = body[ja - 1], body[jb - 1]
            if a[2] > 0 and b[2] > 0:
                limb_canvas = canvas.copy()
                _limb(limb_canvas, a, b, COLORS[i])
                canvas = cv2.addWeighted(canvas, 0.4, limb_canvas, 0.6, 0)
    return canvas


# AniPortrait's DrawingSpec colours (src/utils/draw_util.py), written as it writes them, in its
# drawing order: oval, left eye, left brow, right eye, right brow, then the lips' outer-bottom L/R,
# inner-bottom L/R, outer-top L/R, inner-top L/R.
ANIPORTRAIT_COLOURS = [(10, 200, 10), (180, 200, 10), (180, 220, 10), (10, 200, 180), (10, 220, 180),
                       (10, 180, 20), (20, 10, 180), (100, 100, 30), (100, 150, 50),
                       (20, 80, 100), (80, 100, 20), (120, 100, 200), (150, 120, 100)]


def draw_aniportrait_face(faces, width, height, part_edges):
    """AniPortrait's landmark drawing with OpenCV: cv2.line, 2 px thick, with its colour tuples on a
    512x512 canvas from landmarks normalised by the frame size, then cv2.resize to the frame. The
    array is returned as drawn (no BGR/RGB swap), as AniPortrait hands it to its pose guider.
    `part_edges`: the edges of each part, in the order of ANIPORTRAIT_COLOURS."""
    canvas = np.zeros((512, 512, 3), dtype=np.uint8)
    for face in faces:
        _face_lines(canvas, face, width, height, part_edges, ANIPORTRAIT_COLOURS)
    return cv2.resize(canvas, (width, height))


def _face_lines(canvas, face, width, height, part_edges, colours):
    """The face-mesh lines both visualisers draw for one face: cv2.line 2 px thick on the square
    canvas, from landmarks normalised by the frame size; an edge with an absent end is skipped."""
    size = canvas.shape[0]

    def pixel(i):
        return (min(math.floor(face[i][0] / width * size), size - 1),
                min(math.floor(face[i][1] / height * size), size - 1))
    for edges, colour in zip(part_edges, colours, strict=True):
        for a, b in edges:
            if face[a][2] > 0 and face[b][2] > 0:
                cv2.line(canvas, pixel(a), pixel(b), colour, 2)


# EchoMimic's pose-mode visualiser (src/utils/draw_utils.py, FaceMeshVisualizer(draw_iris=False,
# draw_mouse=False)): its colour tuples in its drawing order: left eye, right eye, left brow, right
# brow; then the pupil squares (right iris centre 468, left 473) and the nose tip (4).
ECHOMIMIC_COLOURS = [(180, 200, 10), (10, 200, 180), (180, 220, 10), (10, 220, 180)]
ECHOMIMIC_POINTS = [(468, (10, 200, 250)), (473, (250, 200, 10)), (4, (200, 200, 200))]


def draw_echomimic_face(faces, width, height, part_edges):
    """EchoMimic's landmark drawing: cv2.line 2 px thick on a 512x512 canvas from landmarks
    normalised by the frame size, then each marked point as the array slice [y-3:y+3, x-3:x+3] at
    x = int(512 * x_normalised) (normalised values held in float32, as its landmark list holds them,
    points outside [0, 1) skipped), then cv2.resize to the frame; returned as drawn (no BGR/RGB swap).
    `part_edges`: the edges of each part, in the order of ECHOMIMIC_COLOURS."""
    size = 512
    canvas = np.zeros((size, size, 3), dtype=np.uint8)
    for face in faces:
        _face_lines(canvas, face, width, height, part_edges, ECHOMIMIC_COLOURS)
        for index, colour in ECHOMIMIC_POINTS:
            if face[index][2] <= 0:
                continue
            x, y = float(np.float32(face[index][0] / width)), float(np.float32(face[index][1] / height))
            if x >= 1.0 or x < 0 or y >= 1.0 or y < 0:
                continue
            px, py = int(size * x), int(size * y)
            canvas[py - 3:py + 3, px - 3:px + 3, :] = colour
    return cv2.resize(canvas, (width, height))
