"""Benchmark: the warp engine on one core, and frames streamed over the protocol on loopback.

    .venv/bin/python benchmarks/bench_backend.py

1. Warp: a 512x768 RGB reference (mask estimated, clean plate inpainted), 240 frames of an arm and
   leg motion, pinned to one CPU core with OpenCV single-threaded: frames/s of the engine alone and
   with PNG encoding (what the server does per frame).
2. Protocol: a finished 240-frame 512x768 job in a store, served by `marionette serve` in its own
   process; a client attaches and receives every frame: frames/s and MB/s.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "backend"))

import synthetic  # noqa: E402
from marionette.warping.rig import WarpRig  # noqa: E402
from marionette.images import encode_png  # noqa: E402
from marionette.jobs import JobStore  # noqa: E402
from marionette_core import openpose_json  # noqa: E402
from marionette_core.client import BackendClient  # noqa: E402

FRAMES = 240


def motion(reference: np.ndarray) -> list[np.ndarray]:
    poses = []
    for index in range(FRAMES):
        phase = index / 12
        body = synthetic.rotate_about(reference, ["r_elbow", "r_wrist"], "r_shoulder", 50 * np.sin(phase))
        body = synthetic.rotate_about(body, ["r_wrist"], "r_elbow", 30 * np.sin(phase * 1.3))
        body = synthetic.rotate_about(body, ["l_elbow", "l_wrist"], "l_shoulder", -40 * np.sin(phase * 0.7))
        body = synthetic.rotate_about(body, ["r_knee", "r_ankle"], "r_hip", 20 * np.sin(phase))
        body[:, 0] += 20 * np.sin(phase / 3)
        poses.append(body)
    return poses


def bench_warp() -> tuple[float, float, list[bytes]]:
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    cv2.setNumThreads(1)
    reference = synthetic.standing_pose()
    image = synthetic.character_image(reference, alpha=False, markers=False)
    rig = WarpRig.build(image, synthetic.person(reference))
    people = [synthetic.person(body) for body in motion(reference)]
    rig.pose(people[0])  # warm-up
    start = time.perf_counter()
    frames = [rig.pose(person) for person in people]
    engine_seconds = (time.perf_counter() - start) / FRAMES
    start = time.perf_counter()
    pngs = [encode_png(frame) for frame in frames]
    png_seconds = (time.perf_counter() - start) / FRAMES
    os.sched_setaffinity(0, os.sched_getaffinity(0) | set(range(os.cpu_count() or 1)))
    return engine_seconds, png_seconds, pngs


@contextmanager
def serving(store: Path, folder: Path):
    """`marionette serve` in its own process on a free port: yields a connected client's settings."""
    server = subprocess.Popen([sys.executable, "-m", "marionette.cli", "serve", "--port", "0", "--store",
                               str(store), "--token-file", str(folder / "token")],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        port = int(server.stdout.readline().split()[1])
        yield port, (folder / "token").read_text().strip()
    finally:
        server.terminate()
        server.wait(10)


def bench_protocol(pngs: list[bytes]) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as folder:
        store = JobStore(Path(folder) / "jobs")
        reference = synthetic.standing_pose()
        pose = openpose_json.to_openpose_dict([synthetic.person(reference)], 512, 768)
        job_id = store.create({"engine": "warp", "settings": {}, "width": 512, "height": 768,
                               "frames": list(range(FRAMES))}, pngs[0], pose, [pose] * FRAMES, [])
        for index, data in enumerate(pngs):
            store.write_frame(job_id, index, data)
        store.set_status(job_id, "done")
        with serving(store.root, Path(folder)) as (port, token):
            best = None
            for _attempt in range(3):
                client = BackendClient("127.0.0.1", port, token)
                client.connect()
                start = time.perf_counter()
                client.attach(job_id)
                received = count_frames(client)
                seconds = time.perf_counter() - start
                client.close()
                assert received == FRAMES
                best = seconds if best is None else min(best, seconds)
    total_bytes = sum(len(data) for data in pngs)
    return FRAMES / best, total_bytes / best / 1e6


def bench_end_to_end() -> float:
    """Submit a 240-frame 512x768 warp job to a fresh server and receive every frame: frames/s."""
    reference = synthetic.standing_pose()
    image = synthetic.character_image(reference, alpha=False, markers=False)
    poses = [openpose_json.to_openpose_dict([synthetic.person(body)], 512, 768) for body in motion(reference)]
    job = {"engine": "warp", "reference_pose": openpose_json.to_openpose_dict([synthetic.person(reference)], 512, 768),
           "poses": poses}
    with tempfile.TemporaryDirectory() as folder:
        with serving(Path(folder) / "jobs", Path(folder)) as (port, token):
            client = BackendClient("127.0.0.1", port, token)
            client.connect()
            start = time.perf_counter()
            client.submit(job, encode_png(image))
            received = count_frames(client)
            seconds = time.perf_counter() - start
            assert received == FRAMES
    return FRAMES / seconds


def count_frames(client: BackendClient) -> int:
    """Frames received until the job's stream ends (progress messages are skipped)."""
    received = 0
    while (kind := client.receive().type) != "done":
        received += kind == "frame"
    return received


def main() -> int:
    engine_seconds, png_seconds, pngs = bench_warp()
    frames_per_second, megabytes_per_second = bench_protocol(pngs)
    end_to_end = bench_end_to_end()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"OpenCV {cv2.__version__}, numpy {np.__version__}")
    print(f"warp engine, 512x768 RGB (estimated mask), one core, {FRAMES} frames: "
          f"{engine_seconds * 1000:.2f} ms/frame = {1 / engine_seconds:.0f} frames/s")
    print(f"  + PNG encoding (zlib RLE, level 1), same core: {(engine_seconds + png_seconds) * 1000:.2f} ms/frame = "
          f"{1 / (engine_seconds + png_seconds):.0f} frames/s; mean PNG {np.mean([len(p) for p in pngs]) / 1024:.0f} KiB")
    print(f"protocol over loopback, {FRAMES} frames of 512x768 PNG (attach to a finished job): "
          f"{frames_per_second:.0f} frames/s, {megabytes_per_second:.0f} MB/s")
    print(f"end to end through `marionette serve` (submit a {FRAMES}-frame 512x768 warp job, receive every frame; "
          f"both cores): {end_to_end:.0f} frames/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
