"""Lip Sync from Audio: key the bound face's jaw and mouth shape keys to a sound.

The sound is a sound strip of the scene's Video Sequencer (keys follow the strip: its start, its
trim) or a sound file (keys from the current frame). `offsets_file` takes the offsets
`marionette lip-sync` wrote instead of asking the backend (render farms, offline work). It runs as
a job (shared.jobs): the backend is asked on a thread of its own, the keys are made when it answers,
in one undo step; in background mode the operator blocks.
"""

from __future__ import annotations

import bpy
from bpy.props import FloatProperty, IntProperty, StringProperty

from .. import compat
from ..core.lip_sync_offsets import OffsetsError, read_file
from ..face.binding import FaceBindingError, has_binding
from ..preferences import backend_settings, preferences
from ..shared.jobs import JobOperator, MarionetteError
from .job import LipSyncPlan, lip_sync_job
from .scene import KeyTiming, file_sound, find_face, find_sound_strip, scene_rate, strip_sound, strip_timing
from .solver import DEFAULT_SMOOTHING, LipSyncError, chosen_shape_keys


class MARIONETTE_OT_lip_sync(JobOperator, bpy.types.Operator):
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
                    "empty: Marionette > Lip Sync > Weights")

    @classmethod
    def poll(cls, context):
        if not any(has_binding(obj) for obj in context.scene.objects):
            cls.poll_message_set("Bind a face mesh with jaw and mouth shape keys first (Marionette > Face)")
            return False
        return super().poll(context)

    def make_job(self, context):
        try:
            plan = self._plan(context)
        except (LipSyncError, FaceBindingError, OffsetsError) as error:
            raise MarionetteError(f"Lip Sync: {error}") from None
        folder = self.weights or context.scene.marionette.lip_sync_weights
        return lip_sync_job(plan, self.smoothing, backend_settings(context), preferences(context).auto_start,
                            bpy.path.abspath(folder) if folder else None)

    def _plan(self, context) -> LipSyncPlan:
        scene = context.scene
        face = find_face(context, self.face)
        names = chosen_shape_keys(self.shape_keys, [block.name for block in face.data.shape_keys.key_blocks[1:]])
        timing = KeyTiming(self.frame_start if self.frame_start >= 0 else scene.frame_current)
        use_strip = bool(self.sound) or not self.offsets_file
        strip = find_sound_strip(scene, self.sound) if use_strip else None
        if strip is not None:
            timing = strip_timing(scene, strip)
        plan = LipSyncPlan(face.name, names, timing, scene_rate(scene), None)
        if self.offsets_file:
            plan.offsets = read_file(bpy.path.abspath(self.offsets_file))
        else:
            plan.sound = strip_sound(strip) if strip is not None else file_sound(self.sound)
        return plan


classes = (MARIONETTE_OT_lip_sync,)

register, unregister = bpy.utils.register_classes_factory(classes)
