"""`dwpose`: the DWPose annotator's maps, as Moore-AnimateAnyone's pose videos were drawn.

Limbs (stick width 4) opaque, the whole canvas times 0.6 (uint8 truncation), then the 18 joints as
radius-4 circles in full colour; then all left hands, then all right hands (edges 2 px thick in
hsv(e/20) colours, points radius 4 in blue); then the 68 face points as white radius-3 circles.
Hand and face points in pixel column or row 0 are dropped, as the annotator's eps test drops them.
"""

from __future__ import annotations

import numpy as np

from ..rasterize import (BODY_COLORS, BODY_LIMBS, HAND_LINE_THICKNESS, HAND_POINT_RADIUS, JOINT_RADIUS, STICK_WIDTH,
                         as_annotator_sees, body_points, clear_of_top_left, disk_region, draw_hand, in_order,
                         joint_regions, limb_regions, paint)
from . import POSE, Style

DIM = 0.6
FACE_POINT_RADIUS = 3
FACE_POINT_COLOR = (255, 255, 255)


def draw(people, width: int, height: int, depth_order: bool = False) -> np.ndarray:
    return draw_on_canvas(people, width, height, depth_order, lambda points: as_annotator_sees(points, width, height))


def draw_on_canvas(people, width: int, height: int, depth_order: bool, place, hands: bool = True) -> np.ndarray:
    """The annotator's drawing on a width x height canvas; place(points) gives an (N, 3) group's
    points in canvas pixels as the annotator holds them. Without `hands`, body and face only."""
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    bodies = [body_points(place(p.group("pose_keypoints_2d")), p.group_depth("pose_keypoints_2d")) for p in people]
    for color, region in in_order(limb_regions(bodies, BODY_LIMBS, BODY_COLORS, STICK_WIDTH, width, height),
                                  depth_order):
        paint(canvas, [region], color)
    canvas = (canvas * DIM).astype(np.uint8)
    for color, region in in_order(joint_regions(bodies, BODY_COLORS, JOINT_RADIUS, width, height), depth_order):
        paint(canvas, [region], color)
    # All left hands, then all right hands, as the annotator stacks them.
    for key in ("hand_left_keypoints_2d", "hand_right_keypoints_2d") if hands else ():
        for person in people:
            hand = place(person.group(key))
            present = (hand[:, 2] > 0) & clear_of_top_left(hand)
            draw_hand(canvas, hand, person.group_depth(key), present, HAND_LINE_THICKNESS, HAND_POINT_RADIUS,
                      depth_order)
    for person in people:
        face = place(person.group("face_keypoints_2d"))
        present = (face[:, 2] > 0) & clear_of_top_left(face)
        paint(canvas, [disk_region(int(x), int(y), FACE_POINT_RADIUS, width, height) for x, y, _c in face[present]],
              FACE_POINT_COLOR)
    return canvas


STYLE = Style("dwpose", "DWPose", "Body, hands and face dots, limbs dimmed: the pose videos AnimateAnyone-family "
                                  "models were trained on", POSE, draw, number=0)
