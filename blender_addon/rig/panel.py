"""The Rig Mapping panel: the active armature's preset, its mapping's state, and keypoint overrides."""

from __future__ import annotations

import bpy
from bl_ui.generic_ui_list import draw_ui_list

from ..shared.panels import SidebarPanel, draw_wrapped
from .mapping import MappingError
from .sampling import build_mapping


class MARIONETTE_UL_overrides(bpy.types.UIList):
    def draw_item(self, _context, layout, _data, item, _icon, _active_data, _active_prop, _index=0):
        row = layout.row(align=True)
        row.prop(item, "keypoint", text="")
        row.label(text=item.bone or "(no bone)", icon="BONE_DATA")


class MARIONETTE_PT_rig_mapping(SidebarPanel, bpy.types.Panel):
    bl_label = "Rig Mapping"
    bl_idname = "MARIONETTE_PT_rig_mapping"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        layout = self.layout
        obj = context.active_object
        if obj is None or obj.type != "ARMATURE":
            layout.label(text="Make an armature active to see its mapping", icon="INFO")
            return
        rig = obj.marionette_rig
        layout.prop(rig, "preset")
        try:
            mapping = build_mapping(obj, context.evaluated_depsgraph_get())
            layout.label(text=f"{len(mapping.points)} keypoints mapped with '{mapping.preset_id}'", icon="CHECKMARK")
        except MappingError as error:
            draw_wrapped(layout, str(error), icon="ERROR")
        layout.label(text="Overrides (bone-local offset in bone lengths)")
        draw_ui_list(layout, context, class_name="MARIONETTE_UL_overrides", list_path="object.marionette_rig.overrides",
                     active_index_path="object.marionette_rig.active_override_index", unique_id="marionette_overrides")
        if rig.overrides and 0 <= rig.active_override_index < len(rig.overrides):
            item = rig.overrides[rig.active_override_index]
            layout.prop(item, "keypoint")
            layout.prop_search(item, "bone", obj.data, "bones")
            layout.prop(item, "offset")


classes = (MARIONETTE_UL_overrides, MARIONETTE_PT_rig_mapping)

register, unregister = bpy.utils.register_classes_factory(classes)
