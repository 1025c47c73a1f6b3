"""The one interface every engine implements, and the inputs of a job as engines see them."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Iterator, Protocol

import numpy as np

from marionette_core.keypoints import PersonKeypoints


class EngineError(Exception):
    """The engine cannot run this job; the message names the cause and the fix."""


@dataclass
class JobInputs:
    """Everything an engine needs, in output pixels (origin top-left).

    reference: (H, W, 3|4) uint8 RGB(A) image of the character, already at the output size.
    reference_people: keypoints of the rig posed over the reference, scaled to the output size.
    frames: per output frame, the keypoints of each person, scaled to the output size.
    control_maps: per output frame, the control-map image (H, W, 3) RGB, or empty when the job
        carries keypoints only.
    settings: engine settings (seed, steps, ...), already validated against the engine's schema.
    """

    reference: np.ndarray
    reference_people: list[PersonKeypoints]
    frames: list[list[PersonKeypoints]]
    control_maps: list[np.ndarray] = field(default_factory=list)
    settings: dict = field(default_factory=dict)

    @property
    def width(self) -> int:
        return self.reference.shape[1]

    @property
    def height(self) -> int:
        return self.reference.shape[0]


@dataclass(frozen=True)
class EngineInfo:
    name: str
    description: str
    styles: tuple[str, ...]  # control styles it needs ("keypoints" for keypoints only)
    device: str  # "cpu" or "cuda"
    needs_weights: bool
    size_multiple: int = 1  # width and height must be multiples of this
    window: int | None = None  # frames per segment, for engines that work in windows
    settings: dict = field(default_factory=dict)  # name -> {"type", "default", "help"}

    def to_json(self) -> dict:
        return {"name": self.name, "description": self.description, "styles": list(self.styles),
                "device": self.device, "needs_weights": self.needs_weights, "size_multiple": self.size_multiple,
                "window": self.window, "settings": self.settings}


class Engine(Protocol):
    info: EngineInfo

    def render(self, job: JobInputs, start: int, stop: threading.Event) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (frame index, image) for frames start.. in order, each as soon as it is final.

        Images are (H, W, 3|4) uint8 RGB(A). Return early when `stop` is set.
        """
        ...
