"""The Marionette panels in the 3D Viewport's sidebar (N panel, "Marionette" tab). Drawing only."""

from __future__ import annotations

import bpy

from . import compat, engine_settings, operators, vse
from .rig_mapping import MappingError
from .rig_sampling import build_mapping


class MARIONETTE_UL_characters(bpy.types.UIList):
    def draw_item(self, _context, layout, _data, item, _icon, _active_data, _active_prop, _index=0):
        layout.prop(item, "object", text="", emboss=False, icon="ARMATURE_DATA")


class MARIONETTE_UL_overrides(bpy.types.UIList):
    def draw_item(self, _context, layout, _data, item, _icon, _active_data, _active_prop, _index=0):
        row = layout.row(align=True)
        row.prop(item, "keypoint", text="")
        row.label(text=item.bone or "(no bone)", icon="BONE_DATA")


class _SidebarPanel:
    """Where every Marionette panel lives: the 3D Viewport's sidebar, tab "Marionette"."""
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Marionette"


class MARIONETTE_PT_control_maps(_SidebarPanel, bpy.types.Panel):
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
        row = layout.row()
        row.template_list("MARIONETTE_UL_characters", "", settings, "characters",
                          settings, "active_character_index", rows=2)
        column = row.column(align=True)
        column.operator("marionette.add_characters", text="", icon="ADD")
        column.operator("marionette.remove_character", text="", icon="REMOVE")

        if context.scene.camera is None:
            layout.label(text="The scene needs a camera", icon="ERROR")
        job = operators.running_job
        if job is not None:
            layout.progress(factor=job.progress, text=f"Rendering {100 * job.progress:.0f}% (Esc cancels)")
        else:
            layout.operator("marionette.render_control_maps", icon="RENDER_ANIMATION")


class MARIONETTE_PT_generate(_SidebarPanel, bpy.types.Panel):
    bl_label = "Generate"
    bl_idname = "MARIONETTE_PT_generate"

    def draw(self, context):
        layout = self.layout
        settings = context.scene.marionette
        layout.label(text="Reference image (shown in the camera):")
        layout.template_ID(settings, "reference_image", open="image.open")
        layout.use_property_split = True
        layout.use_property_decorate = False
        layout.prop(settings, "reference_frame")
        engines = context.window_manager.marionette_engines
        if len(engines):
            layout.prop_search(settings, "engine", context.window_manager, "marionette_engines")
        else:
            layout.prop(settings, "engine")
        engine = engine_settings.declared_engines.get(settings.engine)
        if engine is not None:
            inputs = {spec.get("name"): spec for spec in engine.get("inputs", [])}
            for name in ("prompt", "negative_prompt"):
                if name in inputs:
                    layout.prop(settings, name)
            if any(spec.get("style") == "background" for spec in inputs.values()):
                if context.scene.sequence_editor is not None:
                    layout.prop_search(settings, "background_strip", context.scene.sequence_editor,
                                       compat.strips_property(context.scene.sequence_editor))
                else:
                    layout.prop(settings, "background_strip")
            if any(spec.get("style") == "face-crop" for spec in inputs.values()):
                layout.prop(settings, "face_crops_source")
            if any(spec.get("kind") == "audio" for spec in inputs.values()):
                _draw_sound(layout.box(), context.scene)
        engine_settings.draw(layout.column(), context.scene, settings.engine)

        session = operators.active_session
        if session is not None:
            layout.progress(factor=session.progress, text=f"{session.status} (Esc cancels)")
        else:
            row = layout.row(align=True)
            row.scale_y = 1.4
            row.operator("marionette.generate", icon="PLAY")
            row.operator("marionette.resume", icon="FILE_REFRESH")

        box = layout.box()
        box.label(text=operators.backend_status or "Backend: not checked yet", icon="LINKED")
        row = box.row(align=True)
        row.operator("marionette.test_connection", text="Test")
        row.operator("marionette.start_backend", text="Start")
        row.operator("marionette.stop_backend", text="Stop")


class MARIONETTE_PT_face(_SidebarPanel, bpy.types.Panel):
    bl_label = "Face"
    bl_idname = "MARIONETTE_PT_face"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        from .face_binding import has_binding

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
        layout.prop(context.scene.marionette, "lip_sync_weights")
        layout.operator("marionette.lip_sync", icon="SPEAKER")


class MARIONETTE_PT_rig_mapping(_SidebarPanel, bpy.types.Panel):
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
            for line in _wrap(str(error), 48):
                layout.label(text=line)
        layout.label(text="Overrides (bone-local offset in bone lengths)")
        row = layout.row()
        row.template_list("MARIONETTE_UL_overrides", "", rig, "overrides", rig, "active_override_index", rows=3)
        column = row.column(align=True)
        column.operator("marionette.add_keypoint_override", text="", icon="ADD")
        column.operator("marionette.remove_keypoint_override", text="", icon="REMOVE")
        if rig.overrides and 0 <= rig.active_override_index < len(rig.overrides):
            item = rig.overrides[rig.active_override_index]
            layout.prop(item, "keypoint")
            layout.prop_search(item, "bone", obj.data, "bones")
            layout.prop(item, "offset")


def _draw_sound(layout, scene) -> None:
    """Which sound strips Generate mixes for an engine that takes the sound, over which frames."""
    sounds = vse.sound_strips(scene, audible=True)
    if not sounds:
        layout.label(text="No sound strip: add the dialogue or song in the Sequencer", icon="ERROR")
        return
    layout.label(text=f"Sound of frames {scene.frame_start}-{scene.frame_end}, mixed to 16 kHz mono:",
                 icon="SPEAKER")
    for strip in sounds:
        first = compat.strip_left_handle(strip)
        layout.label(text=f"{strip.name}  (frames {first}-{first + compat.strip_duration(strip) - 1})")


def _wrap(text: str, width: int) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return lines + ([line] if line else [])


classes = (
    MARIONETTE_UL_characters,
    MARIONETTE_UL_overrides,
    MARIONETTE_PT_control_maps,
    MARIONETTE_PT_generate,
    MARIONETTE_PT_face,
    MARIONETTE_PT_rig_mapping,
)


register, unregister = bpy.utils.register_classes_factory(classes)
