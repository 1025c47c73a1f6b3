"""The `wan` style (Wan2.2-Animate's pose video) against an OpenCV rendering of the same keypoints.

The reference below follows Wan2.2's preprocess (`human_visualization.draw_aapose_new` with
stickwidth_type 'v2', `draw_handpose_new`, and `pose2d_utils.split_kp2ds_for_aa` for the 20 body
points), written here with cv2 calls; it shares no drawing code with `marionette_core.rasterize`.
"""

import math

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from marionette_core.keypoints import BODY_18, PersonKeypoints
from marionette_core.styles import draw as draw_style
from marionette_core.styles.wan import hand_width as wan_hand_width
from marionette_core.styles.wan import stick_width as wan_stick_width

import opencv_reference
from test_rasterize_opencv import agreement, random_person

SIZES = [(832, 480), (480, 832), (1280, 720)]  # width, height

# 1-indexed pairs over the 20 points: the 17 body limbs, then L-ankle - L-toe and R-ankle - R-toe.
WAN_LIMBS = opencv_reference.LIMBS_1_INDEXED + [[14, 19], [11, 20]]
WAN_COLORS = opencv_reference.COLORS + [[200, 200, 0], [100, 100, 0]]
SCORE_THRESHOLD = 0.5
EPS = 0.01


def twenty_points(body, feet, width, height):
    """Wan's 20 body points in pixels. Wan keeps keypoints divided by the frame size, takes each
    toe as the mean of big and small toe there, and multiplies back by the frame size to draw.
    Wan also averages the two scores; a Marionette toe with one point absent has no position, so
    the toe counts as present only when both points are."""
    size = np.array([width, height], dtype=np.float64)
    points = np.zeros((20, 3))
    points[:18, :2] = body[:, :2] / size * size
    points[:18, 2] = body[:, 2]
    for toe, (big, small) in zip((18, 19), ((0, 1), (3, 4))):
        points[toe, :2] = (feet[big, :2] / size + feet[small, :2] / size) / 2 * size
        both = feet[big, 2] >= SCORE_THRESHOLD and feet[small, 2] >= SCORE_THRESHOLD
        points[toe, 2] = (feet[big, 2] + feet[small, 2]) / 2 if both else 0.0
    return points


def draw_wan_reference(people, width, height):
    """people: list of dicts with body (18, 3), feet (6, 3), left and right hands (21, 3); pixels."""
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    stickwidth = max(int(min(height, width) / 200) - 1, 1)
    hand_width = max(stickwidth // 2, 1)
    for person in people:
        points = twenty_points(person["body"], person["feet"], width, height)
        for (ia, ib), color in zip(WAN_LIMBS, WAN_COLORS):
            a, b = points[ia - 1], points[ib - 1]
            if a[2] < SCORE_THRESHOLD or b[2] < SCORE_THRESHOLD:
                continue
            length = math.sqrt((a[0] - b[0]) ** 2 + (a[1] - b[1]) ** 2)
            angle = math.degrees(math.atan2(a[1] - b[1], a[0] - b[0]))
            centre = (int((a[0] + b[0]) / 2), int((a[1] + b[1]) / 2))
            polygon = cv2.ellipse2Poly(centre, (int(length / 2), stickwidth), int(angle), 0, 360, 1)
            cv2.fillConvexPoly(canvas, polygon, [int(float(c) * 0.6) for c in color])
        for (x, y, c), color in zip(points, WAN_COLORS):
            if c >= SCORE_THRESHOLD:
                cv2.circle(canvas, (int(x), int(y)), stickwidth, color, thickness=-1)
        for hand in (person["left"], person["right"]):
            size = np.array([width, height], dtype=np.float64)
            pixels = [(int(x), int(y)) for x, y in hand[:, :2] / size * size]
            for e, (i, j) in enumerate(opencv_reference.HAND_EDGES):
                if hand[i, 2] < SCORE_THRESHOLD or hand[j, 2] < SCORE_THRESHOLD:
                    continue
                (x1, y1), (x2, y2) = pixels[i], pixels[j]
                if x1 > EPS and y1 > EPS and x2 > EPS and y2 > EPS:
                    color = [v * 255 for v in opencv_reference._hsv_to_rgb(e / 20.0)]
                    cv2.line(canvas, (x1, y1), (x2, y2), color, thickness=hand_width)
            for (x, y), c in zip(pixels, hand[:, 2]):
                if c >= SCORE_THRESHOLD and x > EPS and y > EPS:
                    cv2.circle(canvas, (x, y), hand_width, (0, 0, 255), thickness=-1)
    return canvas


def reference(people, width, height):
    return draw_wan_reference([{
        "body": p.group("pose_keypoints_2d"), "feet": p.group("foot_keypoints_2d"),
        "left": p.group("hand_left_keypoints_2d"), "right": p.group("hand_right_keypoints_2d"),
    } for p in people], width, height)


def random_wan_person(rng, width, height, absent_fraction=0.1):
    """random_person's body, hands and face, plus feet near the ankles."""
    person = random_person(rng, width, height, absent_fraction)
    body = person.points["pose_keypoints_2d"]
    scale = max(np.ptp(body[body[:, 2] > 0, 1]), 40.0) if (body[:, 2] > 0).any() else 40.0
    feet = np.zeros((6, 3))
    for side, ankle in ((0, 13), (1, 10)):
        anchor = body[ankle, :2] if body[ankle, 2] > 0 else rng.uniform((0, 0), (width, height))
        feet[3 * side:3 * side + 3, :2] = anchor + rng.normal(0, scale * 0.08, size=(3, 2))
    feet[:, 2] = rng.random(6) > absent_fraction
    off = (feet[:, 0] < 0) | (feet[:, 1] < 0) | (feet[:, 0] >= width) | (feet[:, 1] >= height)
    feet[off] = 0
    person.points["foot_keypoints_2d"] = feet
    return person


@pytest.mark.parametrize("width,height", SIZES)
def test_matches_opencv(width, height):
    rng = np.random.default_rng(width * 3 + height)
    worst_all, worst_drawn, toes = 1.0, 1.0, 0
    for _ in range(20):
        people = [random_wan_person(rng, width, height) for _ in range(rng.integers(1, 3))]
        ours = draw_style("wan", people, width, height)
        expected = reference(people, width, height)
        assert ours.shape == expected.shape and ours.dtype == np.uint8
        all_frac, drawn_frac, drawn = agreement(ours, expected)
        assert drawn > 1000, "the scene drew almost nothing; the comparison would prove nothing"
        worst_all, worst_drawn = min(worst_all, all_frac), min(worst_drawn, drawn_frac)
        toes += int(np.all(ours == (200, 200, 0), axis=2).any())  # an L-toe point was drawn
    print("wan", width, height, worst_all, worst_drawn, toes)
    assert toes > 5, "too few scenes drew a toe"
    assert worst_all >= 0.9999, worst_all
    assert worst_drawn >= 0.999, worst_drawn


@pytest.mark.parametrize("width,height,stick,hand", [
    (832, 480, 1, 1), (480, 832, 1, 1), (1280, 720, 2, 1), (1920, 1080, 4, 2), (150, 150, 1, 1)])
def test_stick_width_follows_the_frame_size(width, height, stick, hand):
    assert (wan_stick_width(width, height), wan_hand_width(width, height)) == (stick, hand)
    # A level limb from the neck to the right shoulder: the ellipse is 2 * stick + 1 rows tall at
    # its middle, in 0.6 x red; the end points are stick-radius joints in full colour.
    person = PersonKeypoints.empty()
    y = height // 2
    person.points["pose_keypoints_2d"][1] = (width // 4, y, 1)
    person.points["pose_keypoints_2d"][2] = (width // 2, y, 1)
    ours = draw_style("wan", [person], width, height)
    assert np.array_equal(ours, reference([person], width, height))
    middle = ours[:, (width // 4 + width // 2) // 2]
    limb_rows = np.nonzero(np.all(middle == (153, 0, 0), axis=1))[0]
    assert list(limb_rows) == list(range(y - stick, y + stick + 1))
    joint_rows = np.nonzero(np.all(ours[:, width // 4] == (255, 85, 0), axis=1))[0]
    assert list(joint_rows) == list(range(y - stick, y + stick + 1))
    # Hands: edges `hand` px thick and points of radius `hand`.
    hand_points = np.zeros((21, 3))
    hand_points[0] = (width // 2, y + 40, 1)
    hand_points[1] = (width // 2 + 30, y + 40, 1)
    person.points["hand_left_keypoints_2d"] = hand_points
    ours = draw_style("wan", [person], width, height)
    assert np.array_equal(ours, reference([person], width, height))
    edge_rows = np.nonzero(ours[:, width // 2 + 15].any(axis=1) & (np.arange(height) > y + 20))[0]
    assert len(edge_rows) == (1 if hand == 1 else hand + 1)  # OpenCV's thick line has round caps
    point_rows = np.nonzero(np.all(ours[:, width // 2] == (0, 0, 255), axis=1))[0]
    assert list(point_rows) == list(range(y + 40 - hand, y + 40 + hand + 1))


def feet_person(left_big, left_small, right_big, right_small):
    person = PersonKeypoints.empty()
    body = person.points["pose_keypoints_2d"]
    body[13] = (300, 300, 1)  # L-ankle
    body[10] = (500, 300, 1)  # R-ankle
    feet = person.points["foot_keypoints_2d"]
    feet[0] = (290, 350, left_big)
    feet[1] = (330, 340, left_small)
    feet[2] = (300, 320, 1)  # heels are not drawn
    feet[3] = (510, 350, right_big)
    feet[4] = (470, 340, right_small)
    feet[5] = (500, 320, 1)
    for i in (0, 1, 3, 4):
        if feet[i, 2] == 0:
            feet[i, :2] = 0
    return person


def colour_count(image, colour):
    return int(np.all(image == colour, axis=2).sum())


@pytest.mark.parametrize("left_big,left_small,right_big,right_small", [
    (1, 1, 1, 1), (1, 0, 0, 1), (0, 1, 1, 0), (0, 0, 0, 0), (1, 1, 0, 1)])
def test_a_toe_needs_both_big_and_small_toe(left_big, left_small, right_big, right_small):
    width, height = 832, 480
    person = feet_person(left_big, left_small, right_big, right_small)
    ours = draw_style("wan", [person], width, height)
    assert np.array_equal(ours, reference([person], width, height))
    left, right = left_big and left_small, right_big and right_small
    # L-toe: limb in 0.6 x colour 17 (255, 0, 85), point in (200, 200, 0) at the mean of the toes;
    # R-toe: limb in 0.6 x (200, 200, 0), point in (100, 100, 0).
    assert (colour_count(ours, (153, 0, 51)) > 0) == bool(left)
    assert (colour_count(ours, (200, 200, 0)) > 0) == bool(left)
    assert (colour_count(ours, (120, 120, 0)) > 0) == bool(right)
    assert (colour_count(ours, (100, 100, 0)) > 0) == bool(right)
    if left:
        assert np.array_equal(ours[345, 310], (200, 200, 0))
    if right:
        assert np.array_equal(ours[345, 490], (100, 100, 0))
    # The ankles themselves are always drawn, in full colour.
    assert np.array_equal(ours[300, 300], (85, 0, 255)) and np.array_equal(ours[300, 500], (0, 170, 255))


def test_no_face_is_drawn():
    width, height = 1280, 720
    rng = np.random.default_rng(5)
    person = random_wan_person(rng, width, height, absent_fraction=0.0)
    assert (person.points["face_keypoints_2d"][:, 2] > 0).sum() > 50
    faceless = PersonKeypoints(points=dict(person.points), depth=dict(person.depth))
    faceless.points["face_keypoints_2d"] = np.zeros((68, 3))
    ours = draw_style("wan", [person], width, height)
    assert np.array_equal(ours, draw_style("wan", [faceless], width, height))
    assert colour_count(ours, (255, 255, 255)) == 0


def test_right_hand_is_drawn_over_the_left_and_edge_points_are_dropped():
    width, height = 1280, 720
    person = PersonKeypoints.empty()
    left = person.points["hand_left_keypoints_2d"]
    right = person.points["hand_right_keypoints_2d"]
    left[[0, 1]] = [(100, 200, 1), (200, 200, 1)]  # edge 0, horizontal
    right[[0, 5]] = [(150, 150, 1), (150, 250, 1)]  # edge 4, vertical, crossing it at (150, 200)
    ours = draw_style("wan", [person], width, height)
    assert np.array_equal(ours, reference([person], width, height))
    edge_4 = tuple(int(round(v * 255)) for v in opencv_reference._hsv_to_rgb(4 / 20))
    assert np.array_equal(ours[200, 150], edge_4)
    # A hand point in column 0 is dropped with its edges, as in Wan's draw_handpose_new.
    right[6] = (0.5, 180, 1)
    assert np.array_equal(draw_style("wan", [person], width, height), ours)
    right[6] = (1.0, 180, 1)
    drawn = draw_style("wan", [person], width, height)
    assert np.array_equal(drawn, reference([person], width, height))
    assert np.array_equal(drawn[180, 1], (0, 0, 255))


def test_score_threshold():
    width, height = 832, 480
    person = PersonKeypoints.empty()
    body = person.points["pose_keypoints_2d"]
    body[1] = (200, 200, 0.5)  # Wan draws a point whose score is not below 0.5
    body[2] = (300, 200, 0.49)
    ours = draw_style("wan", [person], width, height)
    assert np.array_equal(ours, reference([person], width, height))
    assert np.array_equal(ours[200, 200], (255, 85, 0)) and not ours[200, 250].any() and not ours[200, 300].any()


def test_depth_order_puts_the_nearer_arm_on_top():
    index = {name: i for i, name in enumerate(BODY_18)}
    width, height = 832, 480

    def crossing(right_arm_near):
        person = PersonKeypoints.empty()
        body, depth = person.points["pose_keypoints_2d"], person.depth["pose_keypoints_2d"]
        body[index["r_shoulder"]], body[index["r_elbow"]] = (160, 160, 1), (240, 240, 1)
        body[index["l_shoulder"]], body[index["l_elbow"]] = (240, 160, 1), (160, 240, 1)
        near, far = (1.0, 5.0) if right_arm_near else (5.0, 1.0)
        depth[[index["r_shoulder"], index["r_elbow"]]] = near
        depth[[index["l_shoulder"], index["l_elbow"]]] = far
        return person

    right_arm, left_arm = (153, 102, 0), (102, 153, 0)  # limbs 2 and 4 at 0.6 x colour
    fixed = draw_style("wan", [crossing(True)], width, height)
    assert np.array_equal(fixed, reference([crossing(True)], width, height))
    assert np.array_equal(fixed[200, 200], left_arm)  # limb 4 is drawn after limb 2
    assert np.array_equal(draw_style("wan", [crossing(True)], width, height, depth_order=True)[200, 200], right_arm)
    assert np.array_equal(draw_style("wan", [crossing(False)], width, height, depth_order=True)[200, 200], left_arm)
