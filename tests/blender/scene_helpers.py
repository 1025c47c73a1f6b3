"""Blender-side helpers for the test cases: scenes, an independent projection, reading outputs.

The independent projection uses bpy_extras.object_utils.world_to_camera_view on evaluated pose
bones: it shares no code with the extension's sampler or projection.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import bpy
from bpy_extras.object_utils import world_to_camera_view

ROOT = Path(os.environ["MARIONETTE_ROOT"])
sys.path.insert(0, str(ROOT / "rigs"))

import demo_rig  # noqa: E402

BODY_18 = ("nose", "neck", "r_shoulder", "r_elbow", "r_wrist", "l_shoulder", "l_elbow", "l_wrist", "r_hip",
           "r_knee", "r_ankle", "l_hip", "l_knee", "l_ankle", "r_eye", "l_eye", "r_ear", "l_ear")


def new_scene(width=512, height=768, percentage=100):
    # read_homefile keeps the preferences (and so the installed extension), unlike factory settings.
    bpy.ops.wm.read_homefile(use_empty=True)
    scene = bpy.context.scene
    scene.render.resolution_x, scene.render.resolution_y = width, height
    scene.render.resolution_percentage = percentage
    return scene


def save_blend(tmp, name="scene.blend"):
    path = Path(tmp) / name
    bpy.ops.wm.save_as_mainfile(filepath=str(path))
    return path


def render_maps(**kwargs):
    result = bpy.ops.marionette.render_control_maps(**kwargs)
    assert result == {"FINISHED"}, result


def output_dir(scene=None) -> Path:
    scene = scene or bpy.context.scene
    return Path(bpy.path.abspath(scene.marionette.output_dir))


def read_keypoints(frame, scene=None) -> dict:
    path = output_dir(scene) / "control" / "keypoints" / f"{frame:06d}.json"
    return json.loads(path.read_text())


def body_points(data, person=0) -> dict:
    values = data["people"][person]["pose_keypoints_2d"]
    return {name: tuple(values[3 * i:3 * i + 3]) for i, name in enumerate(BODY_18)}


def project_bone_point(scene, obj, bone, at=0.0):
    """Pixel position (x, y) and visibility of a point `at` along an evaluated pose bone."""
    depsgraph = bpy.context.evaluated_depsgraph_get()
    evaluated = obj.evaluated_get(depsgraph)
    pose_bone = evaluated.pose.bones[bone]
    local = pose_bone.head.lerp(pose_bone.tail, at)
    world = evaluated.matrix_world @ local
    camera = scene.camera.evaluated_get(depsgraph)
    u, v, depth = world_to_camera_view(scene, camera, world)
    scale = scene.render.resolution_percentage / 100
    width, height = int(scene.render.resolution_x * scale), int(scene.render.resolution_y * scale)
    x, y = u * width, (1 - v) * height
    visible = depth > 0 and 0 <= x < width and 0 <= y < height
    return x, y, visible


def assert_matches_independent(scene, obj, frame, specs, person=0, tolerance=1.0):
    """Every (keypoint -> (bone, at)) in specs matches the written JSON within `tolerance` px."""
    scene.frame_set(frame)
    points = body_points(read_keypoints(frame, scene), person)
    data = read_keypoints(frame, scene)["people"][person]
    worst = 0.0
    checked = 0
    for name, (bone, at) in specs.items():
        x, y, visible = project_bone_point(scene, obj, bone, at)
        if name in points:
            px, py, c = points[name]
        else:
            side, finger = name.split("_", 1)
            key = "hand_left_keypoints_2d" if side == "l" else "hand_right_keypoints_2d"
            index = HAND_21.index(finger)
            px, py, c = data[key][3 * index:3 * index + 3]
        assert (c > 0) == visible, f"frame {frame} {name}: written c={c}, independently visible={visible}"
        if visible:
            error = math.hypot(px - x, py - y)
            worst = max(worst, error)
            checked += 1
            assert error <= tolerance, f"frame {frame} {name}: written ({px:.2f}, {py:.2f}) vs ({x:.2f}, {y:.2f})"
    return worst, checked


HAND_21 = ("wrist", "thumb1", "thumb2", "thumb3", "thumb4", "index1", "index2", "index3", "index4",
           "middle1", "middle2", "middle3", "middle4", "ring1", "ring2", "ring3", "ring4",
           "pinky1", "pinky2", "pinky3", "pinky4")

# Demo rig keypoints that sit on bone heads/tails: (bone, at).
DEMO_JOINTS = {
    "nose": ("nose", 1.0), "r_shoulder": ("upper_arm.R", 0.0), "r_elbow": ("lower_arm.R", 0.0),
    "r_wrist": ("hand.R", 0.0), "l_shoulder": ("upper_arm.L", 0.0), "l_elbow": ("lower_arm.L", 0.0),
    "l_wrist": ("hand.L", 0.0), "r_hip": ("upper_leg.R", 0.0), "r_knee": ("lower_leg.R", 0.0),
    "r_ankle": ("foot.R", 0.0), "l_hip": ("upper_leg.L", 0.0), "l_knee": ("lower_leg.L", 0.0),
    "l_ankle": ("foot.L", 0.0), "r_eye": ("eye.R", 0.0), "l_eye": ("eye.L", 0.0), "r_ear": ("ear.R", 0.0),
    "l_ear": ("ear.L", 0.0), "l_index1": ("index1.L", 0.0), "l_index4": ("index3.L", 1.0),
    "r_thumb4": ("thumb3.R", 1.0),
}


def demo_character(name="DemoRig", location=(0.0, 0.0, 0.0)):
    obj = demo_rig.build_demo_rig(name)
    obj.location = location
    bpy.context.scene.marionette.characters.add().object = obj
    return obj


def front_camera(**kwargs):
    return demo_rig.add_front_camera(**kwargs)


def compat():
    """The extension's Blender-version compatibility module (the installed copy)."""
    from bl_ext.user_default.marionette import compat as module

    return module


def strip(scene, name):
    """The VSE strip `name` of `scene`, or None."""
    editor = scene.sequence_editor
    return compat().strips(editor).get(name) if editor is not None else None


def strip_span(strip) -> list:
    """[first scene frame shown, number of frames shown] of a strip."""
    return [compat().strip_left_handle(strip), compat().strip_duration(strip)]


class RecordingLayout:
    """A stand-in for a panel layout that records what is drawn (the panel logic, headless)."""

    def __init__(self, drawn):
        self.drawn = drawn

    def row(self, **_kwargs):
        return self

    column = box = row

    def label(self, text="", **_kwargs):
        self.drawn.append(["label", text])

    def prop(self, data, name, text=None, **_kwargs):
        self.drawn.append(["prop", getattr(data, "name", ""), name, text])

    def prop_search(self, data, name, *_args, **_kwargs):
        self.drawn.append(["prop_search", name])

    def operator(self, idname, **_kwargs):
        self.drawn.append(["operator", idname])
        return type("Properties", (), {})()

    def __getattr__(self, name):  # template_ID, progress...: drawn, not checked here
        return lambda *args, **kwargs: None


def connected_demo_scene(tmp, port, token_file, size=(64, 96), frames=4, percentage=100):
    """The demo scene (rig, bound face, camera, reference image) at `size`, `frames` frames, its
    output in tmp/marionette, connected to the backend at `port` (Test)."""
    import build_demo_scene  # rigs/, on the path since this module's import

    prefs = bpy.context.preferences.addons["bl_ext.user_default.marionette"].preferences
    prefs.auto_start, prefs.port, prefs.token_file = False, port, token_file
    scene = build_demo_scene.build_scene(Path(tmp) / "reference.png")
    scene.render.resolution_x, scene.render.resolution_y = size
    scene.render.resolution_percentage = percentage
    scene.frame_end = scene.frame_start + frames - 1
    scene.marionette.output_dir = str(Path(tmp) / "marionette")
    assert bpy.ops.marionette.test_connection() == {"FINISHED"}
    return scene
