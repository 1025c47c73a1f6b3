"""The Generate panel: the reference image, the engine and its settings, what it is sent, Generate
and Resume."""

from __future__ import annotations

import bpy

from .. import compat
from ..core import styles
from ..shared import engines, strips
from ..shared.panels import SidebarPanel, draw_job_progress
from ..control_maps.job import armatures_to_render
from .driving import resolve_look
from . import weights
from .session import GenerateJob
from .tracks import TEXT_INPUTS


class MARIONETTE_PT_generate(SidebarPanel, bpy.types.Panel):
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
        if len(context.window_manager.marionette_engines):
            layout.prop_search(settings, "engine", context.window_manager, "marionette_engines")
        else:
            layout.prop(settings, "engine")
        engines.draw_unavailable(layout)
        engine = engines.declared_engines.get(settings.engine)
        if engine is not None:
            _draw_inputs(layout, context.scene, engine)
        engines.draw(layout.column(), context.scene, settings.engine)
        if engine is not None and engine.get("needs_weights"):
            weights.draw(layout, context.scene, engine)
        if not draw_job_progress(layout, GenerateJob):
            row = layout.row(align=True)
            row.scale_y = 1.4
            row.operator("marionette.generate", icon="PLAY")
            row.operator("marionette.resume", icon="FILE_REFRESH")


def _draw_inputs(layout, scene, engine: dict) -> None:
    """What the chosen engine is sent beyond the maps: its texts, the plate, the crops, the sound."""
    settings = scene.marionette
    inputs = {spec.get("name"): spec for spec in engine.get("inputs", [])}
    for name in TEXT_INPUTS:
        if name in inputs:
            layout.prop(settings, name)
    if any(spec.get("style") == "background" for spec in inputs.values()):
        if scene.sequence_editor is not None:
            layout.prop_search(settings, "background_strip", scene.sequence_editor,
                               compat.strips_property(scene.sequence_editor))
        else:
            layout.prop(settings, "background_strip")
    if any(spec.get("style") == "face-crop" for spec in inputs.values()):
        layout.prop(settings, "face_crops_source")
    if any(spec.get("style") == "driving" for spec in inputs.values()):
        layout.prop(settings, "driving_look")
        if settings.driving_look == "AUTO":
            look = resolve_look("AUTO", armatures_to_render(scene, bpy.context))
            layout.label(text="Renders the scene: the characters have meshes" if look == "SCENE" else
                         "Renders a mannequin: the characters have no meshes", icon="INFO")
    if any(spec.get("kind") == styles.AUDIO for spec in inputs.values()):
        _draw_sound(layout.box(), scene)


def _draw_sound(layout, scene) -> None:
    """Which sound strips Generate mixes for an engine that takes the sound, over which frames."""
    sounds = strips.sound_strips(scene, audible=True)
    if not sounds:
        layout.label(text="No sound strip: add the dialogue or song in the Sequencer", icon="ERROR")
        return
    layout.label(text=f"Sound of frames {scene.frame_start}-{scene.frame_end}, mixed to 16 kHz mono:",
                 icon="SPEAKER")
    for strip in sounds:
        first = compat.strip_left_handle(strip)
        layout.label(text=f"{strip.name}  (frames {first}-{first + compat.strip_duration(strip) - 1})")


classes = (MARIONETTE_PT_generate,)

register, unregister = bpy.utils.register_classes_factory(classes)
