"""The animate-anyone engine on the CPU with tiny networks in the real architecture, random weights."""

import json
import re
import shutil
import threading

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from marionette.engines.animate_anyone.pipeline import AnimateAnyonePipeline, aniportrait_controls
from marionette.engines.animate_anyone.weights import load_networks, save_release_layout
from marionette.models.checkpoints import (WeightsError, convert_to_safetensors, motion_module_from_diffusers,
                                           motion_module_to_diffusers)
from marionette.models.windows import closed_loop_windows

from tiny_animate_anyone import tiny_networks

WIDTH, HEIGHT = 48, 64


@pytest.fixture(scope="module")
def inputs():
    rng = np.random.default_rng(0)
    reference = rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    maps = [rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8) for _ in range(7)]
    return reference, maps


@pytest.fixture(scope="module")
def release_folder(tmp_path_factory):
    networks, config = tiny_networks(seed=1)
    folder = tmp_path_factory.mktemp("pretrained_weights")
    save_release_layout(networks, config, folder)
    return folder


def run(pipeline, inputs, frames=7, **kwargs):
    reference, maps = inputs
    settings = dict(steps=3, guidance=3.5, seed=11, window=4, overlap=2)
    settings.update(kwargs)
    return list(pipeline(reference, maps[:frames], WIDTH, HEIGHT, **settings))


def test_release_layout_loads_back_identical(release_folder, inputs):
    original, _ = tiny_networks(seed=1)
    keys = torch.load(release_folder / "motion_module.pth", weights_only=True)
    assert any(".temporal_transformer.transformer_blocks.0.attention_blocks.1.to_q." in k for k in keys)
    assert any(k.endswith("ff_norm.weight") for k in keys) and any(".norms.0." in k for k in keys)
    loaded = load_networks(release_folder)
    for name in ("vae", "image_encoder", "reference_unet", "denoising_unet", "pose_guider"):
        expected, got = getattr(original, name).state_dict(), getattr(loaded, name).state_dict()
        assert expected.keys() == got.keys(), name
        assert all(torch.equal(expected[k], got[k]) for k in expected), name
    expected_frames = run(AnimateAnyonePipeline(original), inputs)
    loaded_frames = run(AnimateAnyonePipeline(loaded), inputs)
    assert sorted(i for i, _ in loaded_frames) == list(range(7))
    for (_, a), (_, b) in zip(expected_frames, loaded_frames):
        assert np.array_equal(a, b)


def test_safetensors_twins_give_the_same_output(release_folder, inputs, tmp_path):
    import shutil

    folder = tmp_path / "weights"
    shutil.copytree(release_folder, folder)
    written, _left = convert_to_safetensors(folder)
    assert sorted(p.name for p in written) == sorted(f"{s}.safetensors" for s in
                                                     ("denoising_unet", "reference_unet", "pose_guider", "motion_module"))
    for path in folder.glob("*.pth"):
        path.unlink()  # only the safetensors are left to load
    from_pth = run(AnimateAnyonePipeline(load_networks(release_folder)), inputs, frames=4)
    from_safetensors = run(AnimateAnyonePipeline(load_networks(folder)), inputs, frames=4)
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(from_pth, from_safetensors))


def test_motion_module_key_mapping_round_trips():
    networks, _ = tiny_networks()
    state = {k: v for k, v in networks.denoising_unet.state_dict().items() if "motion_modules" in k}
    original = motion_module_from_diffusers(state)
    assert all("temporal_transformer" in k for k in original)
    back = motion_module_to_diffusers(original)
    assert set(back) == {k for k in state if not k.endswith(".pe")}


def test_missing_or_mismatched_files_are_named(release_folder, tmp_path):
    import shutil

    folder = tmp_path / "weights"
    shutil.copytree(release_folder, folder)
    (folder / "pose_guider.pth").unlink()
    with pytest.raises(WeightsError, match="no pose_guider.pth"):
        load_networks(folder)
    shutil.copy(release_folder / "pose_guider.pth", folder / "pose_guider.pth")
    config = json.loads((folder / "stable-diffusion-v1-5/unet/config.json").read_text())
    config["block_out_channels"] = [32, 64, 64, 64]  # the checkpoints were made for another width
    (folder / "stable-diffusion-v1-5/unet/config.json").write_text(json.dumps(config))
    with pytest.raises(WeightsError, match="reference_unet.pth does not match the model"):
        load_networks(folder)
    with pytest.raises(WeightsError, match="does not exist"):
        load_networks(tmp_path / "nowhere")


def test_cached_reference_keys_values_equal_the_uncached_path(inputs):
    networks, _ = tiny_networks(seed=2)
    pipeline = AnimateAnyonePipeline(networks)
    cached = run(pipeline, inputs, frames=5)
    pipeline.bank.cache_projections = False
    uncached = run(pipeline, inputs, frames=5)
    for (_, a), (_, b) in zip(cached, uncached):
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1


def test_guidance_halves_in_one_batch_equal_two_separate_passes(inputs):
    """CFG semantics: the unconditional half sees no reference bank, the conditional half does."""
    networks, _ = tiny_networks(seed=3)
    pipeline = AnimateAnyonePipeline(networks)
    reference, _maps = inputs
    # Fill the bank as a generation does, then compare one step's predictions.
    from PIL import Image
    embeds = networks.image_encoder(pipeline.clip_processor.preprocess(
        Image.fromarray(reference).resize((224, 224)), return_tensors="pt").pixel_values).image_embeds.unsqueeze(1)
    latents_in = pipeline.reference_processor.preprocess(Image.fromarray(reference), height=HEIGHT, width=WIDTH)
    with torch.no_grad():
        ref_latents = networks.vae.encode(latents_in).latent_dist.mean * 0.18215
        pipeline.bank.clear()
        networks.reference_unet(ref_latents, torch.zeros(()), encoder_hidden_states=embeds, return_dict=False)
        pose = pipeline._guide(torch.rand(4, 3, HEIGHT, WIDTH))
        latents = torch.randn(1, 4, 4, HEIGHT // 8, WIDTH // 8)
        timestep = torch.tensor(500)
        both = pipeline._denoise(latents, timestep, embeds, pose, guided=True)
        conditional = pipeline._denoise(latents, timestep, embeds, pose, guided=False)
        pipeline.bank.enabled = False  # plain self-attention, zero image embedding
        unconditional = pipeline._denoise(latents, timestep, torch.zeros_like(embeds), pose, guided=False)
        pipeline.bank.enabled = True
    # Equal to float32 noise (batch size changes kernel blocking); the bank itself matters far more.
    assert torch.allclose(both[1:], conditional, atol=2e-4)
    assert torch.allclose(both[:1], unconditional, atol=2e-4)
    assert (conditional - unconditional).abs().max() > 1e-2


def test_windows_cover_the_clip_in_order_and_stream(inputs):
    assert closed_loop_windows(5, 24, 4) == [list(range(5))]
    windows = closed_loop_windows(50, 24, 4)  # as the originals' "uniform" context schedule
    assert [w[0] for w in windows] == [0, 20, 40] and windows[-1] == list(range(40, 50)) + list(range(14))
    assert all(len(w) == 24 for w in windows)
    networks, _ = tiny_networks(seed=4)
    pipeline = AnimateAnyonePipeline(networks)
    emitted = []
    reference, maps = inputs
    for index, image in pipeline(reference, maps, WIDTH, HEIGHT, steps=2, seed=5, window=4, overlap=2):
        emitted.append(index)
        assert image.shape == (HEIGHT, WIDTH, 3) and image.dtype == np.uint8
    # Windows [0-3] [2-5] [4-6, 0] [6, 0-2]: each frame as soon as the last window holding it is done.
    assert emitted == [3, 4, 5, 6, 0, 1, 2]


def test_same_seed_same_frames_and_stop(inputs):
    networks, _ = tiny_networks(seed=5)
    pipeline = AnimateAnyonePipeline(networks)
    first, second = run(pipeline, inputs, seed=3), run(pipeline, inputs, seed=3)
    other = run(pipeline, inputs, seed=4)
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(first, second))
    assert not all(np.array_equal(a, b) for (_, a), (_, b) in zip(first, other))
    stop = threading.Event()
    stop.set()
    assert run(pipeline, inputs, stop=stop) == []


def test_a_job_through_the_server(backend, release_folder):
    from marionette.images import encode_png
    from marionette_core.client import BackendClient, BackendError
    from marionette_core.png import decode_png

    import synthetic

    reference_png, reference_pose, poses = synthetic.job_files(5, width=48, height=64)
    maps = [encode_png(np.full((64, 48, 3), 40 * i, np.uint8)) for i in range(5)]
    client = BackendClient("127.0.0.1", backend.port, backend.token, timeout=120)
    client.connect()
    engines = {e["name"]: e for e in client.capabilities["engines"]}
    pose_input = {"name": "pose", "kind": "images", "style": "dwpose", "required": True}
    assert [{k: i[k] for k in pose_input} for i in engines["animate-anyone"]["inputs"]] == [pose_input]
    assert engines["animate-anyone"]["needs_weights"]
    job = {"engine": "animate-anyone", "reference_pose": reference_pose, "poses": poses, "width": 48, "height": 64,
           "settings": {"weights": str(release_folder), "steps": 2, "window": 4, "overlap": 2, "seed": 1}}
    client.submit(job, reference_png, {"pose": maps})
    frames = {}
    while True:
        message = client.receive()
        if message.type == "frame":
            frames[message.header["index"]] = decode_png(message.attachments[0])
        elif message.type == "done":
            break
    assert sorted(frames) == list(range(5)) and frames[0].shape == (64, 48, 3)
    # Without a weights folder the job reads the backend's default one (where `weights` fetches to):
    # refused at submit while it is empty, naming it and the command that fills it; then it renders.
    default_folder = backend.store.parent / "weights" / "animate-anyone"
    no_folder = {k: v for k, v in job["settings"].items() if k != "weights"}
    with pytest.raises(BackendError, match="fetch animate-anyone --to " + re.escape(str(default_folder))) as refused:
        client.submit({**job, "settings": no_folder}, reference_png, {"pose": maps})
    assert refused.value.code == "bad_request"
    shutil.copytree(release_folder, default_folder)
    client.submit({**job, "settings": no_folder}, reference_png, {"pose": maps})
    again = {}
    while (message := client.receive()).type != "done":
        if message.type == "frame":
            again[message.header["index"]] = decode_png(message.attachments[0])
    assert all(np.array_equal(again[i], frames[i]) for i in range(5))
    # For a GPU this backend lacks, the job is refused at submit, naming the cause.
    if not torch.cuda.is_available():
        with pytest.raises(BackendError, match="asks for device 'cuda', but this backend has no CUDA"):
            client.submit({**job, "settings": {**job["settings"], "device": "cuda"}}, reference_png, {"pose": maps})
    client.ping()  # the connection still serves


def test_render_and_convert_commands(tmp_path, release_folder):
    import shutil
    import subprocess
    import sys

    from marionette.images import decode_image, encode_png

    (tmp_path / "maps").mkdir()
    rng = np.random.default_rng(1)
    for frame in (7, 8, 9):
        (tmp_path / "maps" / f"{frame:06d}.png").write_bytes(encode_png(rng.integers(0, 256, (64, 48, 3), np.uint8)))
    (tmp_path / "ref.png").write_bytes(encode_png(rng.integers(0, 256, (64, 48, 3), np.uint8)))
    command = [sys.executable, "-m", "marionette.cli", "render", "--engine", "animate-anyone", "--weights",
               str(release_folder), "--reference", str(tmp_path / "ref.png"), "--maps", str(tmp_path / "maps"),
               "--out", str(tmp_path / "out"), "--steps", "2", "--window", "2", "--overlap", "1", "--seed", "3"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["000007.png", "000008.png", "000009.png"]
    assert decode_image((tmp_path / "out" / "000008.png").read_bytes()).shape == (64, 48, 3)

    folder = tmp_path / "weights"
    shutil.copytree(release_folder, folder)
    converted = subprocess.run([sys.executable, "-m", "marionette.cli", "convert-weights", str(folder)],
                               capture_output=True, text=True, timeout=300)
    assert converted.returncode == 0 and converted.stdout.count("wrote") == 4
    (folder / "motion_module.pth").unlink()
    (folder / "motion_module.safetensors").unlink()
    missing = subprocess.run(command[:7] + [str(folder)] + command[8:], capture_output=True, text=True, timeout=300)
    assert missing.returncode == 2 and "no motion_module.pth (or motion_module.safetensors)" in missing.stderr


def test_aniportrait_guider_release_layout_and_multiscale_features(tmp_path, inputs):
    from marionette.engines.animate_anyone.models import AniPortraitPoseGuider

    networks, config = tiny_networks(seed=7, guider="aniportrait")
    assert isinstance(networks.pose_guider, AniPortraitPoseGuider)
    keys = set(networks.pose_guider.state_dict())
    for expected in ("conv_layers.0.weight", "conv_layers.22.running_var", "final_proj.weight", "scale",
                     "conv_layers_1.4.weight", "conv_layers_4.1.num_batches_tracked",
                     "cross_attn1.proj_in.weight", "cross_attn4.transformer_blocks.0.attn1.to_q.weight",
                     "cross_attn2.transformer_blocks.0.ff.net.0.proj.weight", "cross_attn3.proj_out.bias"):
        assert expected in keys, expected
    with torch.no_grad():
        features = networks.pose_guider(torch.rand(2, 3, HEIGHT, WIDTH) * 2 - 1)
    shapes = [tuple(f.shape[1:]) for f in features]
    assert shapes == [(32, 8, 6), (32, 4, 3), (64, 2, 2), (128, 1, 1), (128, 1, 1)]

    save_release_layout(networks, config, tmp_path)
    loaded = load_networks(tmp_path, guider="aniportrait")
    expected_state, got_state = networks.pose_guider.state_dict(), loaded.pose_guider.state_dict()
    assert all(torch.equal(expected_state[k], got_state[k]) for k in expected_state)
    pipeline = AnimateAnyonePipeline(loaded, guider="aniportrait")
    frames = run(pipeline, inputs, frames=4)
    assert [i for i, _ in frames] == [0, 1, 2, 3]
    # The features after the down blocks matter: without them the frames differ.
    guide = pipeline._guide
    pipeline._guide = lambda controls: guide(controls)[:1]
    fewer = run(pipeline, inputs, frames=4)
    assert any(not np.array_equal(a, b) for (_, a), (_, b) in zip(frames, fewer))
    with pytest.raises(WeightsError, match="pose_guider.pth does not match"):
        load_networks(tmp_path, guider="animate-anyone")


def test_aniportrait_engine_renders_face_maps(tmp_path):
    import subprocess
    import sys

    from marionette.images import encode_png

    networks, config = tiny_networks(seed=8, guider="aniportrait")
    save_release_layout(networks, config, tmp_path / "weights")
    (tmp_path / "maps").mkdir()
    rng = np.random.default_rng(2)
    for frame in range(3):
        (tmp_path / "maps" / f"{frame:06d}.png").write_bytes(encode_png(rng.integers(0, 256, (64, 48, 3), np.uint8)))
    (tmp_path / "ref.png").write_bytes(encode_png(rng.integers(0, 256, (64, 48, 3), np.uint8)))
    result = subprocess.run(
        [sys.executable, "-m", "marionette.cli", "render", "--engine", "aniportrait", "--weights",
         str(tmp_path / "weights"), "--reference", str(tmp_path / "ref.png"), "--maps", str(tmp_path / "maps"),
         "--out", str(tmp_path / "out"), "--steps", "2", "--window", "2", "--overlap", "1"],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["000000.png", "000001.png", "000002.png"]


# Large enough that the guider's coarsest features (1/64) keep a few pixels, as at real sizes: a
# BatchNorm over a single value per channel is undefined (the original refuses it in training mode).
# The guider tests run in float64: batch statistics of different batches with equal statistics give
# equal features, but in float32 the rounding of the sums grows to 4e-4 through the layers.
GUIDE_WIDTH, GUIDE_HEIGHT = 192, 256


def random_maps(seed, count):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (GUIDE_HEIGHT, GUIDE_WIDTH, 3), dtype=np.uint8) for _ in range(count)]


def test_aniportrait_guider_input_and_stored_statistics(inputs):
    """Maps as 2v - 1 in the maps' channel order, in contiguous memory (on a channels-last tensor
    BatchNorm computes the batch variance another way); a generation neither uses nor changes the
    stored running statistics. Equality with the original itself: test_pose2video_golden.py."""
    networks, _ = tiny_networks(seed=9, guider="aniportrait")
    pipeline = AnimateAnyonePipeline(networks, guider="aniportrait")
    maps = random_maps(9, 3)
    controls = aniportrait_controls(maps, GUIDE_WIDTH, GUIDE_HEIGHT)
    assert controls.is_contiguous()
    assert controls[0, :, 5, 7].tolist() == [2.0 * v - 1 for v in maps[0][5, 7]]  # R first, as in the map
    assert controls.min() == -1 and controls.max() == 509
    stored = {k: v.clone() for k, v in networks.pose_guider.state_dict().items()}
    run(pipeline, inputs, frames=5)
    assert all(torch.equal(stored[k], v) for k, v in networks.pose_guider.state_dict().items())


def test_aniportrait_guider_features_depend_on_the_window():
    """Batch statistics: a frame's features depend on the other frames of its window; a window of
    identical frames gives the same features as the same frames in another window."""
    networks, _ = tiny_networks(seed=10, guider="aniportrait")
    pipeline = AnimateAnyonePipeline(networks, dtype=torch.float64, guider="aniportrait")
    controls = aniportrait_controls(random_maps(4, 8), GUIDE_WIDTH, GUIDE_HEIGHT)
    with torch.no_grad():
        features = pipeline._window_features(controls, [[0, 1, 2, 3], [0, 4, 5, 6]], guided=True)
        first, second = features(0), features(1)
        for level_first, level_second in zip(first, second, strict=True):
            scale = level_first[0].abs().max()
            assert (level_first[0] - level_second[0]).abs().max() > 0.05 * scale  # frame 0 changed
        same = pipeline._window_features(controls, [[7, 7, 7, 7], [7, 7]], guided=True)
        for level_four, level_two in zip(same(0), same(1), strict=True):
            assert torch.allclose(level_four[0], level_two[1], rtol=1e-9, atol=1e-10)
        # A frame alone in its window differs from the same frame among others.
        assert (same(0)[0][0] - pipeline._guide(controls[[7, 0]])[0][0]).abs().max() > 1e-3
