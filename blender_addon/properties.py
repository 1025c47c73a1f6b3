"""Settings Marionette keeps on the scene (scene.marionette) and on armatures (object.marionette_rig)."""

from __future__ import annotations

import bpy
from bpy.props import (BoolProperty, CollectionProperty, EnumProperty, FloatVectorProperty, IntProperty,
                       PointerProperty, StringProperty)

from .core.keypoints import RIG_POINTS
from .rig_mapping import load_presets


def _is_armature(_self, obj) -> bool:
    return obj.type == "ARMATURE"


class MARIONETTE_PG_character(bpy.types.PropertyGroup):
    object: PointerProperty(name="Armature", type=bpy.types.Object, poll=_is_armature,
                            description="An armature whose pose becomes one person in the control maps")


class MARIONETTE_PG_scene(bpy.types.PropertyGroup):
    output_dir: StringProperty(
        name="Output Folder", subtype="DIR_PATH", default="//marionette",
        description="Folder for control maps (control/pose, control/keypoints) and generated frames; "
                    "// is the .blend file's folder")
    pose_style: EnumProperty(
        name="Pose Style", default="DWPOSE",
        items=[("DWPOSE", "DWPose", "Body, hands and face dots, limbs dimmed: the pose videos "
                                    "AnimateAnyone-family models were trained on"),
               ("OPENPOSE", "OpenPose", "Body only, limbs blended: the ControlNet 1.0 OpenPose annotator")],
        description="Drawing convention of the pose maps; pick the one your model was trained on")
    depth_order: BoolProperty(
        name="Far to Near", default=False,
        description="Draw far limbs first so near ones cover them (occlusion cues). Off draws in the "
                    "convention's fixed order, which is what the released models saw in training")
    characters: CollectionProperty(type=MARIONETTE_PG_character)
    active_character_index: IntProperty(default=0)


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


classes = (
    MARIONETTE_PG_character,
    MARIONETTE_PG_scene,
    MARIONETTE_PG_keypoint_override,
    MARIONETTE_PG_rig,
)


def register():
    for cls in classes:
        bpy.utils.register_class(cls)
    bpy.types.Scene.marionette = PointerProperty(type=MARIONETTE_PG_scene)
    bpy.types.Object.marionette_rig = PointerProperty(type=MARIONETTE_PG_rig)


def unregister():
    del bpy.types.Object.marionette_rig
    del bpy.types.Scene.marionette
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
