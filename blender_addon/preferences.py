"""Add-on preferences: limits, and where the backend is and how to start it."""

from pathlib import Path

import bpy
from bpy.props import BoolProperty, IntProperty, StringProperty

from .connection.backend import BackendSettings

DEFAULT_PORT = 47316


def _default_token_file() -> str:
    return str(Path.home() / ".config" / "marionette" / "token")


class MARIONETTE_AP_preferences(bpy.types.AddonPreferences):
    bl_idname = __package__

    max_resolution: IntProperty(
        name="Largest Map Side", default=4096, min=64, max=16384, subtype="PIXEL",
        description="Control maps wider or taller than this are refused (memory and disk guard)")
    host: StringProperty(
        name="Backend Address", default="127.0.0.1",
        description="Where `marionette serve` listens: this machine, or the local end of an SSH tunnel")
    port: IntProperty(name="Port", default=DEFAULT_PORT, min=1, max=65535)
    token_file: StringProperty(
        name="Token File", subtype="FILE_PATH", default=_default_token_file(),
        description="The backend's token (`marionette token` prints it); for a remote backend, copy it here")
    backend_python: StringProperty(
        name="Backend Python", subtype="FILE_PATH", default="",
        description="The Python that has the `marionette` package (e.g. <checkout>/.venv/bin/python), "
                    "used to start a local backend")
    auto_start: BoolProperty(
        name="Start the Backend Automatically", default=True,
        description="When Generate finds no backend on this machine, start one with the Backend Python")

    def draw(self, _context):
        layout = self.layout
        layout.use_property_split = True
        layout.prop(self, "max_resolution")
        column = layout.column(heading="Backend")
        column.prop(self, "host")
        column.prop(self, "port")
        column.prop(self, "token_file")
        column.prop(self, "backend_python")
        column.prop(self, "auto_start")
        row = layout.row()
        row.operator("marionette.start_backend")
        row.operator("marionette.stop_backend")
        row.operator("marionette.test_connection")


def preferences(context=None) -> MARIONETTE_AP_preferences:
    return (context or bpy.context).preferences.addons[__package__].preferences


def backend_settings(context=None) -> BackendSettings:
    """Where the backend is, from the preferences (paths made absolute: a worker thread reads them)."""
    prefs = preferences(context)
    return BackendSettings(prefs.host, prefs.port, Path(bpy.path.abspath(prefs.token_file)).expanduser(),
                           bpy.path.abspath(prefs.backend_python) if prefs.backend_python else "")


classes = (MARIONETTE_AP_preferences,)

register, unregister = bpy.utils.register_classes_factory(classes)
