"""The Marionette demo rig: a humanoid armature with fingers and face helper bones, and a keyed
four-second motion (arm gestures, a wave, a step and a turn). Runs inside Blender or with bpy.

Armature space: metres, Z up, the character faces -Y (Blender's front view looks at its face),
its left is +X. Bone names are the ones rigs/presets/demo.json maps.
"""

from __future__ import annotations

import math

import bpy
from mathutils import Matrix, Quaternion, Vector

FPS = 24
FRAME_END = 96  # four seconds

# name: (head, tail, parent) for the character's left side and the centre line; the right side
# mirrors the ".L" bones across X.
_CENTRE = {
    "pelvis": ((0, 0, 0.98), (0, 0, 1.10), None),
    "spine": ((0, 0, 1.10), (0, 0, 1.30), "pelvis"),
    "chest": ((0, 0, 1.30), (0, 0, 1.45), "spine"),
    "neck": ((0, 0, 1.45), (0, 0, 1.55), "chest"),
    "head": ((0, 0, 1.55), (0, 0, 1.76), "neck"),
    "nose": ((0, -0.03, 1.62), (0, -0.115, 1.615), "head"),
}
_LEFT = {
    "eye.L": ((0.032, -0.075, 1.665), (0.032, -0.095, 1.665), "head"),
    "ear.L": ((0.078, 0.0, 1.64), (0.085, 0.01, 1.67), "head"),
    "clavicle.L": ((0.02, 0.0, 1.43), (0.17, 0.0, 1.43), "chest"),
    "upper_arm.L": ((0.17, 0.0, 1.43), (0.45, 0.0, 1.43), "clavicle.L"),
    "lower_arm.L": ((0.45, 0.0, 1.43), (0.70, 0.0, 1.43), "upper_arm.L"),
    "hand.L": ((0.70, 0.0, 1.43), (0.78, 0.0, 1.43), "lower_arm.L"),
    "upper_leg.L": ((0.09, 0.0, 0.96), (0.09, -0.01, 0.53), "pelvis"),
    "lower_leg.L": ((0.09, -0.01, 0.53), (0.09, 0.0, 0.10), "upper_leg.L"),
    "foot.L": ((0.09, 0.0, 0.10), (0.09, -0.12, 0.03), "lower_leg.L"),
    "toes.L": ((0.09, -0.12, 0.03), (0.09, -0.19, 0.02), "foot.L"),
    "heel.L": ((0.09, 0.045, 0.0), (0.09, 0.045, 0.04), "foot.L"),
}
# Finger joints along each finger (x, y) at the hand's height, base to tip.
_FINGERS = {
    "thumb": [(0.715, -0.025, 1.42), (0.745, -0.055, 1.415), (0.765, -0.075, 1.41), (0.785, -0.09, 1.405)],
    "index": [(0.78, -0.025, 1.43), (0.82, -0.026, 1.43), (0.845, -0.026, 1.43), (0.865, -0.026, 1.43)],
    "middle": [(0.78, -0.008, 1.43), (0.825, -0.008, 1.43), (0.852, -0.008, 1.43), (0.876, -0.008, 1.43)],
    "ring": [(0.78, 0.01, 1.43), (0.82, 0.01, 1.43), (0.845, 0.01, 1.43), (0.866, 0.01, 1.43)],
    "pinky": [(0.775, 0.027, 1.425), (0.805, 0.027, 1.425), (0.825, 0.027, 1.425), (0.842, 0.027, 1.425)],
}
for _finger, _joints in _FINGERS.items():
    for _i in range(3):
        _LEFT[f"{_finger}{_i + 1}.L"] = (_joints[_i], _joints[_i + 1], "hand.L" if _i == 0 else f"{_finger}{_i}.L")


def _mirror(name: str) -> str:
    return name[:-2] + ".R" if name.endswith(".L") else name


def bone_layout() -> dict[str, tuple[tuple, tuple, str | None]]:
    layout = dict(_CENTRE)
    for name, (head, tail, parent) in _LEFT.items():
        layout[name] = (head, tail, parent)
        mirror = lambda p: (-p[0], p[1], p[2])  # noqa: E731
        layout[_mirror(name)] = (mirror(head), mirror(tail), _mirror(parent) if parent else None)
    return layout


def build_demo_rig(name: str = "DemoRig", keyed: bool = True) -> bpy.types.Object:
    """Create the demo armature in the active scene, with its keyed motion unless keyed=False."""
    data = bpy.data.armatures.new(name)
    obj = bpy.data.objects.new(name, data)
    bpy.context.scene.collection.objects.link(obj)
    bpy.context.view_layer.objects.active = obj
    bpy.ops.object.mode_set(mode="EDIT")
    layout = bone_layout()
    for bone_name, (head, tail, _parent) in layout.items():
        edit_bone = data.edit_bones.new(bone_name)
        edit_bone.head, edit_bone.tail = head, tail
        edit_bone.roll = 0.0
    for bone_name, (_head, _tail, parent) in layout.items():
        if parent:
            data.edit_bones[bone_name].parent = data.edit_bones[parent]
            data.edit_bones[bone_name].use_connect = False
    bpy.ops.object.mode_set(mode="OBJECT")
    for pose_bone in obj.pose.bones:
        pose_bone.rotation_mode = "QUATERNION"
    if keyed:
        key_demo_motion(obj)
    return obj


def _rotation(obj: bpy.types.Object, bone: str, axis: str, degrees: float) -> Quaternion:
    """A pose rotation for `bone` about an armature-space axis at rest (X left, Y back, Z up)."""
    rest = obj.data.bones[bone].matrix_local.to_3x3()
    turn = Matrix.Rotation(math.radians(degrees), 3, axis)
    return (rest.inverted() @ turn @ rest).to_quaternion()


def _key(obj, frame: int, poses: dict[str, list[tuple[str, float]]], pelvis_location=None):
    for bone, rotations in poses.items():
        quaternion = Quaternion()
        for axis, degrees in rotations:
            quaternion = quaternion @ _rotation(obj, bone, axis, degrees)
        pose_bone = obj.pose.bones[bone]
        pose_bone.rotation_quaternion = quaternion
        pose_bone.keyframe_insert("rotation_quaternion", frame=frame)
    if pelvis_location is not None:
        pelvis = obj.pose.bones["pelvis"]
        rest = obj.data.bones["pelvis"].matrix_local.to_3x3()
        pelvis.location = rest.inverted() @ Vector(pelvis_location)
        pelvis.keyframe_insert("location", frame=frame)


def key_demo_motion(obj: bpy.types.Object) -> None:
    """Arms come down, the right hand waves, the right leg steps forward, then the body turns."""
    fingers_open = {f"{f}{i}.{s}": [("Y", 0.0)] for f in _FINGERS for i in (1, 2, 3) for s in "LR"}
    fingers_curled = {f"{f}{i}.{s}": [("Y", 35.0 if s == "L" else -35.0)] for f in _FINGERS for i in (1, 2, 3)
                      for s in "LR"}
    arms_down = {"upper_arm.L": [("Y", 70)], "upper_arm.R": [("Y", -70)],
                 "lower_arm.L": [("Y", 10)], "lower_arm.R": [("Y", -10)]}
    still_legs = {"upper_leg.L": [("X", 0)], "upper_leg.R": [("X", 0)],
                  "lower_leg.L": [("X", 0)], "lower_leg.R": [("X", 0)], "pelvis": [("Z", 0)], "head": [("Z", 0)]}
    _key(obj, 1, {**arms_down, **still_legs, **fingers_open}, pelvis_location=(0, 0, 0))
    # The right arm rises and waves (the forearm swings in the frontal plane).
    _key(obj, 16, {"upper_arm.R": [("Y", 45)], "lower_arm.R": [("Y", 40)], **fingers_open})
    for frame, swing in ((22, 10), (28, 60), (34, 10), (40, 60)):
        _key(obj, frame, {"lower_arm.R": [("Y", swing)]})
    # A step: the right leg swings forward while the pelvis travels, then the left leg follows.
    _key(obj, 30, {**still_legs, "upper_arm.L": [("Y", 70)]}, pelvis_location=(0, 0, 0))
    _key(obj, 40, {"upper_leg.R": [("X", -30)], "lower_leg.R": [("X", 35)],
                   "upper_leg.L": [("X", 8)]}, pelvis_location=(0, -0.12, -0.02))
    _key(obj, 50, {"upper_leg.R": [("X", -12)], "lower_leg.R": [("X", 5)],
                   "upper_leg.L": [("X", 18)], "lower_leg.L": [("X", 30)]}, pelvis_location=(0, -0.25, -0.03))
    _key(obj, 60, {"upper_leg.R": [("X", 0)], "lower_leg.R": [("X", 0)], "upper_leg.L": [("X", 0)],
                   "lower_leg.L": [("X", 0)], "pelvis": [("Z", 0)], "head": [("Z", 0)]},
         pelvis_location=(0, -0.3, 0))
    # Arm gestures while turning: the right arm comes down, the left points forward, fingers curl.
    _key(obj, 52, {"upper_arm.R": [("Y", 45)], "lower_arm.R": [("Y", 40)], **fingers_open})
    _key(obj, 68, {"upper_arm.R": [("Y", -70)], "lower_arm.R": [("Y", -10)],
                   "upper_arm.L": [("Z", -60), ("Y", 10)], "lower_arm.L": [("Z", -20)], **fingers_curled})
    _key(obj, 96, {"pelvis": [("Z", 75)], "head": [("Z", 15)], "upper_arm.L": [("Y", 70)],
                   "lower_arm.L": [("Y", 10)], **fingers_open}, pelvis_location=(0, -0.3, 0))
    scene = bpy.context.scene
    scene.frame_start, scene.frame_end = 1, FRAME_END
    scene.render.fps = FPS


def add_front_camera(name: str = "Camera", distance: float = 2.9, height: float = 0.95,
                     lens: float = 35.0) -> bpy.types.Object:
    """A camera in front of the character (on -Y) looking at it, set as the scene camera."""
    data = bpy.data.cameras.new(name)
    data.lens = lens
    camera = bpy.data.objects.new(name, data)
    camera.location = (0.0, -distance, height)
    camera.rotation_euler = (math.radians(90), 0.0, 0.0)
    bpy.context.scene.collection.objects.link(camera)
    bpy.context.scene.camera = camera
    return camera
