"""The warp engine: markers at the reference keypoints land on the frame's keypoints."""

import json
import subprocess
import sys
import threading

import numpy as np
import pytest

from marionette.engines.base import JobInputs
from marionette.engines.warp.engine import WarpEngine
from marionette.warping.rig import WarpRig
from marionette.images import decode_image

import synthetic


@pytest.mark.parametrize("alpha", [True, False], ids=["alpha-mask", "estimated-mask"])
def test_markers_follow_the_keypoints(alpha):
    reference = synthetic.standing_pose()
    image = synthetic.character_image(reference, alpha=alpha)
    target = synthetic.moved_pose(reference)
    assert (target[:, 0] > 10).all() and (target[:, 0] < 502).all(), "test pose must stay in frame"
    rig = WarpRig.build(image, synthetic.person(reference))
    out = rig.pose(synthetic.person(target))
    assert out.shape == (768, 512, 4 if alpha else 3)
    found = synthetic.marker_centres(out)
    assert set(found) == set(synthetic.MARKED), f"markers lost: {set(synthetic.MARKED) - set(found)}"
    for name, (x, y) in found.items():
        tx, ty = target[synthetic.INDEX[name], :2]
        assert np.hypot(x - tx, y - ty) <= 2.0, f"{name}: marker at ({x:.1f}, {y:.1f}), target ({tx:.1f}, {ty:.1f})"


def test_background_fills_where_the_character_left():
    reference = synthetic.standing_pose()
    image = synthetic.character_image(reference, alpha=False, markers=False)
    target = reference.copy()
    target[:, 0] += 150  # the whole figure steps right
    out = WarpRig.build(image, synthetic.person(reference)).pose(synthetic.person(target))
    skin = np.array([205, 180, 160])
    left_chest = out[300, 256 - 30].astype(int)  # was the figure, now uncovered
    assert np.abs(left_chest - skin).max() > 40, "the old place still shows the character"
    moved_chest = out[300, 256 - 30 + 150].astype(int)
    assert np.abs(moved_chest - skin).max() < 30


def test_missing_keypoints_follow_the_parent_bone():
    reference = synthetic.standing_pose()
    image = synthetic.character_image(reference)
    target = synthetic.moved_pose(reference)
    target[synthetic.INDEX["r_wrist"], 2] = 0  # the forearm loses its end: it follows the upper arm
    target[synthetic.INDEX["l_knee"], 2] = 0
    rig = WarpRig.build(image, synthetic.person(reference))
    out = rig.pose(synthetic.person(target))
    found = synthetic.marker_centres(out)
    assert "r_elbow" in found and np.hypot(*(np.array(found["r_elbow"]) - target[synthetic.INDEX["r_elbow"], :2])) < 2
    assert np.isfinite(out).all()
    # No keypoints at all: the character stays as it was.
    still = rig.pose(None)
    assert np.abs(still[..., 3].astype(int) - image[..., 3]).mean() < 2


def test_engine_streams_frames_in_order_and_stops():
    reference_png, reference_pose, poses = synthetic.job_files(6)
    from marionette.job_inputs import build_inputs

    inputs = build_inputs(reference_png, reference_pose, poses, {}, None, None, {})
    assert isinstance(inputs, JobInputs)
    stop = threading.Event()
    seen = []
    for index, frame in WarpEngine().render(inputs, 2, stop):
        seen.append(index)
        if index == 4:
            stop.set()
    assert seen == [2, 3, 4]


def test_render_command_writes_one_frame_per_pose(tmp_path):
    reference_png, reference_pose, poses = synthetic.job_files(5)
    (tmp_path / "ref.png").write_bytes(reference_png)
    (tmp_path / "ref.json").write_text(json.dumps(reference_pose))
    (tmp_path / "poses").mkdir()
    for index, pose in enumerate(poses):
        (tmp_path / "poses" / f"{index + 10:06d}.json").write_text(json.dumps(pose))
    result = subprocess.run(
        [sys.executable, "-m", "marionette.cli", "render", "--engine", "warp", "--reference", str(tmp_path / "ref.png"),
         "--reference-pose", str(tmp_path / "ref.json"), "--poses", str(tmp_path / "poses"),
         "--out", str(tmp_path / "out"), "--width", "128", "--height", "192"],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == [f"{i:06d}.png" for i in range(10, 15)]
    assert decode_image((tmp_path / "out" / "000012.png").read_bytes()).shape == (192, 128, 3)

    bad = subprocess.run([sys.executable, "-m", "marionette.cli", "render", "--reference", str(tmp_path / "ref.json"),
                          "--reference-pose", str(tmp_path / "ref.json"), "--poses", str(tmp_path / "poses"),
                          "--out", str(tmp_path / "bad")], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "reference image is not a readable image" in bad.stderr
    assert not (tmp_path / "bad").exists() or not list((tmp_path / "bad").iterdir())


def test_hand_follows_its_keypoints():
    """A hand's points, turned about the wrist, carry the hand's pixels with them."""
    import cv2

    reference = synthetic.standing_pose()
    image = synthetic.character_image(reference, markers=False)
    wrist = reference[synthetic.INDEX["r_wrist"], :2]
    hand = np.zeros((21, 3))
    for finger in range(5):  # five straight fingers pointing down from the wrist
        for joint in range(4):
            hand[1 + 4 * finger + joint] = (wrist[0] - 16 + 8 * finger, wrist[1] + 12 + 9 * joint, 1)
    hand[0] = (*wrist, 1)
    cv2.circle(image, tuple(int(v) for v in hand[12, :2]), 4, (255, 0, 0, 255), -1)  # marker: middle tip
    person = synthetic.person(reference)
    person.points["hand_right_keypoints_2d"] = hand
    rig = WarpRig.build(image, person)
    assert any(bone.name == "r_hand" for bone in rig.bones)
    turned = hand.copy()
    angle = np.radians(70)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    turned[:, :2] = wrist + (hand[:, :2] - wrist) @ rotation.T
    moved = synthetic.person(reference)
    moved.points["hand_right_keypoints_2d"] = turned
    out = rig.pose(moved)
    red = (out[..., 0] > 200) & (out[..., 1] < 60) & (out[..., 2] < 60) & (out[..., 3] > 200)
    ys, xs = np.nonzero(red)
    assert len(xs) > 20
    assert np.hypot(xs.mean() - turned[12, 0], ys.mean() - turned[12, 1]) <= 2.0


@pytest.mark.parametrize("jaw,blink", [(14.0, 0.0), (0.0, 0.6), (10.0, 0.5)])
def test_face_markers_follow_jaw_and_blinks(jaw, blink):
    face = synthetic.canonical_face_2d()
    image, person = synthetic.portrait(face)
    rig = WarpRig.build(image, person)
    assert rig.face is not None
    moved = synthetic.person(person.points["pose_keypoints_2d"])
    target = synthetic.expression(face, jaw, blink)
    moved.points["face_mesh_keypoints_2d"] = target
    out = rig.pose(moved)
    for index, colour in synthetic.FACE_MARKERS.items():
        close = (np.abs(out[..., :3].astype(int) - np.array(colour)).max(axis=2) < 50) & (out[..., 3] > 200)
        ys, xs = np.nonzero(close)
        assert len(xs) > 10, f"marker of landmark {index} lost"
        error = np.hypot(xs.mean() - target[index, 0], ys.mean() - target[index, 1])
        assert error <= 2.0, f"landmark {index}: {error:.2f} px from its target"
    if jaw > 0:  # the open mouth shows a dark inside between the lips
        inside = out[int((target[13, 1] + target[14, 1]) / 2), int(target[13, 0])]
        assert inside[:3].max() < 120, inside
