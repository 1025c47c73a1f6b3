"""`openpose`: the ControlNet 1.0 OpenPose annotator's maps, body only.

First the 18 joints as radius-4 circles, then each limb (stick width 4) in turn blended over the
canvas: canvas = 0.4 * canvas + 0.6 * (canvas with that limb filled), as OpenCV's addWeighted.
"""

from __future__ import annotations

import numpy as np

from ..rasterize import (BODY_COLORS, BODY_LIMBS, JOINT_RADIUS, STICK_WIDTH, blend, body_points, in_order,
                         joint_regions, limb_regions, paint)
from . import POSE, Style

LIMB_ALPHA = 0.6


def draw(people, width: int, height: int, depth_order: bool = False) -> np.ndarray:
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    bodies = [body_points(p.group("pose_keypoints_2d"), p.group_depth("pose_keypoints_2d")) for p in people]
    for color, region in in_order(joint_regions(bodies, BODY_COLORS, JOINT_RADIUS, width, height), depth_order):
        paint(canvas, [region], color)
    for color, region in in_order(limb_regions(bodies, BODY_LIMBS, BODY_COLORS, STICK_WIDTH, width, height),
                                  depth_order):
        blend(canvas, region, color, LIMB_ALPHA)
    return canvas


STYLE = Style("openpose", "OpenPose", "Body only, limbs blended: the ControlNet 1.0 OpenPose annotator", POSE, draw,
              number=1)
