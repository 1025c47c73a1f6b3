"""The Backend panel: the backend's state (with how many of its engines it cannot run), Test, Start
and Stop."""

from __future__ import annotations

import bpy

from ..shared import run_state
from ..shared.panels import SidebarPanel, draw_wrapped


class MARIONETTE_PT_backend(SidebarPanel, bpy.types.Panel):
    bl_label = "Backend"
    bl_idname = "MARIONETTE_PT_backend"

    def draw(self, context):
        layout = self.layout
        draw_wrapped(layout, run_state.backend_status or "Backend: not checked yet (Test connects)", icon="LINKED")
        row = layout.row(align=True)
        row.operator("marionette.test_connection", text="Test")
        row.operator("marionette.start_backend", text="Start")
        row.operator("marionette.stop_backend", text="Stop")
        layout.label(text="Address, token and Python: Preferences > Add-ons", icon="PREFERENCES")


classes = (MARIONETTE_PT_backend,)

register, unregister = bpy.utils.register_classes_factory(classes)
