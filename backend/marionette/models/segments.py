"""Long shots made segment by segment, each conditioned on the previous segment's last frames, as the
Wan engines make them: the arithmetic of which frames a segment makes, and what a job keeps so that a
resumed run continues exactly.

Segments of length L (1 more than a multiple of 4, the VAE's temporal step) sharing `carry` c frames:
segment 0 makes frames 0 .. L-1; segment k > 0 starts at input frame k(L-c), its first c frames
being the previous segment's last c, and makes frames c + k(L-c) .. c + (k+1)(L-c) - 1.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


@dataclass
class Segment:
    first_frame: int  # index of the first of `frames` in the shot
    frames: list[np.ndarray]  # (H, W, 3) uint8 RGB, the shot's frames in order


def segment_of(frame: int, segment: int, carry: int) -> int:
    """The segment that makes frame `frame` of the shot."""
    return 0 if frame < segment else (frame - carry) // (segment - carry)


def first_frame_of(k: int, segment: int, carry: int) -> int:
    """The first frame of the shot that segment k makes."""
    return 0 if k == 0 else carry + k * (segment - carry)


def segment_count(frames: int, segment: int, carry: int) -> int:
    return segment_of(max(frames, 1) - 1, segment, carry) + 1


class SegmentStates:
    """What a job keeps to resume exactly: after segment k, segment-<k>.pt holds what the next segment
    conditions on (its `tail`) and the CPU generator's state. `error` is the engine's exception class."""

    def __init__(self, folder: Path | None, error=RuntimeError):
        self.folder = Path(folder) if folder is not None else None
        self.error = error

    def _path(self, k: int) -> Path:
        return self.folder / f"segment-{k:04d}.pt"

    def start(self, wanted: int) -> int:
        """The segment to start at: `wanted` if the state before it is kept, else the first after the
        latest state kept (0 without any)."""
        if self.folder is None:
            return 0
        for k in range(wanted - 1, -1, -1):
            if self._path(k).is_file():
                return k + 1
        return 0

    def tail(self, first: int):
        return None if first == 0 else self._load(first - 1)["tail"]

    def generator(self, first: int) -> torch.Tensor:
        return self._load(first - 1)["generator"]

    def _load(self, k: int) -> dict:
        try:
            return torch.load(self._path(k), map_location="cpu", weights_only=True)
        except Exception as error:  # a state that cannot be read cannot resume exactly: say so
            raise self.error(f"cannot read the saved state {self._path(k)}: {error}") from None

    def save(self, k: int, tail: torch.Tensor, generator: torch.Generator) -> None:
        if self.folder is None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        temporary = self._path(k).with_suffix(".part")
        torch.save({"tail": tail.detach().cpu().clone(), "generator": generator.get_state()}, temporary)
        os.replace(temporary, self._path(k))


class Stopped(Exception):
    """Raised inside a denoiser call once the job is asked to stop, to end the run between steps."""


def stop_between_steps(module: torch.nn.Module, stop):
    """A hook on `module` (the denoiser) raising Stopped before its next call once `stop` is set;
    returns the handle (remove() it when done)."""
    def check(*_):
        if stop is not None and stop.is_set():
            raise Stopped()
    return module.register_forward_pre_hook(check)
