"""scene.marionette: the scene's Marionette settings, the union of what each capability declares in
its own properties module (Control Maps, Generate, Lip Sync), so scripts and saved files see one
flat group."""

from __future__ import annotations

import bpy
from bpy.props import PointerProperty

from .control_maps.properties import ControlMapsSettings
from .generate.properties import GenerateSettings
from .lip_sync.properties import LipSyncSettings


class MARIONETTE_PG_scene(ControlMapsSettings, GenerateSettings, LipSyncSettings, bpy.types.PropertyGroup):
    pass


def register():
    bpy.utils.register_class(MARIONETTE_PG_scene)
    bpy.types.Scene.marionette = PointerProperty(type=MARIONETTE_PG_scene)


def unregister():
    del bpy.types.Scene.marionette
    bpy.utils.unregister_class(MARIONETTE_PG_scene)
