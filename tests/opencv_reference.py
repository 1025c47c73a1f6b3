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
    """bodies: list of (18, 3); hands: list of (21, 3); faces: list of (68, 3); pixels."""
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    for i, (ja, jb) in enumerate(LIMBS_1_INDEXED):
        for body in bodies:
            a, b = body[ja - 1], body[jb - 1]
            if a[2] > 0 and b[2] > 0:
                _limb(canvas, a, b, COLORS[i])
    canvas = (canvas * 0.6).astype(np.uint8)
    for i in range(18):
        for body in bodies:
            x, y, c = body[i]
            if c > 0:
                cv2.circle(canvas, (int(x), int(y)), 4, COLORS[i], thickness=-1)
    for hand in hands:
        for e, (i, j) in enumerate(HAND_EDGES):
            if hand[i][2] > 0 and hand[j][2] > 0:
                color = [v * 255 for v in _hsv_to_rgb(e / float(len(HAND_EDGES)))]
                cv2.line(canvas, (int(hand[i][0]), int(hand[i][1])), (int(hand[j][0]), int(hand[j][1])),
                         color, thickness=2)
        for x, y, c in hand:
            if c > 0:
                cv2.circle(canvas, (int(x), int(y)), 4, (0, 0, 255), thickness=-1)
    for face in faces:
        for x, y, c in face:
            if c > 0:
                cv2.circle(canvas, (int(x), int(y)), 3, (255, 255, 255), thickness=-1)
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


def draw_aniportrait_face(faces, width, height, parts):
    """AniPortrait's landmark drawing with OpenCV: lines 2 px thick on a 512x512 canvas from
    landmarks normalised by the frame size, then cv2.resize to the frame. `parts` is a list of
    (edges, rgb colour) in drawing order."""
    size = 512
    canvas = np.zeros((size, size, 3), dtype=np.uint8)
    for face in faces:
        def pixel(i):
            return (min(math.floor(face[i][0] / width * size), size - 1),
                    min(math.floor(face[i][1] / height * size), size - 1))
        for edges, colour in parts:
            for a, b in edges:
                if face[a][2] > 0 and face[b][2] > 0:
                    cv2.line(canvas, pixel(a), pixel(b), colour, 2)
    return cv2.resize(canvas, (width, height))
