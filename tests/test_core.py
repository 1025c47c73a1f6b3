"""The shared core without Blender: drawing order, PNG and OpenPose JSON round trips, projection."""

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from marionette_core import openpose_json
from marionette_core.keypoints import BODY_18, PersonKeypoints
from marionette_core.png import decode_png, encode_png
from marionette_core.projection import project_points
from marionette_core.rasterize import BODY_COLORS
from marionette_core.styles import draw as draw_style


def crossing_arms(near_first_limb: bool):
    """A person whose right upper arm (limb 2) and left upper arm (limb 4) cross at (100, 100)."""
    person = PersonKeypoints.empty()
    body = person.points["pose_keypoints_2d"]
    depth = person.depth["pose_keypoints_2d"]
    index = {name: i for i, name in enumerate(BODY_18)}
    body[index["r_shoulder"]] = (60, 60, 1)
    body[index["r_elbow"]] = (140, 140, 1)
    body[index["l_shoulder"]] = (140, 60, 1)
    body[index["l_elbow"]] = (60, 140, 1)
    near, far = (1.0, 5.0) if near_first_limb else (5.0, 1.0)
    depth[[index["r_shoulder"], index["r_elbow"]]] = near
    depth[[index["l_shoulder"], index["l_elbow"]]] = far
    return person


@pytest.mark.parametrize("style", ["dwpose", "openpose"])
def test_depth_order_draws_far_limbs_first(style):
    right_arm, left_arm = BODY_COLORS[2], BODY_COLORS[4]  # limbs (r_shoulder, r_elbow), (l_shoulder, l_elbow)
    scale = 0.6 if style == "dwpose" else 1.0

    def centre_colour(person, depth_order):
        image = draw_style(style, [person], 200, 200, depth_order=depth_order)
        return image[100, 100].astype(int)

    def closest(colour):
        options = {"right": np.array(right_arm) * scale, "left": np.array(left_arm) * scale}
        return min(options, key=lambda k: np.abs(options[k] - colour).sum())

    # Fixed order: limb 4 (left arm) is drawn after limb 2 and covers it, whatever the depth.
    assert closest(centre_colour(crossing_arms(near_first_limb=True), False)) == "left"
    # Far to near: the nearer arm ends on top.
    assert closest(centre_colour(crossing_arms(near_first_limb=True), True)) == "right"
    assert closest(centre_colour(crossing_arms(near_first_limb=False), True)) == "left"


def test_png_round_trip_and_opencv_reads_it():
    rng = np.random.default_rng(0)
    for channels in (3, 4):
        image = rng.integers(0, 256, size=(37, 53, channels), dtype=np.uint8)
        data = encode_png(image)
        assert np.array_equal(decode_png(data), image)
        read = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        order = [2, 1, 0] if channels == 3 else [2, 1, 0, 3]
        assert np.array_equal(read[..., order], image)  # OpenCV reads BGR(A)
    ok, opencv_png = cv2.imencode(".png", rng.integers(0, 256, (20, 30, 3), dtype=np.uint8))
    assert decode_png(opencv_png.tobytes()).shape == (20, 30, 3)  # filtered rows decode too
    with pytest.raises(ValueError, match="not a PNG"):
        decode_png(b"GIF89a")


def test_openpose_json_round_trip():
    person = PersonKeypoints.empty()
    person.points["pose_keypoints_2d"][:, :] = np.arange(54).reshape(18, 3) / 7
    person.points["face_keypoints_2d"] = np.ones((68, 3))
    text = openpose_json.dumps([person], 512, 768)
    people, width, height = openpose_json.loads(text)
    assert (width, height) == (512, 768)
    assert np.allclose(people[0].points["pose_keypoints_2d"], person.points["pose_keypoints_2d"], atol=1e-3)
    assert people[0].points["face_keypoints_2d"].shape == (68, 3)
    assert len(people[0].points["hand_left_keypoints_2d"]) == 21
    with pytest.raises(ValueError, match="multiple of 3"):
        openpose_json.loads('{"people": [{"pose_keypoints_2d": [1, 2]}]}')


def test_projection_marks_points_behind_or_outside_absent():
    view = np.eye(4)  # camera at the origin looking down -Z
    near, far, focal = 0.1, 100.0, 1.0
    projection = np.array([[focal, 0, 0, 0], [0, focal, 0, 0],
                           [0, 0, -(far + near) / (far - near), -2 * far * near / (far - near)], [0, 0, -1, 0]])
    points = np.array([[0, 0, -2.0], [0.5, 0.5, -1.0], [0, 0, 3.0], [5, 0, -1.0], [np.nan, 0, -1]])
    pixels, depth = project_points(points, view, projection, 200, 100)
    assert np.allclose(pixels[0], (100, 50, 1))
    assert np.allclose(pixels[1], (150, 25, 1))  # +x right, +y up becomes y down
    assert (pixels[2:] == 0).all()  # behind, outside, not finite
    assert np.allclose(depth[:3], (2, 1, -3))
