"""Marionette: control maps (pose maps, keypoints) from Blender rigs for character-animation models."""

from . import gui, operators, preferences, properties

_modules = (preferences, properties, operators, gui)


def register():
    for module in _modules:
        module.register()


def unregister():
    for module in reversed(_modules):
        module.unregister()
