"""EchoMimic's audio features: a Whisper-tiny encoder's hidden states, windowed per video frame.

What the released inference computes (its vendored OpenAI Whisper and `Audio2Feature`), step by step:

1. Log-mel spectrogram of the WHOLE 16 kHz mono clip: a 400-point periodic Hann STFT with hop 160
   (centred, reflect padding), power of all but the last frame, an 80-band Slaney-normalised mel
   filterbank on the Slaney mel scale (the filterbank librosa computes for sr 16000, n_fft 400),
   log10 of at least 1e-10, floored at the clip's maximum minus 8, then (x + 4) / 4. The floor uses
   the whole clip's maximum, so a frame's features depend on the loudest moment of the clip.
2. The mel frames in 30 s segments (3000 frames, the last one zero-padded), each through the
   encoder on its own: GELU(conv1), GELU(conv2, stride 2), plus the sinusoidal positions, then the
   residual attention blocks. For each of the 1500 steps (50 Hz) the stack of the block input and
   every block's output (5 tensors for Whisper-tiny's 4 blocks; the final layer norm is NOT
   applied), keeping half as many steps as the segment has mel frames -> (T50, 5, 384) for the clip.
3. Video frame i at fps: centre = int(i * 50 / fps); steps centre - 4 .. centre + 5, each clamped to
   the clip, -> (10, 5, 384) -> (50, 384): the context of that frame's audio cross-attention.

The encoder here is written from the published structure so that its arithmetic is the original's
in float32 and float16 alike (weights cast to the input dtype, layer norms and the softmax in
float32, queries and keys each scaled by head_dim ** -0.25); the released inference runs it in
float16 on a GPU and float32 on a CPU.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

SAMPLE_RATE = 16000
N_FFT = 400
HOP_LENGTH = 160
N_MELS = 80
SEGMENT_FRAMES = 3000  # 30 s of mel frames per encoder call
STEPS_PER_SECOND = 50  # encoder steps: mel frames / 2
FRAME_CONTEXT = (4, 6)  # steps before the centre, steps from the centre on (centre - 4 .. centre + 5)
# OpenAI checkpoint name prefix of the encoder; the text decoder's keys are not used.
ENCODER_PREFIX = "encoder."


def mel_filters(sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) float32: triangular filters on the Slaney mel scale from 0 Hz to
    Nyquist, each scaled to unit area (Slaney normalisation), computed in float64 and stored in
    float32 the way librosa.filters.mel does (the table OpenAI ships as mel_filters.npz)."""
    def hz_to_mel(hz):
        hz = np.asanyarray(hz, dtype=np.float64)
        linear_step, log_from_hz = 200.0 / 3, 1000.0
        log_from_mel, log_step = log_from_hz / linear_step, np.log(6.4) / 27.0
        return np.where(hz >= log_from_hz, log_from_mel + np.log(np.maximum(hz, log_from_hz) / log_from_hz) / log_step,
                        hz / linear_step)

    def mel_to_hz(mel):
        mel = np.asanyarray(mel, dtype=np.float64)
        linear_step, log_from_hz = 200.0 / 3, 1000.0
        log_from_mel, log_step = log_from_hz / linear_step, np.log(6.4) / 27.0
        return np.where(mel >= log_from_mel, log_from_hz * np.exp(log_step * (mel - log_from_mel)), linear_step * mel)

    bin_hz = np.fft.rfftfreq(n=n_fft, d=1.0 / sample_rate)
    edges = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(sample_rate / 2.0), n_mels + 2))
    widths = np.diff(edges)
    offsets = np.subtract.outer(edges, bin_hz)
    weights = np.zeros((n_mels, bin_hz.size), dtype=np.float32)
    for band in range(n_mels):
        rising, falling = -offsets[band] / widths[band], offsets[band + 2] / widths[band + 1]
        weights[band] = np.maximum(0, np.minimum(rising, falling)) + 0.0  # + 0.0: zeros positive, as in the table
    weights *= (2.0 / (edges[2:n_mels + 2] - edges[:n_mels]))[:, np.newaxis]  # float32 in place, as librosa
    return weights


def log_mel_spectrogram(audio: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(80, samples // 160) float32 log-mel of a whole 16 kHz mono clip (float samples in [-1, 1]),
    scaled as Whisper scales it, the floor taken from the whole clip's maximum."""
    audio = torch.as_tensor(np.asarray(audio, dtype=np.float32) if not torch.is_tensor(audio) else audio)
    audio = audio.to(torch.float32).cpu()
    stft = torch.stft(audio, N_FFT, HOP_LENGTH, window=torch.hann_window(N_FFT), return_complex=True)
    power = stft[:, :-1].abs() ** 2
    mel = torch.from_numpy(mel_filters()) @ power
    log_mel = torch.clamp(mel, min=1e-10).log10()
    log_mel = torch.maximum(log_mel, log_mel.max() - 8.0)
    return (log_mel + 4.0) / 4.0


class _Linear(nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight.to(x.dtype), None if self.bias is None else self.bias.to(x.dtype))


class _Conv1d(nn.Conv1d):
    def _conv_forward(self, x, weight, bias):
        return super()._conv_forward(x, weight.to(x.dtype), None if bias is None else bias.to(x.dtype))


class _LayerNorm(nn.LayerNorm):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).type(x.dtype)


class _SelfAttention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.query = _Linear(width, width)
        self.key = _Linear(width, width, bias=False)
        self.value = _Linear(width, width)
        self.out = _Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, steps, width = x.shape
        scale = (width // self.heads) ** -0.25
        q = self.query(x).view(batch, steps, self.heads, -1).permute(0, 2, 1, 3) * scale
        k = self.key(x).view(batch, steps, self.heads, -1).permute(0, 2, 3, 1) * scale
        v = self.value(x).view(batch, steps, self.heads, -1).permute(0, 2, 1, 3)
        weights = F.softmax((q @ k).float(), dim=-1).to(q.dtype)
        return self.out((weights @ v).permute(0, 2, 1, 3).flatten(start_dim=2))


class _Block(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.attn = _SelfAttention(width, heads)
        self.attn_ln = _LayerNorm(width)
        self.mlp = nn.Sequential(_Linear(width, 4 * width), nn.GELU(), _Linear(4 * width, width))
        self.mlp_ln = _LayerNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attn_ln(x))
        return x + self.mlp(self.mlp_ln(x))


class WhisperAudioEncoder(nn.Module):
    """The audio encoder of an OpenAI Whisper checkpoint, module names as OpenAI's (so its state
    dict is the checkpoint's `encoder.*` entries without the prefix). `forward` returns the hidden
    states EchoMimic uses: (batch, blocks + 1, n_audio_ctx, width), no final layer norm."""

    def __init__(self, n_mels: int, n_audio_ctx: int, n_audio_state: int, n_audio_head: int, n_audio_layer: int):
        super().__init__()
        self.dims = dict(n_mels=n_mels, n_audio_ctx=n_audio_ctx, n_audio_state=n_audio_state,
                         n_audio_head=n_audio_head, n_audio_layer=n_audio_layer)
        self.conv1 = _Conv1d(n_mels, n_audio_state, kernel_size=3, padding=1)
        self.conv2 = _Conv1d(n_audio_state, n_audio_state, kernel_size=3, stride=2, padding=1)
        self.register_buffer("positional_embedding", torch.zeros(n_audio_ctx, n_audio_state))
        self.blocks = nn.ModuleList([_Block(n_audio_state, n_audio_head) for _ in range(n_audio_layer)])
        self.ln_post = _LayerNorm(n_audio_state)  # in the checkpoint; EchoMimic does not apply it

    @property
    def width(self) -> int:
        return self.dims["n_audio_state"]

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """mel: (batch, n_mels, 2 * n_audio_ctx) in the dtype to compute in."""
        x = F.gelu(self.conv1(mel))
        x = F.gelu(self.conv2(x)).permute(0, 2, 1)
        x = (x + self.positional_embedding).to(x.dtype)
        states = [x]
        for block in self.blocks:
            x = block(x)
            states.append(x)
        return torch.stack(states, dim=1)

    @torch.no_grad()
    def clip_states(self, audio: np.ndarray, device: torch.device | str = "cpu",
                    dtype: torch.dtype = torch.float32) -> np.ndarray:
        """(T50, blocks + 1, width) float32 hidden states of a whole 16 kHz mono clip at 50 steps
        per second (T50 = samples // 320), computed in `dtype` segment by segment."""
        mel = log_mel_spectrogram(audio)
        frames = mel.shape[-1]
        if frames == 0:
            raise ValueError("the audio is shorter than one mel frame (10 ms at 16 kHz)")
        parts = []
        for start in range(0, frames, SEGMENT_FRAMES):
            segment = mel[:, start:start + SEGMENT_FRAMES]
            segment = F.pad(segment, (0, SEGMENT_FRAMES - segment.shape[-1]))
            states = self(segment.unsqueeze(0).to(device).to(dtype))[0]  # (layers, 1500, width)
            kept = (min(start + SEGMENT_FRAMES, frames) - start) // 2
            parts.append(states.permute(1, 0, 2)[:kept].float().cpu().numpy())
        return np.concatenate(parts, axis=0)


def frame_windows(steps: int, fps: float, frames: int) -> np.ndarray:
    """(frames, 10) indices into the 50 Hz steps of a clip that each video frame's features take."""
    centres = np.array([int(i * STEPS_PER_SECOND / fps) for i in range(frames)], dtype=np.int64)
    offsets = np.arange(-FRAME_CONTEXT[0], FRAME_CONTEXT[1])
    return np.clip(centres[:, None] + offsets[None, :], 0, steps - 1)


def frame_features(states: np.ndarray, fps: float, frames: int) -> np.ndarray:
    """(frames, 10 * (blocks + 1), width) float32: per video frame at `fps` (frame i at i / fps s
    from the start of the clip), the hidden states of its 10 steps, step-major."""
    if states.shape[0] == 0:
        raise ValueError("no audio steps to take features from")
    windows = frame_windows(states.shape[0], fps, frames)
    picked = states[windows]  # (frames, 10, layers, width)
    return np.ascontiguousarray(picked.reshape(frames, -1, states.shape[-1]))


def read_whisper_checkpoint(path: Path | str) -> tuple[dict, dict[str, torch.Tensor]]:
    """(dims, encoder state dict without the prefix) of an OpenAI Whisper checkpoint
    {"dims": {...}, "model_state_dict": {...}}, read with weights_only=True."""
    checkpoint = torch.load(Path(path), map_location="cpu", weights_only=True)
    if not isinstance(checkpoint, dict) or "dims" not in checkpoint or "model_state_dict" not in checkpoint:
        raise ValueError(f"{path} is not an OpenAI Whisper checkpoint (a dict with 'dims' and 'model_state_dict')")
    state = {key[len(ENCODER_PREFIX):]: value for key, value in checkpoint["model_state_dict"].items()
             if key.startswith(ENCODER_PREFIX)}
    return dict(checkpoint["dims"]), state


def load_whisper_encoder(path: Path | str) -> WhisperAudioEncoder:
    """The audio encoder of an OpenAI Whisper checkpoint (EchoMimic: audio_processor/whisper_tiny.pt),
    on the CPU in float32 (it casts its weights to the input's dtype when run)."""
    dims, state = read_whisper_checkpoint(path)
    names = ("n_mels", "n_audio_ctx", "n_audio_state", "n_audio_head", "n_audio_layer")
    missing = [name for name in names if name not in dims]
    if missing:
        raise ValueError(f"{path}: its 'dims' lack {', '.join(missing)}")
    if dims["n_mels"] != N_MELS:
        raise ValueError(f"{path}: a Whisper model of {dims['n_mels']} mel bands; EchoMimic's features use {N_MELS}")
    encoder = WhisperAudioEncoder(**{name: int(dims[name]) for name in names})
    result = encoder.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        problem = result.missing_keys[:1] or result.unexpected_keys[:1]
        raise ValueError(f"{path}: the encoder weights do not match its dims ({len(result.missing_keys)} missing, "
                         f"{len(result.unexpected_keys)} unexpected, e.g. {ENCODER_PREFIX}{problem[0]})")
    return encoder.eval().requires_grad_(False)


def whisper_features(whisper_tiny_path: Path | str | WhisperAudioEncoder, audio16k: np.ndarray, fps: float,
                     frames: int, device: torch.device | str = "cpu",
                     dtype: torch.dtype | None = None) -> np.ndarray:
    """EchoMimic's audio features for `frames` video frames at `fps`: (frames, 50, width) float32.

    whisper_tiny_path: the checkpoint (or an encoder already loaded with load_whisper_encoder).
    audio16k: the clip, 16 kHz mono float samples in [-1, 1]; frame 0 is at its start. Frames past
    its end repeat its last steps. dtype: what the encoder computes in; by default float16 on a GPU
    and float32 on a CPU, as the released inference runs it.
    """
    encoder = whisper_tiny_path if isinstance(whisper_tiny_path, WhisperAudioEncoder) \
        else load_whisper_encoder(whisper_tiny_path)
    device = torch.device(device)
    if dtype is None:
        dtype = torch.float16 if device.type == "cuda" else torch.float32
    encoder.to(device)
    return frame_features(encoder.clip_states(audio16k, device, dtype), fps, frames)
