"""Operators: thin wrappers that validate, run the plain modules and report to the user."""

from __future__ import annotations

import time

import bpy
from bpy.props import IntProperty

from . import vse
from .control_maps import ControlMapError, ControlMapJob, armatures_to_render, job_settings
from .preferences import preferences

# The interactive run in progress, if any: runtime state only, never saved in the .blend.
running_job: ControlMapJob | None = None

# Seconds of work per timer tick in the interactive run: long enough to be efficient, short enough
# that the UI stays responsive.
TICK_BUDGET = 0.05


def _publish_strips(scene_name: str, folder, frame_start: int, frame_count: int) -> float | None:
    """Add the strips now, or retry shortly if a render or save is running (as a bpy.app timer)."""
    if vse.render_or_save_running():
        return 0.5
    scene = bpy.data.scenes.get(scene_name)
    if scene is not None:
        vse.set_image_sequence_strip(scene, "pose", folder / "pose", frame_start, frame_count)
    return None


def _redraw_panels(context) -> None:
    for area in context.screen.areas if context.screen else ():
        if area.type == "VIEW_3D":
            area.tag_redraw()


class MARIONETTE_OT_render_control_maps(bpy.types.Operator):
    """Render pose maps and OpenPose keypoints of the characters for every frame of the scene range"""

    bl_idname = "marionette.render_control_maps"
    bl_label = "Render Control Maps"
    bl_options = {"REGISTER"}

    frame_start: IntProperty(name="Start", default=-1, description="First frame; -1 for the scene's",
                             options={"SKIP_SAVE"})
    frame_end: IntProperty(name="End", default=-1, description="Last frame; -1 for the scene's",
                           options={"SKIP_SAVE"})

    _job: ControlMapJob | None = None
    _timer = None

    @classmethod
    def poll(cls, context):
        if running_job is not None:
            cls.poll_message_set("Control maps are being rendered; wait or press Esc to cancel")
            return False
        return True

    def _start(self, context) -> bool:
        scene = context.scene
        try:
            settings = job_settings(scene, preferences(context).max_resolution, self.frame_start, self.frame_end)
            self._job = ControlMapJob(scene, armatures_to_render(scene, context), settings)
        except ControlMapError as error:
            self.report({"ERROR"}, str(error))
            return False
        return True

    def execute(self, context):
        """Blocking run, for scripts and `blender -b` (render farms)."""
        if not self._start(context):
            return {"CANCELLED"}
        try:
            reported = 0
            while self._job.step():
                if bpy.app.background and self._job.progress * 10 >= reported + 1:
                    reported = int(self._job.progress * 10)  # a progress line per 10%, for farm logs
                    print(f"Marionette: control maps {reported * 10}%", flush=True)
            summary = self._job.finish()
        except ControlMapError as error:
            self._job.abort()
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        except BaseException:
            self._job.abort()
            raise
        return self._done(context, summary)

    def invoke(self, context, event):
        if bpy.app.background or context.window is None:
            return self.execute(context)
        global running_job
        if not self._start(context):
            return {"CANCELLED"}
        running_job = self._job
        context.window_manager.progress_begin(0, 100)
        self._timer = context.window_manager.event_timer_add(0.001, window=context.window)
        context.window_manager.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        if event.type in {"ESC", "RIGHTMOUSE"} and event.value == "PRESS":
            self._job.abort()
            self._end_modal(context)
            self.report({"WARNING"}, "Control maps cancelled; earlier outputs are unchanged")
            return {"CANCELLED"}
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        deadline = time.perf_counter() + TICK_BUDGET
        try:
            more = True
            while more and time.perf_counter() < deadline:
                more = self._job.step()
            progress = 100.0 * self._job.progress
            context.window_manager.progress_update(progress)
            _redraw_panels(context)
            context.workspace.status_text_set(f"Marionette: control maps {progress:.0f}% (Esc to cancel)")
            if more:
                return {"RUNNING_MODAL"}
            summary = self._job.finish()
        except ControlMapError as error:
            self._job.abort()
            self._end_modal(context)
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        except BaseException:
            self._job.abort()
            self._end_modal(context)
            raise
        self._end_modal(context)
        return self._done(context, summary)

    def _end_modal(self, context):
        global running_job
        running_job = None
        context.window_manager.event_timer_remove(self._timer)
        context.window_manager.progress_end()
        context.workspace.status_text_set(None)
        _redraw_panels(context)

    def _done(self, context, summary):
        settings = self._job.settings
        folder = settings.output_dir / "control"
        count = settings.frame_end - settings.frame_start + 1
        if _publish_strips(context.scene.name, folder, settings.frame_start, count) is not None:
            bpy.app.timers.register(
                lambda: _publish_strips(context.scene.name, folder, settings.frame_start, count), first_interval=0.5)
        rate = summary["frames"] / max(summary["seconds"], 1e-9)
        self.report({"INFO"}, f"Rendered {summary['frames']} frames of control maps to {summary['folder']} "
                              f"({rate:.0f} frames/s)")
        return {"FINISHED"}


class MARIONETTE_OT_add_characters(bpy.types.Operator):
    """Add the selected armatures to the characters Marionette renders"""

    bl_idname = "marionette.add_characters"
    bl_label = "Add Selected Armatures"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        if not any(obj.type == "ARMATURE" for obj in context.selected_objects):
            cls.poll_message_set("Select one or more armatures first")
            return False
        return True

    def execute(self, context):
        characters = context.scene.marionette.characters
        listed = {item.object for item in characters}
        added = 0
        for obj in context.selected_objects:
            if obj.type == "ARMATURE" and obj not in listed:
                characters.add().object = obj
                added += 1
        self.report({"INFO"}, f"Added {added} armature(s)")
        return {"FINISHED"}


class MARIONETTE_OT_remove_character(bpy.types.Operator):
    """Remove the active character from the list"""

    bl_idname = "marionette.remove_character"
    bl_label = "Remove Character"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        return len(context.scene.marionette.characters) > 0

    def execute(self, context):
        _remove_active(context.scene.marionette, "characters", "active_character_index")
        return {"FINISHED"}


class MARIONETTE_OT_add_keypoint_override(bpy.types.Operator):
    """Bind a keypoint of the active armature to a bone and offset of your choice"""

    bl_idname = "marionette.add_keypoint_override"
    bl_label = "Override Keypoint"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        obj = context.active_object
        if obj is None or obj.type != "ARMATURE":
            cls.poll_message_set("Make an armature the active object")
            return False
        return True

    def execute(self, context):
        rig = context.active_object.marionette_rig
        item = rig.overrides.add()
        item.bone = context.active_object.data.bones[0].name if context.active_object.data.bones else ""
        rig.active_override_index = len(rig.overrides) - 1
        return {"FINISHED"}


class MARIONETTE_OT_remove_keypoint_override(bpy.types.Operator):
    """Remove the active keypoint override; the preset's binding applies again"""

    bl_idname = "marionette.remove_keypoint_override"
    bl_label = "Remove Override"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        obj = context.active_object
        return obj is not None and obj.type == "ARMATURE" and len(obj.marionette_rig.overrides) > 0

    def execute(self, context):
        _remove_active(context.active_object.marionette_rig, "overrides", "active_override_index")
        return {"FINISHED"}


def _remove_active(owner, collection_name: str, index_name: str) -> None:
    """Remove the active item of a UI list's collection and keep the active index in range."""
    collection = getattr(owner, collection_name)
    index = getattr(owner, index_name)
    if 0 <= index < len(collection):
        collection.remove(index)
    setattr(owner, index_name, max(0, min(index, len(collection) - 1)))


classes = (
    MARIONETTE_OT_render_control_maps,
    MARIONETTE_OT_add_characters,
    MARIONETTE_OT_remove_character,
    MARIONETTE_OT_add_keypoint_override,
    MARIONETTE_OT_remove_keypoint_override,
)


register, unregister = bpy.utils.register_classes_factory(classes)
