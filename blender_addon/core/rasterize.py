"""Drawing in pure numpy, pixel-compatible with the OpenCV drawing the models were trained on, and
the OpenPose body and hand conventions the pose styles (styles/) share.

Blender bundles no OpenCV, so this module reproduces what the annotators' OpenCV calls produce:
`ellipse2Poly` + `fillConvexPoly` limbs, filled `circle` joints, `line` edges, `addWeighted`
blending. Canvas: (H, W, 3) uint8, RGB as the models consume it, black background; keypoints in
pixels, origin top-left.
"""

from __future__ import annotations

import colorsys
import math
from functools import lru_cache
from typing import Iterable, Sequence

import numpy as np


# Body limbs as 0-based BODY-18 index pairs: the first 17 of the usual 19, in the convention's order.
BODY_LIMBS = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10),
    (1, 11), (11, 12), (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17),
)
# Colour of limb i and of joint i.
BODY_COLORS = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
    (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
    (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
)
HAND_EDGES = (
    (0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (0, 9), (9, 10),
    (10, 11), (11, 12), (0, 13), (13, 14), (14, 15), (15, 16), (0, 17), (17, 18), (18, 19), (19, 20),
)
# hsv(e/20, 1, 1) * 255, rounded as OpenCV rounds a colour scalar to uint8.
HAND_EDGE_COLORS = tuple(
    tuple(int(np.rint(channel * 255.0)) for channel in colorsys.hsv_to_rgb(e / len(HAND_EDGES), 1.0, 1.0))
    for e in range(len(HAND_EDGES))
)
HAND_POINT_COLOR = (0, 0, 255)

STICK_WIDTH = 4
JOINT_RADIUS = 4
HAND_POINT_RADIUS = 4
HAND_LINE_THICKNESS = 2
# The annotators test a hand or face point with `int(x) > eps and int(y) > eps` on its whole-pixel
# coordinates (not on the normalised ones), so only points in column 0 or row 0 are dropped.
ANNOTATOR_EPS = 0.01

# OpenCV's fixed point for sub-pixel polygon vertices.
_SHIFT = 16
_ONE = 1 << _SHIFT
_HALF = _ONE >> 1
# OpenCV's sine table: float32 literals of sin at whole degrees written to 7 decimals (sin 180 is
# exactly 0 there); matching it keeps polygon vertices identical.
_SIN_TABLE = np.round(np.sin(np.deg2rad(np.arange(451))), 7).astype(np.float32).astype(np.float64)


# --- primitives --------------------------------------------------------------------------------

class Region:
    """A boolean mask over a clipped bounding box of the canvas: rows y0.., columns x0.."""

    __slots__ = ("y0", "x0", "mask")

    def __init__(self, y0: int, x0: int, mask: np.ndarray):
        self.y0, self.x0, self.mask = y0, x0, mask

    def view(self, canvas: np.ndarray) -> np.ndarray:
        height, width = self.mask.shape
        return canvas[self.y0:self.y0 + height, self.x0:self.x0 + width]


def ellipse_polygon(center: tuple[int, int], axes: tuple[int, int], angle: int) -> np.ndarray:
    """Integer vertices of a full ellipse at 1-degree steps, as OpenCV's ellipse2Poly gives them."""
    angle %= 360
    cos_a, sin_a = _SIN_TABLE[450 - angle], _SIN_TABLE[angle]
    steps = np.arange(0, 361)
    x = axes[0] * _SIN_TABLE[450 - steps]
    y = axes[1] * _SIN_TABLE[steps]
    px = _round_half_even(center[0] + x * cos_a - y * sin_a)
    py = _round_half_even(center[1] + x * sin_a + y * cos_a)
    keep = np.ones(len(px), dtype=bool)
    keep[1:] = (px[1:] != px[:-1]) | (py[1:] != py[:-1])
    px, py = px[keep], py[keep]
    if len(px) == 1:
        px, py = np.repeat(px, 2), np.repeat(py, 2)
    return np.stack([px, py], axis=1)


def _round_half_even(values: np.ndarray) -> np.ndarray:
    return np.rint(values).astype(np.int64)


def convex_polygon_shape(vertices: np.ndarray, subpixel: bool = False) -> Region:
    """Pixels a filled convex polygon covers, with OpenCV's fillConvexPoly rules (not anti-aliased).

    Vertices are pixels, possibly sub-pixel (they are held to 1/65536 px as OpenCV holds them).
    OpenCV walks two chains of edges down from the top vertex and fills each row between them;
    vertices rounded onto a pixel grid are not exactly convex, so the chain walk (which skips a
    vertex that does not go down) is reproduced rather than a plain inside test.
    """
    fx = np.rint(np.asarray(vertices[:, 0], dtype=np.float64) * _ONE).astype(np.int64)
    fy = np.rint(np.asarray(vertices[:, 1], dtype=np.float64) * _ONE).astype(np.int64)
    ix, iy = (fx + _HALF) >> _SHIFT, (fy + _HALF) >> _SHIFT
    bx0, bx1, by0, by1 = ix.min(), ix.max(), iy.min(), iy.max()

    mask = np.zeros((by1 - by0 + 1, bx1 - bx0 + 1), dtype=bool)
    if by1 > by0 and len(fx) >= 3:
        top = int(np.argmin(iy))
        count = len(fx)
        xa = _chain_x(fx, iy, top, np.arange(1, count + 1), by0, by1)
        xb = _chain_x(fx, iy, top, -np.arange(1, count + 1), by0, by1)
        left = (np.minimum(xa, xb) + _HALF) >> _SHIFT
        right = (np.maximum(xa, xb) + _HALF) >> _SHIFT
        columns = np.arange(bx0, bx1 + 1)
        # The chain walk ends on the bottom row, which only the outline draws.
        mask[:-1] = (columns[None, :] >= left[:, None]) & (columns[None, :] <= right[:, None])

    # Outline: OpenCV also draws every edge as an 8-connected line stepping one pixel along the
    # edge's major axis from its sub-pixel start, rounding the other coordinate.
    if subpixel:
        ox, oy = _edge_pixels(fx / _ONE, fy / _ONE, subpixel=True)
    else:
        ox, oy = _edge_pixels(ix, iy, subpixel=False)
    inside = (ox >= bx0) & (ox <= bx1) & (oy >= by0) & (oy <= by1)
    mask[oy[inside] - by0, ox[inside] - bx0] = True

    return Region(int(by0), int(bx0), mask)


def _chain_x(fx: np.ndarray, iy: np.ndarray, top: int, steps: np.ndarray, y_first: int, y_last: int) -> np.ndarray:
    """x (1/65536 px) of one edge chain on rows y_first .. y_last - 1, walking from the top vertex.

    Walking the chain, only a vertex lower than every vertex before it starts a new edge; that
    edge runs from the vertex just before it, starting at the row where the previous edge ended.
    """
    order = (top + steps) % len(fx)
    chain_y = iy[order]
    before = np.maximum.accumulate(np.concatenate(([y_first], chain_y[:-1])))
    starts = np.nonzero(chain_y > before)[0]
    starts = starts[: np.searchsorted(chain_y[starts], y_last) + 1]
    end_row = chain_y[starts]
    start_row = np.concatenate(([y_first], end_row[:-1]))
    start_x = fx[np.where(starts > 0, order[starts - 1], top)]
    span = end_row - start_row
    # C integer division truncates towards zero.
    numerator = (fx[order[starts]] - start_x) * 2 + span
    step = np.sign(numerator) * (np.abs(numerator) // (2 * span))
    rows_in_edge = np.minimum(end_row, y_last) - start_row
    edge = np.repeat(np.arange(len(starts)), rows_in_edge)
    offset = np.arange(rows_in_edge.sum()) - np.repeat(np.cumsum(rows_in_edge) - rows_in_edge, rows_in_edge)
    return start_x[edge] + offset * step[edge]


def _edge_pixels(vx: np.ndarray, vy: np.ndarray, subpixel: bool) -> tuple[np.ndarray, np.ndarray]:
    """Pixels of the closed polygon outline through the vertices, as OpenCV draws it.

    Each edge steps one pixel at a time along its major axis. Integer polygons use OpenCV's
    Bresenham iterator, which starts at the left end and rounds half-way minor offsets towards
    that start; sub-pixel polygons step from the exact start and round half-way values up.
    """
    ax, ay = vx, vy
    bx, by = np.roll(vx, -1), np.roll(vy, -1)
    if not subpixel:  # OpenCV draws the edge into vertex i from vertex i - 1, left end first.
        ax, ay, bx, by = np.roll(vx, 1), np.roll(vy, 1), vx, vy
        swap = bx < ax
        ax, bx = np.where(swap, bx, ax), np.where(swap, ax, bx)
        ay, by = np.where(swap, by, ay), np.where(swap, ay, by)
    x_major = np.abs(bx - ax) > np.abs(by - ay)
    major_a, major_b = np.where(x_major, ax, ay), np.where(x_major, bx, by)
    minor_a, minor_b = np.where(x_major, ay, ax), np.where(x_major, by, bx)
    if subpixel:  # walk from the lower to the higher major coordinate
        flip = major_b < major_a
        major_a, major_b = np.where(flip, major_b, major_a), np.where(flip, major_a, major_b)
        minor_a, minor_b = np.where(flip, minor_b, minor_a), np.where(flip, minor_a, minor_b)
        counts = (np.floor(major_b + 1) - np.floor(major_a)).astype(np.int64)
    else:
        counts = np.abs(major_b - major_a).astype(np.int64) + 1
    edge = np.repeat(np.arange(len(vx)), counts)
    k = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    if subpixel:
        span = major_b - major_a
        slope = np.where(span > 0, (minor_b - minor_a) / np.where(span > 0, span, 1), 0.0)
        major = np.floor(major_a[edge] + k + 0.5).astype(np.int64)
        minor = np.floor(minor_a[edge] + k * slope[edge] + 0.5).astype(np.int64)
    else:
        major_len = np.abs(major_b - major_a).astype(np.int64)[edge]
        minor_len = np.abs(minor_b - minor_a).astype(np.int64)[edge]
        major = major_a.astype(np.int64)[edge] + np.sign(major_b - major_a).astype(np.int64)[edge] * k
        # ceil(k * minor / major - 1/2), in integers
        offset = -((major_len - 2 * k * minor_len) // np.maximum(2 * major_len, 1))
        minor = minor_a.astype(np.int64)[edge] + np.sign(minor_b - minor_a).astype(np.int64)[edge] * offset
    return np.where(x_major[edge], major, minor), np.where(x_major[edge], minor, major)


@lru_cache(maxsize=16)
def _disk_shape(radius: int) -> Region:
    """The filled circle OpenCV's midpoint algorithm draws, centred on (0, 0)."""
    size = 2 * radius + 1
    stamp = np.zeros((size, size), dtype=bool)
    err, dx, dy, plus, minus = 0, radius, 0, 1, 2 * radius - 1
    while dx >= dy:
        for row, half in ((dy, dx), (dx, dy)):
            stamp[radius - row, radius - half:radius + half + 1] = True
            stamp[radius + row, radius - half:radius + half + 1] = True
        dy += 1
        err += plus
        plus += 2
        if err > 0:
            err -= minus
            dx -= 1
            minus -= 2
    return _frozen(Region(-radius, -radius, stamp))


def disk_region(x: int, y: int, radius: int, width: int, height: int) -> Region | None:
    return place(_disk_shape(radius), x, y, width, height)


@lru_cache(maxsize=8192)
def _thick_line_shape(dx: int, dy: int, thickness: int) -> Region:
    """A line from (0, 0) to (dx, dy) as OpenCV's `line` draws it (8-connected, not anti-aliased).

    One pixel thick it is OpenCV's Bresenham iterator alone; thicker, a polygon with round caps.
    """
    if thickness <= 1:
        xs, ys = _edge_pixels(np.array([0, dx]), np.array([0, dy]), subpixel=False)
        x0, y0 = min(0, dx), min(0, dy)
        mask = np.zeros((abs(dy) + 1, abs(dx) + 1), dtype=bool)
        mask[ys - y0, xs - x0] = True
        return _frozen(Region(y0, x0, mask))
    shapes = []
    length = math.hypot(dx, dy)
    if length > 0:
        # OpenCV offsets the ends by half the thickness (plus half a pixel when odd) at right
        # angles, rounded to 1/65536 px.
        scale = (thickness / 2 + (thickness & 1) * 0.5) / length
        ox = round(dy * scale * _ONE) / _ONE
        oy = round(-dx * scale * _ONE) / _ONE
        quad = np.array([(ox, oy), (-ox, -oy), (dx - ox, dy - oy), (dx + ox, dy + oy)])
        shapes.append(convex_polygon_shape(quad, subpixel=True))
    cap = _disk_shape((thickness * (_ONE >> 1) + _HALF) >> _SHIFT)
    shapes += [cap, Region(cap.y0 + dy, cap.x0 + dx, cap.mask)]
    return _frozen(_union(shapes))


def thick_line_region(p0: tuple[int, int], p1: tuple[int, int], thickness: int,
                      width: int, height: int) -> Region | None:
    return place(_thick_line_shape(p1[0] - p0[0], p1[1] - p0[1], thickness), p0[0], p0[1], width, height)


@lru_cache(maxsize=8192)
def _limb_shape(half_length: int, stick_width: int, angle: int, parity_x: int, parity_y: int) -> Region:
    # Vertices are rounded half-to-even, so a shape is reusable between centres of equal parity.
    return _frozen(convex_polygon_shape(ellipse_polygon((parity_x, parity_y), (half_length, stick_width), angle)))


def limb_region(a: np.ndarray, b: np.ndarray, stick_width: int, width: int, height: int) -> Region | None:
    """The ellipse the annotators draw for a limb from point a to point b (pixels)."""
    # The annotators use angle = atan2(y_a - y_b, x_a - x_b) truncated to whole degrees; the sign
    # matters because truncation differs between an angle and its opposite.
    cx, cy = int((a[0] + b[0]) / 2), int((a[1] + b[1]) / 2)
    length = math.hypot(a[0] - b[0], a[1] - b[1])
    angle = int(math.degrees(math.atan2(a[1] - b[1], a[0] - b[0])))
    shape = _limb_shape(int(length / 2), stick_width, angle % 360, cx & 1, cy & 1)
    return place(shape, cx - (cx & 1), cy - (cy & 1), width, height)


def _union(shapes: list[Region]) -> Region:
    y0 = min(shape.y0 for shape in shapes)
    x0 = min(shape.x0 for shape in shapes)
    y1 = max(shape.y0 + shape.mask.shape[0] for shape in shapes)
    x1 = max(shape.x0 + shape.mask.shape[1] for shape in shapes)
    mask = np.zeros((y1 - y0, x1 - x0), dtype=bool)
    for shape in shapes:
        mask[shape.y0 - y0:shape.y0 - y0 + shape.mask.shape[0],
             shape.x0 - x0:shape.x0 - x0 + shape.mask.shape[1]] |= shape.mask
    return Region(y0, x0, mask)


def _frozen(region: Region) -> Region:
    region.mask.setflags(write=False)  # cached shapes are shared between frames
    return region


def place(shape: Region, x: int, y: int, width: int, height: int) -> Region | None:
    """The shape moved by (x, y) and clipped to the canvas; None if nothing is left."""
    mask = shape.mask
    y0, x0 = shape.y0 + y, shape.x0 + x
    top, left = max(0, -y0), max(0, -x0)
    bottom, right = min(mask.shape[0], height - y0), min(mask.shape[1], width - x0)
    if top >= bottom or left >= right:
        return None
    if top or left or bottom < mask.shape[0] or right < mask.shape[1]:
        mask = mask[top:bottom, left:right]
    return Region(y0 + top, x0 + left, mask)


def paint(canvas: np.ndarray, regions: Iterable[Region | None], color: Sequence[int]) -> None:
    color = np.asarray(color, dtype=np.uint8)
    for region in regions:
        if region is not None:
            region.view(canvas)[region.mask] = color


def blend(canvas: np.ndarray, region: Region | None, color: Sequence[int], alpha: float) -> None:
    """canvas = (1 - alpha) * canvas + alpha * (canvas with the region painted), as addWeighted.

    Pixels outside the region are unchanged by that formula, so only the region is computed.
    """
    if region is None:
        return
    view = region.view(canvas)
    old = view[region.mask].astype(np.float32)
    new = old * np.float32(1.0 - alpha) + np.asarray(color, dtype=np.float32) * np.float32(alpha)
    view[region.mask] = np.clip(np.rint(new), 0, 255).astype(np.uint8)


# --- the OpenPose conventions the pose styles share ----------------------------------------

def as_annotator_sees(points: np.ndarray, width: int, height: int) -> np.ndarray:
    """Pixel points after the annotators' trip through coordinates normalised by the frame size.

    The annotators keep keypoints divided by the frame size and multiply back to draw; x / W * W
    can land one ulp below a whole pixel, which int() then draws one pixel to the left (or up).
    """
    seen = np.array(points, dtype=np.float64)
    seen[:, 0] = seen[:, 0] / width * width
    seen[:, 1] = seen[:, 1] / height * height
    return seen


def clear_of_top_left(points: np.ndarray) -> np.ndarray:
    """Which hand or face points pass the annotators' eps test (not in pixel column 0 or row 0)."""
    return (np.trunc(points[:, 0]) > ANNOTATOR_EPS) & (np.trunc(points[:, 1]) > ANNOTATOR_EPS)


def body_points(points: np.ndarray, depth: np.ndarray):
    return points, depth, points[:, 2] > 0


def limb_regions(bodies, limbs, colors, stick_width, width, height):
    """(depth, color, region) per drawable limb, limb-major then person, as the annotators loop.

    `bodies` holds (points, depth, present) per person.
    """
    for index, (i, j) in enumerate(limbs):
        for points, depth, present in bodies:
            if present[i] and present[j]:
                region = limb_region(points[i], points[j], stick_width, width, height)
                yield (depth[i] + depth[j]) / 2, colors[index], region


def joint_regions(bodies, colors, radius, width, height):
    for index in range(len(colors)):
        for points, depth, present in bodies:
            if present[index]:
                x, y, _c = points[index]
                yield depth[index], colors[index], disk_region(int(x), int(y), radius, width, height)


def in_order(items, depth_order: bool):
    items = list(items)
    if depth_order:
        items.sort(key=lambda item: -item[0])  # stable: equal depths keep the convention's order
    return [(color, region) for _depth, color, region in items]


def draw_hand(canvas: np.ndarray, hand: np.ndarray, depth: np.ndarray, present: np.ndarray,
               thickness: int, radius: int, depth_order: bool) -> None:
    """Hand edges (an edge needs both ends present), then the points, over the canvas."""
    height, width = canvas.shape[:2]
    edges = []
    for index, (i, j) in enumerate(HAND_EDGES):
        if present[i] and present[j]:
            p0 = (int(hand[i, 0]), int(hand[i, 1]))
            p1 = (int(hand[j, 0]), int(hand[j, 1]))
            region = thick_line_region(p0, p1, thickness, width, height)
            edges.append(((depth[i] + depth[j]) / 2, HAND_EDGE_COLORS[index], region))
    if depth_order:
        edges.sort(key=lambda item: -item[0])
    for _depth, color, region in edges:
        paint(canvas, [region], color)
    paint(canvas, [disk_region(int(x), int(y), radius, width, height) for x, y, _c in hand[present]],
          HAND_POINT_COLOR)
