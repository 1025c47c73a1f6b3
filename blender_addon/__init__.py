"""Marionette: control maps (pose maps, keypoints) from Blender rigs for character-animation models."""

from . import engine_settings, gui, lip_sync_operator, operators, preferences, properties

_modules = (preferences, engine_settings, properties, operators, lip_sync_operator, gui)


def register():
    for module in _modules:
        module.register()


def unregister():
    for module in reversed(_modules):
        module.unregister()
