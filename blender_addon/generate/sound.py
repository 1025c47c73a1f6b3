"""The scene's sound for engines that take it: Blender's mixdown of the frame range."""

from __future__ import annotations

import wave
from pathlib import Path

import bpy

from ..shared import strips
from .tracks import GenerationError


def require_scene_sound(scene: bpy.types.Scene) -> None:
    if not strips.sound_strips(scene, audible=True):
        raise GenerationError("this engine animates to the scene's sound: add the dialogue or song as a sound strip "
                              "in the Video Sequencer")


def mix_scene_sound(scene: bpy.types.Scene, frame_start: int, frame_end: int, folder: Path) -> bytes:
    """The scene's sound over the frame range, mixed by Blender as a 16 kHz mono WAV (frame i of the
    job is at i / fps seconds into it)."""
    require_scene_sound(scene)
    path = folder / "sound.wav"
    saved = scene.frame_start, scene.frame_end
    try:
        scene.frame_start, scene.frame_end = frame_start, frame_end
        with bpy.context.temp_override(scene=scene):
            result = bpy.ops.sound.mixdown(filepath=str(path), check_existing=False, container="WAV", codec="PCM",
                                           format="S16", mixrate=16000, channels="MONO")
    finally:
        scene.frame_start, scene.frame_end = saved
    if result != {"FINISHED"} or not path.is_file():
        raise GenerationError(f"Blender could not mix the scene's sound into {path}")
    # The mixdown ends on a whole mixing buffer, up to a few hundred ms past the range: cut it there.
    fps = scene.render.fps / scene.render.fps_base
    with wave.open(str(path), "rb") as mixed:
        params = mixed.getparams()
        samples = mixed.readframes(min(params.nframes, round((frame_end - frame_start + 1) * params.framerate / fps)))
    with wave.open(str(path), "wb") as trimmed:
        trimmed.setparams(params)
        trimmed.writeframes(samples)
    return path.read_bytes()
