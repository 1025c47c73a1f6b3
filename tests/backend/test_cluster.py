"""`marionette serve --cluster` and `render --cluster` on a real Ray cluster of several nodes on this
machine (Ray's own multi-node test cluster: a head and worker nodes, each its own raylet), with the
`warp` engine as the workload. The head takes no work (0 CPUs), each worker node one job at a time
(1 CPU). The Ray processes are the tests' own and are stopped by them."""

import subprocess
import sys
import threading

import pytest

ray_cluster_utils = pytest.importorskip("ray.cluster_utils")

from served import Server, collect, images  # noqa: E402
from synthetic import warp_job  # noqa: E402

FRAMES = 40


@pytest.fixture(scope="module")
def cluster():
    """A head (no CPUs for work) and two worker nodes of one CPU each."""
    # A dead node is noticed after health checks fail: every 0.5 s, 3 in a row here (Ray's default
    # is 3 s and 5), so the test waits seconds, not tens of seconds.
    cluster = ray_cluster_utils.Cluster(initialize_head=True, connect=False, head_node_args={
        "num_cpus": 0, "include_dashboard": False,
        "_system_config": {"health_check_period_ms": 500, "health_check_failure_threshold": 3}})
    try:
        for _ in range(2):
            cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        yield cluster
    finally:
        cluster.shutdown()


@pytest.fixture
def cluster_server(start_backend, cluster):
    return Server(lambda: start_backend(("--cluster", cluster.address)))


def plain_render(folder, frames):
    """The frames of the test job from a plain one-machine `marionette render`, and its input folder."""
    import json

    from marionette.images import decode_image

    job, reference = warp_job(frames, width=128, height=192)
    (folder / "poses").mkdir()
    for index, pose in enumerate(job["poses"]):
        (folder / "poses" / f"{index:06d}.json").write_text(json.dumps(pose))
    (folder / "reference.json").write_text(json.dumps(job["reference_pose"]))
    (folder / "reference.png").write_bytes(reference)
    result = subprocess.run([sys.executable, "-m", "marionette.cli", "render", "--engine", "warp", "--reference",
                             str(folder / "reference.png"), "--reference-pose", str(folder / "reference.json"),
                             "--poses", str(folder / "poses"), "--out", str(folder / "out")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return folder, [decode_image(path.read_bytes()) for path in sorted((folder / "out").glob("*.png"))]


@pytest.fixture(scope="module")
def expected_frames(tmp_path_factory):
    return plain_render(tmp_path_factory.mktemp("plain"), FRAMES)


def submit(server, frames=FRAMES):
    client = server.client()
    job, reference = warp_job(frames, width=128, height=192)
    job_id = client.submit(job, reference)["job_id"]
    return client, job_id


def same_frames(got, expected) -> bool:
    import numpy as np

    return len(got) == len(expected) and all(np.array_equal(a, b) for a, b in zip(got, expected))


def test_jobs_from_several_clients_run_side_by_side_on_different_nodes(cluster_server, expected_frames):
    _folder, expected = expected_frames
    results = {}

    def follow(name):
        client, job_id = submit(cluster_server)
        frames, order, ending = collect(client, job_id)
        results[name] = (job_id, frames, order, ending)

    threads = [threading.Thread(target=follow, args=(name,)) for name in ("a", "b", "c")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    runs = {}
    for name, (job_id, frames, order, ending) in results.items():
        assert ending is not None and ending.type == "done", (name, ending and ending.header)
        assert order == list(range(FRAMES))  # every frame, once, in order
        assert same_frames(images(frames), expected), name  # equal to a one-machine run
        status = cluster_server.status(job_id)
        assert status["state"] == "done" and len(status["runs"]) == 1, status
        runs[name] = status["runs"][0]
    assert len(runs) == 3
    # Two nodes of one CPU each: some two of the three jobs ran on different nodes at the same time.
    overlapping = [(a, b) for a in runs for b in runs if a < b and runs[a]["node"] != runs[b]["node"]
                   and runs[a]["started"] < runs[b]["ended"] and runs[b]["started"] < runs[a]["ended"]]
    assert overlapping, runs
    assert len({run["node"] for run in runs.values()}) == 2


def test_the_handshake_reports_the_cluster(cluster_server):
    client = cluster_server.client()
    status = client.capabilities["cluster"]
    assert status["nodes"] == 3 and status["cpus"] == 2 and status["gpus"] == 0
    assert status["summary"].startswith("cluster: 3 nodes, 2 CPUs, no GPU")
    warp = next(engine for engine in client.capabilities["engines"] if engine["name"] == "warp")
    assert warp["gpus"] == 0


def test_cancel_reaches_the_worker_and_frees_it(cluster_server):
    client, job_id = submit(cluster_server, frames=400)
    frames, _order, ending = collect(client, job_id, until=3)
    assert ending is None
    client.cancel(job_id)
    _rest, _order, ending = collect(client, job_id)
    assert ending.type == "cancelled"
    stored = len(list((cluster_server.store / job_id / "frames").glob("*.png")))
    assert stored < 400
    # Both workers are free again: two new jobs complete.
    for client, job_id in [submit(cluster_server, frames=5) for _ in range(2)]:
        assert collect(client, job_id)[2].type == "done"


def test_a_worker_node_that_dies_mid_job_costs_nothing(cluster, cluster_server, tmp_path):
    frames_in_all = 300  # long enough that the node dies with most of the job still to make
    _folder, expected = plain_render(tmp_path, frames_in_all)
    client, job_id = submit(cluster_server, frames_in_all)
    frames, _order, ending = collect(client, job_id, until=5)
    assert ending is None
    node_id = cluster_server.status(job_id)["runs"][0]["node"]
    victim = next(node for node in cluster.worker_nodes if node.node_id == node_id)
    cluster.remove_node(victim, allow_graceful=False)  # its raylet and the worker with it, at once
    try:
        rest, order, ending = collect(client, job_id)
        assert ending.type == "done", ending.header
        frames.update(rest)
        assert sorted(frames) == list(range(frames_in_all)) and order == list(range(5, frames_in_all))  # once each
        assert same_frames(images(frames), expected)
        runs = cluster_server.status(job_id)["runs"]
        assert len(runs) == 2 and runs[0]["node"] == node_id and runs[1]["node"] != node_id, runs
        stored = sorted(p.name for p in (cluster_server.store / job_id / "frames").glob("*.png"))
        assert len(stored) == frames_in_all
    finally:
        cluster.add_node(num_cpus=1)  # the cluster as the other tests expect it
        cluster.wait_for_nodes()


def test_render_runs_a_shot_on_the_cluster(cluster, expected_frames, tmp_path):
    import numpy as np

    from marionette.images import decode_image

    folder, expected = expected_frames
    result = subprocess.run([sys.executable, "-m", "marionette.cli", "render", "--engine", "warp", "--cluster",
                             cluster.address, "--reference", str(folder / "reference.png"), "--reference-pose",
                             str(folder / "reference.json"), "--poses", str(folder / "poses"), "--out",
                             str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    got = [decode_image(path.read_bytes()) for path in sorted((tmp_path / "out").glob("*.png"))]
    assert len(got) == FRAMES and all(np.array_equal(a, b) for a, b in zip(got, expected))


def test_an_address_that_does_not_answer_is_named_at_start(tmp_path):
    result = subprocess.run([sys.executable, "-m", "marionette.cli", "serve", "--port", "0", "--store",
                             str(tmp_path / "jobs"), "--token-file", str(tmp_path / "token"), "--cluster",
                             "127.0.0.1:9"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "no Ray cluster answers at 127.0.0.1:9" in result.stderr, result.stderr[-2000:]


def test_without_cluster_ray_is_not_imported(tmp_path):
    code = ("import sys, marionette.cli, marionette.server, marionette.job_runner; "
            "print('ray' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "False", result.stderr[-2000:]


def test_engines_lists_the_cluster(cluster):
    import json

    result = subprocess.run([sys.executable, "-m", "marionette.cli", "engines", "--cluster", cluster.address, "--json"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    listing = json.loads(result.stdout)
    assert listing["cluster"]["nodes"] == 3 and listing["cluster"]["cpus"] == 2
    text = subprocess.run([sys.executable, "-m", "marionette.cli", "engines", "warp", "--cluster", cluster.address],
                          capture_output=True, text=True, timeout=300).stdout
    assert "cluster: 3 nodes, 2 CPUs, no GPU; 0 busy" in text, text
