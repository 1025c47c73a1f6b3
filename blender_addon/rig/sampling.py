"""Read keypoints off posed armatures and project them through the scene camera, one frame at a time.

Runs on Blender's main thread (it reads bpy data); returns plain numpy data for the drawing threads.
"""

from __future__ import annotations

import bpy
import numpy as np

from ..core.face import IBUG68_FROM_MESH, ibug68
from ..core.keypoints import BODY_18, FOOT_6, GROUPS, LEFT_HAND_21, RIGHT_HAND_21, PersonKeypoints
from ..core.projection import project_points
from .mapping import BoneFrame, PointBinding, RigMapping, detect_preset, load_presets, resolve_mapping


# Every mappable point, in group order (the hand wrists are the body's wrists).
GROUPS_POINT_ORDER = tuple(dict.fromkeys(BODY_18 + FOOT_6 + LEFT_HAND_21 + RIGHT_HAND_21))
_HAND_WRIST = {"hand_left_keypoints_2d": "l_wrist", "hand_right_keypoints_2d": "r_wrist"}


class SamplingError(Exception):
    """The scene cannot be sampled at a frame; the message names the object and the frame."""


def render_size(scene: bpy.types.Scene) -> tuple[int, int]:
    """The output resolution in pixels, render percentage applied."""
    render = scene.render
    scale = render.resolution_percentage / 100.0
    return max(1, int(render.resolution_x * scale)), max(1, int(render.resolution_y * scale))


def armature_overrides(obj: bpy.types.Object) -> dict[str, PointBinding]:
    settings = obj.marionette_rig
    return {item.keypoint: PointBinding(item.bone, tuple(item.offset)) for item in settings.overrides}


def preset_for(obj: bpy.types.Object):
    presets = load_presets()
    chosen = obj.marionette_rig.preset
    if chosen != "AUTO":
        return presets[chosen]
    return detect_preset(obj.name, set(obj.data.bones.keys()), presets)


def build_mapping(obj: bpy.types.Object, depsgraph) -> RigMapping:
    """Resolve the armature's keypoint bindings on its calibration pose (see mapping.py)."""
    preset = preset_for(obj)
    if preset.calibration == "rest":
        calibration = {bone.name: BoneFrame(np.array(bone.matrix_local), bone.length) for bone in obj.data.bones}
    else:
        pose = obj.evaluated_get(depsgraph).pose
        calibration = {pb.name: BoneFrame(np.array(pb.matrix), pb.bone.length) for pb in pose.bones}
    return resolve_mapping(preset, calibration, armature_overrides(obj), obj.name)


class CharacterSampler:
    """One armature's keypoints in world space, read from its evaluated pose."""

    def __init__(self, obj: bpy.types.Object, mapping: RigMapping, face=None):
        self.obj = obj
        self.face = face  # a FaceSampler when the character has a bound face
        self.mapping = mapping
        self.names = [name for name in GROUPS_POINT_ORDER if name in mapping.points]
        bones = obj.data.bones
        self.bone_names = [mapping.points[name].bone for name in self.names]
        self.bone_indices = np.array([obj.pose.bones.find(bone) for bone in self.bone_names], dtype=np.int64)
        lengths = np.array([bones[bone].length for bone in self.bone_names])
        offsets = np.array([mapping.points[name].offset for name in self.names], dtype=np.float64).reshape(-1, 3)
        # Bone-local offsets are in bone lengths; pose matrices map bone-local units.
        self.local = np.concatenate([offsets * lengths[:, None], np.ones((len(self.names), 1))], axis=1)
        self.bone_count = len(bones)

    def world_points(self, depsgraph, frame: int) -> dict[str, np.ndarray]:
        evaluated = self.obj.evaluated_get(depsgraph)
        matrices = np.empty(self.bone_count * 16, dtype=np.float32)
        evaluated.pose.bones.foreach_get("matrix", matrices)
        # RNA stores matrices column-major.
        matrices = matrices.reshape(-1, 4, 4).transpose(0, 2, 1).astype(np.float64)
        world_matrix = np.array(evaluated.matrix_world)
        chosen = matrices[self.bone_indices]
        armature_space = np.einsum("nij,nj->ni", chosen, self.local)
        world = armature_space @ world_matrix.T
        points = world[:, :3]
        bad = ~np.isfinite(points).all(axis=1)
        if bad.any():
            bone = self.bone_names[int(np.argmax(bad))]
            raise SamplingError(f"armature '{self.obj.name}' bone '{bone}' has a non-finite transform "
                                f"(NaN or infinite) at frame {frame}; fix its animation or constraints")
        return dict(zip(self.names, points))


def camera_matrices(scene: bpy.types.Scene, depsgraph, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """World-to-camera and camera-to-clip matrices of the scene camera at the current frame."""
    camera = scene.camera.evaluated_get(depsgraph)
    projection = camera.calc_matrix_camera(
        depsgraph, x=width, y=height,
        scale_x=scene.render.pixel_aspect_x, scale_y=scene.render.pixel_aspect_y)
    view = np.array(camera.matrix_world.inverted())
    return view, np.array(projection)


def add_face(person: PersonKeypoints, face_world: np.ndarray, view: np.ndarray, projection: np.ndarray,
             width: int, height: int) -> None:
    """The 478 face landmarks (world space) projected, and the iBUG-68 points derived from them."""
    pixels, depth = project_points(face_world, view, projection, width, height)
    person.points["face_mesh_keypoints_2d"] = pixels
    person.depth["face_mesh_keypoints_2d"] = depth
    person.points["face_keypoints_2d"] = ibug68(pixels)
    person.depth["face_keypoints_2d"] = depth[list(IBUG68_FROM_MESH)]


def project_person(points_world: dict[str, np.ndarray], view: np.ndarray, projection: np.ndarray,
                   width: int, height: int) -> PersonKeypoints:
    """One character's keypoints in pixels. The neck, unless mapped to a bone, is the midpoint of the
    projected shoulders and visible only when both are, as DWPose computes it."""
    person = PersonKeypoints.empty()
    for key, names in GROUPS.items():
        names = [_HAND_WRIST.get(key) if index == 0 and key in _HAND_WRIST else name
                 for index, name in enumerate(names)]
        present = [i for i, name in enumerate(names) if name in points_world]
        if not present:
            continue
        world = np.array([points_world[names[i]] for i in present])
        pixels, depth = project_points(world, view, projection, width, height)
        person.points[key][present] = pixels
        person.depth[key][present] = depth
    if "neck" not in points_world:
        body, depth = person.points["pose_keypoints_2d"], person.depth["pose_keypoints_2d"]
        r_shoulder, l_shoulder = BODY_18.index("r_shoulder"), BODY_18.index("l_shoulder")
        neck = BODY_18.index("neck")
        if body[r_shoulder, 2] > 0 and body[l_shoulder, 2] > 0:
            body[neck] = (body[r_shoulder] + body[l_shoulder]) / 2
            depth[neck] = (depth[r_shoulder] + depth[l_shoulder]) / 2
    return person

