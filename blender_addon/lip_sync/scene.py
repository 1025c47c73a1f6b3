"""What Lip Sync reads from the scene and writes to it (main thread): the face to key and its
shape keys, the sound (a strip of the Sequencer or a file) and where it sits on the timeline, and
the keys themselves."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import bpy
import numpy as np

from .. import compat
from ..face.binding import FaceBindingError, has_binding, load_binding
from ..shared import strips
from .solver import CANONICAL_COUNT, LipSyncError, landmarks_from_vertices


@dataclass
class KeyTiming:
    """Where the sound sits on the timeline: its time 0 at scene frame `start`; frames outside
    `shown` (first, last), where given, are not keyed (a trimmed strip)."""
    start: int
    shown: tuple[int, int] | None = None
    skip: int = 0  # frames of the sound before `start` (a strip's sound offset)


@dataclass
class SoundInput:
    label: str  # for messages: "sound strip 'Voice'" or the file path
    data: bytes
    filename: str


def scene_rate(scene: bpy.types.Scene) -> float:
    return scene.render.fps / scene.render.fps_base


def find_face(context, name: str) -> bpy.types.Object:
    """The face to key: the named mesh, else the active object if it is a bound face, else the one
    bound face of the scene."""
    if name:
        obj = bpy.data.objects.get(name)
        if obj is None or obj.type != "MESH":
            raise LipSyncError(f"there is no mesh named '{name}'")
    else:
        obj = context.active_object
        if obj is None or not has_binding(obj):
            faces = [o for o in context.scene.objects if has_binding(o)]
            if len(faces) != 1:
                raise LipSyncError("make the face mesh the active object (or name it in Face)" if faces else
                                   "no bound face in the scene; bind the face mesh in Marionette > Face first")
            obj = faces[0]
    if not has_binding(obj):
        raise LipSyncError(f"mesh '{obj.name}' has no face binding; bind it in Marionette > Face first")
    keys = obj.data.shape_keys
    if keys is None or len(keys.key_blocks) < 2:
        raise LipSyncError(f"mesh '{obj.name}' has no shape keys to key (jawOpen, mouthClose, ...)")
    if not keys.use_relative:
        raise LipSyncError(f"mesh '{obj.name}' uses absolute shape keys; Lip Sync keys relative shape keys")
    return obj


def find_sound_strip(scene: bpy.types.Scene, sound: str):
    """The sound strip `sound` names, the first sound strip when `sound` is empty, or None when
    `sound` is a file path."""
    found = strips.sound_strips(scene)
    if not sound:
        if not found:
            raise LipSyncError("the scene has no sound strip; add the sound in the Video Sequencer, or give Sound "
                               "a sound file (or Offsets File the output of `marionette lip-sync`)")
        return found[0]
    for strip in found:
        if strip.name == sound:
            return strip
    editor = scene.sequence_editor
    other = compat.all_strips(editor).get(sound) if editor is not None else None
    if other is not None:
        raise LipSyncError(f"strip '{sound}' is a {other.type.lower()} strip, not a sound strip")
    return None


def strip_timing(scene: bpy.types.Scene, strip) -> KeyTiming:
    first = compat.strip_left_handle(strip)
    skip = round(getattr(strip, "sound_offset", 0.0) * scene_rate(scene))
    return KeyTiming(round(compat.strip_content_start(strip)), (first, first + compat.strip_duration(strip) - 1),
                     skip)


def strip_sound(strip) -> SoundInput:
    sound = strip.sound
    label = f"sound strip '{strip.name}'"
    if sound is None:
        raise LipSyncError(f"{label} has no sound")
    if sound.packed_file is not None:
        return SoundInput(label, bytes(sound.packed_file.data), Path(sound.filepath).name or "sound")
    path = Path(bpy.path.abspath(sound.filepath, library=sound.library))
    try:
        return SoundInput(label, path.read_bytes(), path.name)
    except OSError as error:
        raise LipSyncError(f"cannot read the sound file {path} of {label}: {error.strerror or error}") from None


def file_sound(path_text: str) -> SoundInput:
    path = Path(bpy.path.abspath(path_text))
    if not path.is_file():
        raise LipSyncError(f"'{path_text}' is neither a sound strip of the scene nor a sound file")
    try:
        return SoundInput(str(path), path.read_bytes(), path.name)
    except OSError as error:
        raise LipSyncError(f"cannot read the sound file {path}: {error.strerror or error}") from None


def read_face_shapes(face: bpy.types.Object, names: list[str]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The face's 468 rest landmarks (its basis shape) and, per shape key, how far its value 1 moves
    each landmark, both in the mesh's own space: the key's offset from its relative key (times its
    vertex group) carried through the binding's barycentric weights."""
    triangles, weights = load_binding(face)
    triangles, weights = triangles[:CANONICAL_COUNT], weights[:CANONICAL_COUNT]
    mesh = face.data
    count = len(mesh.vertices)
    if triangles.max() >= count:
        raise FaceBindingError(f"mesh '{face.name}' has {count} vertices, fewer than its face binding expects; "
                               f"bind it again")
    cache: dict[str, np.ndarray] = {}

    def coordinates(block) -> np.ndarray:
        if block.name not in cache:
            values = np.empty(count * 3, dtype=np.float32)
            block.data.foreach_get("co", values)
            cache[block.name] = values.reshape(-1, 3).astype(np.float64)
        return cache[block.name]

    keys = mesh.shape_keys
    rest = landmarks_from_vertices(triangles, weights, coordinates(keys.reference_key))
    displacements = {}
    for name in names:
        block = keys.key_blocks[name]
        delta = coordinates(block) - coordinates(block.relative_key)
        if block.vertex_group:
            delta *= _group_weights(face, block.vertex_group)[:, None]
        displacements[name] = landmarks_from_vertices(triangles, weights, delta)
    return rest, displacements


def _group_weights(face: bpy.types.Object, group_name: str) -> np.ndarray:
    group = face.vertex_groups.get(group_name)
    weights = np.zeros(len(face.data.vertices))
    if group is None:  # Blender applies the key in full when its group is gone
        return weights + 1.0
    for vertex in face.data.vertices:
        for element in vertex.groups:
            if element.group == group.index:
                weights[vertex.index] = element.weight
    return weights


def key_weights(face: bpy.types.Object, names: list[str], weights: np.ndarray, frames: np.ndarray) -> None:
    """Key each shape key of `names` at `frames` (one column of `weights` per key), replacing the
    keys those shape keys had in that frame range."""
    shape_keys = face.data.shape_keys
    first, last = float(frames[0]), float(frames[-1])
    for column, name in enumerate(names):
        block = shape_keys.key_blocks[name]
        block.value = float(weights[0, column])
        block.keyframe_insert("value", frame=first)  # makes the action, slot and curve where missing
        path = block.path_from_id("value")
        curve = next(c for c in compat.fcurves(shape_keys) if c.data_path == path)
        points = curve.keyframe_points
        for index in reversed(range(len(points))):  # from the end: a removal shifts the points after it
            if first - 1e-6 <= points[index].co.x <= last + 1e-6:
                points.remove(points[index], fast=True)
        for frame, value in zip(frames, weights[:, column]):
            points.insert(float(frame), float(value), options={"FAST"})
        curve.update()
