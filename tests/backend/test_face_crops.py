"""Wan's face-crop box, and face crops of the reference warped to the rig's face."""

import math

import cv2
import numpy as np
import pytest

import synthetic
from marionette_core.face import ibug68
from marionette_core.keypoints import BODY_18, PersonKeypoints

from marionette.warping.face import INNER_MOUTH
from marionette.engines.wan_animate.face_crops import (FACE_CROP_SIZE, FaceCropper, crop_face, face_box, face_crops,
                                                       face_points)
from marionette.engines.wan_animate.weights import WanAnimateError


def corners(x0, y0, x1, y1):
    return np.array([[x0, y0, 1.0], [x1, y0, 1.0], [x0, y1, 1.0], [x1, y1, 1.0], [(x0 + x1) / 2, (y0 + y1) / 2, 1.0]])


def test_box_by_hand():
    # 40 x 60 points: area x 1.3 at the same aspect -> sqrt(1.3) x 40 by sqrt(1.3) x 60.
    grow = math.sqrt(1.3)
    dx, dy = (grow - 1) * 40 / 2, (grow - 1) * 60 / 4
    assert (dx, dy) == pytest.approx((2.8035, 2.1026), abs=1e-4)
    box = face_box(corners(100, 200, 140, 260), 1000, 1000)
    assert box == (int(100 - dx), int(140 + dx), int(200 - 3 * dy), int(260 + dy)) == (97, 142, 193, 262)


def test_box_keeps_the_aspect_and_pads_three_quarters_on_top():
    x1, x2, y1, y2 = face_box(corners(300.0, 400.0, 500.0, 700.0), 2000, 2000)  # 200 x 300
    assert (x2 - x1) / (y2 - y1) == pytest.approx(200 / 300, abs=0.01)
    assert (x2 - x1) * (y2 - y1) == pytest.approx(1.3 * 200 * 300, rel=0.01)
    dy = (math.sqrt(1.3) - 1) * 300 / 4  # the height grows by 4 dy: 3 on top, 1 below (then int() truncates)
    top, bottom = 400 - y1, y2 - 700
    assert 3 * dy <= top < 3 * dy + 1 and dy - 1 < bottom <= dy
    assert abs((300 - x1) - (x2 - 500)) <= 1  # the width grows evenly


def test_box_is_clamped_to_the_image():
    assert face_box(corners(2, 3, 60, 80), 200, 100)[::2] == (0, 0)  # x1, y1 at the top-left edge
    x1, x2, y1, y2 = face_box(corners(150, 40, 199, 99), 200, 100)
    assert (x2, y2) == (200, 100)  # the image size, as the crop slice [y1:y2, x1:x2] takes it


def test_crop_is_the_box_resized_bilinearly_to_512():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    box = (10, 90, 20, 70)  # 80 wide, 50 high: not square
    crop = crop_face(image, box)
    assert crop.shape == (FACE_CROP_SIZE, FACE_CROP_SIZE, 3) and crop.dtype == np.uint8
    assert np.array_equal(crop, cv2.resize(image[20:70, 10:90], (512, 512), interpolation=cv2.INTER_LINEAR))


def test_face_points_come_from_the_68_points_else_the_mesh_and_skip_absent_ones():
    mesh = synthetic.canonical_face_2d()
    person = PersonKeypoints.empty()
    person.points["face_mesh_keypoints_2d"] = mesh
    assert np.array_equal(face_points(person), ibug68(mesh)[:, :2])
    own = ibug68(mesh) + [5.0, 0.0, 0.0]
    own[10] = 0  # absent: (0, 0, 0)
    person.points["face_keypoints_2d"] = own
    points = face_points(person)
    assert len(points) == 67 and points[:, 0].min() > 100  # the absent (0, 0) point is not in the box
    assert face_points(PersonKeypoints.empty()) is None and face_points(None) is None


@pytest.fixture(scope="module")
def portrait():
    face = synthetic.canonical_face_2d()
    image, person = synthetic.portrait(face)
    return face, image, person


def frame(person, face=None, shift=(0.0, 0.0)):
    moved = synthetic.person(person.points["pose_keypoints_2d"] + [shift[0], shift[1], 0.0])
    if face is not None:
        moved.points["face_mesh_keypoints_2d"] = face + [shift[0], shift[1], 0.0]
    return moved


def test_crop_opens_the_mouth_when_the_frame_opens_it(portrait):
    face, image, person = portrait
    opened_face = synthetic.expression(face, jaw=14.0, blink=0.0)
    neutral, opened = frame(person, face), frame(person, opened_face)
    crops = face_crops(image, person, [neutral, opened], image.shape[1], image.shape[0])
    cropper = FaceCropper(image, person)

    def darkness(crop, box):
        """Mean darkness (255 - grey) of the crop inside the open mouth's inner lip contour."""
        x1, x2, y1, y2 = box
        mouth = (opened_face[INNER_MOUTH, :2] - [x1, y1]) * [FACE_CROP_SIZE / (x2 - x1), FACE_CROP_SIZE / (y2 - y1)]
        inside = np.zeros(crop.shape[:2], np.uint8)
        cv2.fillPoly(inside, [np.round(mouth).astype(np.int32)], 1)
        assert inside.sum() > 500
        return 255 - cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)[inside > 0].mean()

    closed_dark = darkness(crops[0], cropper.box(neutral))
    open_dark = darkness(crops[1], cropper.box(opened))
    assert open_dark > closed_dark + 60, (closed_dark, open_dark)
    assert cropper.box(opened)[3] > cropper.box(neutral)[3]  # the dropped jaw lowers the box's bottom


def test_a_frame_without_face_points_carries_the_reference_face_with_the_head(portrait):
    face, image, person = portrait
    cropper = FaceCropper(image, person)
    with_face = cropper.box(frame(person, face, shift=(30.0, 12.0)))
    head_only = cropper.box(frame(person, shift=(30.0, 12.0)))  # no face points: the head moved the same
    assert np.abs(np.subtract(with_face, head_only)).max() <= 1
    still = cropper.box(frame(person, face))
    assert np.abs(np.subtract(head_only, still) - [30, 30, 12, 12]).max() <= 1


def test_face_crops_one_per_frame(portrait):
    face, image, person = portrait
    frames = [frame(person, face), None, frame(person, shift=(10.0, 0.0)), PersonKeypoints.empty()]
    crops = face_crops(image, person, frames, image.shape[1], image.shape[0])
    assert len(crops) == 4 and all(c.shape == (512, 512, 3) and c.dtype == np.uint8 for c in crops)
    with pytest.raises(WanAnimateError, match="output size"):
        face_crops(image, person, frames, image.shape[1] + 16, image.shape[0])


def test_a_reference_without_a_face_gets_a_box_from_the_head_points():
    body = synthetic.standing_pose(256, 384)
    image = synthetic.character_image(body, 256, 384, alpha=False)
    person = synthetic.person(body)
    cropper = FaceCropper(image, person)
    x1, x2, y1, y2 = cropper.box(person)
    head = body[[BODY_18.index(n) for n in ("nose", "r_eye", "l_eye", "r_ear", "l_ear")], :2]
    assert (x1 <= head[:, 0].min() and head[:, 0].max() <= x2 and y1 <= head[:, 1].min()
            and head[:, 1].max() <= y2)
    assert 0.5 < (x2 - x1) / (y2 - y1) < 1.5 and x2 - x1 < 100  # face-sized, not the whole figure
