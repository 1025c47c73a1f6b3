"""Add-on preferences."""

import bpy
from bpy.props import IntProperty


class MARIONETTE_AP_preferences(bpy.types.AddonPreferences):
    bl_idname = __package__

    max_resolution: IntProperty(
        name="Largest Map Side", default=4096, min=64, max=16384, subtype="PIXEL",
        description="Control maps wider or taller than this are refused (memory and disk guard)")

    def draw(self, _context):
        self.layout.prop(self, "max_resolution")


def preferences(context=None) -> MARIONETTE_AP_preferences:
    return (context or bpy.context).preferences.addons[__package__].preferences


classes = (MARIONETTE_AP_preferences,)


register, unregister = bpy.utils.register_classes_factory(classes)
