"""Settings Marionette keeps on the scene (scene.marionette) and on armatures (object.marionette_rig)."""

from __future__ import annotations

import bpy
from bpy.props import (BoolProperty, CollectionProperty, EnumProperty, FloatVectorProperty,
                       IntProperty, PointerProperty, StringProperty)

from .compat import BLEND_RELATIVE_PATH
from .engine_settings import MARIONETTE_PG_engine_setting
from .core.keypoints import RIG_POINTS
from .rig_mapping import load_presets


def _is_armature(_self, obj) -> bool:
    return obj.type == "ARMATURE"


class MARIONETTE_PG_character(bpy.types.PropertyGroup):
    object: PointerProperty(name="Armature", type=bpy.types.Object, poll=_is_armature,
                            description="An armature whose pose becomes one person in the control maps")


def _show_reference_in_camera(settings, context) -> None:
    """Show the reference image behind the rig in the scene camera, so the rig can be posed over it."""
    scene = context.scene
    camera = scene.camera
    if camera is None or camera.type != "CAMERA" or settings.reference_image is None:
        return
    data = camera.data
    entry = next((b for b in data.background_images if b.image == settings.reference_image), None)
    if entry is None:
        entry = data.background_images.new()
        entry.image = settings.reference_image
        entry.alpha = 0.6
    data.show_background_images = True


class MARIONETTE_PG_engine(bpy.types.PropertyGroup):
    """An engine the connected backend offers (runtime list on the window manager)."""
    description: StringProperty()


class MARIONETTE_PG_scene(bpy.types.PropertyGroup):
    output_dir: StringProperty(
        name="Output Folder", subtype="DIR_PATH", default="//marionette", options=BLEND_RELATIVE_PATH,
        description="Folder for control maps (control/pose, control/keypoints) and generated frames; "
                    "// is the .blend file's folder")
    pose_style: EnumProperty(
        name="Pose Style", default="DWPOSE",
        items=[("DWPOSE", "DWPose", "Body, hands and face dots, limbs dimmed: the pose videos "
                                    "AnimateAnyone-family models were trained on"),
               ("OPENPOSE", "OpenPose", "Body only, limbs blended: the ControlNet 1.0 OpenPose annotator"),
               ("WAN", "Wan", "Body with toes and thin hands, stick width from the frame size: the pose videos "
                              "of Wan2.2-Animate")],
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

    reference_image: PointerProperty(
        name="Reference Image", type=bpy.types.Image, update=_show_reference_in_camera,
        description="One image of the character; shown behind the rig in the camera so you can pose the "
                    "rig over it at the reference frame")
    reference_frame: IntProperty(
        name="Reference Frame", default=1,
        description="The frame at which the rig is posed over the reference image")
    engine: StringProperty(name="Engine", default="warp",
                           description="The backend engine that animates the reference image")
    engine_settings: CollectionProperty(type=MARIONETTE_PG_engine_setting)
    prompt: StringProperty(
        name="Prompt", default="",
        description="For engines that take a prompt: what the video shows (empty: the engine's default)")
    negative_prompt: StringProperty(
        name="Negative Prompt", default="",
        description="For engines that take a prompt: what the video should not show")
    face_crops_source: EnumProperty(
        name="Face Crops", default="WARP",
        items=[("WARP", "Warped Reference", "The backend warps the reference face to each frame's face landmarks: "
                                            "photo-real, with the face rig's expression and head motion"),
               ("RENDER", "Rendered Head", "Render the character's head in Blender (the scene camera's view of "
                                           "the face, with the scene's render engine) for each frame")],
        description="For engines driven by face crops (wan-animate): where the crops come from")
    background_strip: StringProperty(
        name="Background Strip",
        description="For replace-mode engines: the VSE image-sequence or movie strip whose frames the "
                    "character is generated into (a rendered set or a live-action plate)")
    lip_sync_weights: StringProperty(
        name="Lip Sync Weights", subtype="DIR_PATH", default="", options=BLEND_RELATIVE_PATH,
        description="Lip Sync from Audio: the folder on the backend's machine with AniPortrait's audio2mesh.pt "
                    "and wav2vec2-base-960h/")
    # The last job, for Resume.
    last_job_id: StringProperty(default="")
    last_job_frame_start: IntProperty(default=1)
    last_job_frame_count: IntProperty(default=0)


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
    MARIONETTE_PG_engine,
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
    bpy.types.WindowManager.marionette_engines = CollectionProperty(type=MARIONETTE_PG_engine)


def unregister():
    del bpy.types.WindowManager.marionette_engines
    del bpy.types.Object.marionette_rig
    del bpy.types.Scene.marionette
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
