"""Fetch Weights in real Blender: the Generate panel asks the backend for the engine's weights
folder (Check) and has the backend fetch it (Fetch Weights) from a Hugging Face Hub stand-in on
loopback (tests/backend/hub_standin.py, serving a tiny EchoMimic release under the repositories and
revisions of the engine's sources.json). The tiny release is written by the backend's environment."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness import ROOT, run_in_blender

BACKEND_PYTHON = str(ROOT / ".venv" / "bin" / "python")
BUILD_RELEASE = """
import sys
from pathlib import Path
sys.path.insert(0, "tests/backend")
from tiny_echomimic import write_release
for mode in ("audio", "pose"):
    for accelerated in (False, True):
        write_release(Path(sys.argv[1]), seed=1, mode=mode, accelerated=accelerated)
"""


@pytest.fixture(scope="module")
def hub_backend(tmp_path_factory):
    sys.path.insert(0, str(ROOT / "tests" / "backend"))
    from hub_standin import HubStandIn

    folder = tmp_path_factory.mktemp("weights")
    built = subprocess.run([BACKEND_PYTHON, "-c", BUILD_RELEASE, str(folder / "release")], cwd=ROOT,
                           capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-3000:]
    hub = HubStandIn()
    manifest = json.loads((ROOT / "backend/marionette/engines/echomimic/sources.json").read_text())
    for source in manifest["echomimic"]["sources"]:
        into = source.get("into", "")
        hub.add(source["repo"], source["revision"],
                {path: (folder / "release" / into / path).read_bytes() for path, _size in source["files"]})
    env = {**os.environ, "HF_ENDPOINT": hub.endpoint, "HF_HOME": str(folder / "hf-home")}
    env.pop("HF_HUB_OFFLINE", None)
    log = open(folder / "backend.log", "w")
    backend = subprocess.Popen([BACKEND_PYTHON, "-P", "-m", "marionette.cli", "serve", "--port", "0", "--store",
                                str(folder / "jobs"), "--token-file", str(folder / "token")],
                               stdout=subprocess.PIPE, stderr=log, text=True, env=env)
    try:
        line = backend.stdout.readline()
        assert line.startswith("READY"), (folder / "backend.log").read_text()[-3000:]
        yield {"port": int(line.split()[1]), "token_file": str(folder / "token"),
               "default": str(folder / "weights" / "echomimic")}
    finally:
        backend.terminate()
        backend.wait(timeout=30)
        hub.close()


def case_check_and_fetch(tmp, port, token_file):
    import bpy
    import scene_helpers as h
    from bl_ext.user_default.marionette.generate import weights

    scene = h.connected_demo_scene(tmp, port, token_file)
    scene.marionette.engine = "echomimic"
    result = {"check": sorted(bpy.ops.marionette.check_weights())}
    result["before"] = dict(weights.states["echomimic"])
    try:
        bpy.ops.marionette.fetch_weights()
        result["unaccepted"] = "fetched"
    except RuntimeError as error:
        result["unaccepted"] = str(error)
    scene.marionette.accept_weight_licences = True
    result["fetch"] = sorted(bpy.ops.marionette.fetch_weights())
    result["after"] = dict(weights.states["echomimic"])
    return result


def test_check_and_fetch_weights_from_the_generate_panel(tmp_path, hub_backend):
    result = run_in_blender(case_check_and_fetch, tmp_path, tmp=str(tmp_path), port=hub_backend["port"],
                            token_file=hub_backend["token_file"])
    before = result["before"]
    assert result["check"] == ["FINISHED"]
    assert before["state"] == "missing" and before["folder"] == hub_backend["default"] and before["listed"]
    assert before["licences"] == {"lambdalabs/sd-image-variations-diffusers": "creativeml-openrail-m"}
    assert "tick Accept the Licences" in result["unaccepted"]
    assert result["fetch"] == ["FINISHED"]
    after = result["after"]
    assert after["state"] == "ready", after
    assert "checks out (variants: audio, audio accelerated, pose, pose accelerated)" in after["status"]
    assert (Path(hub_backend["default"]) / "audio_processor" / "whisper_tiny.pt").is_file()


def case_pick_a_release(tmp, port, token_file):
    import bpy
    import scene_helpers as h
    from bl_ext.user_default.marionette.generate import weights

    scene = h.connected_demo_scene(tmp, port, token_file)
    scene.marionette.engine = "wan-animate-2"
    from bl_ext.user_default.marionette.generate.properties import weights_release_items

    result = {"offered": [item[0] for item in weights_release_items(scene.marionette, bpy.context)]}
    bpy.ops.marionette.check_weights()
    result["own"] = dict(weights.states["wan-animate-2"])
    scene.marionette.weights_release = "wan-animate-2-distilled"
    bpy.ops.marionette.check_weights()
    result["distilled"] = dict(weights.states["wan-animate-2"])
    from bl_ext.user_default.marionette.shared import engines

    for engine in ("wan-animate-2", "echomimic"):  # the choice is drawn only where there is one to make
        drawn = []
        weights.draw(h.RecordingLayout(drawn), scene, engines.declared_engines[engine])
        result[f"drawn {engine}"] = [entry[2] for entry in drawn if entry[0] == "prop"]
    return result


def test_an_engine_with_two_releases_offers_both(tmp_path, hub_backend):
    result = run_in_blender(case_pick_a_release, tmp_path, tmp=str(tmp_path), port=hub_backend["port"],
                            token_file=hub_backend["token_file"])
    assert result["offered"] == ["wan-animate-2", "wan-animate-2-distilled"]
    assert result["own"]["release"] == "wan-animate-2" and result["own"]["state"] == "missing"
    assert result["distilled"]["release"] == "wan-animate-2-distilled" and result["distilled"]["listed"]
    assert result["distilled"]["folder"] == str(Path(hub_backend["default"]).parent / "wan-animate-2")
    assert "weights_release" in result["drawn wan-animate-2"]
    assert "weights_release" not in result["drawn echomimic"]
