"""The Lip Sync panel: the backend's audio2mesh weights, and Lip Sync from Audio."""

from __future__ import annotations

import bpy

from ..shared import strips
from ..shared.panels import SidebarPanel, draw_job_progress
from .job import LipSyncJob


class MARIONETTE_PT_lip_sync(SidebarPanel, bpy.types.Panel):
    bl_label = "Lip Sync"
    bl_idname = "MARIONETTE_PT_lip_sync"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        layout = self.layout
        layout.label(text="Keys the bound face's jaw and mouth")
        layout.label(text="shape keys to a sound strip.")
        layout.prop(context.scene.marionette, "lip_sync_weights", text="Weights")
        sounds = strips.sound_strips(context.scene)
        if not sounds:
            layout.label(text="No sound strip: add the dialogue in the Sequencer", icon="INFO")
        if not draw_job_progress(layout, LipSyncJob):
            layout.operator("marionette.lip_sync", icon="SPEAKER")


classes = (MARIONETTE_PT_lip_sync,)

register, unregister = bpy.utils.register_classes_factory(classes)
