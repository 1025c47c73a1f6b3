"""The wan-animate model side on the CPU: a tiny Wan-Animate in the released diffusers layout, random weights.

The streamed generator must give the frames diffusers' WanAnimatePipeline gives for the same inputs
and seed, segment by segment, and resume mid-shot to the same frames."""

import json
import shutil
import socket
import threading

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("ftfy")

from PIL import Image

from marionette.engines.wan_animate.pipeline import CarryState, generate_segments, plan_segments
from marionette.engines.wan_animate.weights import WanAnimateError, check_weights_folder, load_pipeline

from tiny_wan_animate import MOTION_SIZE, save_tiny_release

SIZE = 32
STEPS = 2
PROMPT = "a person dancing"
FLOAT8_MEAN_LEVELS = 2  # float8 weights against bfloat16 on the tiny release: measured mean 0.43, max 7


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    return save_tiny_release(tmp_path_factory.mktemp("Wan2.2-Animate-14B-Diffusers"))


@pytest.fixture(scope="module")
def pipe(release):
    return load_pipeline(release, "cpu")


def make_inputs(frames: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    colours = lambda shape: rng.integers(0, 256, shape, dtype=np.uint8)  # noqa: E731
    return {
        "reference": colours((24, 40, 3)),  # another aspect: the pipeline letterboxes it
        "pose": [colours((SIZE, SIZE, 3)) for _ in range(frames)],
        "face": [colours((48, 48, 3)) for _ in range(frames)],
        "background": [colours((SIZE, SIZE, 3)) for _ in range(frames)],
        "mask": [(rng.random((SIZE, SIZE)) > 0.5).astype(np.uint8) * 255 for _ in range(frames)],
    }


def pipeline_output(pipe, inputs, mode="animate", length=5, carry=1, guidance=1.0, seed=7, prompt=PROMPT,
                    output_type="np"):
    """diffusers' own WanAnimatePipeline.__call__ on the same inputs."""
    pil = lambda images: [Image.fromarray(image) for image in images]  # noqa: E731
    extra = {"background_video": pil(inputs["background"]), "mask_video": pil(inputs["mask"])} \
        if mode == "replace" else {}
    return pipe(image=Image.fromarray(inputs["reference"]), pose_video=pil(inputs["pose"]),
                face_video=pil(inputs["face"]), prompt=prompt, negative_prompt="walking", height=SIZE, width=SIZE,
                segment_frame_length=length, prev_segment_conditioning_frames=carry, num_inference_steps=STEPS,
                guidance_scale=guidance, mode=mode, generator=torch.Generator("cpu").manual_seed(seed),
                output_type=output_type, **extra).frames[0]


def stream(pipe, inputs, mode="animate", length=5, carry=1, guidance=1.0, seed=7, prompt=PROMPT, **kwargs):
    replace = mode == "replace"
    return generate_segments(pipe, inputs["reference"], inputs["pose"], inputs["face"], height=SIZE, width=SIZE,
                             background=inputs["background"] if replace else None,
                             mask=inputs["mask"] if replace else None, mode=mode, prompt=prompt,
                             negative_prompt="walking", segment_frame_length=length, carry=carry, steps=STEPS,
                             guidance=guidance, seed=seed, **kwargs)


def streamed_frames(segments) -> np.ndarray:
    return np.concatenate([segment.frames for segment in segments])


@pytest.mark.parametrize("mode,frames,length,carry,guidance,expected_starts", [
    ("animate", 11, 5, 1, 1.0, [0, 5, 9]),
    ("animate", 23, 13, 5, 1.0, [0, 13, 21]),
    ("replace", 11, 5, 1, 1.0, [0, 5, 9]),
    ("replace", 23, 13, 5, 1.0, [0, 13, 21]),
    ("animate", 9, 5, 1, 2.5, [0, 5]),  # classifier-free guidance: negative prompt, blank face
])
def test_streamed_segments_equal_the_pipeline(pipe, mode, frames, length, carry, guidance, expected_starts):
    inputs = make_inputs(frames, seed=frames)
    expected = pipeline_output(pipe, inputs, mode, length, carry, guidance)
    segments = list(stream(pipe, inputs, mode, length, carry, guidance))
    assert [segment.first_frame for segment in segments] == expected_starts
    got = streamed_frames(segments)
    assert got.shape == (frames, SIZE, SIZE, 3) and got.dtype == np.uint8
    assert np.array_equal(got, (expected * 255).round().astype(np.uint8))
    assert len(np.unique(got)) > 50  # real pictures, not a constant


def test_uint8_frames_are_the_pipelines_own_pil_frames(pipe):
    inputs = make_inputs(7, seed=1)
    images = pipeline_output(pipe, inputs, output_type="pil")
    assert np.array_equal(streamed_frames(stream(pipe, inputs)), np.stack([np.asarray(i) for i in images]))


def test_first_segment_is_yielded_before_the_second_is_denoised(pipe):
    events = []
    segments = stream(pipe, make_inputs(9), on_step=lambda segment, step: events.append(("step", segment, step)))
    for segment in segments:
        events.append(("yield", segment.first_frame))
    assert events == [("step", 0, 0), ("step", 0, 1), ("yield", 0), ("step", 1, 0), ("step", 1, 1), ("yield", 5)]


def test_resume_from_a_middle_frame_equals_the_uninterrupted_run(pipe, tmp_path):
    inputs = make_inputs(17, seed=3)  # segments of 5, carry 1: frames 0-4, 5-8, 9-12, 13-16
    uninterrupted = streamed_frames(stream(pipe, inputs))

    state_dir = tmp_path / "job"
    first_run = stream(pipe, inputs, state_dir=state_dir)
    stored = [next(first_run).frames, next(first_run).frames]  # frames 0..8, then the backend dies
    first_run.close()
    assert CarryState.saved_segments(state_dir) == [0, 1]
    assert np.array_equal(np.concatenate(stored), uninterrupted[:9])

    steps = []
    resumed = list(stream(pipe, inputs, state_dir=state_dir, start_frame=11,
                          on_step=lambda segment, step: steps.append(segment)))
    assert resumed[0].first_frame == 11
    assert np.array_equal(streamed_frames(resumed), uninterrupted[11:])
    assert min(steps) == 2  # started from segment 1's state: segments 0 and 1 were not recomputed
    assert CarryState.saved_segments(state_dir) == [2, 3]  # only the states a resume can need are kept


def test_resume_without_a_usable_state_recomputes_the_same_frames(pipe, tmp_path):
    inputs = make_inputs(13, seed=4)
    uninterrupted = streamed_frames(stream(pipe, inputs))
    steps = []
    resumed = list(stream(pipe, inputs, state_dir=tmp_path / "empty", start_frame=6,
                          on_step=lambda segment, step: steps.append(segment)))
    assert np.array_equal(streamed_frames(resumed), uninterrupted[6:]) and min(steps) == 0

    other_seed = tmp_path / "other"
    list(stream(pipe, inputs, seed=8, state_dir=other_seed))  # states made with another seed are not used
    assert np.array_equal(streamed_frames(stream(pipe, inputs, state_dir=other_seed, start_frame=10)),
                          uninterrupted[10:])


def test_stop_ends_the_stream_between_denoising_steps(pipe):
    stop = threading.Event()

    def on_step(segment, step):
        if segment == 1:
            stop.set()
    segments = list(stream(pipe, make_inputs(13), stop=stop, on_step=on_step))
    assert [segment.first_frame for segment in segments] == [0]
    stop.set()
    assert list(stream(pipe, make_inputs(13), stop=stop)) == []


@pytest.mark.parametrize("change", ["prompt", "face", "pose"])
def test_prompt_face_crops_and_pose_maps_each_change_the_frames(pipe, change):
    inputs = make_inputs(5, seed=5)
    baseline = streamed_frames(stream(pipe, inputs))
    changed = dict(inputs)
    prompt = PROMPT
    if change == "prompt":
        prompt = "the person walking in the video"
    else:
        changed[change] = [255 - image for image in inputs[change]]
    other = streamed_frames(stream(pipe, changed, prompt=prompt))
    assert (other != baseline).mean() > 0.05


def test_shots_the_pipeline_cannot_plan_still_stream(pipe):
    one = list(stream(pipe, make_inputs(1)))
    assert [(s.first_frame, len(s.frames)) for s in one] == [(0, 1)]
    three = list(stream(pipe, make_inputs(3), length=13, carry=5))  # no more frames than carry
    assert [(s.first_frame, len(s.frames)) for s in three] == [(0, 3)]


def test_segment_plan():
    assert plan_segments(100, 78, 1).length == 77 and plan_segments(100, 80, 1).length == 81
    for frames, length, carry in [(1, 5, 1), (5, 5, 1), (6, 5, 1), (77, 77, 1), (200, 77, 5), (23, 13, 5)]:
        plan = plan_segments(frames, length, carry)
        covered = [frame for segment in range(plan.count) for frame in plan.output_range(segment)]
        assert covered == list(range(frames))
        assert all(frame in plan.output_range(plan.segment_of(frame)) for frame in range(frames))
    with pytest.raises(WanAnimateError, match="at least 13"):
        plan_segments(30, 9, 5)
    with pytest.raises(WanAnimateError, match="1 or 5"):
        plan_segments(30, 9, 2)


def test_size_not_a_multiple_of_16_is_refused_before_any_work(pipe):
    inputs = make_inputs(3)
    with pytest.raises(WanAnimateError, match="multiples of 16.*40x32"):
        generate_segments(pipe, inputs["reference"], inputs["pose"], inputs["face"], height=32, width=40)
    with pytest.raises(WanAnimateError, match="face crops"):
        generate_segments(pipe, inputs["reference"], inputs["pose"], inputs["face"][:2], height=32, width=32)
    with pytest.raises(WanAnimateError, match="background"):
        generate_segments(pipe, inputs["reference"], inputs["pose"], inputs["face"], height=32, width=32,
                          mode="replace")


# --- loading ----------------------------------------------------------------------------------

def broken_copy(release, tmp_path, damage) -> str:
    folder = tmp_path / "copy"
    shutil.copytree(release, folder)
    damage(folder)
    return folder


@pytest.mark.parametrize("damage,message", [
    (lambda f: shutil.rmtree(f), "does not exist"),
    (lambda f: (f / "model_index.json").unlink(), "no model_index.json"),
    (lambda f: (f / "model_index.json").write_text(json.dumps({"_class_name": "WanPipeline"})), "'WanPipeline'"),
    (lambda f: shutil.rmtree(f / "vae"), "no vae/"),
    (lambda f: (f / "text_encoder" / "model.safetensors").unlink(), "no weights in text_encoder/"),
    (lambda f: (f / "transformer" / "diffusion_pytorch_model-00002-of-00003.safetensors").unlink(),
     "lacks diffusion_pytorch_model-00002-of-00003.safetensors"),
    (lambda f: (f / "scheduler" / "scheduler_config.json").unlink(), "no scheduler/scheduler_config.json"),
])
def test_loading_errors_name_the_cause(release, tmp_path, damage, message, monkeypatch):
    from diffusers import WanAnimatePipeline

    folder = broken_copy(release, tmp_path, damage)

    def never(*args, **kwargs):
        raise AssertionError("weights were loaded before the folder was checked")
    monkeypatch.setattr(WanAnimatePipeline, "from_pretrained", never)
    with pytest.raises(WanAnimateError, match=message):
        load_pipeline(folder, "cpu")


def test_a_damaged_weights_file_is_named(release, tmp_path):
    folder = broken_copy(release, tmp_path, lambda f: (f / "vae" / "diffusion_pytorch_model.safetensors")
                         .write_bytes(b"\x00" * 64))
    with pytest.raises(WanAnimateError, match="cannot load Wan-Animate from"):
        load_pipeline(folder, "cpu")


def test_loading_is_local_and_keeps_the_vae_in_float32(release, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("the loader tried to reach the network")
    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    assert check_weights_folder(release) == release
    pipe = load_pipeline(release, "cpu", dtype=torch.bfloat16)
    assert pipe.vae.dtype == torch.float32
    assert pipe.transformer.dtype == pipe.text_encoder.dtype == pipe.image_encoder.dtype == torch.bfloat16
    assert pipe.transformer.config.motion_encoder_size == MOTION_SIZE


def test_group_offload_gives_the_same_frames(release, pipe):
    inputs = make_inputs(6, seed=6)
    offloaded = load_pipeline(release, "cpu", offload="group")
    assert np.array_equal(streamed_frames(stream(offloaded, inputs)), streamed_frames(stream(pipe, inputs)))


def linear_weight_bytes(module) -> int:
    """Bytes of the matrices of the module's linear layers (nearly all of a full-size transformer)."""
    return sum(m.weight.numel() * m.weight.element_size() for m in module.modules() if isinstance(m, torch.nn.Linear))


def test_float8_transformer_weights_halve_its_memory_and_keep_the_frames(release):
    inputs = make_inputs(6, seed=6)
    plain = load_pipeline(release, "cpu", dtype=torch.bfloat16)
    float8 = load_pipeline(release, "cpu", dtype=torch.bfloat16, transformer_weights="float8")
    linear = [m for m in float8.transformer.blocks.modules() if isinstance(m, torch.nn.Linear)]
    assert {m.weight.dtype for m in linear} == {torch.float8_e4m3fn}
    assert linear_weight_bytes(float8.transformer.blocks) * 2 == linear_weight_bytes(plain.transformer.blocks)
    assert float8.vae.dtype == torch.float32 and float8.text_encoder.dtype == torch.bfloat16
    difference = np.abs(streamed_frames(stream(float8, inputs)).astype(int)
                        - streamed_frames(stream(plain, inputs)).astype(int))
    assert 0 < difference.mean() < FLOAT8_MEAN_LEVELS, difference.mean()


@pytest.mark.parametrize("kwargs,message", [
    ({"offload": "model"}, "on the CPU"),
    ({"offload": "disk"}, "unknown offload"),
    ({"transformer_weights": "int4"}, "unknown transformer_weights"),
])
def test_offload_settings_are_checked(release, kwargs, message):
    with pytest.raises(WanAnimateError, match=message):
        load_pipeline(release, "cpu", **kwargs)
