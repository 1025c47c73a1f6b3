"""What Marionette keeps on an armature (object.marionette_rig): its preset and keypoint overrides."""

from __future__ import annotations

import bpy
from bpy.props import CollectionProperty, EnumProperty, FloatVectorProperty, IntProperty, PointerProperty, StringProperty

from ..core.keypoints import RIG_POINTS
from .mapping import load_presets


def _keypoint_items():
    return [(name, name.replace("_", " "), "") for name in RIG_POINTS]


def _preset_items():
    items = [("AUTO", "Automatic", "Detect the preset from the armature's bone names")]
    items += [(preset.id, preset.name, preset.description) for preset in load_presets().values()]
    return items


class MARIONETTE_PG_keypoint_override(bpy.types.PropertyGroup):
    keypoint: EnumProperty(name="Keypoint", items=_keypoint_items(),
                           description="The canonical keypoint this binding sets (subject's left/right)")
    bone: StringProperty(name="Bone", description="The bone the keypoint follows")
    offset: FloatVectorProperty(
        name="Offset", size=3, subtype="XYZ", default=(0.0, 0.0, 0.0),
        description="Bone-local position in bone lengths: (0, 0, 0) is the head, (0, 1, 0) the tail")


class MARIONETTE_PG_rig(bpy.types.PropertyGroup):
    preset: EnumProperty(name="Rig Preset", items=_preset_items(),
                         description="Which bones give the keypoints")
    overrides: CollectionProperty(type=MARIONETTE_PG_keypoint_override)
    active_override_index: IntProperty(default=0)


classes = (MARIONETTE_PG_keypoint_override, MARIONETTE_PG_rig)


def register():
    for cls in classes:
        bpy.utils.register_class(cls)
    bpy.types.Object.marionette_rig = PointerProperty(type=MARIONETTE_PG_rig)


def unregister():
    del bpy.types.Object.marionette_rig
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
