"""A studio's setup, in real Blender: the backend runs its jobs on a Ray cluster (here two nodes on
this machine, started by the backend's environment, which has Ray; the Blender process has not).
Test shows the cluster in the Backend panel's line, and Generate on `warp` streams its frames into a
strip as from a one-machine backend."""

import subprocess
from pathlib import Path

import pytest

from harness import ROOT, run_in_blender

BACKEND_PYTHON = str(ROOT / ".venv" / "bin" / "python")

# Runs until its stdin closes, then stops the Ray processes it started (by their own handles).
CLUSTER = """
import sys
from ray.cluster_utils import Cluster
cluster = Cluster(initialize_head=True, connect=False, head_node_args={"num_cpus": 0, "include_dashboard": False})
cluster.add_node(num_cpus=1)
cluster.wait_for_nodes()
print(cluster.address, flush=True)
try:
    sys.stdin.read()
finally:
    cluster.shutdown()
"""


@pytest.fixture(scope="module")
def cluster_backend(tmp_path_factory):
    if subprocess.run([BACKEND_PYTHON, "-c", "import ray"], capture_output=True).returncode != 0:
        pytest.skip("the backend's environment has no Ray (the cluster extra)")
    folder = tmp_path_factory.mktemp("cluster")
    cluster = subprocess.Popen([BACKEND_PYTHON, "-c", CLUSTER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True)
    backend = None
    try:
        address = cluster.stdout.readline().strip()
        assert address, "the Ray cluster did not start"
        log = open(folder / "backend.log", "w")
        backend = subprocess.Popen([BACKEND_PYTHON, "-P", "-m", "marionette.cli", "serve", "--port", "0", "--store",
                                    str(folder / "jobs"), "--token-file", str(folder / "token"), "--cluster",
                                    address], stdout=subprocess.PIPE, stderr=log, text=True)
        line = backend.stdout.readline()
        assert line.startswith("READY"), (folder / "backend.log").read_text()[-3000:]
        yield {"port": int(line.split()[1]), "token_file": str(folder / "token")}
    finally:
        if backend is not None:
            backend.terminate()
            backend.wait(timeout=30)
        cluster.stdin.close()
        cluster.wait(timeout=60)


def case_generate_through_a_cluster(tmp, port, token_file):
    import bpy
    import scene_helpers as h
    from bl_ext.user_default.marionette.shared import run_state

    scene = h.connected_demo_scene(tmp, port, token_file, frames=4)
    status = run_state.backend_status
    scene.marionette.engine = "warp"
    outcome = sorted(bpy.ops.marionette.generate())
    frames = sorted(p.name for p in (Path(tmp) / "marionette" / "frames").glob("*.png"))
    strip = h.strip(scene, "Marionette frames")
    return {"status": status, "outcome": outcome, "frames": frames, "span": h.strip_span(strip) if strip else None}


def test_the_backend_panel_shows_the_cluster_and_generate_runs_on_it(tmp_path, cluster_backend):
    result = run_in_blender(case_generate_through_a_cluster, tmp_path, tmp=str(tmp_path), **cluster_backend)
    assert result["status"].endswith("; cluster: 2 nodes, 1 CPU, no GPU; 0 busy"), result["status"]
    assert result["outcome"] == ["FINISHED"]
    assert result["frames"] == [f"{frame:06d}.png" for frame in range(1, 5)]
    assert result["span"] == [1, 4]
