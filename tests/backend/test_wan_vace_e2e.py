"""wan-vace through a real backend process: a job streams clip by clip, survives a kill -9 between
clips (a restarted backend on the same store makes the rest from the state the first one saved,
touching nothing it made), and every frame equals an uninterrupted run of the engine's clip loop on
the pipeline (test_wan_vace.py checks that loop against the pipeline's own calls)."""

from __future__ import annotations


import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from marionette.engines.wan_vace.pipeline import generate_clips  # noqa: E402
from marionette.engines.wan_vace.weights import load_pipeline  # noqa: E402
from marionette.images import decode_image  # noqa: E402

import synthetic  # noqa: E402
from served import assert_same_frames, collect, images, pngs  # noqa: E402
from tiny_wan_vace import save_tiny_release  # noqa: E402

pytestmark = pytest.mark.usefixtures("torch_one_thread")
WIDTH, HEIGHT, STEPS = 32, 48, 2
PROMPT = "a dancer on a rainy street"


def test_a_job_streams_by_clip_and_resumes_after_a_kill(server, tmp_path):
    """Clips of 5 carrying 1: frames 0-4, 5-8, 9-10. The last clip's state file is a named pipe, so the
    engine blocks once that clip is made and before it is sent; the backend is killed then."""
    release = save_tiny_release(tmp_path / "Wan2.1-VACE-1.3B-diffusers", seed=7)
    reference_png, reference_pose, poses = synthetic.job_files(11, width=WIDTH, height=HEIGHT)
    rng = np.random.default_rng(3)
    depth = [np.repeat(np.roll(rng.integers(0, 256, (HEIGHT, WIDTH, 1), np.uint8), i, 1), 3, 2) for i in range(11)]
    job = {"engine": "wan-vace", "reference_pose": reference_pose, "poses": poses, "text": {"prompt": PROMPT},
           "fps": 24, "settings": {"weights": str(release), "control": "depth", "clip": 5, "carry": 1,
                                   "steps": STEPS, "seed": 9, "device": "cpu", "dtype": "float32"}}
    client, accepted = server.submit_blocking_at("segment-0002.part", job, reference_png, {"depth": pngs(depth)})
    job_id = accepted["job_id"]
    state = server.store / job_id / "state"

    _early, order, _ = collect(client, job_id, until=9)
    assert order == list(range(9))
    frames_folder = server.store / job_id / "frames"
    kept = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in frames_folder.glob("*.png")}
    assert len(kept) == 9 and sorted(p.name for p in state.glob("*.pt")) == ["segment-0000.pt", "segment-0001.pt"]

    frames, order, end = server.restart_after_kill(job_id, "segment-0002.part")
    assert end.type == "done" and order == list(range(11))
    for name, (mtime, data) in kept.items():
        assert (frames_folder / name).stat().st_mtime_ns == mtime and (frames_folder / name).read_bytes() == data

    pipe = load_pipeline(release, "cpu")
    reference = decode_image(reference_png)[..., :3]
    expected = [frame for clip in generate_clips(pipe, reference, depth, height=HEIGHT, width=WIDTH, prompt=PROMPT,
                                                 clip=5, carry=1, steps=STEPS, seed=9) for frame in clip.frames]
    assert_same_frames(HEIGHT, WIDTH, images(frames), expected)
