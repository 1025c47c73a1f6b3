"""`rig-mask`: where the characters are, drawn from its keypoints (white = the character, black = not).

Replace-mode engines (Wan2.2-Animate) generate the character where the mask is white and keep the
background plate elsewhere, so the mask must cover the whole figure with a margin: each limb is a
capsule (a segment with round ends), the torso a filled quadrilateral, the head a disc sized from
the head points, each hand the capsules of its finger bones. Sizes follow the character's own scale
(its shoulder width, else its torso length), so a far figure gets a thin mask and a near one a wide
mask. Pixels, origin top-left; numpy only (the extension and the backend share it).
"""

from __future__ import annotations

import numpy as np

from ..keypoints import BODY_18, PersonKeypoints
from . import MASK, Style

_INDEX = {name: i for i, name in enumerate(BODY_18)}
LIMBS = (("r_shoulder", "r_elbow"), ("r_elbow", "r_wrist"), ("l_shoulder", "l_elbow"), ("l_elbow", "l_wrist"),
         ("r_hip", "r_knee"), ("r_knee", "r_ankle"), ("l_hip", "l_knee"), ("l_knee", "l_ankle"),
         ("neck", "nose"), ("r_shoulder", "l_shoulder"), ("r_hip", "l_hip"))
HEAD_POINTS = ("nose", "r_eye", "l_eye", "r_ear", "l_ear")
TORSO = ("r_shoulder", "l_shoulder", "l_hip", "r_hip")
HAND_BONES = tuple((0, k) for k in (1, 5, 9, 13, 17)) + tuple((k, k + 1) for k in range(1, 21) if k % 4)
FEET = (("l_ankle", 0), ("l_ankle", 1), ("l_ankle", 2), ("r_ankle", 3), ("r_ankle", 4), ("r_ankle", 5))

LIMB_WIDTH = 0.22  # capsule radius in shoulder widths
HEAD_WIDTH = 0.55  # head disc radius in shoulder widths, at least the head points' spread
HAND_WIDTH = 0.08
DEFAULT_MARGIN = 0.04  # dilation, as a fraction of the frame's shorter side


def draw_rig_mask(people: list[PersonKeypoints], width: int, height: int,
                  margin: float = DEFAULT_MARGIN) -> np.ndarray:
    """(height, width) uint8 mask, 255 on every character (dilated by `margin` x the shorter side)."""
    mask = np.zeros((height, width), dtype=bool)
    grow = margin * min(width, height)
    for person in people:
        body = person.group("pose_keypoints_2d")
        scale = _body_scale(body)
        if scale is None:
            continue
        point = {name: body[i, :2] for name, i in _INDEX.items() if body[i, 2] > 0}
        for a, b in LIMBS:
            if a in point and b in point:
                _capsule(mask, point[a], point[b], LIMB_WIDTH * scale + grow)
        if all(name in point for name in TORSO):
            _polygon(mask, np.array([point[name] for name in TORSO]), grow)
        head = [point[name] for name in HEAD_POINTS if name in point]
        if head:
            centre = np.mean(head, axis=0)
            spread = max(float(np.linalg.norm(p - centre)) for p in head)
            _capsule(mask, centre, centre, max(HEAD_WIDTH * scale, 1.6 * spread) + grow)
        for key in ("hand_left_keypoints_2d", "hand_right_keypoints_2d"):
            hand = person.group(key)
            for a, b in HAND_BONES:
                if hand[a, 2] > 0 and hand[b, 2] > 0:
                    _capsule(mask, hand[a, :2], hand[b, :2], HAND_WIDTH * scale + grow)
        feet = person.group("foot_keypoints_2d")
        for ankle, toe in FEET:
            if ankle in point and feet[toe, 2] > 0:
                _capsule(mask, point[ankle], feet[toe, :2], HAND_WIDTH * scale + grow)
    return mask.astype(np.uint8) * 255


def _body_scale(body: np.ndarray) -> float | None:
    """Shoulder width in pixels, else 0.45 x the neck-to-hip distance; None for no usable body."""
    def have(*names):
        return all(body[_INDEX[n], 2] > 0 for n in names)

    if have("r_shoulder", "l_shoulder"):
        width = float(np.linalg.norm(body[_INDEX["r_shoulder"], :2] - body[_INDEX["l_shoulder"], :2]))
        if width > 1.0:
            return width
    for hip in ("r_hip", "l_hip"):
        if have("neck", hip):
            return 0.45 * float(np.linalg.norm(body[_INDEX["neck"], :2] - body[_INDEX[hip], :2]))
    return None


def _capsule(mask: np.ndarray, a: np.ndarray, b: np.ndarray, radius: float) -> None:
    """Set every pixel centre within `radius` of segment ab (only the segment's bounding box is visited)."""
    height, width = mask.shape
    x0 = max(int(np.floor(min(a[0], b[0]) - radius)), 0)
    x1 = min(int(np.ceil(max(a[0], b[0]) + radius)) + 1, width)
    y0 = max(int(np.floor(min(a[1], b[1]) - radius)), 0)
    y1 = min(int(np.ceil(max(a[1], b[1]) + radius)) + 1, height)
    if x0 >= x1 or y0 >= y1:
        return
    ys, xs = np.mgrid[y0:y1, x0:x1]
    px, py = xs + 0.5 - a[0], ys + 0.5 - a[1]
    dx, dy = b[0] - a[0], b[1] - a[1]
    length2 = dx * dx + dy * dy
    t = np.clip((px * dx + py * dy) / length2, 0.0, 1.0) if length2 > 0 else 0.0
    mask[y0:y1, x0:x1] |= (px - t * dx) ** 2 + (py - t * dy) ** 2 <= radius * radius


def _polygon(mask: np.ndarray, corners: np.ndarray, grow: float) -> None:
    """Fill a convex quadrilateral (any winding), its edges grown by capsules of radius `grow`."""
    height, width = mask.shape
    x0, y0 = np.maximum(np.floor(corners.min(axis=0)).astype(int), 0)
    x1, y1 = np.minimum(np.ceil(corners.max(axis=0)).astype(int) + 1, (width, height))
    if x0 < x1 and y0 < y1:
        ys, xs = np.mgrid[y0:y1, x0:x1]
        px, py = xs + 0.5, ys + 0.5
        sides = []
        for i in range(len(corners)):
            a, b = corners[i], corners[(i + 1) % len(corners)]
            sides.append((b[0] - a[0]) * (py - a[1]) - (b[1] - a[1]) * (px - a[0]))
        sides = np.array(sides)
        mask[y0:y1, x0:x1] |= np.all(sides >= 0, axis=0) | np.all(sides <= 0, axis=0)
    for i in range(len(corners)):
        _capsule(mask, corners[i], corners[(i + 1) % len(corners)], grow)


def draw(people, width: int, height: int, depth_order: bool = False) -> np.ndarray:
    return draw_rig_mask(people, width, height)


STYLE = Style("rig-mask", "Rig Mask", "White where the characters are (limbs, torso, head and hands, with a margin): "
                                      "where a replace-mode engine generates", MASK, draw)
