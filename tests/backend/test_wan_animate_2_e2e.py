"""wan-animate-2 end to end on the CPU, tiny random weights in the released layout: a job through a real
backend process (submit, stream, a kill -9 and a restart on the same store), bad jobs refused by name,
and `marionette render --driving`. Every frame is checked against the diffusers pipeline called as its
documentation calls it, on the same inputs."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers.modular_pipelines.wan_animate_2")

from PIL import Image

from marionette_core.client import BackendError

from marionette.cli import main as marionette
from marionette.images import decode_image, encode_png

import synthetic
from served import assert_same_frames, collect, images, pngs, read_folder
from tiny_wan_animate_2 import save_tiny_release

pytestmark = pytest.mark.usefixtures("torch_one_thread")
WIDTH, HEIGHT = 32, 48
STEPS = 2
PROMPT = "a person dancing"


@pytest.fixture(scope="module")
def releases(tmp_path_factory):
    root = tmp_path_factory.mktemp("weights")
    return {"base": save_tiny_release(root / "Wan2.2-Animate-2-14B-Diffusers", "base", seed=1),
            "distilled": save_tiny_release(root / "Wan2.2-Animate-2-14B-Distilled-Diffusers", "distilled", seed=2)}


@pytest.fixture(scope="module")
def golden(releases):
    from diffusers import ModularPipeline

    pipes = {}
    for variant, folder in releases.items():
        pipes[variant] = ModularPipeline.from_pretrained(str(folder))
        pipes[variant].load_components(dtype=torch.float32)
    return pipes


class Shot:
    """The synthetic figure as reference and keypoints, and a driving video with motion in it."""

    def __init__(self, frames: int, seed: int):
        self.frames = frames
        self.reference_png, self.reference_pose, self.poses = synthetic.job_files(frames, width=WIDTH, height=HEIGHT)
        self.reference = decode_image(self.reference_png)
        rng = np.random.default_rng(seed)
        plate = rng.integers(0, 80, (HEIGHT, WIDTH, 3), dtype=np.uint8)
        self.driving = []
        for index in range(frames):
            frame = plate.copy()
            x = (3 * index) % (WIDTH - 10)
            frame[10:34, x:x + 10] = rng.integers(150, 256, 3, dtype=np.uint8)
            self.driving.append(frame)

    def job(self, weights, seed=5, **settings) -> tuple[dict, dict]:
        job = {"engine": "wan-animate-2", "reference_pose": self.reference_pose, "poses": self.poses,
               "text": {"prompt": PROMPT}, "fps": 24,
               "settings": {"weights": str(weights), "seed": seed, "steps": STEPS, "device": "cpu",
                            "dtype": "float32", **settings}}
        return job, {"driving": pngs(self.driving)}

    def write(self, folder):
        (folder / "driving").mkdir(parents=True)
        for index, image in enumerate(self.driving):
            (folder / "driving" / f"f{101 + index:04d}.png").write_bytes(encode_png(image))
        (folder / "reference.png").write_bytes(self.reference_png)
        return folder


def pipeline_frames(pipe, shot: Shot, segment, carry, seed=5, guidance=None):
    from diffusers.guiders import ClassifierFreeGuidance

    if guidance is not None:
        pipe.update_components(guider=ClassifierFreeGuidance(guidance_scale=guidance))
    videos = pipe(image=Image.fromarray(shot.reference), driving_video=[Image.fromarray(f) for f in shot.driving],
                  prompt=PROMPT, height=HEIGHT, width=WIDTH, segment_frame_length=segment,
                  prev_segment_conditioning_frames=carry, num_inference_steps=STEPS,
                  generator=torch.Generator("cpu").manual_seed(seed), output="videos")
    return list(np.round(np.asarray(videos[0]) * 255).astype(np.uint8))


def test_a_job_streams_by_segment_and_resumes_after_a_kill(server, releases, golden):
    """Distilled, carry 1, segments of 5: frames 0-4, 5-8, 9-10. The file the engine writes the last
    segment's resume state to is a named pipe in the store, so the engine blocks once that segment is
    made and before it is sent: the earlier frames have reached the client, the backend is killed
    (kill -9), and a new one on the same store makes the last segment from the state the second left,
    without touching what was made."""
    shot = Shot(11, seed=1)
    job, tracks = shot.job(releases["distilled"], segment=5, carry=1)
    client, accepted = server.submit_blocking_at("segment-0002.part", job, shot.reference_png, tracks)
    job_id = accepted["job_id"]
    assert (accepted["total"], accepted["width"], accepted["height"]) == (11, WIDTH, HEIGHT)
    state = server.store / job_id / "state"

    _early, order, _ = collect(client, job_id, until=9)
    assert order == list(range(9))
    frames_folder = server.store / job_id / "frames"
    assert server.status(job_id)["state"] == "running"
    assert sorted(p.name for p in frames_folder.glob("*.png")) == [f"{i:06d}.png" for i in range(9)]
    assert sorted(p.name for p in state.glob("*.pt")) == ["segment-0000.pt", "segment-0001.pt"]
    kept = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in frames_folder.glob("*.png")}

    frames, order, end = server.restart_after_kill(job_id, "segment-0002.part")
    assert end.type == "done" and order == list(range(11))
    for name, (mtime, data) in kept.items():
        assert (frames_folder / name).stat().st_mtime_ns == mtime and (frames_folder / name).read_bytes() == data
    assert_same_frames(HEIGHT, WIDTH, images(frames), pipeline_frames(golden["distilled"], shot, 5, 1))


def test_the_base_model_with_guidance_through_the_server(server, releases, golden):
    """Base weights, carry 5, segments of 13 (frames 0-12, 13-20), guidance 2.5."""
    shot = Shot(21, seed=2)
    client = server.client()
    job, tracks = shot.job(releases["base"], segment=13, carry=5, guidance=2.5)
    frames, order, end = collect(client, client.submit(job, shot.reference_png, tracks)["job_id"])
    assert end.type == "done" and order == list(range(21))
    assert_same_frames(HEIGHT, WIDTH, images(frames), pipeline_frames(golden["base"], shot, 13, 5, guidance=2.5))


def test_bad_jobs_are_refused_by_name_and_nothing_is_stored(server, releases, tmp_path):
    shot = Shot(3, seed=3)
    other = tmp_path / "other-pipeline"
    shutil.copytree(releases["distilled"], other)
    index = json.loads((other / "modular_model_index.json").read_text())
    (other / "modular_model_index.json").write_text(json.dumps({**index, "_class_name": "WanModularPipeline"}))
    job, tracks = shot.job(releases["distilled"])

    def settings(**changes):
        return {**job, "settings": {**job["settings"], **changes}}
    cases = [
        (job, {"driving": tracks["driving"][:2]}, "bad_request", "2 'driving' images for 3 frames"),
        (job, {}, "bad_request", "needs the 'driving' track"),
        (settings(guidance=3.0), tracks, "bad_request", "distilled Wan-Animate-2, which samples without guidance"),
        (settings(segment=9, carry=5), tracks, "bad_request", "too short for carry 5"),
        (settings(segment=8), tracks, "bad_request", "1 more than a multiple of 4"),
        (settings(weights=str(other)), tracks, "bad_request", "'WanModularPipeline', not Wan-Animate-2"),
        (settings(weights=str(tmp_path / "nowhere")), tracks, "bad_request", "does not exist"),
        (settings(color_match="always"), tracks, "bad_request", "setting 'color_match' must be one of"),
        (settings(offload="model"), tracks, "bad_request", "on the CPU use none"),
        ({**job, "width": 40}, tracks, "limit", "multiples of 16, not 40x48"),
    ]
    client = server.client()
    stored = server.stored_jobs()
    for bad_job, bad_tracks, code, words in cases:
        with pytest.raises(BackendError) as refused:
            client.submit(bad_job, shot.reference_png, bad_tracks)
        assert refused.value.code == code and words in str(refused.value), (words, str(refused.value))
    client.ping()
    assert server.stored_jobs() == stored, "a refused job was stored"


def test_the_command_line_renders_a_driving_folder(tmp_path, releases, golden):
    """`marionette render --driving` with the base model: frames named as the driving frames, equal to the
    pipeline's; then colour matching to the reference changes the later segments only."""
    shot = Shot(9, seed=4)
    files = shot.write(tmp_path / "shot")
    common = ["render", "--engine", "wan-animate-2", "--weights", str(releases["base"]), "--reference",
              str(files / "reference.png"), "--driving", str(files / "driving"), "--prompt", PROMPT, "--seed", "5",
              "--steps", str(STEPS), "--guidance", "3", "--width", str(WIDTH), "--height", str(HEIGHT), "--device",
              "cpu", "--dtype", "float32", "--segment", "5"]
    assert marionette([*common, "--out", str(tmp_path / "out")]) == 0
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == [f"f{101 + i:04d}.png" for i in range(9)]
    plain = read_folder(tmp_path / "out")
    assert_same_frames(HEIGHT, WIDTH, plain, pipeline_frames(golden["base"], shot, 5, 1, guidance=3.0))

    assert marionette([*common, "--color-match", "reference", "--out", str(tmp_path / "matched")]) == 0
    matched = read_folder(tmp_path / "matched")
    assert any(not np.array_equal(a, b) for a, b in zip(plain, matched))


def test_command_line_errors_name_the_cause(tmp_path, releases, capsys):
    shot = Shot(3, seed=5)
    files = shot.write(tmp_path / "shot")
    out = tmp_path / "out"
    base = ["render", "--engine", "wan-animate-2", "--weights", str(releases["distilled"]), "--reference",
            str(files / "reference.png"), "--device", "cpu", "--out", str(out)]
    cases = [
        ([], "give --poses and --driving DIR"),
        (["--driving", str(files / "driving"), "--frames", "4"], "3 'driving' images, --frames 4"),
        (["--driving", str(files / "driving"), "--guidance", "2"], "samples without guidance"),
        (["--driving", str(files / "driving"), "--segment", "9", "--carry", "5"], "the shortest is 13"),
        (["--driving", str(tmp_path)], f"no PNG or JPEG images in {tmp_path}"),
    ]
    for extra, words in cases:
        assert marionette([*base, *extra]) != 0
        error = capsys.readouterr().err
        assert words in error, (words, error)
    assert not out.exists()
