"""The Control Maps panel: where and how the maps are drawn, which characters, and the render."""

from __future__ import annotations

import bpy
from bl_ui.generic_ui_list import draw_ui_list

from ..shared.panels import SidebarPanel, draw_job_progress
from .job import ControlMapJob


class MARIONETTE_UL_characters(bpy.types.UIList):
    def draw_item(self, _context, layout, _data, item, _icon, _active_data, _active_prop, _index=0):
        layout.prop(item, "object", text="", emboss=False, icon="ARMATURE_DATA")


class MARIONETTE_PT_control_maps(SidebarPanel, bpy.types.Panel):
    bl_label = "Control Maps"
    bl_idname = "MARIONETTE_PT_control_maps"

    def draw(self, context):
        layout = self.layout
        settings = context.scene.marionette
        layout.use_property_split = True
        layout.use_property_decorate = False
        layout.prop(settings, "output_dir")
        layout.prop(settings, "pose_style")
        layout.prop(settings, "depth_order")
        layout.prop(settings, "mask_pass")

        layout.label(text="Characters (empty: the selected armatures)")
        draw_ui_list(layout, context, class_name="MARIONETTE_UL_characters", list_path="scene.marionette.characters",
                     active_index_path="scene.marionette.active_character_index", unique_id="marionette_characters",
                     move_operators=False, rows=2)
        layout.operator("marionette.add_characters", icon="ARMATURE_DATA")

        if context.scene.camera is None:
            layout.label(text="The scene needs a camera", icon="ERROR")
        if not draw_job_progress(layout, ControlMapJob):
            layout.operator("marionette.render_control_maps", icon="RENDER_ANIMATION")


classes = (MARIONETTE_UL_characters, MARIONETTE_PT_control_maps)

register, unregister = bpy.utils.register_classes_factory(classes)
