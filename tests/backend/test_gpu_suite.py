"""benchmarks/gpu_suite.py, the one-go GPU measurement, run on the CPU at its tiny sizes: every kind of
item measures, the JSON and the table are written as items end, and a second call resumes: finished
items are kept, an item the process died in is tried again, then recorded as crashed."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("diffusers")

SUITE = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_suite.py"
FIRST = ["matmul-peak-bf16", "animate-anyone-bf16", "wan-vace-1.3b-bf16", "half-precision-wan-vace",
         "profile-animate-anyone"]


def suite(out: Path, *args: str, kill_at: str | None = None) -> str:
    """Run the suite; with kill_at, SIGKILL it as soon as it says it starts that item."""
    command = [sys.executable, "-u", str(SUITE), "--tiny", "--device", "cpu", "--out", str(out), *args]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines = []
    for line in process.stdout:
        lines.append(line)
        if kill_at and line.strip() == f"start {kill_at}":
            process.send_signal(signal.SIGKILL)
    process.wait(timeout=600)
    assert kill_at or process.returncode == 0, "".join(lines)
    return "".join(lines)


def results(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


def test_items_measure_and_a_second_call_resumes(tmp_path):
    out = tmp_path / "suite"
    suite(out, "--only", ",".join(FIRST))
    items = results(out)["items"]
    assert set(items) == set(FIRST) and all(items[name]["status"] == "done" for name in FIRST), items
    generation = items["animate-anyone-bf16"]
    assert generation["frames"] == 6 and generation["seconds_per_frame"] > 0
    assert generation["tflop"] > 0 and 0 < generation["mfu"]  # FLOPs counted, against the measured peak
    assert generation["command"].endswith("--only animate-anyone-bf16 --tiny")
    vace = items["wan-vace-1.3b-bf16"]
    assert vace["frames"] == 9 and vace["tflop"] > 0 and vace["settings"]["steps"] == 3
    # Timed over 2 steps, the third added as the second took: seconds = the run + step 2.
    run_seconds, _, step_two = (float(x) for x in re.findall(r"(\d+\.\d+) s", vace["timing"]))
    assert vace["timing"].endswith("extrapolated to 3 steps") and 0 < step_two < run_seconds
    assert vace["seconds"] == pytest.approx(run_seconds + step_two, abs=2e-3)
    assert items["half-precision-wan-vace"]["against_fp32"]["bf16"]["vae_nonfinite"] == 0
    assert items["profile-animate-anyone"]["top"][0]["ms"] > 0
    table = (out / "results.md").read_text()
    assert "| animate-anyone-bf16 | animate-anyone | bf16 | 64x64, 6 |" in table and "| wan-vace | bf16 |" in table

    # Resume: finished items are not run again; the new one is.
    log = suite(out, "--only", ",".join(FIRST + ["wan-animate-bf16"]))
    assert [line for line in log.splitlines() if line.startswith("start ")] == ["start wan-animate-bf16"]
    again = results(out)["items"]
    assert all(again[name] == items[name] for name in FIRST)
    assert again["wan-animate-bf16"]["status"] == "done" and again["wan-animate-bf16"]["tflop"] > 0

    # A budget that fits nothing stops before the first item left.
    log = suite(out, "--only", "echomimic-fp16", "--budget", "0")
    assert "budget: stopping before echomimic-fp16" in log and "echomimic-fp16" not in results(out)["items"]


def test_an_item_the_process_died_in_is_tried_once_more_then_recorded(tmp_path):
    out = tmp_path / "suite"
    suite(out, "--only", "matmul-peak-bf16,matmul-peak-fp16", kill_at="matmul-peak-fp16")
    data = results(out)
    assert data["items"]["matmul-peak-bf16"]["status"] == "done" and "matmul-peak-fp16" not in data["items"]
    assert data["attempts"]["matmul-peak-fp16"] == 1
    suite(out, "--only", "matmul-peak-fp16", kill_at="matmul-peak-fp16")  # dies again
    log = suite(out, "--only", "matmul-peak-fp16")
    assert "start matmul-peak-fp16" not in log
    assert results(out)["items"]["matmul-peak-fp16"]["status"] == "crashed"
    assert "matmul-peak-fp16: crashed" in (out / "results.md").read_text()
    suite(out, "--only", "matmul-peak-fp16", "--retry")  # asked to, it runs it again
    assert results(out)["items"]["matmul-peak-fp16"]["status"] == "done"


def test_unknown_items_are_refused_by_name(tmp_path):
    process = subprocess.run([sys.executable, str(SUITE), "--tiny", "--out", str(tmp_path), "--only", "nope"],
                             capture_output=True, text=True)
    assert process.returncode != 0 and "unknown item or group: nope" in process.stderr
