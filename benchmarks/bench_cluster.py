"""Benchmark: N concurrent warp jobs through `marionette serve` on this machine, and through
`marionette serve --cluster` on a local Ray cluster of 1 and 2 worker nodes (Ray's multi-node test
cluster: each node its own raylet; the head takes no work), in one run.

    .venv/bin/python benchmarks/bench_cluster.py [--jobs 2] [--frames 48] [--width 512 --height 768]

For each setup: the aggregate frames per second of the N jobs (submitted at once from N clients,
timed until every client has every frame), and the time per frame of one job alone. What Ray adds
per frame is the one-job time on a 1-node cluster minus the plain server's (the cluster encodes the
PNG on the worker, the plain server on its own writer thread: the same work, elsewhere).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "backend"))

import synthetic  # noqa: E402
from marionette_core.client import BackendClient  # noqa: E402


def start_server(folder: Path, extra=()) -> tuple[subprocess.Popen, int, str]:
    process = subprocess.Popen([sys.executable, "-m", "marionette.cli", "serve", "--port", "0", "--store",
                                str(folder / "jobs"), "--token-file", str(folder / "token"), *extra],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = process.stdout.readline()
    if not line.startswith("READY"):
        process.kill()
        raise RuntimeError("the backend did not start")
    return process, int(line.split()[1]), (folder / "token").read_text().strip()


def run_jobs(port: int, token: str, jobs: int, frames: int, width: int, height: int) -> float:
    """Seconds from submitting `jobs` jobs at once until every frame of each has arrived."""
    job, reference = synthetic.warp_job(frames, width=width, height=height)
    done = []

    def one():
        client = BackendClient("127.0.0.1", port, token, timeout=600)
        client.connect()
        client.submit(job, reference)
        received = 0
        while True:
            message = client.receive()
            if message.type == "frame":
                received += 1
            elif message.type in ("done", "cancelled", "error"):
                done.append((message.type, received))
                return

    threads = [threading.Thread(target=one) for _ in range(jobs)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    if any(kind != "done" or received != frames for kind, received in done):
        raise RuntimeError(f"a job did not finish with every frame: {done}")
    return elapsed


def measure(name: str, folder: Path, extra, args) -> dict:
    process, port, token = start_server(folder, extra)
    try:
        run_jobs(port, token, args.jobs, 2, args.width, args.height)  # warm-up: workers start, engines load
        single = run_jobs(port, token, 1, args.frames, args.width, args.height)
        together = run_jobs(port, token, args.jobs, args.frames, args.width, args.height)
    finally:
        process.terminate()
        process.wait(timeout=60)
    result = {"setup": name, "ms_per_frame_one_job": 1000 * single / args.frames,
              "aggregate_fps": args.jobs * args.frames / together}
    print(f"{name:22s} one job: {result['ms_per_frame_one_job']:7.1f} ms/frame   "
          f"{args.jobs} jobs at once: {result['aggregate_fps']:6.2f} frames/s", flush=True)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--height", type=int, default=768)
    args = parser.parse_args()
    from ray.cluster_utils import Cluster

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; python "
          f"{platform.python_version()}; {args.jobs} warp jobs of {args.frames} frames at {args.width}x{args.height}")
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        (scratch / "plain").mkdir()
        results.append(measure("plain server", scratch / "plain", (), args))
        for nodes in (1, 2):
            cluster = Cluster(initialize_head=True, connect=False,
                              head_node_args={"num_cpus": 0, "include_dashboard": False})
            try:
                for _ in range(nodes):
                    cluster.add_node(num_cpus=1)
                cluster.wait_for_nodes()
                (scratch / f"cluster{nodes}").mkdir()
                results.append(measure(f"cluster, {nodes} node{'s' if nodes > 1 else ''}", scratch / f"cluster{nodes}",
                                       ("--cluster", cluster.address), args))
            finally:
                cluster.shutdown()
    plain, one, two = results
    print(f"Ray's cost per frame (1-node cluster vs plain server, one job): "
          f"{one['ms_per_frame_one_job'] - plain['ms_per_frame_one_job']:+.1f} ms")
    print(f"2 nodes vs 1 node, {args.jobs} jobs at once: {two['aggregate_fps'] / one['aggregate_fps']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
