"""Windows over a clip longer than the denoiser's frames: lists of frame indices, in order.

As the reference implementations' "uniform" context schedule makes them (Moore-AnimateAnyone,
AniPortrait, EchoMimic): closed-loop windows that wrap past the end of the clip to its start; EchoMimic
also shifts them by a few frames at every denoising step.
"""

from __future__ import annotations


def closed_loop_windows(frames: int, context: int, overlap: int) -> list[list[int]]:
    """Starts 0, context - overlap, ... below `frames`, each `context` consecutive frames wrapping
    past the end to the start; all frames in one window when there are no more than `context`."""
    if frames <= context:
        return [list(range(frames))]
    stride = max(1, context - overlap)
    return [[index % frames for index in range(start, start + context)] for start in range(0, frames, stride)]


def shifted_windows(windows: list[list[int]], step: int, shift: int, frames: int) -> list[list[int]]:
    """The windows of denoising step `step` (0-based): every frame index moved by step * shift, mod
    frames, order kept."""
    return [[(index + step * shift) % frames for index in window] for window in windows]
