"""The echomimic engine's model side on the CPU: tiny networks in the real architecture, random
weights; the Whisper features against direct computations; the window schedule; the face mask."""

import hashlib
import math
import threading

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from marionette.engines.echomimic import weights as checkpoints
from marionette.engines.echomimic.audio_features import (frame_features, load_whisper_encoder, log_mel_spectrogram,
                                                         mel_filters, whisper_features)
from marionette.engines.echomimic.weights import RELEASE_FILES, WHISPER_CHECKPOINT, load_networks
from marionette.engines.echomimic.face_mask import face_box_mask, face_mask_from_image, face_mask_from_landmarks
from marionette.engines.echomimic.pipeline import CONTEXT_FRAMES, CONTEXT_OVERLAP, EchoMimicPipeline, velocity_round_trip
from marionette.models.checkpoints import WeightsError, convert_to_safetensors
from marionette.models.windows import closed_loop_windows, shifted_windows

from tiny_echomimic import TINY_WHISPER_DIMS, tiny_networks, tiny_whisper_checkpoint, write_release, \
    write_whisper_checkpoint

SIZE = 64
RATE = 16000
FPS = 24


def tone(seconds, hz=440.0, amplitude=0.3):
    t = np.arange(int(seconds * RATE)) / RATE
    return (amplitude * np.sin(2 * np.pi * hz * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)


@pytest.fixture(scope="module")
def reference():
    return np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def audio_networks():
    networks, _config, _checkpoint = tiny_networks(seed=1)
    return networks


@pytest.fixture(scope="module")
def features(audio_networks):
    return whisper_features(audio_networks.audio_encoder, tone(1.0), FPS, 14)


def run(pipeline, reference, features, **kwargs):
    settings = dict(steps=2, seed=11, face_mask=face_box_mask(SIZE, SIZE, (18, 12, 46, 50)))
    settings.update(kwargs)
    return list(pipeline(reference, features, SIZE, SIZE, **settings))


def frames_equal(a, b):
    return len(a) == len(b) and all(i == j and np.array_equal(x, y) for (i, x), (j, y) in zip(a, b))


# --- window schedule -------------------------------------------------------------------------------

def test_windows_start_every_nine_frames_and_wrap_around():
    windows = closed_loop_windows(30, CONTEXT_FRAMES, CONTEXT_OVERLAP)
    assert [w[0] for w in windows] == [0, 9, 18, 27]
    assert all(len(w) == 12 for w in windows)
    assert windows[1] == list(range(9, 21))
    assert windows[3] == [27, 28, 29] + list(range(0, 9))  # closed loop: past the end to the start
    assert closed_loop_windows(13, CONTEXT_FRAMES, CONTEXT_OVERLAP) == [list(range(12)), [9, 10, 11, 12] + list(range(0, 8))]
    assert closed_loop_windows(12, CONTEXT_FRAMES, CONTEXT_OVERLAP) == [list(range(12))] and closed_loop_windows(5, CONTEXT_FRAMES, CONTEXT_OVERLAP) == [list(range(5))]
    assert closed_loop_windows(9, 4, 1) == [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 0]]


def test_windows_shift_every_step():
    windows = closed_loop_windows(30, CONTEXT_FRAMES, CONTEXT_OVERLAP)
    assert shifted_windows(windows, 0, 2, 30) == windows
    step3 = shifted_windows(windows, 3, 2, 30)  # audio mode: 2 frames per step
    assert step3[0] == list(range(6, 18)) and step3[3] == [3] + list(range(4, 15))
    assert shifted_windows(windows, 3, 3, 30)[0] == list(range(9, 21))  # pose mode: 3 per step
    # One window of every frame: rotated, so the motion modules see the clip starting elsewhere.
    assert shifted_windows([list(range(5))], 2, 2, 5) == [[4, 0, 1, 2, 3]]
    for step in range(7):  # every frame is covered at every step
        covered = sorted({f for w in shifted_windows(windows, step, 2, 30) for f in w})
        assert covered == list(range(30))


# --- face mask -------------------------------------------------------------------------------------

def test_face_box_mask_enlarges_the_box_by_a_tenth():
    mask = face_box_mask(64, 80, (10.4, 20.6, 30.5, 50.5))
    # Corners rounded half to even: (10, 21, 30, 50); margins int(29 * 0.1) = 2 rows, int(20 * 0.1) = 2 columns.
    rows, columns = np.nonzero(mask)
    assert mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 255}
    assert (rows.min(), rows.max(), columns.min(), columns.max()) == (19, 51, 8, 31)
    assert mask[19:52, 8:32].min() == 255 and (mask > 0).sum() == 33 * 24
    clipped = face_box_mask(64, 80, (1, 2, 40, 79))  # the margins stop at the image borders
    assert clipped[0, 0] == 255 and clipped[79, 42] == 255 and clipped[:, 43:].max() == 0
    assert face_box_mask(16, 8, None).min() == 255  # no face: the whole frame, as the release does


def test_face_mask_from_landmarks_and_image():
    points = np.zeros((68, 3))
    points[:, 0] = np.linspace(20, 40, 68)
    points[:, 1] = np.linspace(10, 50, 68)
    points[:, 2] = 1
    points[0] = (1, 1, 0)  # an absent point does not widen the box
    mask = face_mask_from_landmarks(points, 64, 64)
    rows, columns = np.nonzero(mask)
    top = round(points[1, 1])
    assert (rows.min(), rows.max() + 1) == (top - int((50 - top) * 0.1), 50 + int((50 - top) * 0.1))
    assert (columns.min(), columns.max() + 1) == (round(points[1, 0]) - 2, 42)
    image = np.zeros((32, 32, 3), np.uint8)
    image[8:24, 8:24] = 255
    assert face_mask_from_image(image, 32, 32).sum() == 255 * 256
    assert face_mask_from_image(image, 64, 64).shape == (64, 64)


# --- Whisper features ------------------------------------------------------------------------------

def test_mel_filters_are_whispers_table():
    ours = mel_filters()
    assert ours.dtype == np.float32 and ours.shape == (80, 201)
    # The sha256 of OpenAI's mel_filters.npz "mel_80" array (float32, C order), as EchoMimic ships it.
    assert hashlib.sha256(ours.tobytes()).hexdigest() == \
        "85818f156f7e189453901a515e4726d270d307f976e161cf9403e8caab405498"
    from transformers.audio_utils import mel_filter_bank
    theirs = mel_filter_bank(num_frequency_bins=201, num_mel_filters=80, min_frequency=0.0, max_frequency=8000.0,
                             sampling_rate=16000, norm="slaney", mel_scale="slaney").T
    assert np.abs(ours - theirs).max() < 1e-8  # another formulation of the same filters


def direct_log_mel(audio):
    """Whisper's log-mel written out: periodic Hann, |STFT|^2 without the last frame, mel filters
    (transformers' construction), log10 floored at the clip maximum - 8, (x + 4) / 4."""
    from transformers.audio_utils import mel_filter_bank
    filters = torch.tensor(mel_filter_bank(num_frequency_bins=201, num_mel_filters=80, min_frequency=0.0,
                                           max_frequency=8000.0, sampling_rate=16000, norm="slaney",
                                           mel_scale="slaney").T, dtype=torch.float32)
    spectrum = torch.stft(torch.from_numpy(audio), 400, 160, window=torch.hann_window(400), center=True,
                          pad_mode="reflect", return_complex=True)
    power = spectrum.abs()[:, :-1] ** 2
    log_mel = torch.log10(torch.clamp(filters @ power, min=1e-10))
    return (torch.maximum(log_mel, log_mel.max() - 8.0) + 4.0) / 4.0


def direct_encoder_states(checkpoint, mel):
    """The OpenAI Whisper encoder's forward from its published structure, in float32, returning
    the input to the first block and every block's output (no final layer norm)."""
    state, dims = checkpoint["model_state_dict"], checkpoint["dims"]
    width, heads = dims["n_audio_state"], dims["n_audio_head"]
    x = torch.nn.functional.gelu(torch.nn.functional.conv1d(mel[None], state["encoder.conv1.weight"],
                                                            state["encoder.conv1.bias"], padding=1))
    x = torch.nn.functional.gelu(torch.nn.functional.conv1d(x, state["encoder.conv2.weight"],
                                                            state["encoder.conv2.bias"], stride=2, padding=1))
    x = x[0].T + state["encoder.positional_embedding"]
    outputs = [x]
    for block in range(dims["n_audio_layer"]):
        p = lambda name: state[f"encoder.blocks.{block}.{name}"]  # noqa: E731
        h = torch.nn.functional.layer_norm(x, (width,), p("attn_ln.weight"), p("attn_ln.bias"))
        q = h @ p("attn.query.weight").T + p("attn.query.bias")
        k = h @ p("attn.key.weight").T
        v = h @ p("attn.value.weight").T + p("attn.value.bias")
        head = width // heads
        mixed = []
        for i in range(heads):
            part = slice(i * head, (i + 1) * head)
            weights = torch.softmax(q[:, part] @ k[:, part].T / math.sqrt(head), dim=-1)
            mixed.append(weights @ v[:, part])
        x = x + torch.cat(mixed, dim=1) @ p("attn.out.weight").T + p("attn.out.bias")
        h = torch.nn.functional.layer_norm(x, (width,), p("mlp_ln.weight"), p("mlp_ln.bias"))
        x = x + torch.nn.functional.gelu(h @ p("mlp.0.weight").T + p("mlp.0.bias")) @ p("mlp.2.weight").T \
            + p("mlp.2.bias")
        outputs.append(x)
    return torch.stack(outputs, dim=1)  # (1500, layers + 1, width)


def direct_features(checkpoint, audio, fps, frames):
    mel = direct_log_mel(audio)
    total = mel.shape[1]
    steps = []
    for start in range(0, total, 3000):
        segment = torch.zeros(80, 3000)
        segment[:, :min(3000, total - start)] = mel[:, start:start + 3000]
        steps.append(direct_encoder_states(checkpoint, segment)[:(min(start + 3000, total) - start) // 2])
    steps = torch.cat(steps).numpy()
    result = np.zeros((frames, 50, steps.shape[-1]), np.float32)
    for i in range(frames):
        centre = int(i * 50 / fps)
        rows = []
        for index in range(centre - 4, centre + 6):
            rows.append(steps[min(max(index, 0), len(steps) - 1)])  # (layers, width)
        result[i] = np.concatenate(rows, axis=0)
    return result, steps


def test_whisper_features_match_a_direct_computation(tmp_path):
    checkpoint = tiny_whisper_checkpoint(seed=4)
    path = write_whisper_checkpoint(tmp_path / "whisper_tiny.pt", checkpoint)
    # 31 s: two 30 s segments, the second mostly padding; a louder stretch near the end.
    rng = np.random.default_rng(5)
    audio = (rng.standard_normal(31 * RATE) * 0.01).astype(np.float32)
    audio[30 * RATE:30 * RATE + 8000] += tone(0.5, 300, 0.5)
    frames = 31 * 25 + 6  # a few past the end of the audio
    ours = whisper_features(path, audio, 25, frames)
    expected, steps = direct_features(checkpoint, audio, 25, frames)
    assert ours.shape == (frames, 50, TINY_WHISPER_DIMS["n_audio_state"]) and ours.dtype == np.float32
    assert steps.shape[0] == 31 * 50
    scale = np.abs(expected).max()
    assert np.abs(ours - expected).max() < 2e-5 * scale, np.abs(ours - expected).max() / scale
    assert np.array_equal(ours[-1], ours[-2])  # frames past the end repeat the last steps
    # Frame i at fps: steps int(i*50/fps) - 4 .. + 5, each clamped; step-major, then the 5 states.
    encoder = load_whisper_encoder(path)
    states = encoder.clip_states(audio)
    assert np.abs(states - steps).max() < 2e-5 * scale
    windows = frame_features(states, 24, 3)
    assert np.array_equal(windows[0], np.concatenate([states[0]] * 5 + [states[i] for i in range(1, 6)]))
    assert np.array_equal(windows[2], np.concatenate([states[i] for i in range(10)]))  # int(2 * 50 / 24) = 4


def test_whisper_runs_in_float16_as_on_a_gpu(audio_networks):
    """The release runs Whisper in float16 on a GPU (layer norms and softmax in float32)."""
    audio = tone(1.0)
    single = whisper_features(audio_networks.audio_encoder, audio, FPS, 6, dtype=torch.float16)
    full = whisper_features(audio_networks.audio_encoder, audio, FPS, 6, dtype=torch.float32)
    assert single.dtype == np.float32 and not np.array_equal(single, full)
    assert np.abs(single - full).max() < 1e-2 * np.abs(full).max()
    assert np.array_equal(single, single.astype(np.float16).astype(np.float32))  # float16 values


def test_whisper_encoder_matches_transformers(tmp_path):
    """The same states from transformers' WhisperEncoder with the checkpoint's weights renamed."""
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    checkpoint = tiny_whisper_checkpoint(seed=6)
    dims = checkpoint["dims"]
    config = WhisperConfig(d_model=dims["n_audio_state"], encoder_layers=dims["n_audio_layer"],
                           encoder_attention_heads=dims["n_audio_head"], encoder_ffn_dim=4 * dims["n_audio_state"],
                           num_mel_bins=80, max_source_positions=dims["n_audio_ctx"], activation_function="gelu")
    hf = WhisperEncoder(config).eval()
    names = {"attn.query": "self_attn.q_proj", "attn.key": "self_attn.k_proj", "attn.value": "self_attn.v_proj",
             "attn.out": "self_attn.out_proj", "attn_ln": "self_attn_layer_norm", "mlp.0": "fc1", "mlp.2": "fc2",
             "mlp_ln": "final_layer_norm"}
    converted = {}
    for key, value in checkpoint["model_state_dict"].items():
        if not key.startswith("encoder."):
            continue
        key = key[len("encoder."):].replace("blocks.", "layers.").replace("ln_post", "layer_norm")
        key = key.replace("positional_embedding", "embed_positions.weight")
        for old, new in names.items():
            key = key.replace(f".{old}.", f".{new}.")
        converted[key] = value
    result = hf.load_state_dict(converted, strict=False)
    assert not result.unexpected_keys and not result.missing_keys  # (no key bias on either side)
    captured = []
    hf.layers[0].register_forward_pre_hook(lambda _m, args: captured.append(args[0][0]))
    for layer in hf.layers:
        layer.register_forward_hook(lambda _m, _a, out: captured.append((out[0] if isinstance(out, tuple) else out)[0]))
    mel = log_mel_spectrogram(tone(2.0))
    segment = torch.nn.functional.pad(mel, (0, 3000 - mel.shape[1]))
    with torch.no_grad():
        hf(segment[None])
        path = write_whisper_checkpoint(tmp_path / "w.pt", checkpoint)
        ours = load_whisper_encoder(path)(segment[None])[0]
    theirs = torch.stack(captured, dim=0)
    assert ours.shape == theirs.shape == (5, 1500, dims["n_audio_state"])
    assert (ours - theirs).abs().max() < 2e-5 * theirs.abs().max()


def test_log_mel_floor_uses_the_whole_clip():
    quiet = (np.random.default_rng(1).standard_normal(3 * RATE) * 1e-4).astype(np.float32)
    loud = np.concatenate([quiet, tone(1.0, 500, 0.9)])
    alone, whole = log_mel_spectrogram(quiet), log_mel_spectrogram(loud)
    assert whole.shape == (80, 4 * RATE // 160)
    assert not torch.allclose(alone, whole[:, :alone.shape[1]])  # the later loud second raises the floor
    assert abs(float(whole.max() - whole.min()) - 2.0) < 1e-5  # floor: 8 decades below the clip maximum, / 4
    assert float(alone.max() - alone.min()) <= 2.0 + 1e-5


def test_whisper_checkpoint_errors_name_the_file(tmp_path):
    bad = tmp_path / "whisper_tiny.pt"
    torch.save({"model_state_dict": {}}, bad)
    with pytest.raises(ValueError, match="not an OpenAI Whisper checkpoint"):
        load_whisper_encoder(bad)
    checkpoint = tiny_whisper_checkpoint()
    del checkpoint["model_state_dict"]["encoder.blocks.3.mlp.2.bias"]
    write_whisper_checkpoint(bad, checkpoint)
    with pytest.raises(ValueError, match="encoder.blocks.3.mlp.2.bias"):
        load_whisper_encoder(bad)


# --- networks and attention ------------------------------------------------------------------------

def test_networks_are_echomimics(audio_networks):
    EchoMimicPipeline(audio_networks)  # installs the attention processors
    reference, denoiser = audio_networks.reference_unet, audio_networks.denoising_unet
    assert not any(name.endswith("attn2.processor") for name in reference.attn_processors)  # no cross-attention
    assert not any(".attn2." in key or ".norm2." in key for key in reference.state_dict() if "attentions" in key
                   and "transformer_blocks" in key)
    width = TINY_WHISPER_DIMS["n_audio_state"]
    assert denoiser.down_blocks[0].attentions[0].transformer_blocks[0].attn2.to_k.weight.shape[1] == width
    kinds = {name: type(p).__name__ for name, p in denoiser.attn_processors.items()}
    assert kinds["down_blocks.0.attentions.0.transformer_blocks.0.attn2.processor"] == "ScaledCrossAttention"
    assert kinds["down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor"] == "ReferenceReader"
    assert kinds["down_blocks.0.motion_modules.0.transformer_blocks.0.attn2.processor"] == "AttnProcessor2_0"
    assert audio_networks.face_locator.conv_in.in_channels == 1


def test_audio_attention_counts_three_times():
    from diffusers.models.attention_processor import Attention, AttnProcessor2_0

    from marionette.models.reference_attention import ScaledCrossAttention
    torch.manual_seed(0)
    attention = Attention(query_dim=16, cross_attention_dim=8, heads=2, dim_head=8)
    hidden, context = torch.randn(3, 5, 16), torch.randn(3, 7, 8)
    plain = AttnProcessor2_0()(attention, hidden, context)
    assert torch.equal(ScaledCrossAttention(3.0)(attention, hidden, context), plain * 3.0)


def test_reference_bank_is_kept_in_float16(audio_networks, reference, features):
    pipeline = EchoMimicPipeline(audio_networks)
    seen = {}
    original = pipeline.bank.clear

    def clear():  # look at the bank before the pipeline empties it at the end
        seen.update({k: v.dtype for k, v in pipeline.bank.features.items()})
        original()
    pipeline.bank.clear = clear
    run(pipeline, reference, features[:4])
    assert seen and set(seen.values()) == {torch.float16}


def test_guidance_halves_in_one_batch_equal_two_separate_passes(audio_networks, reference, features):
    """Unconditional half: zero audio features, zero face-locator feature, no reference bank."""
    from diffusers.image_processor import VaeImageProcessor
    from PIL import Image

    from marionette.models.denoising import encode_reference
    pipeline = EchoMimicPipeline(audio_networks)
    nets = audio_networks
    with torch.no_grad():
        latents_ref = encode_reference(nets.vae, VaeImageProcessor(vae_scale_factor=8), Image.fromarray(reference),
                                       SIZE, SIZE, torch.device("cpu"), torch.float32)
        pipeline.bank.clear()
        nets.reference_unet(latents_ref, torch.zeros((), dtype=torch.long), None, return_dict=False)
        face = pipeline._face_locator_features(4, SIZE, SIZE, face_box_mask(SIZE, SIZE, (10, 10, 50, 50)), None)
        audio = torch.from_numpy(features[:4])
        latents = torch.randn(1, 4, 4, SIZE // 8, SIZE // 8)
        timestep = torch.tensor(500)
        both = pipeline._denoise(latents, timestep, audio, face([0, 1, 2, 3]), True, False)
        conditional = pipeline._denoise(latents, timestep, audio, face([0, 1, 2, 3]), False, False)
        pipeline.bank.enabled = False
        unconditional = pipeline._denoise(latents, timestep, torch.zeros_like(audio),
                                          torch.zeros_like(face([0, 1, 2, 3])), False, False)
        pipeline.bank.enabled = True
    assert torch.allclose(both[1:], conditional, atol=2e-4)
    assert torch.allclose(both[:1], unconditional, atol=2e-4)
    assert (conditional - unconditional).abs().max() > 1e-2


def test_velocity_round_trip_is_the_identity_up_to_rounding():
    from marionette.models.unets import ddim_scheduler
    alphas = ddim_scheduler().alphas_cumprod
    prediction, sample = torch.randn(2, 4, 3, 8, 8), torch.randn(2, 4, 3, 8, 8)
    for t in (999, 500, 1):
        back = velocity_round_trip(prediction, sample, alphas, torch.tensor(t))
        assert torch.allclose(back, prediction, atol=1e-4 if t > 1 else 1e-2)
    half = velocity_round_trip(prediction.half(), sample.half(), alphas, torch.tensor(700))
    assert half.dtype == torch.float16 and torch.allclose(half.float(), prediction, atol=2e-2)


# --- generation ------------------------------------------------------------------------------------

def test_frames_stream_in_order_and_the_seed_decides(audio_networks, reference, features):
    pipeline = EchoMimicPipeline(audio_networks)
    first = run(pipeline, reference, features)
    assert [i for i, _ in first] == list(range(14))
    assert all(f.shape == (SIZE, SIZE, 3) and f.dtype == np.uint8 for _, f in first)
    assert frames_equal(first, run(pipeline, reference, features))
    assert not frames_equal(first, run(pipeline, reference, features, seed=12))
    stop = threading.Event()
    stop.set()
    assert run(pipeline, reference, features, stop=stop) == []


def test_the_audio_changes_the_frames(audio_networks, reference):
    pipeline = EchoMimicPipeline(audio_networks)
    silence = whisper_features(audio_networks.audio_encoder, np.zeros(RATE, np.float32), FPS, 6)
    speech = whisper_features(audio_networks.audio_encoder, tone(1.0), FPS, 6)
    assert not np.allclose(silence, speech)
    quiet, loud = run(pipeline, reference, silence), run(pipeline, reference, speech)
    differing = [not np.array_equal(a, b) for (_, a), (_, b) in zip(quiet, loud)]
    assert all(differing)


def test_the_face_mask_changes_the_frames(audio_networks, reference, features):
    pipeline = EchoMimicPipeline(audio_networks)
    small = run(pipeline, reference, features[:5], face_mask=face_box_mask(SIZE, SIZE, (20, 20, 30, 30)))
    whole = run(pipeline, reference, features[:5], face_mask=None)
    assert not frames_equal(small, whole)


def release_loop(pipeline, reference, features, face, steps, guidance, seed, shift, clamp):
    """The release's loop written out independently of the pipeline's own (its network call reused):
    windows of 12 at starts 0, 9, ... wrapping, shifted by step * shift, sums / counts, guidance,
    DDIM, then 1 / 0.18215 * latents decoded one frame at a time."""
    from diffusers.image_processor import VaeImageProcessor
    from PIL import Image

    nets = pipeline.networks
    frames = len(features)
    with torch.no_grad():
        pixels = VaeImageProcessor(vae_scale_factor=8).preprocess(Image.fromarray(reference), height=SIZE, width=SIZE)
        nets.scheduler.set_timesteps(steps)
        pipeline.bank.clear()
        nets.reference_unet(nets.vae.encode(pixels).latent_dist.mean * 0.18215, torch.zeros((), dtype=torch.long),
                            None, return_dict=False)
        noise = torch.randn((1, 4, frames, SIZE // 8, SIZE // 8), generator=torch.Generator().manual_seed(seed))
        latents = noise.clamp(-1.5, 1.5) if clamp else noise
        audio = torch.from_numpy(features)
        starts = range(0, frames, 9) if frames > 12 else [0]
        length = 12 if frames > 12 else frames
        for step, t in enumerate(nets.scheduler.timesteps):
            total = torch.zeros((2,) + latents.shape[1:])
            count = torch.zeros((1, 1, frames, 1, 1))
            for start in starts:
                window = [(start + k + step * shift) % frames for k in range(length)]
                total[:, :, window] += pipeline._denoise(latents[:, :, window], t, audio[window], face(window), True,
                                                         False)
                count[:, :, window] += 1
            uncond, cond = (total / count).chunk(2)
            latents = nets.scheduler.step(uncond + guidance * (cond - uncond), t, latents).prev_sample
        pipeline.bank.clear()
        latents = 1 / 0.18215 * latents
        images = []
        for f in range(frames):
            image = (nets.vae.decode(latents[:, :, f]).sample / 2 + 0.5).clamp(0, 1)
            images.append((image[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8))
    return images


def test_the_loop_follows_the_release_schedule(audio_networks, reference, features):
    pipeline = EchoMimicPipeline(audio_networks)
    mask = face_box_mask(SIZE, SIZE, (14, 10, 50, 54))
    ours = run(pipeline, reference, features, face_mask=mask, steps=3, guidance=2.5, seed=7)
    face = pipeline._face_locator_features(14, SIZE, SIZE, mask, None)
    theirs = release_loop(pipeline, reference, features, face, steps=3, guidance=2.5, seed=7, shift=2, clamp=True)
    assert len(ours) == len(theirs) == 14
    assert all(np.array_equal(a, b) for (_, a), b in zip(ours, theirs))


def test_pose_mode_follows_the_maps(reference):
    networks, _config, _checkpoint = tiny_networks(seed=2, mode="pose")
    assert networks.face_locator.conv_in.in_channels == 3
    pipeline = EchoMimicPipeline(networks)
    feats = whisper_features(networks.audio_encoder, tone(0.7), FPS, 14)
    rng = np.random.default_rng(3)
    maps = [rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8) for _ in range(14)]
    other = [m.copy() for m in maps]
    other[2][20:40, 20:40] = (250, 200, 10)
    first = list(pipeline(reference, feats, SIZE, SIZE, pose_maps=maps, steps=2, seed=1))
    second = list(pipeline(reference, feats, SIZE, SIZE, pose_maps=other, steps=2, seed=1))
    assert frames_equal(first, list(pipeline(reference, feats, SIZE, SIZE, pose_maps=maps, steps=2, seed=1)))
    assert not np.array_equal(first[2][1], second[2][1])
    with pytest.raises(ValueError, match="one echomimic-face map per frame"):
        list(pipeline(reference, feats, SIZE, SIZE, pose_maps=maps[:4], steps=2))
    # The maps reach the face locator as RGB / 255; the noise is not clamped; windows move 3 frames a step.
    face = pipeline._face_locator_features(14, SIZE, SIZE, None, maps)
    with torch.no_grad():
        direct = networks.face_locator(torch.from_numpy(np.stack(maps)).permute(0, 3, 1, 2).float() / 255.0)
    assert torch.equal(face(list(range(14))), direct)
    theirs = release_loop(pipeline, reference, feats, face, steps=2, guidance=2.5, seed=1, shift=3, clamp=False)
    assert all(np.array_equal(a, b) for (_, a), b in zip(first, theirs))


def test_accelerated_runs_without_guidance(reference):
    networks, _config, _checkpoint = tiny_networks(seed=3, accelerated=True)
    pipeline = EchoMimicPipeline(networks)
    calls = []
    forward = networks.denoising_unet.forward

    def counting(sample, *args, **kwargs):
        calls.append(sample.shape[0])
        return forward(sample, *args, **kwargs)
    networks.denoising_unet.forward = counting
    feats = whisper_features(networks.audio_encoder, tone(0.5), FPS, 4)
    frames = list(pipeline(reference, feats, SIZE, SIZE, face_mask=None, seed=2))  # the release's 6 steps, cfg 1
    networks.denoising_unet.forward = forward
    assert len(frames) == 4 and calls == [1] * 6  # one window, one half, six steps


# --- weights folder --------------------------------------------------------------------------------

@pytest.mark.parametrize("mode,accelerated", [("audio", False), ("audio", True), ("pose", False), ("pose", True)])
def test_release_layout_loads_back_identical(tmp_path, mode, accelerated):
    networks, _config = write_release(tmp_path, seed=4, mode=mode, accelerated=accelerated)
    files = RELEASE_FILES[(mode, accelerated)]
    for stem in files.stems():
        assert (tmp_path / f"{stem}.pth").is_file()
    motion = torch.load(tmp_path / f"{files.motion_module}.pth", weights_only=True)
    assert any(".temporal_transformer.transformer_blocks.0.attention_blocks.1.to_q." in k for k in motion)
    loaded = load_networks(tmp_path, mode, accelerated)
    assert (loaded.mode, loaded.accelerated) == (mode, accelerated)
    for name in ("vae", "reference_unet", "denoising_unet", "face_locator", "audio_encoder"):
        expected, got = getattr(networks, name).state_dict(), getattr(loaded, name).state_dict()
        assert expected.keys() == got.keys(), name
        assert all(torch.equal(expected[k], got[k]) for k in expected), name


def test_loaded_networks_give_the_same_frames(tmp_path, reference, features):
    networks, _config = write_release(tmp_path, seed=5)
    loaded = load_networks(tmp_path)
    assert frames_equal(run(EchoMimicPipeline(networks), reference, features[:5]),
                        run(EchoMimicPipeline(loaded), reference, features[:5]))


def test_a_missing_file_is_named_before_anything_is_read(tmp_path, monkeypatch):
    write_release(tmp_path, seed=6, mode="pose")
    (tmp_path / "face_locator_pose.pth").unlink()
    (tmp_path / WHISPER_CHECKPOINT).unlink()

    def must_not_read(*_args, **_kwargs):
        raise AssertionError("a checkpoint was read before the folder was checked")
    monkeypatch.setattr(checkpoints, "read_state_dict", must_not_read)
    monkeypatch.setattr(checkpoints, "load_whisper_encoder", must_not_read)
    with pytest.raises(WeightsError) as error:
        load_networks(tmp_path, "pose")
    message = str(error.value)
    assert "face_locator_pose.pth" in message and "audio_processor/whisper_tiny.pt" in message
    assert "pose (landmark) driven" in message
    with pytest.raises(WeightsError, match="denoising_unet.pth"):  # the audio variant's files are not there
        load_networks(tmp_path, "audio")
    with pytest.raises(WeightsError, match="does not exist"):
        load_networks(tmp_path / "nowhere")


def test_denoiser_weights_layer_as_the_release_loads_them(tmp_path):
    """The denoiser's checkpoint wins over the motion modules' file; keys neither holds come from the
    base UNet's weights when the folder has them; without them the missing key is named."""
    from safetensors.torch import save_file

    networks, _config = write_release(tmp_path, seed=7)
    state = torch.load(tmp_path / "denoising_unet.pth", weights_only=True)
    motion_key = "down_blocks.0.motion_modules.0.temporal_transformer.proj_in.bias"
    diffusers_key = "down_blocks.0.motion_modules.0.proj_in.bias"
    state[motion_key] = torch.full_like(networks.denoising_unet.state_dict()[diffusers_key], 7.0)
    conv_in = state.pop("conv_in.weight")
    state["not_in_the_model.weight"] = torch.zeros(1)  # ignored, as the release's strict=False load does
    torch.save(state, tmp_path / "denoising_unet.pth")
    with pytest.raises(WeightsError, match="conv_in.weight.*diffusion_pytorch_model.safetensors"):
        load_networks(tmp_path)
    base = tmp_path / checkpoints.BASE_UNET_FOLDER
    other_width = "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight"  # SD's 768: does not fit
    save_file({"conv_in.weight": conv_in.contiguous(), other_width: torch.zeros(32, 768)},
              str(base / "diffusion_pytorch_model.safetensors"))
    loaded = load_networks(tmp_path).denoising_unet.state_dict()
    assert torch.equal(loaded["conv_in.weight"], conv_in)
    assert torch.equal(loaded[diffusers_key], torch.full_like(loaded[diffusers_key], 7.0))
    assert torch.equal(loaded[other_width], networks.denoising_unet.state_dict()[other_width])


def test_safetensors_twins_load_the_same(tmp_path):
    networks, _config = write_release(tmp_path, seed=8, mode="pose", accelerated=True)
    written, _left = convert_to_safetensors(tmp_path)
    assert sorted(p.name for p in written) == sorted(f"{s}.safetensors" for s in RELEASE_FILES[("pose", True)].stems())
    for path in tmp_path.glob("*.pth"):
        path.unlink()
    loaded = load_networks(tmp_path, "pose", True)
    expected = networks.denoising_unet.state_dict()
    assert all(torch.equal(expected[k], v) for k, v in loaded.denoising_unet.state_dict().items())
