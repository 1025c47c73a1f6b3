"""Offsets of a sound, for `marionette lip-sync` and the server's `lip_sync` request. torch and
transformers come with the backend's diffusion extra: without them lip sync says so, and the server
still runs."""

from __future__ import annotations

import asyncio
import logging
import math
from pathlib import Path

import numpy as np

from marionette_core import lip_sync_offsets as offsets_format
from marionette_core.protocol import error_message

from ..audio import SAMPLE_RATE, AudioError, load_audio
from . import LipSyncError

try:
    import torch

    from .model import LANDMARKS, MIN_SAMPLES, MODEL_FPS, audio2mesh_forward, canonical_to_blender, frame_count, normalise
    from .weights import cached_audio2mesh
except ImportError as error:  # the diffusion extra is not installed: named when lip sync is asked for
    UNAVAILABLE = f"lip sync needs the Python package '{(error.name or 'torch').split('.')[0]}': " \
                  f"pip install 'marionette[diffusion]'"
else:
    UNAVAILABLE = None

log = logging.getLogger("marionette.lip_sync")

MAX_SECONDS = 600.0  # per request to the server: attention over every frame of the clip at once


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def predict_offsets(weights_dir: Path | str, audio16k: np.ndarray, fps: float, device: str | None = None,
                    model=None) -> np.ndarray:
    """Per-frame offsets of the 468 canonical face landmarks from a neutral face while speaking
    `audio16k` (16 kHz mono float32): (frames, 468, 3) float32, metres, Blender axes of the canonical
    face (+X the subject's left, -Y out of the face, +Z up), at `fps` (frame i at i / fps s; frames =
    ceil(seconds * fps)). The model runs at its own 30 fps; other rates are interpolated linearly."""
    if UNAVAILABLE is not None:
        raise LipSyncError(UNAVAILABLE)
    audio = np.asarray(audio16k, dtype=np.float32).reshape(-1)
    if len(audio) < MIN_SAMPLES:
        raise LipSyncError(f"the sound lasts {len(audio) / SAMPLE_RATE * 1000:.1f} ms; lip sync needs at least "
                           f"{MIN_SAMPLES / SAMPLE_RATE * 1000:.0f} ms", code="bad_request")
    try:
        fps = float(fps)
    except (TypeError, ValueError):
        fps = math.nan
    if not (math.isfinite(fps) and 0 < fps <= 1000):
        raise LipSyncError("fps must be a number of frames per second above 0 and at most 1000", code="bad_request")
    device = device or default_device()
    if model is None:
        model = cached_audio2mesh(weights_dir, device)
    seq_len = frame_count(len(audio), MODEL_FPS)
    parameter = next(model.parameters())
    values = torch.from_numpy(normalise(audio))[None].to(device=parameter.device, dtype=parameter.dtype)
    with torch.inference_mode():
        output = audio2mesh_forward(model, values, seq_len)[0]
    offsets = canonical_to_blender(output.float().cpu().numpy().reshape(seq_len, LANDMARKS, 3))
    return offsets_format.resample_frames(offsets, MODEL_FPS, fps, frame_count(len(audio), fps))




def answer_lip_sync(header: dict, audio: bytes, default_weights: Path | str | None = None,
                    ) -> tuple[dict, list[tuple[str, bytes]]]:
    """The server's answer to a `lip_sync` request (header: fps, weights, optional device; the sound
    file's bytes, any common format): the answer header and its one attachment, the offsets as raw
    little-endian float32 of the header's shape."""
    fps = header.get("fps")
    if type(fps) not in (int, float) or not math.isfinite(fps) or not 0 < fps <= 1000:
        raise LipSyncError("'lip_sync' needs 'fps': the frame rate to key at (frames per second)", code="bad_request")
    weights = header.get("weights") or default_weights
    if not isinstance(weights, (str, Path)) or not str(weights):
        raise LipSyncError("'lip_sync' needs 'weights': the backend's folder with audio2mesh.pt "
                           "(and wav2vec2-base-960h/)", code="bad_request")
    device = header.get("device")
    if device is not None and not isinstance(device, str):
        raise LipSyncError("'device' must be a string such as 'cpu' or 'cuda'", code="bad_request")
    try:
        samples = load_audio(audio)
    except AudioError as error:
        raise LipSyncError(str(error), code="bad_request") from None
    seconds = len(samples) / SAMPLE_RATE
    if seconds > MAX_SECONDS:
        raise LipSyncError(f"the sound lasts {seconds:.0f} s; lip sync takes at most {MAX_SECONDS:.0f} s at once: "
                           f"split it (or run `marionette lip-sync` on it)", code="limit")
    offsets = predict_offsets(weights, samples, float(fps), device=device or "cpu")
    answer = {"type": "lip_sync", **offsets_format.header(offsets, fps, seconds)}
    if "id" in header:
        answer["id"] = header["id"]
    return answer, [(offsets_format.ATTACHMENT, offsets_format.to_bytes(offsets))]


async def handle_lip_sync(message, send, default_weights: Path | str | None = None) -> None:
    """Serve one `lip_sync` request on a connection: the work runs on a thread, the answer (or an
    error message naming the cause) is sent with `send(header, attachments)`."""
    try:
        if not message.attachments:
            raise LipSyncError("'lip_sync' needs the sound as its attachment", code="bad_request")
        answer, attachments = await asyncio.to_thread(answer_lip_sync, message.header, message.attachments[0],
                                                      default_weights)
    except LipSyncError as error:
        await send(error_message(error.code, str(error)))
        return
    except Exception as error:  # a model failure fails this request, not the connection
        log.exception("lip sync failed")
        await send(error_message("engine_failed", f"lip sync failed: {error}"))
        return
    await send(answer, attachments)
