"""The aniportrait engine against goldens recorded from AniPortrait's own inference code
(goldens/make_aniportrait.py; goldens/README.md): the same seeded weights in the release layout, the
same inputs and seed; the guider's levels, every denoiser call, every scheduler step and the frames."""

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
SETTINGS = json.loads((DATA / "aniportrait.json").read_text())


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """The golden's weights, written by Marionette's own code in the release layout and loaded back."""
    folder = tmp_path_factory.mktemp("pretrained_model")
    seed = SETTINGS["weights_seed"]
    networks, config = tiny_networks(unet_config=SETTINGS["unet_config"], guider="aniportrait",
                                     guider_inner_dim=None)  # the release's 16 heads of 88 channels
    seed_module(networks.vae, seed)
    seed_module(networks.image_encoder, seed)
    save_release_layout(networks, config, folder)
    for name, keys in SETTINGS["release_keys"].items():
        assert reseed_checkpoint(folder / name, seed) == keys, f"{name} names its tensors otherwise than the release"
    return AnimateAnyonePipeline(load_networks(folder, "aniportrait"), guider="aniportrait")


def record_run(pipeline, golden) -> tuple[Recorder, list[int], np.ndarray]:
    nets = pipeline.networks
    recorder = Recorder()
    hooks = [recorder.watch(nets.image_encoder, "clip", lambda i, o: o.image_embeds),
             recorder.watch(nets.reference_unet, "reference_latents", lambda i, o: i[0][:1]),
             # (frames, C, h, w) of the first guidance half -> (C, frames, h, w), as the golden keeps it
             recorder.watch(nets.pose_guider, "guider", lambda i, o: [level[: len(level) // 2].transpose(0, 1)
                                                                      for level in o]),
             recorder.watch(nets.denoising_unet, "denoiser", lambda i, o: o[0])]
    step = nets.scheduler.step
    recorder.watch_steps(nets.scheduler)
    maps = list(golden["input/maps"])
    height, width = maps[0].shape[:2]
    try:
        emitted = list(pipeline(golden["input/reference"], maps, width, height, steps=SETTINGS["steps"],
                                guidance=SETTINGS["guidance"], seed=SETTINGS["seed"], window=16, overlap=4))
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


@pytest.mark.parametrize("case", ["aniportrait_6", "aniportrait_24"])
def test_equal_to_the_original_stage_by_stage(pipeline, case):
    golden = np.load(DATA / f"{case}.npz")
    frames = len(golden["input/maps"])
    recorder, order, got_frames = record_run(pipeline, golden)
    got = recorder.calls
    assert_within_rounding("CLIP image embedding", got["clip"][0], golden["clip/0"])
    assert_within_rounding("reference latents", got["reference_latents"][0], golden["reference_latents/0"])

    expected_guider = golden_calls(golden, "guider")  # one call per window (the same at every step)
    windows = len(expected_guider)
    assert windows == (1 if frames <= 16 else 2)
    for w, expected in enumerate(expected_guider):
        for level, (ours, theirs) in enumerate(zip(got["guider"][w], expected, strict=True)):
            assert_within_rounding(f"guider window {w} level {level}", ours, theirs, exact=True)

    expected_denoiser = golden_calls(golden, "denoiser")
    assert len(got["denoiser"]) == len(expected_denoiser) == windows * SETTINGS["steps"]
    for call, (ours, theirs) in enumerate(zip(got["denoiser"], expected_denoiser)):
        assert_within_rounding(f"denoiser call {call}", ours, theirs)

    steps = SETTINGS["steps"]
    assert_steps_within_rounding(got["step"][:steps - 1] + [last_step(got["step"][steps - 1:], order, frames)],
                                 golden)

    assert_frames_within_one_level(got_frames, golden["frames"])
    if frames > 16:  # the second window wraps: its last frames are the clip's first, which come last
        assert order[-4:] == [0, 1, 2, 3]
