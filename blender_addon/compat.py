"""What differs between the Blender versions Marionette supports (4.2 LTS to 5.2 LTS), in one place.

Each helper looks for the newer API first and falls back to the older one, so no code elsewhere
names an API that a supported version removed or deprecated, and no version number is compared:
  - 4.4 renamed the VSE's `sequences`/`sequences_all` to `strips`/`strips_all`;
  - 5.1 renamed strip timing: `frame_start` -> `content_start`, `frame_final_start` -> `left_handle`,
    `frame_final_duration` -> `duration` (the old names warn);
  - 5.0 split the render output's format into `media_type` + `file_format` (FFmpeg is a VIDEO type);
  - 4.4 layered actions keep F-curves in a channelbag per slot; 5.0 removed `Action.fcurves`;
  - 4.5 asks path properties to declare that they accept the blend-relative `//` prefix;
  - 5.0 gave each workspace a *sequencer scene*: the Sequencer editor shows that scene's strips.
"""

from __future__ import annotations

import bpy


def _has(struct, name: str) -> bool:
    return name in struct.bl_rna.properties


# --- Video Sequence Editor -------------------------------------------------------------------

def strips(editor: bpy.types.SequenceEditor):
    """The editor's top-level strips collection (new_image, remove, get)."""
    return editor.strips if _has(editor, "strips") else editor.sequences


def strips_property(editor: bpy.types.SequenceEditor) -> str:
    """The name of the strips collection, for UI search fields (prop_search)."""
    return "strips" if _has(editor, "strips") else "sequences"


def all_strips(editor: bpy.types.SequenceEditor):
    """Every strip, inside meta strips too."""
    return editor.strips_all if _has(editor, "strips_all") else editor.sequences_all


def strip_content_start(strip) -> int:
    """The scene frame where the strip's content (its first image) starts."""
    return strip.content_start if _has(strip, "content_start") else strip.frame_start


def strip_left_handle(strip) -> int:
    """The first scene frame the strip shows."""
    return strip.left_handle if _has(strip, "left_handle") else strip.frame_final_start


def strip_duration(strip) -> int:
    """How many scene frames the strip shows (between its handles)."""
    return strip.duration if _has(strip, "duration") else strip.frame_final_duration


def set_strip_duration(strip, frames: int) -> None:
    if _has(strip, "duration"):
        strip.duration = frames
    else:
        strip.frame_final_duration = frames


def show_in_sequencer(scene: bpy.types.Scene) -> None:
    """Make the workspaces' Sequencer editors show `scene`'s strips.

    On 5.x a Sequencer editor shows its workspace's sequencer scene, not the window's scene, so strips
    added to the scene being animated would stay invisible there. A workspace that shows no scene, or
    a scene without strips, is pointed at `scene`; one showing another scene's edit is left alone.
    """
    if not _has(bpy.types.WorkSpace, "sequencer_scene"):
        return
    for workspace in bpy.data.workspaces:
        shown = workspace.sequencer_scene
        if shown == scene:
            continue
        if shown is None or shown.sequence_editor is None or not len(strips(shown.sequence_editor)):
            workspace.sequencer_scene = scene


# --- rendering -------------------------------------------------------------------------------

def use_ffmpeg_output(image_settings: bpy.types.ImageFormatSettings) -> None:
    """Render animations to a movie file through FFmpeg (scene.render.ffmpeg holds the codec)."""
    if _has(image_settings, "media_type"):
        image_settings.media_type = "VIDEO"
    image_settings.file_format = "FFMPEG"


def use_image_output(image_settings: bpy.types.ImageFormatSettings, file_format: str) -> None:
    """Render single images in `file_format` (5.x first asks for the media type)."""
    if _has(image_settings, "media_type"):
        image_settings.media_type = "IMAGE"
    image_settings.file_format = file_format


def compositor_output_of(scene: bpy.types.Scene, socket_name: str) -> None:
    """Make `scene`'s compositor output its Render Layers' `socket_name` pass, alone (a scene of ours:
    the tree is replaced). 5.x composites through a node group the scene points at; 4.x through the
    scene's own tree and a Composite node."""
    if _has(scene, "compositing_node_group"):
        tree = bpy.data.node_groups.new(f"Marionette {socket_name}", "CompositorNodeTree")
        tree.interface.new_socket("Image", in_out="OUTPUT", socket_type="NodeSocketColor")
        output = tree.nodes.new("NodeGroupOutput")
        scene.compositing_node_group = tree
    else:
        scene.use_nodes = True
        tree = scene.node_tree
        tree.nodes.clear()
        output = tree.nodes.new("CompositorNodeComposite")
    layers = tree.nodes.new("CompositorNodeRLayers")
    layers.scene = scene
    tree.links.new(layers.outputs[socket_name], output.inputs[0])
    scene.render.use_compositing = True


def remove_compositor(scene: bpy.types.Scene) -> None:
    """Remove what compositor_output_of made for a scene of ours."""
    if _has(scene, "compositing_node_group") and scene.compositing_node_group is not None:
        tree = scene.compositing_node_group
        scene.compositing_node_group = None
        bpy.data.node_groups.remove(tree)


# --- animation -------------------------------------------------------------------------------

def fcurves(id_data) -> bpy.types.bpy_prop_collection | None:
    """The F-curves animating `id_data` (an object, shape keys...): its action's curves for its slot.

    None when it has no action (or, on layered actions, no channelbag for its slot). On layered
    actions (4.4+) the curves live in the slot's channelbag.
    """
    animation = id_data.animation_data
    action = animation.action if animation is not None else None
    if action is None:
        return None
    if not _has(action, "slots"):
        return action.fcurves
    from bpy_extras.anim_utils import action_get_channelbag_for_slot

    channelbag = action_get_channelbag_for_slot(action, animation.action_slot)
    return channelbag.fcurves if channelbag is not None else None


# --- properties ------------------------------------------------------------------------------

# Path properties that hold "//"-relative paths say so (4.5+), else Blender warns on every "//" set.
BLEND_RELATIVE_PATH = ({"PATH_SUPPORTS_BLEND_RELATIVE"}
                       if _has(bpy.types.StringProperty, "is_path_supports_blend_relative") else set())
