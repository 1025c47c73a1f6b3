"""`wan`: Wan2.2-Animate's pose videos (its preprocessing's draw_aapose_new, stickwidth_type 'v2').

20 body points, BODY-18 then L-toe and R-toe (each the mean of that foot's big and small toe);
stick width max(int(min(H, W) / 200) - 1, 1); limb i filled with 0.6 x colour i (no canvas
dimming), then each point a circle of radius stick width in its full colour, so a toe limb and its
toe point differ in colour; then the left hand, then the right: edges and points of width
max(stick width // 2, 1). No face points. Each person is drawn on its own, one after the other.
"""

from __future__ import annotations

import numpy as np

from ..keypoints import PersonKeypoints
from ..rasterize import (BODY_COLORS, BODY_LIMBS, as_annotator_sees, clear_of_top_left, draw_hand, in_order,
                         joint_regions, limb_regions, paint)
from . import POSE, Style

LIMBS = BODY_LIMBS + ((13, 18), (10, 19))
COLORS = BODY_COLORS + ((200, 200, 0), (100, 100, 0))
LIMB_COLORS = tuple(tuple(int(float(c) * 0.6) for c in color) for color in COLORS[:len(LIMBS)])
# Wan skips a point whose score is below this; a Marionette point has c = 1 or 0.
SCORE_THRESHOLD = 0.5
# Foot indices (COCO-WholeBody order) of each toe's big and small toe: left, then right.
TOE_FEET = ((0, 1), (3, 4))


def stick_width(width: int, height: int) -> int:
    """Limb half-width and joint radius, in pixels, for a frame of that size."""
    return max(int(min(height, width) / 200) - 1, 1)


def hand_width(width: int, height: int) -> int:
    """Hand edge thickness and hand point radius, in pixels."""
    return max(stick_width(width, height) // 2, 1)


def draw(people, width: int, height: int, depth_order: bool = False) -> np.ndarray:
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    for person in people:
        _draw_person(canvas, person, depth_order)
    return canvas


def _draw_person(canvas: np.ndarray, person: PersonKeypoints, depth_order: bool) -> None:
    height, width = canvas.shape[:2]
    sticks, hands = stick_width(width, height), hand_width(width, height)
    points, depth = body(person, width, height)
    bodies = [(points, depth, points[:, 2] >= SCORE_THRESHOLD)]
    for color, region in in_order(limb_regions(bodies, LIMBS, LIMB_COLORS, sticks, width, height), depth_order):
        paint(canvas, [region], color)
    for color, region in in_order(joint_regions(bodies, COLORS, sticks, width, height), depth_order):
        paint(canvas, [region], color)
    for key in ("hand_left_keypoints_2d", "hand_right_keypoints_2d"):
        hand = as_annotator_sees(person.group(key), width, height)
        present = (hand[:, 2] >= SCORE_THRESHOLD) & clear_of_top_left(hand)
        draw_hand(canvas, hand, person.group_depth(key), present, hands, hands, depth_order)


def body(person: PersonKeypoints, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """The 20 points Wan draws, in pixels: BODY-18, then L-toe and R-toe, with their depths.

    Wan averages big and small toe in coordinates normalised by the frame size and scales back.
    It averages their scores too, which would place a toe half-way to an absent point; here a toe
    is present only when both of its points are.
    """
    points_body, feet = person.group("pose_keypoints_2d"), person.group("foot_keypoints_2d")
    body_depth, feet_depth = person.group_depth("pose_keypoints_2d"), person.group_depth("foot_keypoints_2d")
    big, small = (list(indices) for indices in zip(*TOE_FEET))
    size = np.array([width, height], dtype=np.float64)
    points = np.zeros((len(COLORS), 3))
    points[:18] = as_annotator_sees(points_body, width, height)
    points[18:, :2] = (feet[big, :2] / size + feet[small, :2] / size) / 2 * size
    both = (feet[big, 2] >= SCORE_THRESHOLD) & (feet[small, 2] >= SCORE_THRESHOLD)
    points[18:, 2] = np.where(both, (feet[big, 2] + feet[small, 2]) / 2, 0.0)
    depth = np.concatenate([body_depth, (feet_depth[big] + feet_depth[small]) / 2])
    return points, depth


STYLE = Style("wan", "Wan", "Body with toes and thin hands, stick width from the frame size: the pose videos of "
                            "Wan2.2-Animate", POSE, draw, number=2)
