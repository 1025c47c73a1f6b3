"""The numpy rasteriser against an OpenCV rendering of the same keypoints (backend env)."""

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from marionette_core.keypoints import PersonKeypoints
from marionette_core.styles import draw as draw_style

import opencv_reference

SIZES = [(512, 768), (1024, 576)]  # width, height


def random_person(rng, width, height, absent_fraction=0.1):
    """A plausible skeleton: a body of random size and place, hands near the wrists, a face."""
    scale = rng.uniform(0.15, 0.6) * min(width, height)
    cx, cy = rng.uniform(0.1, 0.9) * width, rng.uniform(0.1, 0.9) * height
    body = np.zeros((18, 3))
    body[:, :2] = rng.normal([cx, cy], scale * 0.5, size=(18, 2))
    body[:, 2] = rng.random(18) > absent_fraction
    hands = []
    for wrist in (7, 4):
        hand = np.zeros((21, 3))
        hand[:, :2] = body[wrist, :2] + rng.normal(0, scale * 0.08, size=(21, 2))
        hand[:, 2] = rng.random(21) > absent_fraction
        hands.append(hand)
    face = np.zeros((68, 3))
    face[:, :2] = body[0, :2] + rng.normal(0, scale * 0.05, size=(68, 2))
    face[:, 2] = rng.random(68) > absent_fraction
    for array in [body, face] + hands:  # the annotators drop points that fall off the canvas
        off = (array[:, 0] < 0) | (array[:, 1] < 0) | (array[:, 0] >= width) | (array[:, 1] >= height)
        array[off] = 0
    person = PersonKeypoints.empty()
    person.points["pose_keypoints_2d"] = body
    person.points["hand_left_keypoints_2d"] = hands[0]
    person.points["hand_right_keypoints_2d"] = hands[1]
    person.points["face_keypoints_2d"] = face
    return person


def agreement(ours, reference, tolerance=2):
    close = np.abs(ours.astype(int) - reference.astype(int)).max(axis=2) <= tolerance
    drawn = (ours.max(axis=2) > 0) | (reference.max(axis=2) > 0)
    return close.mean(), close[drawn].mean(), drawn.sum()


@pytest.mark.parametrize("width,height", SIZES)
@pytest.mark.parametrize("style", ["dwpose", "openpose"])
def test_matches_opencv(style, width, height):
    rng = np.random.default_rng(width + height + len(style))
    worst_all, worst_drawn = 1.0, 1.0
    for _ in range(20):
        people = [random_person(rng, width, height) for _ in range(rng.integers(1, 4))]
        bodies = [p.points["pose_keypoints_2d"] for p in people]
        if style == "dwpose":
            hands = [p.points["hand_left_keypoints_2d"] for p in people] + \
                    [p.points["hand_right_keypoints_2d"] for p in people]
            faces = [p.points["face_keypoints_2d"] for p in people]
            reference = opencv_reference.draw_dwpose(bodies, hands, faces, width, height)
        else:
            reference = opencv_reference.draw_openpose(bodies, width, height)
        ours = draw_style(style, people, width, height)
        assert ours.shape == reference.shape and ours.dtype == np.uint8
        all_frac, drawn_frac, drawn = agreement(ours, reference)
        assert drawn > 2000, "the scene drew almost nothing; the comparison would prove nothing"
        worst_all, worst_drawn = min(worst_all, all_frac), min(worst_drawn, drawn_frac)
    print(style, width, height, worst_all, worst_drawn)
    # Over the whole canvas (the measure) and, stricter, over the drawn pixels alone.
    assert worst_all >= 0.9999, worst_all
    assert worst_drawn >= 0.999, worst_drawn
