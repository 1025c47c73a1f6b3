"""Lip sync's backend on the CPU: a tiny audio2mesh in AniPortrait's released layout, the audio
reader, the `marionette lip-sync` command and the server's answer."""

import asyncio
import io
import math
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
av = pytest.importorskip("av")

from marionette import cli
from marionette.audio import AudioError, load_audio
from marionette.lip_sync import LipSyncError
from marionette.lip_sync.model import audio2mesh_forward, canonical_to_blender, frame_count, normalise
from marionette.lip_sync.service import answer_lip_sync, handle_lip_sync, predict_offsets
from marionette.lip_sync.weights import load_audio2mesh
from marionette_core import lip_sync_offsets as reader  # the one offsets format, the extension's too
from marionette_core.protocol import Message

from tiny_audio2mesh import TINY_WAV2VEC2, constant_model, save_release, tiny_model

ROOT = Path(__file__).resolve().parents[2]



def speech_like(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    samples = int(round(seconds * 16000))
    t = np.arange(samples) / 16000
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)
    return (envelope * (0.3 * np.sin(2 * np.pi * 180 * t) + 0.05 * rng.standard_normal(samples))).astype(np.float32)


def wav_bytes(samples: np.ndarray, rate: int = 16000, channels: int = 1) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as handle:
        handle.setnchannels(channels)
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return buffer.getvalue()


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def release(model, tmp_path_factory):
    return save_release(model, tmp_path_factory.mktemp("pretrained_model"))


# --- the model -----------------------------------------------------------------------------

@pytest.mark.parametrize("fps", [24, 25, 30])
def test_a_fixed_out_fn_bias_gives_that_offset_on_every_frame(tmp_path, fps):
    offset_cm = np.random.default_rng(1).normal(0, 0.5, (468, 3)).astype(np.float32)
    folder = save_release(constant_model(offset_cm), tmp_path / "weights")
    audio = speech_like(1.7)
    offsets = predict_offsets(folder, audio, fps, device="cpu")
    assert offsets.shape == (math.ceil(len(audio) / 16000 * fps), 468, 3) and offsets.dtype == np.float32
    # Canonical centimetres (+y up, +z out of the face) -> Blender metres (x, -z, y).
    expected = np.stack([offset_cm[:, 0], -offset_cm[:, 2], offset_cm[:, 1]], axis=1) * 0.01
    assert np.abs(offsets - expected[None]).max() < 1e-7


@pytest.mark.parametrize("samples", [16000, 24001, 7999, 400])
def test_frame_counts_follow_the_originals_rule(release, samples):
    audio = speech_like(samples / 16000)
    for fps in (24, 25, 30):
        assert len(predict_offsets(release, audio, fps, device="cpu")) == math.ceil(samples / 16000 * fps)
    assert frame_count(samples, 30) == math.ceil(samples / 16000 * 30)


@pytest.mark.parametrize("fps", [24, 25])
def test_other_rates_interpolate_the_30_fps_frames_linearly_in_time(release, fps):
    audio = speech_like(2.0, seed=3)
    native = predict_offsets(release, audio, 30, device="cpu")
    resampled = predict_offsets(release, audio, fps, device="cpu")
    times = np.arange(len(resampled)) / fps
    flat = native.reshape(len(native), -1)
    expected = np.stack([np.interp(times * 30, np.arange(len(native)), flat[:, i]) for i in range(flat.shape[1])], 1)
    assert np.abs(resampled.reshape(len(resampled), -1) - expected).max() < 1e-6


def _independent_forward(model, values: torch.Tensor, seq_len: int, interpolate_at: str = "features") -> np.ndarray:
    """The original's computation written out step by step, the time interpolation done in numpy
    (align_corners: output j samples input position j * (T - 1) / (seq_len - 1))."""
    encoder = model["audio_encoder"]

    def resample(tensor):
        array = tensor[0].numpy()
        positions = np.arange(seq_len) * (len(array) - 1) / max(seq_len - 1, 1)
        return torch.from_numpy(np.stack([np.interp(positions, np.arange(len(array)), array[:, c])
                                          for c in range(array.shape[1])], axis=1))[None].float()

    with torch.no_grad():
        features = encoder.feature_extractor(values).transpose(1, 2)
        if interpolate_at == "features":
            features = resample(features)
        hidden = encoder.feature_projection(features)[0]
        hidden = encoder.encoder(hidden).last_hidden_state
        if interpolate_at == "end":
            hidden = resample(hidden)
        return model["out_fn"](model["in_fn"](hidden))[0].numpy()


def test_the_time_interpolation_sits_between_the_cnn_features_and_the_projection(model):
    values = torch.from_numpy(normalise(speech_like(1.3, seed=5)))[None]
    seq_len = frame_count(values.shape[1], 30)
    with torch.no_grad():
        ours = audio2mesh_forward(model, values, seq_len)[0].numpy()
    assert ours.shape == (seq_len, 1404)
    assert np.abs(ours - _independent_forward(model, values, seq_len)).max() < 1e-4
    # Interpolating the encoder's output instead (after the layers) gives other offsets.
    assert np.abs(ours - _independent_forward(model, values, seq_len, "end")).max() > 1e-3


def test_without_resampling_the_encoder_is_transformers_own_wav2vec2(model):
    values = torch.from_numpy(normalise(speech_like(0.9, seed=6)))[None]
    with torch.no_grad():
        cnn_frames = model["audio_encoder"].feature_extractor(values).shape[-1]
        ours = audio2mesh_forward(model, values, cnn_frames)[0]
        hidden = model["audio_encoder"](values).last_hidden_state  # the unmodified transformers forward
        reference = model["out_fn"](model["in_fn"](hidden))[0]
    assert torch.allclose(ours, reference, atol=1e-5)


def test_normalisation_is_wav2vec2_feature_extractors():
    from transformers import Wav2Vec2FeatureExtractor

    audio = speech_like(1.1, seed=8) * 0.3 + 0.01
    extractor = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
                                         return_attention_mask=False)
    expected = np.asarray(extractor(audio, sampling_rate=16000).input_values[0])
    assert np.abs(normalise(audio) - expected).max() < 1e-5


def test_the_released_layout_loads_to_the_same_model(model, release):
    loaded = load_audio2mesh(release)
    state = torch.load(release / "audio2mesh.pt", weights_only=True)
    assert "audio_encoder.encoder.pos_conv_embed.conv.weight_g" in state  # torch 2.0's spelling, as released
    audio = speech_like(1.0, seed=2)
    assert np.array_equal(predict_offsets(release, audio, 30, model=loaded),
                          predict_offsets(release, audio, 30, model=model))


def test_a_checkpoint_without_out_fn_is_refused(model, tmp_path):
    folder = save_release(model, tmp_path / "weights", drop=("out_fn.",))
    with pytest.raises(LipSyncError, match="no 'out_fn.weight'.*not AniPortrait's audio2mesh.pt"):
        load_audio2mesh(folder)


def test_encoder_weights_come_from_the_wav2vec2_folder_as_in_the_original(model, tmp_path):
    audio = speech_like(1.2, seed=4)
    expected = predict_offsets("unused", audio, 25, model=model)
    folder = save_release(model, tmp_path / "with_encoder", encoder_weights=True, drop=("audio_encoder.",))
    assert np.abs(predict_offsets(folder, audio, 25, device="cpu") - expected).max() < 1e-6
    folder = save_release(model, tmp_path / "without_encoder", config=True, drop=("audio_encoder.",))
    with pytest.raises(LipSyncError, match="lacks .* weights of the audio encoder.*wav2vec2-base-960h"):
        load_audio2mesh(folder)


def test_missing_files_are_named(model, tmp_path):
    with pytest.raises(LipSyncError, match="does not exist"):
        load_audio2mesh(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(LipSyncError, match="has no audio2mesh.pt"):
        load_audio2mesh(tmp_path / "empty")
    folder = save_release(model, tmp_path / "no_config", config=False)
    (folder / "wav2vec2-base-960h").mkdir()
    with pytest.raises(LipSyncError, match="wav2vec2-base-960h has no config.json"):
        load_audio2mesh(folder)


def test_the_built_in_encoder_config_is_wav2vec2_base():
    from transformers import Wav2Vec2Config

    from marionette.lip_sync.model import WAV2VEC2_BASE_960H

    config = Wav2Vec2Config(**WAV2VEC2_BASE_960H)
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (768, 12, 12)
    assert list(config.conv_dim) == [512] * 7 and np.prod(config.conv_stride) == 320
    assert set(TINY_WAV2VEC2) <= set(WAV2VEC2_BASE_960H)  # the tiny one varies the same fields


def test_too_short_sound_is_refused(release):
    with pytest.raises(LipSyncError, match="at least 25 ms"):
        predict_offsets(release, np.zeros(399, dtype=np.float32), 24, device="cpu")


# --- audio ---------------------------------------------------------------------------------

def test_a_stereo_wav_is_read_as_16k_mono(tmp_path):
    rate = 44100
    t = np.arange(rate * 2) / rate
    left, right = 0.6 * np.sin(2 * np.pi * 440 * t), 0.2 * np.sin(2 * np.pi * 440 * t)
    path = tmp_path / "stereo.wav"
    path.write_bytes(wav_bytes(np.stack([left, right], axis=1).reshape(-1), rate, channels=2))
    samples = load_audio(path)
    assert samples.dtype == np.float32 and abs(len(samples) - 32000) <= 16
    assert abs(np.abs(samples[1000:-1000]).max() - 0.4) < 0.01  # the mean of the channels
    spectrum = np.abs(np.fft.rfft(samples))
    assert abs(np.argmax(spectrum) * 16000 / len(samples) - 440) < 2
    assert np.array_equal(load_audio(path.read_bytes()), samples)


@pytest.mark.parametrize("codec,suffix,rate", [("libmp3lame", "mp3", 44100), ("libopus", "ogg", 48000),
                                               ("flac", "flac", 22050)])
def test_compressed_formats_are_read(tmp_path, codec, suffix, rate):
    if codec not in av.codecs_available:
        pytest.skip(f"this FFmpeg has no {codec} encoder")
    t = np.arange(rate) / rate
    tone = (0.5 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)
    path = tmp_path / f"tone.{suffix}"
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(tone[None], format="flt", layout="mono")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    samples = load_audio(path)
    assert abs(len(samples) - 16000) < 1600  # encoder delay and padding
    spectrum = np.abs(np.fft.rfft(samples))
    assert abs(np.argmax(spectrum) * 16000 / len(samples) - 300) < 3
    assert 0.4 < np.abs(samples).max() < 0.6


def test_unreadable_audio_is_a_clear_error(tmp_path):
    with pytest.raises(AudioError, match="no audio file at"):
        load_audio(tmp_path / "missing.wav")
    (tmp_path / "noise.wav").write_bytes(b"RIFF not really" * 50)
    with pytest.raises(AudioError, match="cannot read .*noise.wav as audio"):
        load_audio(tmp_path / "noise.wav")
    with pytest.raises(AudioError, match="empty"):
        load_audio(b"")


# --- the command and the server's answer ---------------------------------------------------

@pytest.mark.parametrize("suffix", ["json", "npz"])
def test_the_lip_sync_command_writes_offsets_the_extension_reads(release, tmp_path, capsys, suffix):
    audio = speech_like(1.5, seed=9)
    sound = tmp_path / "line.wav"
    sound.write_bytes(wav_bytes(audio))
    out = tmp_path / f"offsets.{suffix}"
    code = cli.main(["lip-sync", "--weights", str(release), "--audio", str(sound), "--fps", "25", "--out", str(out),
                     "--device", "cpu"])
    assert code == 0 and "38 frames" in capsys.readouterr().out
    read = reader.read_file(out)
    assert read.fps == 25.0 and abs(read.seconds - 1.5) < 1e-9
    expected = predict_offsets(release, load_audio(sound), 25, device="cpu")
    assert np.array_equal(read.offsets, expected.astype(np.float64))


def test_the_command_names_a_bad_weights_folder(tmp_path, capsys):
    sound = tmp_path / "line.wav"
    sound.write_bytes(wav_bytes(speech_like(0.5)))
    code = cli.main(["lip-sync", "--weights", str(tmp_path / "nowhere"), "--audio", str(sound), "--fps", "24",
                     "--out", str(tmp_path / "o.json")])
    assert code == 2 and "nowhere does not exist" in capsys.readouterr().err


def test_the_server_answer_carries_the_offsets(release):
    audio = speech_like(1.0, seed=10)
    header, attachments = answer_lip_sync({"type": "lip_sync", "fps": 24, "weights": str(release), "id": 7},
                                          wav_bytes(audio))
    assert header["type"] == "lip_sync" and header["id"] == 7 and header["frames"] == 24
    assert [name for name, _ in attachments] == ["offsets.f32"]
    offsets = reader.from_answer(header, attachments[0][1])
    expected = predict_offsets(release, load_audio(wav_bytes(audio)), 24, device="cpu")
    assert offsets.fps == 24.0 and np.array_equal(offsets.offsets, expected.astype(np.float64))


@pytest.mark.parametrize("header,audio,message", [
    ({"type": "lip_sync", "weights": "w"}, None, "needs 'fps'"),
    ({"type": "lip_sync", "fps": 24}, None, "needs 'weights'"),
    ({"type": "lip_sync", "fps": 24, "weights": "w"}, b"not audio" * 40, "cannot read the audio data"),
])
def test_bad_requests_are_answered_with_the_cause(header, audio, message):
    with pytest.raises(LipSyncError, match=message) as caught:
        answer_lip_sync(header, audio or wav_bytes(speech_like(0.5)))
    assert caught.value.code == "bad_request"


def test_the_async_handler_sends_the_answer_or_an_error(release):
    sent = []

    async def send(header, attachments=None):
        sent.append((header, attachments))

    request = {"type": "lip_sync", "fps": 30, "weights": str(release), "attachments": [{"name": "a.wav", "size": 0}]}
    data = wav_bytes(speech_like(0.5))
    request["attachments"][0]["size"] = len(data)
    asyncio.run(handle_lip_sync(Message(request, [data]), send))
    asyncio.run(handle_lip_sync(Message({"type": "lip_sync", "fps": 30}, []), send))
    asyncio.run(handle_lip_sync(Message({"type": "lip_sync", "fps": 30, "weights": "/nowhere"}, [data]), send))
    (answer, attachments), (missing, _), (failed, _) = sent
    assert answer["frames"] == 15 and len(attachments[0][1]) == 15 * 468 * 3 * 4
    assert missing["type"] == "error" and missing["code"] == "bad_request" and "attachment" in missing["message"]
    assert failed["type"] == "error" and failed["code"] == "engine_failed" and "/nowhere" in failed["message"]


def test_canonical_axes_to_blender():
    assert np.allclose(canonical_to_blender(np.array([[1.0, 2.0, 3.0]])), [[0.01, -0.03, 0.02]])


def test_without_transformers_lip_sync_names_the_package(tmp_path):
    """A backend without the diffusion extra still serves; lip sync says what it needs."""
    import subprocess

    script = ("import sys; sys.modules['transformers'] = None\n"
              "import numpy as np\n"
              "from marionette.lip_sync import LipSyncError\n"
              "from marionette.lip_sync.service import predict_offsets\n"
              "try:\n"
              "    predict_offsets('weights', np.zeros(16000, np.float32), 24)\n"
              "except LipSyncError as error:\n"
              "    print(error)\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert "lip sync needs the Python package 'transformers'" in result.stdout, result.stdout + result.stderr
