"""Lip sync from audio: AniPortrait's audio2mesh, the sound turned into per-frame offsets of the 468
canonical face landmarks, which Blender's Lip Sync solves onto a face's shape keys.

The model (AniPortrait, Apache-2.0, `src/audio_models/model.py` and `wav2vec2.py`): a wav2vec 2.0
encoder (wav2vec2-base-960h, fine-tuned) whose convolutional features (50 per second) are linearly
interpolated in time to the video frames (30 per second) BEFORE the feature projection, the
positional convolution and the transformer layers; the last hidden state then goes through two
linear layers with nothing between them, `in_fn` (hidden -> 512) and `out_fn` (512 -> 468 x 3).
The output is, per frame, the offset of each vertex of MediaPipe's canonical face geometry in
centimetres (+x the subject's left, +y up, +z out of the face) from the speaker's neutral face.

    model.py     the network and its arithmetic
    weights.py   the release's weights folder, loaded and kept
    service.py   offsets of a sound, for `marionette lip-sync` and the server's `lip_sync` request

Weights folder (the release's `pretrained_model/` layout):
    audio2mesh.pt          flat state dict: audio_encoder.* (the fine-tuned encoder), in_fn.*, out_fn.*
                           (or an audio2mesh.safetensors twin)
    wav2vec2-base-960h/    facebook/wav2vec2-base-960h: config.json, and its weights (pytorch_model.bin
                           or model.safetensors). The original builds the encoder from this folder,
                           then loads audio2mesh.pt over it non-strictly. Without the folder the
                           encoder is built from the same configuration (below), and audio2mesh.pt
                           must then hold every encoder weight.
Nothing is ever downloaded.

Audio: 16 kHz mono, normalised over the whole clip, (x - mean) / sqrt(var + 1e-7) (as the
original's Wav2Vec2FeatureExtractor with do_normalize). Frames: ceil(seconds * 30).
"""

from __future__ import annotations

from ..engines.base import EngineError


class LipSyncError(EngineError):
    """Lip sync cannot run; the message names the cause and the fix. `code` is the protocol's error
    code the server answers with."""

    def __init__(self, message: str, code: str = "engine_failed"):
        super().__init__(message)
        self.code = code
