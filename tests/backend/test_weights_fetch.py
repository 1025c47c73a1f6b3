"""`marionette weights list` and `fetch` with the real huggingface_hub client against a Hub stand-in
on loopback (hub_standin.py) that serves tiny files in the release's layout under the repositories
and pinned revisions of the engine's sources.json. No test touches the internet."""

import os
import subprocess
import sys

import pytest

pytest.importorskip("huggingface_hub")
torch = pytest.importorskip("torch")

from hub_standin import HubStandIn  # noqa: E402

ENGINE = "echomimic"


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """A tiny EchoMimic release folder, all four variants and the Whisper checkpoint."""
    from tiny_echomimic import write_release

    folder = tmp_path_factory.mktemp("release")
    for mode in ("audio", "pose"):
        for accelerated in (False, True):
            write_release(folder, seed=1, mode=mode, accelerated=accelerated)
    return folder


@pytest.fixture
def hub(release):
    """The stand-in, serving the release's files as the manifest names them."""
    from marionette.fetching import sources_for

    stand_in = HubStandIn()
    for file in sources_for(ENGINE):
        stand_in.add(file.repo, file.revision, {file.path: (release / file.target).read_bytes()})
    yield stand_in
    stand_in.close()


def weights(hub, tmp_path, *args, offline=False):
    env = {**os.environ, "HF_ENDPOINT": hub.endpoint, "HF_HOME": str(tmp_path / "hf-home"),
           "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DOWNLOAD_TIMEOUT": "5", "HF_HUB_ETAG_TIMEOUT": "5"}
    env.pop("HF_HUB_OFFLINE", None)
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    return subprocess.run([sys.executable, "-m", "marionette.cli", "weights", *args], capture_output=True, text=True,
                          timeout=600, env=env, stdin=subprocess.DEVNULL)


def test_list_names_each_engines_sources(hub, tmp_path):
    result = weights(hub, tmp_path, "list")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "BadToBest/EchoMimic@1bfb550fff0b (apache-2.0): 13 files" in result.stdout
    assert "(creativeml-openrail-m, to accept when fetching)" in result.stdout
    # The diffusers releases: a short commit id as the Hub shows it, or main where no commit is pinned yet.
    assert "Wan-AI/Wan2.2-Animate-14B-Diffusers@6f4df10 (apache-2.0): 14 files and the shards they name" in result.stdout
    assert "Wan-AI/Wan2.2-Animate-2-14B-Distilled-Diffusers@main (no pinned commit yet)" in result.stdout
    assert "lip-sync: 2 repositories" in result.stdout
    assert "wan-vace-14b: 1 repository" in result.stdout
    assert "no list yet" not in result.stdout  # every engine that needs weights has its list


def test_fetch_brings_the_layout_the_engine_checks_and_renders_from(hub, release, tmp_path):
    folder = tmp_path / "weights"
    refused = weights(hub, tmp_path, "fetch", ENGINE, "--to", str(folder))  # no terminal, no --accept-licences
    assert refused.returncode == 2 and "creativeml-openrail-m" in refused.stdout
    assert "licences were not accepted" in refused.stderr
    assert not any(folder.rglob("*.pth"))

    from marionette.fetching import sources_for

    # The connection drops mid-file: the client tries again (huggingface_hub resumes from its last
    # whole 10 MB chunk within a run; these files are smaller, so it starts the file over).
    hub.drop_after["denoising_unet.pth"] = 3000
    hub.damage.add("face_locator.pth")  # arrives damaged once: fetched again
    result = weights(hub, tmp_path, "fetch", ENGINE, "--to", str(folder), "--accept-licences")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "face_locator.pth arrived damaged; fetching it again" in result.stdout
    assert "checks out (variants: audio, audio accelerated, pose, pose accelerated)" in result.stdout, result.stdout
    tries = [path for method, path, _range in hub.requests if method == "GET" and path.endswith("/denoising_unet.pth")]
    assert len(tries) == 2, hub.requests  # the dropped one and the one that completed
    for file in sources_for(ENGINE):
        assert (folder / file.target).read_bytes() == (release / file.target).read_bytes(), file.target

    again = weights(hub, tmp_path, "fetch", ENGINE, "--to", str(folder), "--accept-licences")
    assert again.returncode == 0 and "every file is already in" in again.stdout
    offline = weights(hub, tmp_path, "fetch", ENGINE, "--to", str(folder), offline=True)
    assert offline.returncode == 0 and "every file is already in" in offline.stdout

    # The engine loads the fetched folder and renders.
    from marionette.images import encode_png
    import numpy as np

    (tmp_path / "ref.png").write_bytes(encode_png(np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)))
    import wave
    with wave.open(str(tmp_path / "line.wav"), "wb") as handle:
        handle.setnchannels(1), handle.setsampwidth(2), handle.setframerate(16000)
        handle.writeframes((np.sin(np.arange(8000) / 9) * 8000).astype("<i2").tobytes())
    render = subprocess.run([sys.executable, "-m", "marionette.cli", "render", "--engine", ENGINE, "--weights",
                             str(folder), "--reference", str(tmp_path / "ref.png"), "--audio", str(tmp_path / "line.wav"),
                             "--frames", "2", "--steps", "1", "--width", "64", "--height", "64", "--device", "cpu",
                             "--face-box", "16,8,48,56",
                             "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=600)
    assert render.returncode == 0, render.stderr[-2000:]
    assert len(list((tmp_path / "out").glob("*.png"))) == 2


def test_a_file_the_hub_lacks_is_named(hub, tmp_path):
    from marionette.fetching import sources_for

    missing = next(f for f in sources_for(ENGINE) if f.path == "face_locator_pose.pth")
    del hub.files[(missing.repo, missing.path)]
    result = weights(hub, tmp_path, "fetch", ENGINE, "--to", str(tmp_path / "weights"), "--accept-licences")
    assert result.returncode == 2
    assert "cannot find face_locator_pose.pth of BadToBest/EchoMimic" in result.stderr, result.stderr[-2000:]


def test_offline_without_the_files_names_the_first(hub, tmp_path):
    result = weights(hub, tmp_path, "fetch", ENGINE, "--to", str(tmp_path / "weights"), "--accept-licences",
                     offline=True)
    assert result.returncode == 2
    assert "cannot fetch denoising_unet.pth from BadToBest/EchoMimic" in result.stderr, result.stderr[-2000:]
    assert not hub.requests  # offline: not one request


def test_too_little_disk_space_is_refused_before_any_download(hub, tmp_path):
    small = tmp_path / "small"
    small.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(small)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode()[-200:]}")
    try:
        result = weights(hub, tmp_path, "fetch", ENGINE, "--to", str(small / "weights"), "--accept-licences")
        assert result.returncode == 2
        assert "more in" in result.stderr and "free; make room" in result.stderr, result.stderr[-2000:]
        assert not any(method == "GET" for method, _path, _range in hub.requests)
    finally:
        subprocess.run(["umount", str(small)], check=False)


def test_a_missing_file_names_the_command_that_fetches_it(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "maps").mkdir()
    from marionette.images import encode_png
    import numpy as np

    image = encode_png(np.zeros((64, 64, 3), np.uint8))
    (tmp_path / "ref.png").write_bytes(image)
    (tmp_path / "maps" / "000000.png").write_bytes(image)
    result = subprocess.run([sys.executable, "-m", "marionette.cli", "render", "--engine", "aniportrait", "--weights",
                             str(tmp_path / "empty"), "--reference", str(tmp_path / "ref.png"), "--maps",
                             str(tmp_path / "maps"), "--out", str(tmp_path / "out")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert f"`marionette weights fetch aniportrait --to {tmp_path / 'empty'}` fetches them" in result.stderr, \
        result.stderr[-2000:]


@pytest.fixture
def hub_backend(hub, tmp_path, monkeypatch, start_backend):
    """A `marionette serve` process whose Hub is the stand-in."""
    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return start_backend()


def connected(backend):
    from marionette_core.client import BackendClient

    client = BackendClient("127.0.0.1", backend.port, backend.token, timeout=300)
    client.connect()
    return client


def test_the_backend_fetches_on_request_with_progress(hub_backend):
    """The `weights` request: the folder's state, a fetch on the backend's machine (the default folder
    under its data folder) with progress messages, then the state again."""
    backend, client = hub_backend, connected(hub_backend)

    def ask(**header):
        client.send({"type": "weights", "engine": ENGINE, **header})
        return client.receive().header

    state = ask()
    folder = backend.store.parent / "weights" / ENGINE
    assert state["state"] == "missing" and state["folder"] == str(folder) and state["listed"]
    assert state["licences"] == {"lambdalabs/sd-image-variations-diffusers": "creativeml-openrail-m"}
    assert "does not exist" in state["status"]

    assert ask(action="fetch")["state"] == "fetching"
    refused = client.receive().header  # the licences were not accepted
    assert refused["state"] == "failed" and "must be accepted first" in refused["status"], refused

    assert ask(action="fetch", accept_licences=True)["state"] == "fetching"
    progress = []
    while True:
        header = client.receive().header
        if header["type"] != "weights_progress":
            break
        progress.append(header)
    assert header["state"] == "ready", header
    assert "checks out (variants: audio, audio accelerated, pose, pose accelerated)" in header["status"]
    assert progress and progress[-1]["done"] == progress[-1]["total"] > 0
    assert all(a["done"] <= b["done"] for a, b in zip(progress, progress[1:]))
    assert ask()["state"] == "ready"
    client.ping()  # the connection still serves


def test_a_fetch_on_the_backend_can_be_cancelled(hub, hub_backend):
    backend, client = hub_backend, connected(hub_backend)
    hub.delay["motion_module.pth"] = 3.0  # the fetch is still running when the cancel comes
    client.send({"type": "weights", "engine": ENGINE, "action": "fetch", "accept_licences": True})
    assert client.receive().header["state"] == "fetching"
    second = connected(backend)  # another client asks meanwhile
    second.send({"type": "weights", "engine": ENGINE, "action": "fetch", "accept_licences": True})
    from marionette_core.client import BackendError

    with pytest.raises(BackendError, match="one fetch at a time"):
        second.receive()
    client.send({"type": "weights", "engine": ENGINE, "action": "cancel"})
    while True:
        header = client.receive().header
        if header["type"] == "weights" and header["state"] != "cancelling":
            break
    assert header["state"] == "cancelled", header
    assert not (backend.store.parent / "weights" / ENGINE / "motion_module.pth").exists()
    client.ping()


def test_the_request_names_a_release_of_the_engine_or_lip_sync(hub_backend):
    backend, client = hub_backend, connected(hub_backend)
    from marionette_core.client import BackendError

    def ask(**header):
        client.send({"type": "weights", **header})
        return client.receive().header

    distilled = ask(engine="wan-animate-2", release="wan-animate-2-distilled")
    assert distilled["release"] == "wan-animate-2-distilled" and distilled["listed"] and distilled["state"] == "missing"
    assert distilled["folder"] == str(backend.store.parent / "weights" / "wan-animate-2")
    lip_sync = ask(engine="lip-sync")
    assert lip_sync["state"] == "missing" and lip_sync["folder"] == str(backend.store.parent / "weights" / "lip-sync")
    assert "weights fetch lip-sync" in lip_sync["status"]
    for header, words in (({"engine": "echomimic", "release": "lip-sync"}, "lip-sync is not a release of echomimic"),
                          ({"engine": "echomimic", "release": "nope"}, "no release 'nope'")):
        with pytest.raises(BackendError, match=words):
            ask(**header)
    client.ping()
