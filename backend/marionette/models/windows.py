"""Windows over a clip longer than the denoiser's frames: lists of frame indices, in order.

Two kinds, as the reference implementations use them:
- open (Moore-AnimateAnyone as Marionette runs it): overlapping windows from the first frame, the
  last one ending at the last frame;
- closed loop (EchoMimic, AniPortrait): windows that wrap past the end of the clip to its start,
  shifted by a few frames at every denoising step.
"""

from __future__ import annotations


def open_windows(frames: int, window: int, overlap: int) -> list[list[int]]:
    """Overlapping windows covering 0..frames-1 in order; the last one ends at the last frame."""
    if frames <= window:
        return [list(range(frames))]
    stride = max(1, window - overlap)
    starts = list(range(0, frames - window, stride)) + [frames - window]
    return [list(range(start, start + window)) for start in starts]


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
