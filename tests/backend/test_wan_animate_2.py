"""The wan-animate-2 engine against diffusers' own Wan-Animate-2 pipelines (base and distilled), on tiny
random weights saved in the released layout: the pipeline, called as its documentation calls it, is
the golden. Then streaming, resume, stopping, colour matching, and the folder checks."""

import json
import shutil
import threading

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers.modular_pipelines.wan_animate_2")

from marionette import color_match
from marionette.engines.wan_animate_2.pipeline import area_request, first_frame_of, generate_segments, segment_of
from marionette.engines.wan_animate_2.weights import (WanAnimate2Error, check_weights_folder, load_pipeline,
                                                      set_guidance)

from tiny_wan_animate_2 import save_tiny_release

HEIGHT, WIDTH = 96, 64
PROMPT = "a person dancing"
STEPS = 2


@pytest.fixture(scope="module")
def releases(tmp_path_factory):
    root = tmp_path_factory.mktemp("wan-animate-2")
    return {variant: save_tiny_release(root / variant, variant, seed=3 if variant == "base" else 4)
            for variant in ("base", "distilled")}


@pytest.fixture(scope="module")
def golden(releases):
    """The pipelines as their documentation loads them: the reference the engine must equal."""
    from diffusers import ModularPipeline

    pipes = {}
    for variant, folder in releases.items():
        pipe = ModularPipeline.from_pretrained(str(folder))
        pipe.load_components(dtype=torch.float32)
        pipes[variant] = pipe
    return pipes


@pytest.fixture(scope="module")
def engine_pipes(releases):
    """The same folders through the engine's own loader."""
    return {variant: load_pipeline(folder) for variant, folder in releases.items()}


def shot(frames: int, seed: int = 0, height: int = HEIGHT, width: int = WIDTH):
    rng = np.random.default_rng(seed)
    reference = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    # A driving video with motion: a bright square moving over a dark plate.
    driving = []
    for index in range(frames):
        frame = np.full((height, width, 3), 30, np.uint8)
        x = 4 + 3 * index
        frame[20:44, x % (width - 16):x % (width - 16) + 16] = (220, 180, 90)
        driving.append(frame)
    return reference, driving


def pipeline_frames(pipe, reference, driving, segment, carry, seed=7, guidance=None, negative_prompt=None,
                    height=HEIGHT, width=WIDTH):
    from diffusers.guiders import ClassifierFreeGuidance
    from PIL import Image

    if guidance is not None:
        pipe.update_components(guider=ClassifierFreeGuidance(guidance_scale=guidance))
    videos = pipe(image=Image.fromarray(reference), driving_video=[Image.fromarray(f) for f in driving], prompt=PROMPT,
                  negative_prompt=negative_prompt, height=height, width=width, segment_frame_length=segment,
                  prev_segment_conditioning_frames=carry, num_inference_steps=STEPS,
                  generator=torch.Generator("cpu").manual_seed(seed), output="videos")
    return np.round(np.asarray(videos[0]) * 255).astype(np.uint8)


def streamed(pipe, reference, driving, segment, carry, seed=7, **kwargs):
    return list(generate_segments(pipe, reference, driving, height=HEIGHT, width=WIDTH, prompt=PROMPT,
                                  segment=segment, carry=carry, steps=STEPS, seed=seed, **kwargs))


def stacked(segments) -> np.ndarray:
    return np.stack([frame for segment in segments for frame in segment.frames])


@pytest.mark.parametrize("variant,frames,segment,carry", [
    ("base", 13, 5, 1),  # 3 segments plus mirrored padding
    ("base", 22, 13, 5),
    ("distilled", 11, 5, 1),
    ("distilled", 16, 13, 5),
    ("distilled", 3, 5, 1),  # shorter than a segment
])
def test_streamed_segments_equal_the_pipeline(golden, engine_pipes, variant, frames, segment, carry):
    reference, driving = shot(frames, seed=frames)
    expected = pipeline_frames(golden[variant], reference, driving, segment, carry)
    set_guidance(engine_pipes[variant], variant, 3.0 if variant == "base" else 1.0)
    segments = streamed(engine_pipes[variant], reference, driving, segment, carry)
    assert expected.shape == (frames, HEIGHT, WIDTH, 3)
    assert [s.first_frame for s in segments] == [first_frame_of(k, segment, carry) for k in range(len(segments))]
    assert np.array_equal(stacked(segments), expected)


def test_frames_come_at_the_job_size_where_the_pipelines_area_arithmetic_falls_short(golden, engine_pipes):
    """The pipeline sizes its frames from height x width as an area with float square roots: asked for
    112x144 (as for 832x480) it makes frames 16 pixels narrower. The engine asks for the area that
    lands on the size, and its frames equal the pipeline's for that request."""
    height, width = 144, 112
    reference, driving = shot(5, seed=3, height=height, width=width)
    short = pipeline_frames(golden["distilled"], reference, driving, 5, 1, height=height, width=width)
    assert short.shape[1:3] != (height, width)  # the pipeline's own call, asked for the exact size
    request = area_request(height, width, height, width)
    expected = pipeline_frames(golden["distilled"], reference, driving, 5, 1, height=request[0], width=request[1])
    segments = list(generate_segments(engine_pipes["distilled"], reference, driving, height=height, width=width,
                                      prompt=PROMPT, segment=5, carry=1, steps=STEPS, seed=7))
    assert expected.shape == (5, height, width, 3) and np.array_equal(stacked(segments), expected)
    assert area_request(480, 832, 480, 832) != (480, 832)  # the headline size needs the larger request too
    assert area_request(96, 64, 96, 64) == (96, 64)


def test_guidance_and_negative_prompt_reach_the_base_model(golden, engine_pipes):
    reference, driving = shot(9, seed=1)
    set_guidance(engine_pipes["base"], "base", 5.0)
    ours = stacked(streamed(engine_pipes["base"], reference, driving, 5, 1, negative_prompt="blurry"))
    assert np.array_equal(ours, pipeline_frames(golden["base"], reference, driving, 5, 1, guidance=5.0,
                                                negative_prompt="blurry"))
    set_guidance(engine_pipes["base"], "base", 3.0)
    assert not np.array_equal(ours, stacked(streamed(engine_pipes["base"], reference, driving, 5, 1)))
    with pytest.raises(WanAnimate2Error, match="distilled Wan-Animate-2 samples without guidance"):
        set_guidance(engine_pipes["distilled"], "distilled", 3.0)


def test_each_segment_is_yielded_before_the_next_starts(engine_pipes):
    reference, driving = shot(13)
    started = []
    segments = generate_segments(engine_pipes["distilled"], reference, driving, height=HEIGHT, width=WIDTH,
                                 segment=5, carry=1, steps=STEPS, on_segment=started.append)
    first = next(segments)
    assert first.first_frame == 0 and len(first.frames) == 5 and started == [0]
    assert next(segments).first_frame == 5 and started == [0, 1]


def test_resume_from_a_middle_frame_equals_the_uninterrupted_run(engine_pipes, tmp_path):
    pipe = engine_pipes["distilled"]
    reference, driving = shot(17, seed=2)
    whole = stacked(streamed(pipe, reference, driving, 5, 1, state_dir=tmp_path / "state"))
    for start in (9, 10, 16):  # frame 9 starts segment 2; 10 is inside it; 16 is in the last segment
        started = []
        segments = streamed(pipe, reference, driving, 5, 1, start_frame=start, state_dir=tmp_path / "state",
                            on_segment=started.append)
        assert started[0] == segment_of(start, 5, 1)  # the earlier segments are not recomputed
        resumed = stacked(segments)
        first = segments[0].first_frame
        assert np.array_equal(resumed, whole[first:first + len(resumed)]) and first + len(resumed) == 17
    # Without the saved state the run starts over, to the same frames.
    started = []
    again = streamed(pipe, reference, driving, 5, 1, start_frame=10, state_dir=tmp_path / "empty",
                     on_segment=started.append)
    assert started[0] == 0 and np.array_equal(stacked(again), whole)


def test_stop_ends_the_stream_between_denoising_steps(engine_pipes):
    reference, driving = shot(13)
    stop = threading.Event()
    calls = []

    def count(*_):
        calls.append(1)
        if len(calls) == 2:
            stop.set()

    hook = engine_pipes["distilled"].transformer.register_forward_hook(count)
    try:
        segments = streamed(engine_pipes["distilled"], reference, driving, 5, 1, stop=stop)
    finally:
        hook.remove()
    assert segments == [] and len(calls) == 2  # stopped inside the first segment, before its third call


def test_colour_matching_takes_a_synthetic_drift_out():
    """Segments whose colours drift (a growing gain and cast, as long Wan shots drift) come back with
    the first segment's Lab statistics."""
    rng = np.random.default_rng(5)
    base = [np.clip(rng.normal(120, 40, (48, 64, 3)), 0, 255).astype(np.uint8) for _ in range(4)]
    drifted = [[np.clip(image.astype(float) * (1 + 0.12 * k) + (12 * k, 0, -8 * k), 0, 255).astype(np.uint8)
                for image in base] for k in range(4)]
    target = color_match.lab_statistics(drifted[0])
    before = [np.abs(color_match.lab_statistics(segment)[0] - target[0]).max() for segment in drifted[1:]]
    matched = [color_match.match_statistics(segment, target) for segment in drifted[1:]]
    after = [np.abs(color_match.lab_statistics(segment)[0] - target[0]).max() for segment in matched]
    assert min(before) > 4.0 and max(after) < 1.0, (before, after)
    print("Lab mean drift from the first segment, before and after matching:", before, after)


def test_colour_matching_in_the_engine_keeps_the_first_segment(engine_pipes, tmp_path):
    pipe = engine_pipes["distilled"]
    reference, driving = shot(13, seed=6)
    plain = streamed(pipe, reference, driving, 5, 1)
    matched = streamed(pipe, reference, driving, 5, 1, state_dir=tmp_path,
                       color=color_match.ColorMatch("first_segment"))
    assert np.array_equal(plain[0].frames, matched[0].frames)
    target = color_match.lab_statistics(plain[0].frames)
    for before, after in zip(plain[1:], matched[1:]):
        assert np.abs(color_match.lab_statistics(after.frames)[0] - target[0]).max() <= \
            np.abs(color_match.lab_statistics(before.frames)[0] - target[0]).max() + 1e-6
    resumed = streamed(pipe, reference, driving, 5, 1, start_frame=9, state_dir=tmp_path,
                       color=color_match.ColorMatch("first_segment"))
    assert np.array_equal(stacked(resumed), stacked(matched)[9:])


def test_the_folder_says_base_or_distilled(releases):
    assert check_weights_folder(releases["base"]) == "base"
    assert check_weights_folder(releases["distilled"]) == "distilled"


@pytest.mark.parametrize("damage,message", [
    ("index", "has no modular_model_index.json"),
    ("other", "is for 'WanModularPipeline', not Wan-Animate-2"),
    ("part", "has no vae/config.json"),
    ("shard", "one of the shards its index names"),
    ("nowhere", "does not exist"),
])
def test_bad_folders_are_named(releases, tmp_path, damage, message):
    folder = tmp_path / "copy"
    shutil.copytree(releases["distilled"], folder)
    if damage == "index":
        (folder / "modular_model_index.json").unlink()
    elif damage == "other":
        index = json.loads((folder / "modular_model_index.json").read_text())
        index["_class_name"] = "WanModularPipeline"
        (folder / "modular_model_index.json").write_text(json.dumps(index))
    elif damage == "part":
        (folder / "vae" / "config.json").unlink()
    elif damage == "shard":
        next((folder / "transformer").glob("diffusion_pytorch_model-*.safetensors")).unlink()
    else:
        folder = tmp_path / "nowhere"
    with pytest.raises(WanAnimate2Error, match=message):
        check_weights_folder(folder)


def test_a_damaged_weights_file_is_named(releases, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(releases["distilled"], folder)
    (folder / "vae" / "diffusion_pytorch_model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(WanAnimate2Error, match=f"cannot load .*{folder}|cannot load Wan-Animate-2 from"):
        load_pipeline(folder)


def test_loading_is_local(releases, monkeypatch):
    """The index of a local copy names the Hub repository; loading reads the copy and nothing else."""
    import huggingface_hub

    def no_network(*args, **kwargs):
        raise AssertionError("the loader went to the Hub")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_network)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", no_network)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pipe = load_pipeline(releases["base"])
    assert pipe.vae.dtype == torch.float32 and type(pipe).__name__ == "WanAnimate2ModularPipeline"


def test_float8_transformer_weights_are_stored_in_float8(releases):
    pipe = load_pipeline(releases["distilled"], dtype=torch.bfloat16, transformer_weights="float8")
    linear = [m for m in pipe.transformer.blocks.modules() if isinstance(m, torch.nn.Linear)]
    assert linear and {m.weight.dtype for m in linear} == {torch.float8_e4m3fn}
    assert pipe.vae.dtype == torch.float32
    with pytest.raises(WanAnimate2Error, match="unknown transformer_weights"):
        load_pipeline(releases["distilled"], transformer_weights="int4")
