"""The Lip Sync job: the backend turns the sound into face landmark offsets (AniPortrait's
audio2mesh, on a thread of its own), then the offsets are solved onto the face's shape keys and
keyed at the scene rate (main thread)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import bpy
import numpy as np

from ..connection import backend
from ..connection.backend import BackendSettings
from ..core import lip_sync_offsets
from ..core.client import BackendError
from ..core.lip_sync_offsets import Offsets, OffsetsError
from ..face.binding import FaceBindingError, canonical_face, has_binding
from ..shared.jobs import MarionetteError, Outcome, ThreadJob
from .scene import KeyTiming, SoundInput, key_weights, read_face_shapes
from .solver import LipSyncError, solve_lip_sync

BACKEND_TIMEOUT = 600.0  # seconds: a long sound on a CPU backend, the model loaded first
POOR_FIT = 0.15  # the face's landmarks are this far (of its size) from the canonical layout: say so

# The backend's last answer, so that a redo (Smoothing or Shape Keys changed in the redo panel) solves
# again without asking the backend again: (key, offsets).
_last_answer: tuple[tuple, Offsets] | None = None


class LipSyncJob(ThreadJob):
    """The offsets on a thread of their own, then the keys (see lip_sync_job)."""


@dataclass
class LipSyncPlan:
    """What the operator read from the scene before the (possibly slow) backend call."""
    face_name: str
    names: list[str]  # the shape keys that take part
    timing: KeyTiming
    rate: float  # the scene's frames per second
    sound: SoundInput | None  # to send to the backend; None when the offsets come from a file
    offsets: Offsets | None = None


def request_offsets(settings: BackendSettings, sound: SoundInput, fps: float, weights: str | None,
                    auto_start: bool) -> Offsets:
    """Ask the backend for the sound's landmark offsets at `fps`. Blocking (a worker thread)."""
    client = backend.connect(settings, auto_start=auto_start)
    try:
        client.sock.settimeout(BACKEND_TIMEOUT)
        header, data = client.lip_sync(sound.data, fps, weights=weights, filename=sound.filename)
    finally:
        client.close()
    try:
        return lip_sync_offsets.from_answer(header, data)
    except OffsetsError as error:
        raise BackendError("bad_request", str(error)) from None


def lip_sync_job(plan: LipSyncPlan, smoothing: float, settings: BackendSettings, auto_start: bool,
                 weights: str | None) -> LipSyncJob:
    """The job: the offsets (the plan's, the last answer for the same sound, or the backend's), then
    the keys."""
    global _last_answer
    key = (hashlib.sha256(plan.sound.data).hexdigest(), plan.rate, weights) if plan.sound is not None else None
    if plan.offsets is None and _last_answer is not None and _last_answer[0] == key:
        plan.offsets = _last_answer[1]

    def work() -> Offsets:  # no bpy here
        if plan.offsets is not None:
            return plan.offsets
        try:
            return request_offsets(settings, plan.sound, plan.rate, weights, auto_start)
        except BackendError as error:
            raise MarionetteError(f"Lip Sync: {error}") from None

    def done(offsets: Offsets) -> Outcome:
        global _last_answer
        if key is not None:
            _last_answer = (key, offsets)
        try:
            return apply(plan, offsets, smoothing)
        except (LipSyncError, FaceBindingError) as error:
            raise MarionetteError(f"Lip Sync: {error}") from None

    return LipSyncJob("lip sync", work, done)


def apply(plan: LipSyncPlan, offsets: Offsets, smoothing: float) -> Outcome:
    """Solve the offsets onto the plan's shape keys and key them, in the frames the sound shows."""
    face = bpy.data.objects.get(plan.face_name)
    if face is None or not has_binding(face):
        raise LipSyncError(f"the face '{plan.face_name}' is gone; nothing was keyed")
    per_frame = offsets.at_rate(plan.rate)
    timing = plan.timing
    frames = timing.start - timing.skip + np.arange(len(per_frame))
    keep = np.ones(len(frames), dtype=bool)
    if timing.shown is not None:
        keep = (frames >= timing.shown[0]) & (frames <= timing.shown[1])
    if not keep.any():
        raise LipSyncError("the sound strip shows none of the sound; nothing was keyed")
    rest, displacements = read_face_shapes(face, plan.names)
    solution = solve_lip_sync(rest, displacements, per_frame[keep], canonical_face()[0], smoothing)
    frames = frames[keep]
    key_weights(face, solution.names, solution.weights, frames)
    message = (f"Lip Sync: keyed {len(solution.names)} shape keys of '{face.name}' on frames "
               f"{frames[0]}-{frames[-1]} ({len(frames)} frames at {plan.rate:g} fps)")
    if solution.motionless:
        message += f"; {', '.join(solution.motionless)} move no landmark and were left unkeyed"
    if solution.fit_error > POOR_FIT:
        message += (f"; the face's landmarks fit the canonical layout poorly ({solution.fit_error:.0%} of its "
                    f"size): check the face binding")
    return Outcome(message, warning=bool(solution.motionless) or solution.fit_error > POOR_FIT)
