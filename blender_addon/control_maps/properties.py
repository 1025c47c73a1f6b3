"""The Control Maps settings of the scene (part of scene.marionette; see scene_settings.py)."""

from __future__ import annotations

import bpy
from bpy.props import BoolProperty, CollectionProperty, EnumProperty, IntProperty, PointerProperty, StringProperty

from ..compat import BLEND_RELATIVE_PATH
from ..core import styles


def _is_armature(_self, obj) -> bool:
    return obj.type == "ARMATURE"


class MARIONETTE_PG_character(bpy.types.PropertyGroup):
    object: PointerProperty(name="Armature", type=bpy.types.Object, poll=_is_armature,
                            description="An armature whose pose becomes one person in the control maps")


# The pose styles of the one vocabulary; an enum item's number is the style's, so saved files keep
# their choice when styles are added.
POSE_STYLE_ITEMS = [(style.name, style.label, style.description, "", style.number)
                    for style in styles.styles_of(styles.POSE)]


class ControlMapsSettings:
    output_dir: StringProperty(
        name="Output Folder", subtype="DIR_PATH", default="//marionette", options=BLEND_RELATIVE_PATH,
        description="Folder for control maps (control/pose, control/keypoints) and generated frames; "
                    "// is the .blend file's folder")
    pose_style: EnumProperty(
        name="Pose Style", default="dwpose", items=POSE_STYLE_ITEMS,
        description="Drawing convention of the pose maps; pick the one your model was trained on")
    depth_order: BoolProperty(
        name="Far to Near", default=False,
        description="Draw far limbs first so near ones cover them (occlusion cues). Off draws in the "
                    "convention's fixed order, which is what the released models saw in training")
    mask_pass: BoolProperty(
        name="Rig Mask", default=False,
        description="Also write control/mask: white where the characters are (limbs, head and hands, with a "
                    "margin), for compositing and for replace-mode engines")
    characters: CollectionProperty(type=MARIONETTE_PG_character)
    active_character_index: IntProperty(default=0)


classes = (MARIONETTE_PG_character,)

register, unregister = bpy.utils.register_classes_factory(classes)
