"""The wan-vace engine on a tiny Wan-VACE release (tiny_wan_vace.py) against diffusers' WanVACEPipeline
itself: one clip equals the pipeline's own call; longer shots equal the pipeline called clip by clip
by Marionette's rule (the previous clip's last frames kept through VACE's mask); a resumed run equals
an uninterrupted one; the command line; bad jobs refused by name."""

import threading

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from PIL import Image  # noqa: E402

from marionette.engines.wan_vace.pipeline import NEGATIVE_PROMPT, clip_length, generate_clips  # noqa: E402
from marionette.engines.wan_vace.weights import WanVaceError, check_weights_folder, load_pipeline  # noqa: E402
from marionette.models.segments import first_frame_of  # noqa: E402
from tiny_wan_vace import save_tiny_release  # noqa: E402

WIDTH, HEIGHT, STEPS = 48, 32, 2
PROMPT = "a person dancing in the video"


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    return save_tiny_release(tmp_path_factory.mktemp("vace") / "Wan2.1-VACE-1.3B-diffusers", seed=3)


@pytest.fixture(scope="module")
def pipe(release):
    return load_pipeline(release, "cpu")


def shot(frames: int, seed: int = 0):
    """A reference image (another size than the frames: the pipeline letterboxes it) and control maps."""
    rng = np.random.default_rng(seed)
    reference = rng.integers(0, 256, (40, 30, 3), np.uint8)
    base = rng.integers(0, 256, (HEIGHT, WIDTH, 3), np.uint8)
    control = [np.roll(base, 3 * i, axis=1) for i in range(frames)]
    return reference, control


def pipeline_frames(pipe, reference, control, seed, generator=None, mask=None, **settings):
    """round(255 x) of the pipeline's own output for the control maps as video."""
    length = clip_length(len(control), 81)
    video = [Image.fromarray(control[min(i, len(control) - 1)]) for i in range(length)]
    output = pipe(prompt=PROMPT, negative_prompt=NEGATIVE_PROMPT, video=video, mask=mask,
                  reference_images=[Image.fromarray(reference)], height=HEIGHT, width=WIDTH, num_frames=length,
                  num_inference_steps=STEPS, guidance_scale=settings.get("guidance", 5.0),
                  conditioning_scale=settings.get("conditioning_scale", 1.0),
                  generator=generator or torch.Generator("cpu").manual_seed(seed), output_type="np").frames[0]
    return [np.round(frame * 255).astype(np.uint8) for frame in output[:len(control)]]


def run(pipe, reference, control, **options):
    frames = {}
    for clip in generate_clips(pipe, reference, control, height=HEIGHT, width=WIDTH, prompt=PROMPT,
                               steps=STEPS, **options):
        for offset, frame in enumerate(clip.frames):
            frames[clip.first_frame + offset] = frame
    return [frames[i] for i in sorted(frames)]


def test_the_folder_is_checked_and_named(release, tmp_path):
    assert check_weights_folder(release) == "24-wide"  # a tiny width; 1.3B and 14B are named
    (tmp_path / "copy").mkdir()
    with pytest.raises(WanVaceError, match="has no model_index.json"):
        check_weights_folder(tmp_path / "copy")


@pytest.mark.parametrize("frames", [9, 7])  # 7 frames: the control padded to 9, the output trimmed
def test_one_clip_equals_the_pipeline(pipe, frames):
    reference, control = shot(frames, seed=frames)
    ours = run(pipe, reference, control, seed=11, guidance=5.0, conditioning_scale=0.7)
    expected = pipeline_frames(pipe, reference, control, 11, guidance=5.0, conditioning_scale=0.7)
    assert len(ours) == frames
    for a, b in zip(ours, expected):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(ours[0], run(pipe, reference, control, seed=12)[0])  # the seed matters


def test_clips_continue_through_vaces_mask(pipe):
    """Clips of 9 frames carrying 5: the second clip is the pipeline called with the first clip's last
    5 output frames as video under a black mask, then the control maps under a white one."""
    reference, control = shot(13, seed=4)
    ours = run(pipe, reference, control, seed=5, clip=9, carry=5)
    generator = torch.Generator("cpu").manual_seed(5)
    first = pipeline_frames(pipe, reference, control[:9], 5, generator=generator)
    continued = [first[4 + i] if i < 5 else control[4 + i] for i in range(9)]
    mask = [Image.new("L", (WIDTH, HEIGHT), 0)] * 5 + [Image.new("L", (WIDTH, HEIGHT), 255)] * 4
    second = pipeline_frames(pipe, reference, continued, 5, generator=generator, mask=mask)
    expected = first + second[5:]
    assert len(ours) == 13 and first_frame_of(1, 9, 5) == 9
    for index, (a, b) in enumerate(zip(ours, expected)):
        np.testing.assert_array_equal(a, b, err_msg=f"frame {index}")


def test_a_resumed_shot_equals_an_uninterrupted_one(pipe, tmp_path):
    reference, control = shot(19, seed=6)  # clips make frames 0-8, 9-16 and 17-18
    whole = run(pipe, reference, control, seed=8, clip=9, carry=1)
    started = []
    resumed = {}
    for clip in generate_clips(pipe, reference, control, height=HEIGHT, width=WIDTH, prompt=PROMPT, steps=STEPS,
                               seed=8, clip=9, carry=1, state_dir=tmp_path, start_frame=0):
        resumed.update({clip.first_frame + i: f for i, f in enumerate(clip.frames)})
        break  # the job stops after the first clip
    later = generate_clips(pipe, reference, control, height=HEIGHT, width=WIDTH, prompt=PROMPT, steps=STEPS,
                           seed=8, clip=9, carry=1, state_dir=tmp_path, start_frame=9, on_clip=started.append)
    for clip in later:
        resumed.update({clip.first_frame + i: f for i, f in enumerate(clip.frames)})
    assert started == [1, 2]  # the first clip is not made again
    assert sorted(resumed) == list(range(19))
    for index in range(19):
        np.testing.assert_array_equal(resumed[index], whole[index], err_msg=f"frame {index}")


def test_a_stop_ends_the_run_between_steps(pipe):
    reference, control = shot(9)
    stop = threading.Event()
    stop.set()
    assert run(pipe, reference, control, stop=stop) == []


def test_the_command_line_renders_depth_maps(release, pipe, tmp_path):
    from marionette.cli import main as marionette
    from marionette.images import encode_png

    _, control = shot(9, seed=9)
    # A reference at the frame size: jobs scale the reference image to it before any engine sees it.
    reference = np.random.default_rng(9).integers(0, 256, (HEIGHT, WIDTH, 3), np.uint8)
    (tmp_path / "depth").mkdir()
    for index, image in enumerate(control):
        (tmp_path / "depth" / f"f{index + 1:04d}.png").write_bytes(encode_png(image))
    (tmp_path / "ref.png").write_bytes(encode_png(reference))
    command = ["render", "--engine", "wan-vace", "--weights", str(release), "--reference", str(tmp_path / "ref.png"),
               "--maps", str(tmp_path / "depth"), "--settings", '{"control": "depth"}', "--prompt", PROMPT,
               "--seed", "3", "--steps", str(STEPS), "--guidance", "4", "--width", str(WIDTH), "--height",
               str(HEIGHT), "--device", "cpu", "--out", str(tmp_path / "out")]
    assert marionette(command) == 0
    written = sorted((tmp_path / "out").glob("*.png"))
    assert [p.name for p in written] == [f"f{i:04d}.png" for i in range(1, 10)]
    expected = pipeline_frames(pipe, reference, control, 3, guidance=4.0)
    from marionette_core.png import decode_png
    for path, frame in zip(written, expected):
        np.testing.assert_array_equal(decode_png(path.read_bytes())[..., :3], frame)


@pytest.mark.parametrize("change, words", [
    ({"--width": "40"}, "multiples of 16"),
    ({"--settings": '{"control": "depth", "clip": 10}'}, "1 more than a multiple of 4"),
    ({"--prompt": " "}, "needs a 'prompt'"),
    ({"--settings": '{"control": "pose"}'}, "one 'pose' map per frame"),
    ({"--weights": "/nonexistent/vace"}, "Wan-VACE weights folder /nonexistent/vace does not exist"),
])
def test_bad_jobs_are_refused_by_name(release, tmp_path, capsys, change, words):
    from marionette.cli import main as marionette
    from marionette.images import encode_png

    reference, control = shot(5)
    (tmp_path / "maps").mkdir()
    for index, image in enumerate(control):
        (tmp_path / "maps" / f"{index:06d}.png").write_bytes(encode_png(image))
    (tmp_path / "ref.png").write_bytes(encode_png(reference))
    options = {"--engine": "wan-vace", "--weights": str(release), "--reference": str(tmp_path / "ref.png"),
               "--settings": '{"control": "depth"}', "--prompt": PROMPT, "--width": str(WIDTH),
               "--height": str(HEIGHT), "--device": "cpu", "--out": str(tmp_path / "out")} | change
    command = ["render", *[item for pair in options.items() for item in pair]]
    command += ["--track", f"depth={tmp_path / 'maps'}"] if '"pose"' in options["--settings"] else \
        ["--maps", str(tmp_path / "maps")]
    assert marionette(command) == 2
    assert words in capsys.readouterr().err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def plate_shot(frames: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    plate = [rng.integers(0, 256, (HEIGHT, WIDTH, 3), np.uint8) for _ in range(frames)]
    masks = []
    for i in range(frames):  # the rig's region, moving
        mask = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
        mask[6:26, 10 + i:30 + i] = 255
        masks.append(mask)
    return plate, masks


def test_plate_mode_is_vaces_repaint_with_a_control(pipe):
    """The plate outside the mask, the control map inside it, the mask white there; then a second
    clip keeping the first's last frames."""
    reference, control = shot(13, seed=12)
    plate, masks = plate_shot(13, seed=13)
    ours = run(pipe, reference, control, seed=2, clip=9, carry=5, background=plate, mask=masks)

    def composed(i):
        inside = masks[i][..., 0] >= 128
        return np.where(inside[..., None], control[i], plate[i]), Image.fromarray((inside * 255).astype(np.uint8))

    generator = torch.Generator("cpu").manual_seed(2)
    frames, mask_images = zip(*(composed(i) for i in range(9)))
    first = pipeline_frames(pipe, reference, list(frames), 2, generator=generator, mask=list(mask_images))
    frames, mask_images = zip(*(composed(i) for i in range(4, 13)))
    frames, mask_images = list(frames), list(mask_images)
    frames[:5] = first[4:9]
    mask_images[:5] = [Image.new("L", (WIDTH, HEIGHT), 0)] * 5
    second = pipeline_frames(pipe, reference, frames, 2, generator=generator, mask=mask_images)
    expected = first + second[5:]
    assert len(ours) == 13
    for index, (a, b) in enumerate(zip(ours, expected)):
        np.testing.assert_array_equal(a, b, err_msg=f"frame {index}")


def test_plate_mode_from_the_command_line_needs_the_plate_and_the_mask(release, tmp_path, capsys):
    from marionette.cli import main as marionette
    from marionette.images import encode_png

    reference, control = shot(5, seed=14)
    plate, masks = plate_shot(5, seed=15)
    for name, images in (("maps", control), ("plate", plate), ("masks", masks)):
        (tmp_path / name).mkdir()
        for index, image in enumerate(images):
            (tmp_path / name / f"{index:06d}.png").write_bytes(encode_png(image))
    (tmp_path / "ref.png").write_bytes(encode_png(np.random.default_rng(1).integers(0, 256, (HEIGHT, WIDTH, 3),
                                                                                      np.uint8)))
    command = ["render", "--engine", "wan-vace", "--weights", str(release), "--reference", str(tmp_path / "ref.png"),
               "--maps", str(tmp_path / "maps"), "--settings", '{"control": "depth", "mode": "plate"}',
               "--prompt", PROMPT, "--steps", "1", "--width", str(WIDTH), "--height", str(HEIGHT), "--device", "cpu"]
    assert marionette([*command, "--out", str(tmp_path / "refused")]) == 2
    assert "plate mode takes one background plate ('background') per frame" in capsys.readouterr().err
    assert marionette([*command, "--background", str(tmp_path / "plate"), "--mask", str(tmp_path / "masks"),
                       "--out", str(tmp_path / "out")]) == 0
    assert len(list((tmp_path / "out").glob("*.png"))) == 5


def test_group_offload_and_float8_weights_load_and_run(release, pipe):
    """The placement settings the wan engines share: group offload keeps the frames exactly; float8
    weights store the blocks' matrices in float8 and stay near the bfloat16 frames."""
    reference, control = shot(5, seed=4)
    expected = run(pipe, reference, control, seed=3)
    streamed = load_pipeline(release, "cpu", offload="group")
    assert all(np.array_equal(a, b) for a, b in zip(run(streamed, reference, control, seed=3), expected))
    plain = run(load_pipeline(release, "cpu", torch.bfloat16), reference, control, seed=3)
    float8 = load_pipeline(release, "cpu", torch.bfloat16, transformer_weights="float8")
    linear = [m for m in float8.transformer.blocks.modules() if isinstance(m, torch.nn.Linear)]
    assert {m.weight.dtype for m in linear} == {torch.float8_e4m3fn}
    difference = np.abs(np.stack(run(float8, reference, control, seed=3)).astype(int) - np.stack(plain).astype(int))
    assert 0 < difference.mean() < 2  # measured mean 0.74 levels, max 9
