"""The `vace-pose` style against VACE's own pose annotator, run unmodified on the same keypoints
(tests/data/vace_pose: make_golden.py and its README), and the resizing it relies on against OpenCV."""

from pathlib import Path

import numpy as np
import pytest

from marionette_core.keypoints import PersonKeypoints
from marionette_core.resample import resize_area, resize_lanczos4
from marionette_core.styles import draw
from marionette_core.styles.vace_pose import canvas_size

GOLDEN = Path(__file__).parent / "data" / "vace_pose" / "golden.npz"


def golden_scenes():
    data = np.load(GOLDEN)
    for key in sorted({name.rsplit("_", 1)[0] for name in data.files}):
        width, height = map(int, key.split("_")[0].split("x"))
        people = []
        for body, face in zip(data[f"{key}_bodies"], data[f"{key}_faces"]):
            person = PersonKeypoints.empty()
            person.points["pose_keypoints_2d"], person.points["face_keypoints_2d"] = body, face
            people.append(person)
        yield key, width, height, people, data[f"{key}_map"]


@pytest.mark.parametrize("key, width, height, people, expected", list(golden_scenes()),
                         ids=[scene[0] for scene in golden_scenes()])
def test_equals_the_annotator_within_one_level(key, width, height, people, expected):
    ours = draw("vace-pose", people, width, height)
    assert ours.shape == expected.shape == (height, width, 3) and ours.dtype == np.uint8
    difference = np.abs(ours.astype(int) - expected.astype(int))
    assert difference.max() <= 1, key  # the resize's float rounding against OpenCV's
    assert (difference > 0).mean() < 0.01, key
    assert (expected.max(axis=2) > 0).sum() > 2000, "the scene drew almost nothing; it would prove nothing"


def test_no_hands_and_red_blue_swapped_against_dwpose():
    person = PersonKeypoints.empty()
    body = np.zeros((18, 3))
    body[1], body[2] = (400, 200, 1), (300, 200, 1)  # neck -> right shoulder: the first limb, red in dwpose
    person.points["pose_keypoints_2d"] = body
    person.points["hand_left_keypoints_2d"] = np.c_[np.full((21, 2), (600, 300)) + np.arange(21)[:, None] * 3,
                                                    np.ones(21)]
    vace = draw("vace-pose", [person], 832, 480)
    dwpose = draw("dwpose", [person], 832, 480)
    assert dwpose[200, 350, 0] > dwpose[200, 350, 2] and vace[200, 350, 2] > vace[200, 350, 0]
    assert dwpose[300:370, 590:670].any() and not vace[300:370, 590:670].any()


@pytest.mark.parametrize("width, height, canvas", [(832, 480, (1792, 1024)), (512, 512, (1024, 1024)),
                                                   (1920, 1080, (1792, 1024))])
def test_the_annotators_canvas(width, height, canvas):
    assert canvas_size(width, height) == canvas


@pytest.mark.parametrize("source, target", [((1024, 1792), (480, 832)), ((1024, 1024), (512, 512)),
                                            ((1024, 1792), (1080, 1920)), ((64, 96), (200, 300))])
def test_resizing_matches_opencv_within_one_level(source, target):
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(sum(source) + sum(target))
    image = cv2.GaussianBlur((rng.random((*source, 3)) * 255).astype(np.uint8), (0, 0), 2)
    cv2.line(image, (5, 5), (source[1] - 9, source[0] - 7), (255, 40, 0), 4)
    shrink = target[0] * target[1] <= source[0] * source[1]
    ours = (resize_area if shrink else resize_lanczos4)(image, target[1], target[0])
    expected = cv2.resize(image, (target[1], target[0]), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LANCZOS4)
    difference = np.abs(ours.astype(int) - expected.astype(int))
    assert difference.max() <= 1  # OpenCV enlarges in fixed point: many values one level apart, none more
    if shrink:
        assert (difference > 0).mean() < 0.01
