"""Marionette's image-sequence strips in the Video Sequence Editor, and the sound strips it reads."""

from __future__ import annotations

from pathlib import Path

import bpy

from .. import compat

STRIP_PREFIX = "Marionette "
DEFAULT_CHANNELS = {"mask": 1, "face": 2, "pose": 3, "face_crops": 4, "driving": 4, "frames": 5}  # frames above the maps


def sound_strips(scene: bpy.types.Scene, audible: bool = False) -> list:
    """The scene's sound strips (inside meta strips too) in time order; `audible`: not muted."""
    editor = scene.sequence_editor
    if editor is None:
        return []
    found = [s for s in compat.all_strips(editor) if s.type == "SOUND" and not (audible and s.mute)]
    return sorted(found, key=lambda strip: (compat.strip_left_handle(strip), strip.channel))


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
    existing = strips.get(name)
    if grow and existing is not None and compat.strip_content_start(existing) == frame_start and \
            len(existing.elements) <= frame_count and existing.elements[0].filename == f"{frame_start:06d}.png" \
            and free_channel(strips, existing.channel, frame_start, frame_count, existing) == existing.channel:
        for frame in range(frame_start + len(existing.elements), frame_start + frame_count):
            existing.elements.append(f"{frame:06d}.png")
        compat.set_strip_duration(existing, frame_count)
        return existing
    channel = stack_channel(strips, pass_name)
    if existing is not None:
        channel = existing.channel
        strips.remove(existing)
    channel = free_channel(strips, channel, frame_start, frame_count)
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


def output_strips(scene: bpy.types.Scene, output_dir: Path) -> set[str]:
    """The passes of Marionette's strips that show `output_dir`/<pass>/: the generated frames and the
    engine's other outputs (not the control maps, which live in control/)."""
    editor = scene.sequence_editor
    found = set()
    for strip in compat.strips(editor) if editor is not None else ():
        name = strip.name.removeprefix(STRIP_PREFIX)
        if strip.name.startswith(STRIP_PREFIX) and strip.type == "IMAGE" and \
                Path(bpy.path.abspath(strip.directory)).resolve() == (output_dir / name).resolve():
            found.add(name)
    return found


def remove_strip(scene: bpy.types.Scene, pass_name: str) -> None:
    """Remove Marionette's strip of a pass (an output the last job did not make), if there is one."""
    editor = scene.sequence_editor
    strip = compat.strips(editor).get(STRIP_PREFIX + pass_name) if editor is not None else None
    if strip is not None:
        compat.strips(editor).remove(strip)


def stack_channel(strips, pass_name: str) -> int:
    """The pass's channel in Marionette's stack (DEFAULT_CHANNELS), the stack moved above every channel
    the user's own strips use: none of its strips lands on one of theirs (a plate sits in channel 1,
    where the mask goes) and the frames show on top of the edit."""
    used = [strip.channel for strip in strips if not strip.name.startswith(STRIP_PREFIX)]
    return DEFAULT_CHANNELS.get(pass_name, 2) + max(used, default=0)


def free_channel(strips, channel: int, frame_start: int, frame_count: int, ignore=None) -> int:
    """The lowest channel from `channel` up where no strip (but `ignore`) shows any of the frames
    frame_start .. frame_start + frame_count - 1."""
    end = frame_start + frame_count
    busy = set()
    for strip in strips:
        first = compat.strip_left_handle(strip)
        if strip != ignore and first < end and frame_start < first + compat.strip_duration(strip):
            busy.add(strip.channel)
    while channel in busy:
        channel += 1
    return channel
