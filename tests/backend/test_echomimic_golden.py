"""The echomimic engine against goldens recorded from EchoMimic's own inference code
(goldens/make_echomimic.py; goldens/README.md), one per released variant: the same seeded weights in
the release layout, the same inputs and seed; the audio features, the face locator, every denoiser
call, every scheduler step and the frames."""

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from marionette.engines.echomimic.pipeline import EchoMimicPipeline
from marionette.engines.echomimic.weights import WHISPER_CHECKPOINT, load_networks, save_release_layout

from goldens.compare import (assert_frames_within_one_level, assert_steps_within_rounding,
                             assert_within_rounding, golden_calls)
from goldens.recording import Recorder
from goldens.seeded_weights import file_seed, reseed_checkpoint, seed_module, seeded_state
from tiny_echomimic import tiny_networks, tiny_whisper_checkpoint, write_whisper_checkpoint

pytestmark = pytest.mark.usefixtures("torch_one_thread")
DATA = Path(__file__).parent / "goldens" / "data"
SETTINGS = json.loads((DATA / "echomimic.json").read_text())
VARIANTS = {"echomimic_audio": ("audio", False), "echomimic_audio_acc": ("audio", True),
            "echomimic_pose": ("pose", False), "echomimic_pose_acc": ("pose", True)}


@pytest.fixture(scope="module")
def release_folder(tmp_path_factory):
    """The golden's weights for all four variants, written by Marionette's own code in the release
    layout (each checkpoint file reseeded by its key names, as the golden's were)."""
    folder = tmp_path_factory.mktemp("pretrained_weights")
    seed = SETTINGS["weights_seed"]
    for mode, accelerated in VARIANTS.values():
        networks, config, _ = tiny_networks(0, mode, accelerated, whisper_dims=SETTINGS["whisper_dims"])
        assert config == SETTINGS["unet_config"]
        seed_module(networks.vae, seed)
        save_release_layout(networks, config, folder)
    for name, keys in SETTINGS["release_keys"].items():
        stem = name.removesuffix(".pth")
        assert reseed_checkpoint(folder / name, file_seed(seed, stem)) == keys, f"{name}: other key names"
    checkpoint = tiny_whisper_checkpoint(0, SETTINGS["whisper_dims"])
    # The golden's Whisper file holds the whole model; the encoder's entries are all Marionette reads.
    encoder = {k: v for k, v in checkpoint["model_state_dict"].items() if k.startswith("encoder.")}
    write_whisper_checkpoint(folder / WHISPER_CHECKPOINT, {"dims": checkpoint["dims"],
                                                          "model_state_dict": seeded_state(encoder, seed)})
    return folder


def record_run(pipeline, golden, settings) -> tuple[Recorder, np.ndarray, np.ndarray]:
    nets = pipeline.networks
    recorder = Recorder()
    hooks = [recorder.watch(nets.face_locator, "face_locator"),
             recorder.watch(nets.denoising_unet, "denoiser", lambda i, o: o[0])]
    step = nets.scheduler.step
    recorder.watch_steps(nets.scheduler)
    frames, width, height = SETTINGS["frames"], SETTINGS["width"], SETTINGS["height"]
    try:
        features = pipeline.audio_features(golden["input/audio"], SETTINGS["fps"], frames)
        face = {"face_mask": golden["input/face_mask"]} if "input/face_mask" in golden.files \
            else {"pose_maps": list(golden["input/maps"])}
        emitted = list(pipeline(golden["input/reference"], features, width, height, steps=settings["steps"],
                                guidance=settings["guidance"], seed=SETTINGS["seed"], **face))
    finally:
        for hook in hooks:
            hook.remove()
        nets.scheduler.step = step
    assert [index for index, _ in emitted] == list(range(frames))
    return recorder, features, np.stack([image for _, image in emitted])


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_equal_to_the_original_stage_by_stage(release_folder, variant):
    golden = np.load(DATA / f"{variant}.npz")
    settings = SETTINGS["variants"][variant]
    mode, accelerated = VARIANTS[variant]
    pipeline = EchoMimicPipeline(load_networks(release_folder, mode, accelerated))
    recorder, features, frames = record_run(pipeline, golden, settings)
    got = recorder.calls

    audio_golden = np.load(DATA / "echomimic_audio.npz")  # every variant hears the same clip
    assert_within_rounding("audio features", features, audio_golden["audio_features/0"])

    expected_face = golden_calls(golden, "face_locator")
    assert len(got["face_locator"]) == len(expected_face)
    for ours, theirs in zip(got["face_locator"], expected_face):
        theirs = theirs[0].transpose(1, 0, 2, 3) if theirs.ndim == 5 else theirs  # (1, C, F, h, w) -> (F, C, h, w)
        assert_within_rounding("face locator", ours.reshape(theirs.shape), theirs)

    expected_denoiser = golden_calls(golden, "denoiser")
    assert len(got["denoiser"]) == len(expected_denoiser)
    for call, (ours, theirs) in enumerate(zip(got["denoiser"], expected_denoiser)):
        assert_within_rounding(f"denoiser call {call}", ours, theirs)

    assert_steps_within_rounding(got["step"], golden)

    assert_frames_within_one_level(frames, golden["frames"])


FACE_BOX = "28,17,68,67"  # a detector's box that the release enlarges by 10% a side: the golden's mask


def test_face_box_gives_the_golden_mask():
    from marionette.engines.echomimic.face_mask import face_box_mask

    golden = np.load(DATA / "echomimic_audio.npz")
    box = tuple(float(v) for v in FACE_BOX.split(","))
    assert np.array_equal(face_box_mask(SETTINGS["width"], SETTINGS["height"], box), golden["input/face_mask"])


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_the_render_command_gives_the_original_frames(release_folder, variant, tmp_path):
    """What a user gets: the engine run by `marionette render` from files (a 16-bit WAV, PNGs)."""
    import subprocess
    import sys
    import wave

    from marionette.images import decode_image, encode_png

    golden = np.load(DATA / f"{variant}.npz")
    settings = SETTINGS["variants"][variant]
    mode, accelerated = VARIANTS[variant]
    audio = np.load(DATA / "echomimic_audio.npz")["input/audio"]
    with wave.open(str(tmp_path / "line.wav"), "wb") as handle:
        handle.setnchannels(1), handle.setsampwidth(2), handle.setframerate(16000)
        handle.writeframes(np.round(audio * 32768).astype("<i2").tobytes())
    (tmp_path / "reference.png").write_bytes(encode_png(golden["input/reference"]))
    face = ["--face-box", FACE_BOX]
    if mode == "pose":
        (tmp_path / "maps").mkdir()
        for index, image in enumerate(golden["input/maps"]):
            (tmp_path / "maps" / f"{index:06d}.png").write_bytes(encode_png(image))
        face = ["--maps", str(tmp_path / "maps")]
    command = [sys.executable, "-m", "marionette.cli", "render", "--engine", "echomimic", "--weights",
               str(release_folder), "--reference", str(tmp_path / "reference.png"), "--audio",
               str(tmp_path / "line.wav"), "--fps", str(SETTINGS["fps"]), "--frames", str(SETTINGS["frames"]), *face,
               "--width", str(SETTINGS["width"]), "--height", str(SETTINGS["height"]), "--steps",
               str(settings["steps"]), "--guidance", str(settings["guidance"]), "--seed", str(SETTINGS["seed"]),
               "--device", "cpu", "--settings", json.dumps({"mode": mode, "accelerated": accelerated}),
               "--out", str(tmp_path / "out")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    frames = np.stack([decode_image(path.read_bytes()) for path in sorted((tmp_path / "out").glob("*.png"))])
    assert_frames_within_one_level(frames, golden["frames"])
