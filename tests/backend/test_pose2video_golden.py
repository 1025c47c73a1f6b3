"""The aniportrait and animate-anyone engines against goldens recorded from AniPortrait's and
Moore-AnimateAnyone's own inference code (goldens/make_pose2video.py; goldens/README.md): the same
seeded weights in the release layout, the same inputs and seed; the pose guider's output, every
denoiser call, every scheduler step and the frames."""

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from marionette.engines.animate_anyone.pipeline import AnimateAnyonePipeline
from marionette.engines.animate_anyone.weights import load_networks, save_release_layout

from goldens.compare import (assert_frames_within_one_level, assert_steps_within_rounding,
                             assert_within_rounding, golden_calls)
from goldens.recording import Recorder
from goldens.seeded_weights import reseed_checkpoint, seed_module
from tiny_animate_anyone import tiny_networks

pytestmark = pytest.mark.usefixtures("torch_one_thread")
DATA = Path(__file__).parent / "goldens" / "data"
SETTINGS = {guider: json.loads((DATA / f"{guider.replace('-', '_')}.json").read_text())
            for guider in ("aniportrait", "animate-anyone")}
CASES = [(guider, case) for guider, settings in SETTINGS.items() for case in settings["cases"]]
WINDOW = {"aniportrait": 16, "animate-anyone": 24}  # the originals' context_frames


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """guider -> the golden's weights, written by Marionette's own code in the release layout (each
    folder made once, when first asked for)."""
    made = {}

    def folder(guider: str) -> Path:
        if guider not in made:
            settings = SETTINGS[guider]
            made[guider] = tmp_path_factory.mktemp("pretrained_model")
            seed = settings["weights_seed"]
            networks, config = tiny_networks(unet_config=settings["unet_config"], guider=guider,
                                             guider_inner_dim=None)  # AniPortrait's: the release's 16 heads of 88
            seed_module(networks.vae, seed)
            seed_module(networks.image_encoder, seed)
            save_release_layout(networks, config, made[guider])
            for name, keys in settings["release_keys"].items():
                assert reseed_checkpoint(made[guider] / name, seed) == keys, f"{name}: other key names than the release"
        return made[guider]
    return folder


@pytest.fixture(scope="module")
def pipelines(folders):
    """guider -> a pipeline loaded from its golden's weights folder (each built once)."""
    built = {}

    def pipeline(guider: str) -> AnimateAnyonePipeline:
        if guider not in built:
            built[guider] = AnimateAnyonePipeline(load_networks(folders(guider), guider), guider=guider)
        return built[guider]
    return pipeline


def guider_output(guider: str):
    """Our guider's output as the golden keeps it: per level (C, frames, h, w), AniPortrait's of the
    first guidance half (its batch is the window twice), Moore's of its one level."""
    if guider == "aniportrait":
        return lambda i, o: [level[: len(level) // 2].transpose(0, 1) for level in o]
    return lambda i, o: [o.transpose(0, 1)]


def record_run(pipeline, golden, settings) -> tuple[Recorder, list[int], np.ndarray]:
    nets = pipeline.networks
    recorder = Recorder()
    hooks = [recorder.watch(nets.image_encoder, "clip", lambda i, o: o.image_embeds),
             recorder.watch(nets.reference_unet, "reference_latents", lambda i, o: i[0][:1]),
             recorder.watch(nets.pose_guider, "guider", guider_output(pipeline.guider)),
             recorder.watch(nets.denoising_unet, "denoiser", lambda i, o: o[0])]
    step = nets.scheduler.step
    recorder.watch_steps(nets.scheduler)
    maps = list(golden["input/maps"])
    height, width = maps[0].shape[:2]
    try:
        emitted = list(pipeline(golden["input/reference"], maps, width, height, steps=settings["steps"],
                                guidance=settings["guidance"], seed=settings["seed"], window=WINDOW[pipeline.guider],
                                overlap=4))
    finally:
        for hook in hooks:
            hook.remove()
        nets.scheduler.step = step
    order = [index for index, _ in emitted]
    frames = np.stack([image for _, image in sorted(emitted, key=lambda item: item[0])])
    return recorder, order, frames


def last_step(calls: list, order: list[int], frames: int) -> list[np.ndarray]:
    """The last scheduler step, which Marionette takes frame group by frame group as windows finish,
    put together in frame order."""
    parts = [np.zeros(calls[0][0].shape[:2] + (frames,) + calls[0][0].shape[3:], np.float32) for _ in range(3)]
    start = 0
    for call in calls:
        count = call[0].shape[2]
        indices = order[start:start + count]
        for part, array in zip(parts, call):
            part[:, :, indices] = array
        start += count
    assert sorted(order) == list(range(frames)) and start == frames
    return parts


@pytest.mark.parametrize(("guider", "case"), CASES)
def test_equal_to_the_original_stage_by_stage(pipelines, guider, case):
    settings, pipeline = SETTINGS[guider], pipelines(guider)
    golden = np.load(DATA / f"{case}.npz")
    frames = len(golden["input/maps"])
    recorder, order, got_frames = record_run(pipeline, golden, settings)
    got = recorder.calls
    assert_within_rounding("CLIP image embedding", got["clip"][0], golden["clip/0"])
    assert_within_rounding("reference latents", got["reference_latents"][0], golden["reference_latents/0"])

    # AniPortrait's guider: one call per window (the same at every step); Moore's: one for the clip.
    expected_guider = golden_calls(golden, "guider")
    assert len(got["guider"]) == len(expected_guider)
    windows = 1 if frames <= WINDOW[pipeline.guider] else 2
    for w, expected in enumerate(expected_guider):
        for level, (ours, theirs) in enumerate(zip(got["guider"][w], expected, strict=True)):
            assert_within_rounding(f"guider window {w} level {level}", ours, theirs, exact=True)

    expected_denoiser = golden_calls(golden, "denoiser")
    assert len(got["denoiser"]) == len(expected_denoiser) == windows * settings["steps"]
    for call, (ours, theirs) in enumerate(zip(got["denoiser"], expected_denoiser)):
        assert_within_rounding(f"denoiser call {call}", ours, theirs)

    steps = settings["steps"]
    assert_steps_within_rounding(got["step"][:steps - 1] + [last_step(got["step"][steps - 1:], order, frames)],
                                 golden)

    assert_frames_within_one_level(got_frames, golden["frames"])
    if windows > 1:  # the second window wraps: its last frames are the clip's first, which come last
        assert order[-4:] == [0, 1, 2, 3]


@pytest.mark.parametrize(("guider", "case"), CASES)
def test_the_render_command_gives_the_original_frames(folders, guider, case, tmp_path):
    """What a user gets: the engine run by `marionette render` from PNG files, its default windows."""
    import subprocess
    import sys

    from marionette.images import decode_image, encode_png

    settings, golden = SETTINGS[guider], np.load(DATA / f"{case}.npz")
    (tmp_path / "maps").mkdir()
    for index, image in enumerate(golden["input/maps"]):
        (tmp_path / "maps" / f"{index:06d}.png").write_bytes(encode_png(image))
    (tmp_path / "reference.png").write_bytes(encode_png(golden["input/reference"]))
    height, width = golden["input/maps"].shape[1:3]
    command = [sys.executable, "-m", "marionette.cli", "render", "--engine", guider, "--weights", str(folders(guider)),
               "--reference", str(tmp_path / "reference.png"), "--maps", str(tmp_path / "maps"), "--width",
               str(width), "--height", str(height), "--steps", str(settings["steps"]), "--guidance",
               str(settings["guidance"]), "--seed", str(settings["seed"]), "--device", "cpu", "--out",
               str(tmp_path / "out")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    frames = np.stack([decode_image(path.read_bytes()) for path in sorted((tmp_path / "out").glob("*.png"))])
    assert_frames_within_one_level(frames, golden["frames"])
