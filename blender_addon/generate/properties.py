"""The Generate settings of the scene (part of scene.marionette; see scene_settings.py)."""

from __future__ import annotations

import bpy
from bpy.props import BoolProperty, CollectionProperty, EnumProperty, IntProperty, PointerProperty, StringProperty

from ..shared import engines
from ..shared.engines import MARIONETTE_PG_engine_setting
from .driving import LOOKS

_release_items: list[tuple[str, str, str]] = []  # Blender keeps no copy of dynamic enum items: held here


def weights_release_items(settings, context):
    """The engine's weights releases, as the backend announced them; the engine's own first."""
    names = engines.declared_engines.get(settings.engine, {}).get("weights_releases") or [settings.engine or "none"]
    _release_items[:] = [(name, name, f"Fetch and check the {name} release") for name in names]
    return _release_items


def _show_reference_in_camera(settings, context) -> None:
    """Show the reference image behind the rig in the scene camera, so the rig can be posed over it."""
    camera = context.scene.camera
    if camera is None or camera.type != "CAMERA" or settings.reference_image is None:
        return
    data = camera.data
    entry = next((b for b in data.background_images if b.image == settings.reference_image), None)
    if entry is None:
        entry = data.background_images.new()
        entry.image = settings.reference_image
        entry.alpha = 0.6
    data.show_background_images = True


class GenerateSettings:
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
    driving_look: EnumProperty(
        name="Driving Look", default="AUTO", items=LOOKS,
        description="For engines driven by a video of the performance (wan-animate-2): how Blender renders it "
                    "through the scene camera")
    background_strip: StringProperty(
        name="Background Strip",
        description="For engines that generate into a plate (wan-animate's replace mode, wan-vace's plate "
                    "mode): the VSE image-sequence or movie strip whose frames the character is generated into "
                    "(a rendered set or a live-action plate)")
    weights_release: EnumProperty(
        name="Release", items=weights_release_items,
        description="Which of the engine's released models Fetch Weights brings and Check checks against "
                    "(wan-animate-2: base or distilled)")
    accept_weight_licences: BoolProperty(
        name="Accept the Licences", default=False,
        description="Fetch Weights brings files that come under the licences listed above; tick to accept them")
    # The last job, for Resume.
    last_job_id: StringProperty(default="")
    last_job_frame_start: IntProperty(default=1)
    last_job_frame_count: IntProperty(default=0)
