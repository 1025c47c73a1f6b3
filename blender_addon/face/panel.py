"""The Face panel: bind the face landmarks to a head mesh, and key a face capture onto it."""

from __future__ import annotations

import bpy

from ..shared.panels import SidebarPanel
from .binding import has_binding


class MARIONETTE_PT_face(SidebarPanel, bpy.types.Panel):
    bl_label = "Face"
    bl_idname = "MARIONETTE_PT_face"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        layout = self.layout
        obj = context.active_object
        if obj is None or obj.type != "MESH":
            layout.label(text="Make the head mesh active", icon="INFO")
            return
        if has_binding(obj):
            layout.label(text="478 landmarks bound", icon="CHECKMARK")
        else:
            layout.label(text="No landmarks bound yet")
        layout.label(text="Parent the head to the character's armature;")
        layout.label(text="its landmarks then join that character's maps.")
        layout.operator("marionette.bind_face", icon="SHAPEKEY_DATA")
        layout.operator("marionette.import_face_capture", icon="IMPORT")


classes = (MARIONETTE_PT_face,)

register, unregister = bpy.utils.register_classes_factory(classes)
