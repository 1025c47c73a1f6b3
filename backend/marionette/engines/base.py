"""The one interface every engine implements, the inputs of a job as engines see them, and the
cache that keeps the model an engine loaded for the next job."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Protocol, TypeVar

import numpy as np

from marionette_core import styles
from marionette_core.keypoints import PersonKeypoints


class EngineError(Exception):
    """The engine cannot run this job; the message names the cause and the fix."""


@dataclass
class JobInputs:
    """Everything an engine needs, in output pixels (origin top-left).

    reference: (H, W, 3|4) uint8 RGB(A) image of the character, already at the output size.
    reference_people: keypoints of the rig posed over the reference, scaled to the output size.
    frames: per output frame, the keypoints of each person, scaled to the output size.
    tracks: the per-frame image inputs the engine declared, by name; each a sequence with one
        (H, W, 3) uint8 RGB image per frame (masks: white = generate), decoded when indexed.
    text: the text inputs the engine declared (prompt, negative_prompt), where the job gave them.
    settings: engine settings (seed, steps, ...), validated against the engine's declaration, with
        the declared defaults filled in.
    state_dir: a folder in the job for what an engine must keep to resume exactly (or None).
    audio, fps: the sound of the job's frame range (16 kHz mono float32) and the frame rate.
    """

    reference: np.ndarray
    reference_people: list[PersonKeypoints]
    frames: list[list[PersonKeypoints]]
    tracks: dict[str, Sequence[np.ndarray]] = field(default_factory=dict)
    text: dict[str, str] = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    state_dir: Path | None = None
    audio: np.ndarray | None = None  # the job's sound, 16 kHz mono float32 in [-1, 1], for engines that take it
    fps: float = 24.0  # frame i of the job is at i / fps seconds from the start of the audio

    @property
    def width(self) -> int:
        return self.reference.shape[1]

    @property
    def height(self) -> int:
        return self.reference.shape[0]


@dataclass(frozen=True)
class EngineInput:
    """One input an engine consumes, as the backend announces it to clients, in the words of the one
    vocabulary (marionette_core.styles).

    kind: "images" (one image per frame: a track), "text", or "audio".
    style: for images, a style of marionette_core.styles: what the images show and how a client
        makes them (a pose-map or face-map style, "rig-mask", "background", "face-crop").
    required: a job without it is refused; an optional input the engine can do without (or make itself).
    Track images are resized to `size` (or the output size) when the engine reads them.
    """

    name: str
    kind: str
    style: str | None = None
    required: bool = True
    help: str = ""
    size: tuple[int, int] | None = None  # images: (width, height) the engine takes them at; None: the output size
    when: dict | None = None  # used only for these setting values (e.g. {"mode": "replace"}): clients skip it otherwise

    def __post_init__(self):
        if self.kind not in styles.INPUT_KINDS:
            raise ValueError(f"input '{self.name}': kind {self.kind!r} is not one of {', '.join(styles.INPUT_KINDS)}")
        if self.kind == styles.IMAGES:
            styles.style(self.style)  # ValueError naming the known styles

    def to_json(self) -> dict:
        return {"name": self.name, "kind": self.kind, "style": self.style, "required": self.required,
                "help": self.help, "size": list(self.size) if self.size else None, "when": self.when}


SETTING_TYPES = {"int": int, "float": (int, float), "bool": bool, "str": str, "path": str, "choice": str}


@dataclass(frozen=True)
class EngineInfo:
    name: str
    description: str
    device: str  # "cpu" or "cuda"
    needs_weights: bool
    inputs: tuple[EngineInput, ...] = ()
    size_multiple: int = 1  # width and height must be multiples of this
    window: int | None = None  # frames per segment, for engines that work in windows
    # name -> {"type": one of SETTING_TYPES, "default", "help", and optionally "min", "max", "choices"}
    settings: dict = field(default_factory=dict)
    # What one run holds while it works, which is what a cluster is asked for: 0 GPUs (one CPU), or
    # 1 GPU of at least gpu_memory_gib (a run whose `device` setting is "cpu" holds a CPU instead).
    gpus: int = 0
    gpu_memory_gib: float = 0.0

    def to_json(self) -> dict:
        return {"name": self.name, "description": self.description, "device": self.device,
                "needs_weights": self.needs_weights, "inputs": [spec.to_json() for spec in self.inputs],
                "size_multiple": self.size_multiple, "window": self.window, "settings": self.settings,
                "gpus": self.gpus, "gpu_memory_gib": self.gpu_memory_gib}

    def track(self, name: str) -> EngineInput | None:
        return next((spec for spec in self.inputs if spec.kind == "images" and spec.name == name), None)

    def validate_settings(self, given: dict) -> dict:
        """The settings with defaults filled in; EngineError naming any unknown, mistyped or
        out-of-range value."""
        unknown = sorted(set(given) - set(self.settings))
        if unknown:
            raise EngineError(f"engine '{self.name}' has no setting {', '.join(map(repr, unknown))}; it has "
                              f"{', '.join(self.settings) or 'none'}")
        values = {}
        for name, spec in self.settings.items():
            value = given.get(name, spec.get("default"))
            if value is None:
                values[name] = None
                continue
            kind = spec.get("type", "str")
            wanted = SETTING_TYPES.get(kind, str)
            if not isinstance(value, wanted) or (kind != "bool" and isinstance(value, bool)):
                raise EngineError(f"engine '{self.name}' setting '{name}' must be of type {kind}, not "
                                  f"{type(value).__name__} ({str(value)[:40]!r})")
            if "choices" in spec and value not in spec["choices"]:
                raise EngineError(f"engine '{self.name}' setting '{name}' must be one of "
                                  f"{', '.join(map(str, spec['choices']))}, not {str(value)[:40]!r}")
            if "min" in spec and value < spec["min"] or "max" in spec and value > spec["max"]:
                raise EngineError(f"engine '{self.name}' setting '{name}' is {value}; it must be within "
                                  f"{spec.get('min', '-inf')} .. {spec.get('max', 'inf')}")
            values[name] = float(value) if kind == "float" else value
        return values


class Engine(Protocol):
    """What the backend needs of an engine. An engine package names its engine classes in its
    `__init__.py` (ENGINES = {name: "module:Class"}); the backend finds them there (engines/__init__.py)."""

    info: EngineInfo

    def check(self, job: JobInputs) -> None:
        """Optional: raise EngineError for a job this engine cannot run, without loading anything
        (weights files present, the tracks its mode needs, the device). The server and the CLI
        call it before anything runs, so a refused job is never stored."""
        ...

    def check_weights(self, folder: str) -> str | None:
        """Optional, for engines that need weights: raise EngineError naming what the folder lacks;
        may return a note on what it holds (`marionette engines --weights DIR`)."""
        ...

    def render(self, job: JobInputs, start: int, stop: threading.Event) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (frame index, image) for frames start.. in order, each as soon as it is final.

        Images are (H, W, 3|4) uint8 RGB(A). An engine that makes other per-frame outputs the user
        should see (e.g. the face crops that drove the face) yields (index, image, {name: image}).
        Return early when `stop` is set.
        """
        ...


Model = TypeVar("Model")


class ModelCache:
    """The one loaded model of a kind, kept for the next job: asking for the same key (weights folder,
    variant, device, dtype...) gives the same model; another key frees the old model first, so two
    models never sit in memory together."""

    def __init__(self):
        self._lock = threading.Lock()
        self._key = None
        self._model = None

    def get(self, key, load: Callable[[], Model]) -> Model:
        with self._lock:
            if self._model is None or self._key != key:
                self._key = self._model = None  # free the previous model before loading the next
                self._model = load()
                self._key = key
            return self._model

    def clear(self) -> None:
        with self._lock:
            self._key = self._model = None


# The engines run one job at a time: one model in memory for all of them.
ENGINE_MODELS = ModelCache()
