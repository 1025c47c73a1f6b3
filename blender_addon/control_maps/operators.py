"""Render Control Maps, and Add Selected Armatures to the characters."""

from __future__ import annotations

import bpy
from bpy.props import IntProperty

from ..preferences import preferences
from ..shared.jobs import JobOperator
from .job import ControlMapJob, armatures_to_render, job_settings


class MARIONETTE_OT_render_control_maps(JobOperator, bpy.types.Operator):
    """Render pose maps and OpenPose keypoints of the characters for every frame of the scene range"""

    bl_idname = "marionette.render_control_maps"
    bl_label = "Render Control Maps"
    bl_options = {"REGISTER"}

    frame_start: IntProperty(name="Start", default=-1, description="First frame; -1 for the scene's",
                             options={"SKIP_SAVE"})
    frame_end: IntProperty(name="End", default=-1, description="Last frame; -1 for the scene's",
                           options={"SKIP_SAVE"})

    def make_job(self, context) -> ControlMapJob:
        scene = context.scene
        settings = job_settings(scene, preferences(context).max_resolution, self.frame_start, self.frame_end)
        return ControlMapJob(scene, armatures_to_render(scene, context), settings)


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


classes = (MARIONETTE_OT_render_control_maps, MARIONETTE_OT_add_characters)

register, unregister = bpy.utils.register_classes_factory(classes)
