"""Lip Sync from Audio: the backend turns a sound into face landmark motion (AniPortrait's
audio2mesh); the extension solves it onto the bound face's jaw and mouth shape keys (lip_sync.py)
and keys them at the scene rate.

The sound is a sound strip of the scene's Video Sequencer (keys follow the strip: its start, its
trim) or a sound file (keys from the current frame). `offsets_file` takes the offsets
`marionette lip-sync` wrote instead of asking the backend (render farms, offline work). With a
window the backend is asked on a worker thread and the keys are made when it answers; in background
mode the operator blocks.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from pathlib import Path

import bpy
import numpy as np
from bpy.props import FloatProperty, IntProperty, StringProperty

from . import compat, vse
from .core.client import BackendError
from .face_binding import FaceBindingError, canonical_face, has_binding, load_binding
from .lip_sync import (CANONICAL_COUNT, DEFAULT_SMOOTHING, LipSyncError, Offsets, chosen_shape_keys,
                       landmarks_from_vertices, offsets_from_answer, read_offsets_file, solve_lip_sync)

BACKEND_TIMEOUT = 600.0  # seconds: a long sound on a CPU backend, the model loaded first

# The backend's last answer, so that a redo (Smoothing or Shape Keys changed in the redo panel) solves
# again without asking the backend again (which would block the main thread): (key, offsets).
_last_answer: tuple[tuple, Offsets] | None = None


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


# --- reading the scene (main thread) -----------------------------------------------------

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
    strips = vse.sound_strips(scene)
    if not sound:
        if not strips:
            raise LipSyncError("the scene has no sound strip; add the sound in the Video Sequencer, or give Sound "
                               "a sound file (or Offsets File the output of `marionette lip-sync`)")
        return strips[0]
    for strip in strips:
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


# --- the backend (worker thread: no bpy) -------------------------------------------------

def request_offsets(settings, sound: SoundInput, fps: float, weights: str | None, auto_start: bool) -> Offsets:
    """Ask the backend for the sound's landmark offsets at `fps`. Blocking."""
    from .generation import StreamPlan, connect_backend

    client = connect_backend(StreamPlan(settings, Path(), auto_start=auto_start))
    try:
        client.sock.settimeout(BACKEND_TIMEOUT)
        lip_sync = getattr(client, "lip_sync", None)
        if lip_sync is None:
            raise BackendError("bad_request", "this build of the extension cannot ask the backend for lip sync; "
                                              "run `marionette lip-sync` and give its output as Offsets File")
        header, data = lip_sync(sound.data, fps, weights=weights, filename=sound.filename)
    finally:
        client.close()
    try:
        return offsets_from_answer(header, data)
    except LipSyncError as error:
        raise BackendError("bad_request", str(error)) from None


def _answer_key(sound: SoundInput, rate: float, weights: str | None) -> tuple:
    return hashlib.sha256(sound.data).hexdigest(), rate, weights


def remembered_answer(key: tuple) -> Offsets | None:
    return _last_answer[1] if _last_answer is not None and _last_answer[0] == key else None


def remember_answer(key: tuple, offsets: Offsets) -> None:
    global _last_answer
    _last_answer = (key, offsets)


# --- the operator ------------------------------------------------------------------------

@dataclass
class LipSyncPlan:
    """What the operator read from the scene before the (possibly slow) backend call."""
    face_name: str
    names: list[str]
    timing: KeyTiming
    rate: float
    sound: SoundInput | None  # to send to the backend; None when the offsets come from a file
    offsets: Offsets | None = None


class MARIONETTE_OT_lip_sync(bpy.types.Operator):
    """Key the face's jaw and mouth shape keys to a sound: the backend's audio2mesh turns the sound into
    face landmark motion, which is solved onto the shape keys at the scene frame rate"""

    bl_idname = "marionette.lip_sync"
    bl_label = "Lip Sync from Audio"
    bl_options = {"REGISTER", "UNDO"}

    sound: StringProperty(
        name="Sound", default="",
        description="A sound strip of the Video Sequencer (keys follow the strip), or a sound file (keys from "
                    "the current frame); empty: the first sound strip")
    offsets_file: StringProperty(
        name="Offsets File", default="", subtype="FILE_PATH", options=compat.BLEND_RELATIVE_PATH,
        description="Landmark offsets written by `marionette lip-sync` (JSON or .npz), used instead of asking "
                    "the backend")
    face: StringProperty(
        name="Face", default="", description="The bound face mesh to key; empty: the active object")
    shape_keys: StringProperty(
        name="Shape Keys", default="",
        description="Comma-separated shape keys that take part (patterns like mouth* allowed); empty: the jaw "
                    "and mouth keys")
    smoothing: FloatProperty(
        name="Smoothing", default=DEFAULT_SMOOTHING, min=0.0, max=10.0,
        description="Gaussian smoothing of the keys over time, in frames; 0 for none")
    frame_start: IntProperty(
        name="Start Frame", default=-1, options={"SKIP_SAVE"},
        description="First frame for a sound file or offsets file; -1: the current frame (a sound strip keys "
                    "from its own start)")
    weights: StringProperty(
        name="Weights", default="", subtype="DIR_PATH",
        description="The backend's folder with audio2mesh.pt and wav2vec2-base-960h/ (AniPortrait's release); "
                    "empty: Marionette > Face > Lip Sync Weights")

    _plan: LipSyncPlan | None = None
    _thread: threading.Thread | None = None
    _outcome: dict | None = None
    _timer = None

    @classmethod
    def poll(cls, context):
        if not any(has_binding(obj) for obj in context.scene.objects):
            cls.poll_message_set("Bind a face mesh with jaw and mouth shape keys first (Marionette > Face)")
            return False
        return True

    # --- steps -------------------------------------------------------------------------

    def _make_plan(self, context) -> LipSyncPlan:
        scene = context.scene
        face = find_face(context, self.face)
        names = chosen_shape_keys(self.shape_keys, [block.name for block in face.data.shape_keys.key_blocks[1:]])
        start = self.frame_start if self.frame_start >= 0 else scene.frame_current
        timing = KeyTiming(start)
        use_strip = bool(self.sound) or not self.offsets_file
        strip = find_sound_strip(scene, self.sound) if use_strip else None
        if strip is not None:
            timing = strip_timing(scene, strip)
        plan = LipSyncPlan(face.name, names, timing, scene_rate(scene), None)
        if self.offsets_file:
            plan.offsets = read_offsets_file(bpy.path.abspath(self.offsets_file))
        else:
            plan.sound = strip_sound(strip) if strip is not None else file_sound(self.sound)
        return plan

    def _weights_folder(self, context) -> str | None:
        folder = self.weights or context.scene.marionette.lip_sync_weights
        return bpy.path.abspath(folder) if folder else None

    def _backend(self, context):
        from .operators import backend_settings
        from .preferences import preferences

        return backend_settings(context), preferences(context).auto_start

    def _apply(self, context, plan: LipSyncPlan) -> set[str]:
        face = bpy.data.objects.get(plan.face_name)
        if face is None or not has_binding(face):
            self.report({"ERROR"}, f"the face '{plan.face_name}' is gone; nothing was keyed")
            return {"CANCELLED"}
        offsets = plan.offsets.at_rate(plan.rate)
        timing = plan.timing
        frames = timing.start - timing.skip + np.arange(len(offsets))
        keep = np.ones(len(frames), dtype=bool)
        if timing.shown is not None:
            keep = (frames >= timing.shown[0]) & (frames <= timing.shown[1])
        if not keep.any():
            self.report({"ERROR"}, "the sound strip shows none of the sound; nothing was keyed")
            return {"CANCELLED"}
        rest, displacements = read_face_shapes(face, plan.names)
        solution = solve_lip_sync(rest, displacements, offsets[keep], canonical_face()[0], self.smoothing)
        frames = frames[keep]
        key_weights(face, solution.names, solution.weights, frames)
        message = (f"Lip Sync: keyed {len(solution.names)} shape keys of '{face.name}' on frames "
                   f"{frames[0]}-{frames[-1]} ({len(frames)} frames at {plan.rate:g} fps)")
        if solution.motionless:
            message += f"; {', '.join(solution.motionless)} move no landmark and were left unkeyed"
        if solution.fit_error > 0.15:
            message += (f"; the face's landmarks fit the canonical layout poorly ({solution.fit_error:.0%} of its "
                        f"size): check the face binding")
        self.report({"WARNING"} if solution.motionless or solution.fit_error > 0.15 else {"INFO"}, message)
        return {"FINISHED"}

    # --- blocking run (scripts, background mode) ----------------------------------------

    def execute(self, context):
        try:
            plan = self._make_plan(context)
            if plan.offsets is None:
                weights = self._weights_folder(context)
                key = _answer_key(plan.sound, plan.rate, weights)
                plan.offsets = remembered_answer(key)
                if plan.offsets is None:
                    settings, auto_start = self._backend(context)
                    plan.offsets = request_offsets(settings, plan.sound, plan.rate, weights, auto_start)
                    remember_answer(key, plan.offsets)
            return self._apply(context, plan)
        except (LipSyncError, FaceBindingError, BackendError) as error:
            self.report({"ERROR"}, f"Lip Sync: {error}")
            return {"CANCELLED"}

    # --- with a window: the backend on a worker thread ----------------------------------

    def invoke(self, context, event):
        if bpy.app.background or context.window is None or self.offsets_file:
            return self.execute(context)
        try:
            plan = self._make_plan(context)
            settings, auto_start = self._backend(context)
        except (LipSyncError, FaceBindingError) as error:
            self.report({"ERROR"}, f"Lip Sync: {error}")
            return {"CANCELLED"}
        weights = self._weights_folder(context)
        key = _answer_key(plan.sound, plan.rate, weights)
        if remembered_answer(key) is not None:
            return self.execute(context)
        outcome: dict = {"key": key}

        def work():  # no bpy here
            try:
                outcome["offsets"] = request_offsets(settings, plan.sound, plan.rate, weights, auto_start)
            except BackendError as error:
                outcome["error"] = str(error)
            except Exception as error:  # reported, never lost in a thread
                outcome["error"] = f"unexpected failure: {error}"

        self._plan, self._outcome = plan, outcome
        self._thread = threading.Thread(target=work, name="marionette-lip-sync", daemon=True)
        self._thread.start()
        self._timer = context.window_manager.event_timer_add(0.2, window=context.window)
        context.window_manager.modal_handler_add(self)
        context.workspace.status_text_set(f"Marionette: lip sync of {plan.sound.label} (Esc to cancel)")
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        if event.type == "ESC" and event.value == "PRESS":
            self._end(context)  # the worker's answer is dropped; nothing was keyed
            self.report({"WARNING"}, "Lip Sync cancelled; nothing was keyed")
            return {"CANCELLED"}
        if event.type != "TIMER" or self._thread.is_alive():
            return {"PASS_THROUGH"}
        self._end(context)
        if "error" in self._outcome:
            self.report({"ERROR"}, f"Lip Sync: {self._outcome['error']}")
            return {"CANCELLED"}
        self._plan.offsets = self._outcome["offsets"]
        remember_answer(self._outcome["key"], self._plan.offsets)
        try:
            return self._apply(context, self._plan)
        except (LipSyncError, FaceBindingError) as error:
            self.report({"ERROR"}, f"Lip Sync: {error}")
            return {"CANCELLED"}

    def _end(self, context) -> None:
        context.window_manager.event_timer_remove(self._timer)
        context.workspace.status_text_set(None)


classes = (MARIONETTE_OT_lip_sync,)

register, unregister = bpy.utils.register_classes_factory(classes)
