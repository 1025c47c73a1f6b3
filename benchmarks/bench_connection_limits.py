"""What hostile connections make `marionette serve` hold (docs/BENCHMARKS.md, "Connection limits").

Two probes against a server in its own process, memory read from the process (VmHWM, its peak
resident set) and, where the server reports it, its own in-flight count:
  1. strangers: 4 connections without the token each declare a 250 MiB first message and send
     200 MiB of it;
  2. members: 64 connections with the token each declare a 256 MiB submit and send 8 MiB of it,
     slowly (round robin, 1 MiB at a time), and stay open.
After each, a well-behaved client pings and runs a small warp job.

    .venv/bin/python benchmarks/bench_connection_limits.py [--source DIR]

--source runs another checkout's backend (its backend/marionette and blender_addon/core), for a
same-run comparison with an earlier version.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "backend"))

import probes  # noqa: E402
import synthetic  # noqa: E402
from marionette_core.client import BackendClient, BackendError  # noqa: E402

MiB = probes.MiB


def start_server(work: Path, source: Path | None) -> tuple[subprocess.Popen, int, str]:
    env = dict(os.environ)
    if source is not None:  # that checkout's packages, under the names the backend imports
        shim = work / "source"
        shim.mkdir()
        (shim / "marionette").symlink_to(source / "backend" / "marionette")
        (shim / "marionette_core").symlink_to(source / "blender_addon" / "core")
        env["PYTHONPATH"] = str(shim)
    process = subprocess.Popen([sys.executable, "-m", "marionette.cli", "serve", "--port", "0", "--store",
                                str(work / "jobs"), "--token-file", str(work / "token")],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env, cwd=work)
    line = process.stdout.readline()
    return process, int(line.split()[1]), (work / "token").read_text().strip()


def status(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def well_behaved(port: int, token: str) -> str:
    """A real client's try during the attack: 'served' or what went wrong."""
    try:
        with BackendClient("127.0.0.1", port, token, timeout=60) as client:
            client.ping()
            job, reference = synthetic.warp_job(2, width=64, height=96)
            accepted = client.submit(job, reference)
            while True:
                message = client.receive()
                if message.type == "done" and message.header["job_id"] == accepted["job_id"]:
                    return "served"
    except (BackendError, OSError) as error:
        return f"not served: {error}"


def probe(name: str, source: Path | None, attack) -> dict:
    with tempfile.TemporaryDirectory(prefix="marionette-bench-") as folder:
        process, port, token = start_server(Path(folder), source)
        try:
            well_behaved(port, token)  # warm up: first job, first imports
            rss_before, peak_before = status(process.pid, "VmRSS"), status(process.pid, "VmHWM")
            started = time.perf_counter()
            flood = attack(port, token)
            seconds = time.perf_counter() - started
            client = well_behaved(port, token)
            peak = status(process.pid, "VmHWM")
            rss = status(process.pid, "VmRSS")
            flood.close()
            return {"probe": name, "rss_before_mib": rss_before // 1024, "peak_growth_mib": (peak - peak_before) // 1024,
                    "rss_growth_mib": (rss - rss_before) // 1024, "sent_mib": flood.sent // MiB,
                    "refused": flood.refused, "answers": sorted({a.split(":")[0] for a in flood.answers}),
                    "client": client, "seconds": round(seconds, 1), "alive": process.poll() is None}
        finally:
            process.terminate()
            process.wait(10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, help="another checkout to run the backend from")
    args = parser.parse_args()
    source = args.source.resolve() if args.source else None
    label = str(source) if source else "this checkout"
    results = [
        probe("strangers: 4 x 250 MiB declared, 200 MiB sent", source,
              lambda port, _token: probes.strangers(port, 4, 250 * MiB, 200 * MiB)),
        probe("members: 64 x 256 MiB declared, 8 MiB sent", source,
              lambda port, token: probes.members(port, token, 64, 256 * MiB, 8 * MiB)),
    ]
    print(f"backend: {label}")
    for result in results:
        print(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
