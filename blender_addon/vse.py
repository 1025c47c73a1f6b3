"""Image-sequence strips of Marionette's outputs in the Video Sequence Editor."""

from __future__ import annotations

from pathlib import Path

import bpy

from . import compat

STRIP_PREFIX = "Marionette "
DEFAULT_CHANNELS = {"mask": 1, "face": 2, "pose": 3, "face_crops": 4, "frames": 5}  # frames above the maps


def render_or_save_running() -> bool:
    """True while Blender renders or saves; the VSE must not be touched then."""
    return any(bpy.app.is_job_running(kind) for kind in ("RENDER", "RENDER_PREVIEW", "COMPOSITE"))


def set_image_sequence_strip(scene: bpy.types.Scene, pass_name: str, folder: Path,
                             frame_start: int, frame_count: int, grow: bool = False):
    """Add or replace the strip that shows `folder`/<frame:06d>.png from frame_start on.

    With `grow`, a strip that already shows the first frames of that sequence is extended in place
    (frames streaming in). A strip the user moved to another channel stays in that channel.
    """
    if frame_count <= 0:
        return None
    editor = scene.sequence_editor or scene.sequence_editor_create()
    strips = compat.strips(editor)
    compat.show_in_sequencer(scene)
    name = STRIP_PREFIX + pass_name
    channel = DEFAULT_CHANNELS.get(pass_name, 2)
    existing = strips.get(name)
    if grow and existing is not None and compat.strip_content_start(existing) == frame_start and \
            len(existing.elements) <= frame_count and existing.elements[0].filename == f"{frame_start:06d}.png":
        for frame in range(frame_start + len(existing.elements), frame_start + frame_count):
            existing.elements.append(f"{frame:06d}.png")
        compat.set_strip_duration(existing, frame_count)
        return existing
    if existing is not None:
        channel = existing.channel
        strips.remove(existing)
    files = [f"{frame:06d}.png" for frame in range(frame_start, frame_start + frame_count)]
    directory = folder.as_posix()
    if bpy.data.filepath:
        try:
            directory = bpy.path.relpath(directory)
        except ValueError:  # another drive on Windows: keep it absolute
            pass
    directory = directory.rstrip("/") + "/"
    strip = strips.new_image(name=name, filepath=directory + files[0], channel=channel,
                             frame_start=frame_start, fit_method="ORIGINAL")
    for filename in files[1:]:
        strip.elements.append(filename)
    strip.name = name
    return strip
