"""Reading sound for the audio-driven engines (lip sync, EchoMimic): any common format, decoded
with FFmpeg through PyAV, as 16 kHz mono float32 samples.

Channels are averaged (as librosa's `to_mono`, which the original audio-driven models used), and the
rate is converted with FFmpeg's resampler (libswresample). Nothing else is done to the signal: each
model normalises it its own way.
"""

from __future__ import annotations

import io
from pathlib import Path

import av
import numpy as np

SAMPLE_RATE = 16_000


class AudioError(ValueError):
    """Sound that cannot be read; the message names the source and the cause."""


def load_audio(source: str | Path | bytes, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The first audio stream of a file (path) or of its bytes, as (samples,) float32 in [-1, 1]
    at `sample_rate` Hz, mono (the mean of the channels)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        name, opened = "the audio data", io.BytesIO(bytes(source))
        if not len(source):
            raise AudioError("the audio data is empty")
    else:
        path = Path(source)
        name, opened = str(path), str(path)
        if not path.is_file():
            raise AudioError(f"no audio file at {path}")
    try:
        with av.open(opened, mode="r") as container:
            streams = container.streams.audio
            if not streams:
                raise AudioError(f"{name} holds no audio stream")
            samples = _decode(container, streams[0], sample_rate)
    except AudioError:
        raise
    except (av.FFmpegError, ValueError, OSError, EOFError) as error:
        cause = getattr(error, "strerror", None) or error
        raise AudioError(f"cannot read {name} as audio ({cause}); give a WAV, FLAC, MP3, OGG or M4A file") from None
    if not len(samples):
        raise AudioError(f"{name} holds no audio samples")
    return samples


def _decode(container, stream, sample_rate: int) -> np.ndarray:
    # Planar float at the target rate, keeping the channels: they are averaged here, not by the
    # resampler's downmix matrix, which weights channels its own way.
    resampler = av.AudioResampler(format="fltp", rate=sample_rate)
    pieces = []
    for frame in container.decode(stream):
        for converted in resampler.resample(frame):
            pieces.append(converted.to_ndarray().mean(axis=0))
    for converted in resampler.resample(None):  # what the resampler still holds
        pieces.append(converted.to_ndarray().mean(axis=0))
    if not pieces:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate(pieces).astype(np.float32, copy=False)
