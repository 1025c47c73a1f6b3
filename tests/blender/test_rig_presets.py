"""Rig presets in real Blender: detection, BVH mocap imports, Mixamo naming, overrides, unmatched rigs."""

import pytest

from harness import ROOT, run_in_blender

# The CMU clips live in tests/data/mocap (free terms, thinned); the Bandai Namco clip is CC BY-NC and
# is used only where the project's shared data folder is beside the checkout.
MOCAP_FILES = ["cmu_walk_02_01.bvh", "cmu_wave_13_26.bvh", "cmu_jumps_turn_01_01.bvh"]
SHARED_MOCAP_FILES = ["bandai_byebye_normal_001.bvh"]
SHARED_MOCAP = ROOT.parent / "shared" / "data" / "mocap"


def case_bvh(tmp, path):
    import addon_utils
    import bpy
    import scene_helpers as h

    scene = h.new_scene(width=512, height=768)
    addon_utils.enable("io_anim_bvh", default_set=True)
    bpy.ops.import_anim.bvh(filepath=path, update_scene_fps=True, update_scene_duration=True)
    rig = bpy.context.object
    first, last = rig.animation_data.action.frame_range
    scene.frame_start, scene.frame_end = int(first), int(last)
    scene.marionette.characters.add().object = rig
    # A camera that follows the hips from the front-left, far enough to keep the body in view.
    root = "Hips"
    height = max(b.head_local.length for b in rig.data.bones) * 2.5
    camera = bpy.data.objects.new("Camera", bpy.data.cameras.new("Camera"))
    scene.collection.objects.link(camera)
    scene.camera = camera
    follow = camera.constraints.new("COPY_LOCATION")
    follow.target, follow.subtarget = rig, root
    track = camera.constraints.new("TRACK_TO")
    track.target, track.subtarget = rig, root
    track.track_axis, track.up_axis = "TRACK_NEGATIVE_Z", "UP_Y"
    follow.use_offset = True  # the camera keeps this offset from the hips
    camera.location = (height * 1.2, -height * 1.6, height * 0.3)
    camera.data.lens = 30
    h.save_blend(tmp)
    h.render_maps()

    frames = range(scene.frame_start, scene.frame_end + 1)
    complete, upright, total = 0, 0, 0
    for frame in frames:
        people = h.read_keypoints(frame)["people"]
        body = h.body_points(h.read_keypoints(frame))
        total += 1
        if all(point[2] > 0 for point in body.values()):
            complete += 1
        hip_y = (body["r_hip"][1] + body["l_hip"][1]) / 2
        head_y = (body["nose"][1] + body["r_eye"][1] + body["l_eye"][1]) / 3
        if head_y < body["neck"][1] < hip_y:  # head above the neck above the hips (y grows down)
            upright += 1
        assert len(people) == 1
    return {"frames": total, "complete": complete, "upright": upright, "preset": rig.name,
            "in_view_check": _all_in_view(scene, rig, frames)}


def _all_in_view(scene, rig, frames):
    """How many frames have every mapped body bone in view, judged independently of the extension."""
    import scene_helpers as h

    bones = [b.name for b in rig.data.bones if b.name in {"Head", "LeftHand", "RightHand", "LeftFoot", "RightFoot",
                                                          "Hand_L", "Hand_R", "Foot_L", "Foot_R"}]
    count = 0
    for frame in list(frames)[::25]:
        scene.frame_set(frame)
        if all(h.project_bone_point(scene, rig, bone)[2] for bone in bones):
            count += 1
    return count, len(list(frames)[::25])


@pytest.mark.parametrize("path", [ROOT / "tests" / "data" / "mocap" / name for name in MOCAP_FILES] +
                         [SHARED_MOCAP / name for name in SHARED_MOCAP_FILES], ids=lambda path: path.stem)
def test_bvh_mocap_gives_all_body_points(tmp_path, path):
    if not path.is_file():
        pytest.skip(f"{path.name} is not in the repository (CC BY-NC licence) and no shared data folder "
                    f"is beside the checkout ({SHARED_MOCAP})")
    result = run_in_blender(case_bvh, tmp_path, tmp=str(tmp_path), path=str(path))
    in_view, sampled = result["in_view_check"]
    assert in_view == sampled, f"the test camera lost the body in {sampled - in_view} sampled frames"
    assert result["complete"] == result["frames"], result
    assert result["upright"] >= 0.95 * result["frames"], result


def case_detection_and_overrides(tmp):
    import addon_utils
    import bpy
    import scene_helpers as h
    from bl_ext.user_default.marionette.rig.mapping import MappingError
    from bl_ext.user_default.marionette.rig.sampling import build_mapping, preset_for

    scene = h.new_scene()
    addon_utils.enable("rigify", default_set=True)
    found = {}
    bpy.ops.object.armature_human_metarig_add()
    found["metarig"] = preset_for(bpy.context.object).id
    demo = h.demo_character()
    found["demo"] = preset_for(demo).id
    mixamo = _mixamo_like_armature()
    found["mixamo"] = preset_for(mixamo).id
    depsgraph = bpy.context.evaluated_depsgraph_get()
    mixamo_points = sorted(build_mapping(mixamo, depsgraph).points)

    # An armature no preset fits: the error names the missing bones.
    odd = bpy.data.objects.new("Odd", bpy.data.armatures.new("Odd"))
    scene.collection.objects.link(odd)
    bpy.context.view_layer.objects.active = odd
    bpy.ops.object.mode_set(mode="EDIT")
    odd.data.edit_bones.new("thing").tail = (0, 0, 1)
    bpy.ops.object.mode_set(mode="OBJECT")
    try:
        build_mapping(odd, depsgraph)
        message = None
    except MappingError as error:
        message = str(error)

    # Through the operator: the unmatched rig is a clear error; Blender carries on.
    h.front_camera()
    h.save_blend(tmp)
    scene.marionette.characters.clear()
    scene.marionette.characters.add().object = odd
    try:
        bpy.ops.marionette.render_control_maps(frame_start=1, frame_end=2)
        operator_error = None
    except RuntimeError as error:
        operator_error = str(error)

    # An override moves a keypoint onto another bone (and offset).
    scene.marionette.characters.clear()
    scene.marionette.characters.add().object = demo
    override = demo.marionette_rig.overrides.add()
    override.keypoint, override.bone, override.offset = "l_wrist", "lower_arm.L", (0.0, 0.5, 0.0)
    h.render_maps(frame_start=1, frame_end=1)
    written = h.body_points(h.read_keypoints(1))["l_wrist"]
    expected = h.project_bone_point(scene, demo, "lower_arm.L", 0.5)
    # A chosen preset instead of detection.
    demo.marionette_rig.preset = "demo"
    chosen = preset_for(demo).id
    return {"found": found, "mixamo_points": mixamo_points, "message": message, "operator_error": operator_error,
            "override": [written[0], written[1], expected[0], expected[1]], "chosen": chosen}


def _mixamo_like_armature():
    """A T-posed armature with Mixamo's bone names and rough proportions (centimetres, scale 0.01)."""
    import bpy

    joints = {
        "Hips": ((0, 0, 100), None), "Spine": ((0, 0, 110), "Hips"), "Spine1": ((0, 0, 122), "Spine"),
        "Spine2": ((0, 0, 135), "Spine1"), "Neck": ((0, 0, 150), "Spine2"), "Head": ((0, 0, 160), "Neck"),
        "HeadTop_End": ((0, 0, 180), "Head"),
    }
    for side, sign in (("Left", 1), ("Right", -1)):
        joints.update({
            f"{side}Shoulder": ((sign * 5, 0, 145), "Spine2"), f"{side}Arm": ((sign * 18, 0, 145), f"{side}Shoulder"),
            f"{side}ForeArm": ((sign * 45, 0, 145), f"{side}Arm"), f"{side}Hand": ((sign * 70, 0, 145), f"{side}ForeArm"),
            f"{side}UpLeg": ((sign * 9, 0, 95), "Hips"), f"{side}Leg": ((sign * 9, 0, 52), f"{side}UpLeg"),
            f"{side}Foot": ((sign * 9, 0, 9), f"{side}Leg"), f"{side}ToeBase": ((sign * 9, -12, 2), f"{side}Foot"),
            f"{side}Toe_End": ((sign * 9, -19, 2), f"{side}ToeBase"),
        })
        for index, finger in enumerate(("Thumb", "Index", "Middle", "Ring", "Pinky")):
            y = -4 + 2 * index
            parent = f"{side}Hand"
            for i in range(1, 5):
                joints[f"{side}Hand{finger}{i}"] = ((sign * (74 + 3 * i), y, 145), parent)
                parent = f"{side}Hand{finger}{i}"
    data = bpy.data.armatures.new("Armature")
    obj = bpy.data.objects.new("Armature", data)
    bpy.context.scene.collection.objects.link(obj)
    obj.scale = (0.01, 0.01, 0.01)
    bpy.context.view_layer.objects.active = obj
    bpy.ops.object.mode_set(mode="EDIT")
    children = {}
    for name, (_head, parent) in joints.items():
        children.setdefault(parent, []).append(name)
    for name, (head, parent) in joints.items():
        bone = data.edit_bones.new("mixamorig:" + name)
        bone.head = head
        kids = children.get(name)
        tail = joints[kids[0]][0] if kids else (head[0], head[1], head[2] + 3)
        bone.tail = tail if tail != head else (head[0], head[1], head[2] + 3)
    for name, (_head, parent) in joints.items():
        if parent:
            data.edit_bones["mixamorig:" + name].parent = data.edit_bones["mixamorig:" + parent]
    bpy.ops.object.mode_set(mode="OBJECT")
    return obj


def test_detection_overrides_and_unmatched_rig(tmp_path):
    result = run_in_blender(case_detection_and_overrides, tmp_path, tmp=str(tmp_path))
    assert result["found"] == {"metarig": "rigify_metarig", "demo": "demo", "mixamo": "mixamo"}
    assert len(result["mixamo_points"]) == 63  # 17 body (neck derived) + 6 feet + 2 x 20 fingers
    assert result["message"] and "Odd" in result["message"] and "needs the bones" in result["message"]
    assert result["operator_error"] and "matches no rig preset" in result["operator_error"]
    x, y, ex, ey = result["override"]
    assert abs(x - ex) <= 1 and abs(y - ey) <= 1
    assert result["chosen"] == "demo"
