"""render_control_maps in real Blender: keypoints against an independent projection, strips, cameras."""

import pytest

from harness import run_in_blender


def case_demo_rig_maps(tmp):
    import bpy
    import scene_helpers as h
    from bl_ext.user_default.marionette.core.png import decode_png

    scene = h.new_scene(width=1024, height=1536, percentage=50)  # 512x768 after the percentage
    rig = h.demo_character()
    camera = h.front_camera()
    camera.data.shift_x = 0.08  # lens shift must be honoured
    h.save_blend(tmp)
    h.render_maps()

    out = h.output_dir()
    pose_files = sorted((out / "control" / "pose").iterdir())
    json_files = sorted((out / "control" / "keypoints").iterdir())
    assert [p.name for p in pose_files] == [f"{f:06d}.png" for f in range(1, 97)]
    assert [p.stem for p in json_files] == [p.stem for p in pose_files]
    assert not [p for p in (out / "control").iterdir() if p.name.startswith(".")], "staging left behind"

    worst = 0.0
    for frame in range(1, 97, 5):
        error, checked = h.assert_matches_independent(scene, rig, frame, h.DEMO_JOINTS)
        assert checked >= 15
        worst = max(worst, error)
    data = h.read_keypoints(40)
    assert (data["canvas_width"], data["canvas_height"]) == (512, 768)
    assert data["version"] == 1.3 and len(data["people"]) == 1
    person = data["people"][0]
    assert len(person["pose_keypoints_2d"]) == 54 and len(person["hand_left_keypoints_2d"]) == 63
    assert len(person["foot_keypoints_2d"]) == 18
    # The neck is the midpoint of the projected shoulders.
    body = h.body_points(data)
    assert abs(body["neck"][0] - (body["r_shoulder"][0] + body["l_shoulder"][0]) / 2) < 0.01

    image = decode_png(pose_files[39].read_bytes())
    assert image.shape == (768, 512, 3)
    # Joint discs land where the keypoints say, in full colour (the dimmed limbs never reach 255);
    # the wrists are covered by the hand's blue points.
    for name, color in (("r_elbow", (255, 255, 0)), ("r_shoulder", (255, 170, 0)), ("r_knee", (0, 255, 255)), ("r_wrist", (0, 0, 255))):
        x, y, _ = body[name]
        assert tuple(image[int(y), int(x)]) == color, (name, tuple(image[int(y), int(x)]))
    assert (image.max(axis=2) > 0).mean() > 0.005

    strips = h.compat().strips(scene.sequence_editor)
    strip = strips["Marionette pose"]
    assert strip.type == "IMAGE" and h.strip_span(strip) == [1, 96]
    names = [e.filename for e in strip.elements]
    assert names[:2] == ["000001.png", "000002.png"] and len(names) == 96, (names[:3], len(names), strip.directory)
    assert bpy.path.abspath(strip.directory).rstrip("/") == str(out / "control" / "pose")

    # A second run over a shorter range replaces the outputs and updates the one strip.
    h.render_maps(frame_start=10, frame_end=20)
    assert len(list((out / "control" / "pose").iterdir())) == 11
    strip = strips["Marionette pose"]
    assert h.strip_span(strip) == [10, 11]
    assert len([s for s in strips if s.name.startswith("Marionette")]) == 1
    return {"worst_px": worst}


@pytest.mark.smoke
def test_demo_rig_maps_match_independent_projection(tmp_path):
    result = run_in_blender(case_demo_rig_maps, tmp_path, tmp=str(tmp_path))
    assert result["worst_px"] <= 1.0


def case_rigify_random_poses(tmp):
    import random

    import addon_utils
    import bpy
    import scene_helpers as h

    scene = h.new_scene()
    addon_utils.enable("rigify", default_set=True)
    bpy.ops.object.armature_human_metarig_add()
    bpy.ops.pose.rigify_generate()
    rig = bpy.data.objects["rig"]
    bpy.data.objects.remove(bpy.data.objects["metarig"])
    camera = h.front_camera(distance=3.2)
    camera.data.sensor_fit = "VERTICAL"
    camera.data.shift_y = -0.05
    rig.select_set(True)  # no characters listed: the selected armature is used

    rng = random.Random(7)
    controls = [b.name for b in rig.pose.bones if b.name in {
        "torso", "chest", "neck", "head", "upper_arm_fk.L", "upper_arm_fk.R", "forearm_fk.L", "forearm_fk.R",
        "hand_fk.L", "hand_fk.R", "thigh_fk.L", "thigh_fk.R", "shin_fk.L", "shin_fk.R"} or b.name.startswith(
        ("f_index.01", "f_middle.01", "thumb.01", "f_ring.01", "f_pinky.01"))]
    for name in ("upper_arm_parent.L", "upper_arm_parent.R", "thigh_parent.L", "thigh_parent.R"):
        if name in rig.pose.bones and "IK_FK" in rig.pose.bones[name]:
            rig.pose.bones[name]["IK_FK"] = 1.0  # FK, so the FK controls drive the limbs
    frames = range(1, 9)
    for frame in frames:
        for name in controls:
            bone = rig.pose.bones[name]
            bone.rotation_mode = "XYZ"
            bone.rotation_euler = [rng.uniform(-0.7, 0.7) for _ in range(3)]
            bone.keyframe_insert("rotation_euler", frame=frame)
        torso = rig.pose.bones["torso"]
        torso.location = (rng.uniform(-0.2, 0.2), rng.uniform(-0.1, 0.1), rng.uniform(-0.2, 0.2))
        torso.keyframe_insert("location", frame=frame)
    scene.frame_start, scene.frame_end = 1, 8
    h.save_blend(tmp)
    h.render_maps()

    specs = {"nose": ("DEF-nose.001", 1.0)}
    for s, S in (("l", "L"), ("r", "R")):
        specs.update({
            f"{s}_shoulder": (f"DEF-upper_arm.{S}", 0.0), f"{s}_elbow": (f"DEF-forearm.{S}", 0.0),
            f"{s}_wrist": (f"DEF-hand.{S}", 0.0), f"{s}_hip": (f"DEF-thigh.{S}", 0.0),
            f"{s}_knee": (f"DEF-shin.{S}", 0.0), f"{s}_ankle": (f"DEF-foot.{S}", 0.0),
            f"{s}_eye": (f"ORG-eye.{S}", 0.0), f"{s}_ear": (f"DEF-ear.{S}", 0.0),
            f"{s}_thumb1": (f"DEF-thumb.01.{S}", 0.0), f"{s}_index4": (f"DEF-f_index.03.{S}", 1.0),
            f"{s}_pinky2": (f"DEF-f_pinky.02.{S}", 0.0),
        })
    worst, total = 0.0, 0
    distinct = set()
    for frame in frames:
        error, checked = h.assert_matches_independent(scene, rig, frame, specs)
        worst, total = max(worst, error), total + checked
        distinct.add(tuple(round(v) for v in h.body_points(h.read_keypoints(frame))["l_wrist"][:2]))
    assert len(distinct) >= 6, "the random poses barely moved the rig; the comparison would prove little"
    return {"worst_px": worst, "checked": total}


def test_rigify_random_poses_match_independent_projection(tmp_path):
    result = run_in_blender(case_rigify_random_poses, tmp_path, tmp=str(tmp_path))
    assert result["worst_px"] <= 1.0 and result["checked"] >= 8 * 20


def case_cameras_and_characters(tmp):
    import math

    import bpy
    import scene_helpers as h

    scene = h.new_scene(width=1024, height=576)
    first = h.demo_character("First", location=(-0.6, 0.0, 0.0))
    second = h.demo_character("Second", location=(0.7, 0.8, 0.0))
    front = h.front_camera(distance=4.0)
    h.save_blend(tmp)

    # Several characters: one entry per armature, in list order, each matching its own bones.
    h.render_maps(frame_start=1, frame_end=12)
    for frame in (1, 12):
        assert len(h.read_keypoints(frame)["people"]) == 2
        h.assert_matches_independent(scene, first, frame, h.DEMO_JOINTS, person=0)
        h.assert_matches_independent(scene, second, frame, h.DEMO_JOINTS, person=1)

    # Orthographic camera.
    front.data.type = "ORTHO"
    front.data.ortho_scale = 3.5
    h.render_maps(frame_start=5, frame_end=8)
    for frame in (5, 8):
        h.assert_matches_independent(scene, first, frame, h.DEMO_JOINTS, person=0)

    # An animated camera and a cut to a second camera by a timeline marker.
    front.data.type = "PERSP"
    front.location.x = -1.0
    front.keyframe_insert("location", frame=1)
    front.location.x = 1.0
    front.keyframe_insert("location", frame=20)
    side = bpy.data.objects.new("Side", bpy.data.cameras.new("Side"))
    scene.collection.objects.link(side)
    side.location = (4.5, 0.2, 1.0)
    side.rotation_euler = (math.radians(90), 0.0, math.radians(90))
    scene.timeline_markers.new("cut", frame=1).camera = front
    scene.timeline_markers.new("cut to side", frame=15).camera = side
    h.render_maps(frame_start=1, frame_end=24)
    for frame in (1, 10, 14, 15, 24):
        h.assert_matches_independent(scene, first, frame, h.DEMO_JOINTS, person=0)
    before, after = h.body_points(h.read_keypoints(14)), h.body_points(h.read_keypoints(15))
    assert abs(before["neck"][0] - after["neck"][0]) > 20, "the camera cut did not change the projection"

    # A character out of view gets c = 0 everywhere and draws nothing.
    second.location = (0.0, -10.0, 0.0)  # behind the front camera
    scene.timeline_markers.clear()
    scene.camera = front
    h.render_maps(frame_start=3, frame_end=3)
    hidden = h.read_keypoints(3)["people"][1]
    assert all(v == 0 for v in hidden["pose_keypoints_2d"])
    return {"ok": True}


def test_cameras_and_several_characters(tmp_path):
    assert run_in_blender(case_cameras_and_characters, tmp_path, tmp=str(tmp_path)) == {"ok": True}
