"""Engines are discovered, an engine that cannot be imported or built is listed with the reason while
the others serve, `marionette engines` lists them, and the command line takes each engine's settings
as options made from its declaration."""

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from marionette.cli import main as marionette
from marionette.engines import EngineRegistry, discover
from marionette_core.client import BackendClient, BackendError

import synthetic

ROOT = Path(__file__).resolve().parents[2]
# A backend whose `diffusers` cannot be imported, as on a machine without the diffusion extra.
WITHOUT_DIFFUSERS = "import sys; sys.modules['diffusers'] = None; from marionette.cli import main; sys.exit(main())"
DIFFUSION_ENGINES = {"animate-anyone", "aniportrait", "echomimic", "wan-animate", "wan-animate-2", "wan-vace"}


def test_every_engine_package_is_found():
    registry = EngineRegistry()
    assert {"warp"} | DIFFUSION_ENGINES <= set(registry.engines), registry.unavailable
    assert all(name == engine.info.name for name, engine in registry.engines.items())


def test_broken_engines_are_listed_with_the_reason_and_the_others_serve():
    engines, unavailable = discover(["engine_fixtures.broken_engines"])
    assert list(engines) == ["works"]
    assert "needs the Python package 'marionette_test_package_that_is_not_installed'" in \
        unavailable["needs-a-package"].reason
    assert "RuntimeError: no device to run on" in unavailable["fails-to-build"].reason
    assert "declares the name 'something-else', not 'misnamed'" in unavailable["misnamed"].reason
    registry = EngineRegistry(engines, unavailable)
    with pytest.raises(Exception, match="'fails-to-build' is unavailable on this backend: building FailsToBuild"):
        registry.get("fails-to-build")
    with pytest.raises(Exception, match="no engine 'nope'; this backend has: works"):
        registry.get("nope")


def test_the_engines_command_lists_inputs_settings_and_the_weights_check(tmp_path, capsys):
    assert marionette(["engines", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    engines = {engine["name"]: engine for engine in listing["engines"]}
    assert {"warp"} | DIFFUSION_ENGINES <= set(engines) and listing["unavailable_engines"] == []
    assert engines["wan-animate"]["settings"]["carry"]["choices"] == [1, 5]
    assert [spec["style"] for spec in engines["wan-animate"]["inputs"] if spec["kind"] == "images"] == \
        ["wan", "face-crop", "background", "rig-mask"]
    assert marionette(["engines", "echomimic", "--weights", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "echomimic" in text and "warp" not in text
    assert f"weights {tmp_path}: the EchoMimic weights folder {tmp_path} has no" in text
    assert marionette(["engines", "warp", "--weights", str(tmp_path)]) == 0
    assert "needs no weights" in capsys.readouterr().out
    assert marionette(["engines", "nope"]) == 2
    assert "no engine 'nope'" in capsys.readouterr().err


def test_without_diffusers_the_diffusion_engines_say_why_and_warp_serves(tmp_path):
    listed = subprocess.run([sys.executable, "-c", WITHOUT_DIFFUSERS, "engines", "--json"], capture_output=True,
                            text=True, timeout=300)
    assert listed.returncode == 0, listed.stderr
    listing = json.loads(listed.stdout)
    assert [engine["name"] for engine in listing["engines"]] == ["warp"]
    reasons = {engine["name"]: engine["reason"] for engine in listing["unavailable_engines"]}
    assert set(reasons) == DIFFUSION_ENGINES
    assert all("needs the Python package 'diffusers'" in reason and "marionette[diffusion]" in reason
               for reason in reasons.values()), reasons

    server = subprocess.Popen([sys.executable, "-c", WITHOUT_DIFFUSERS, "serve", "--port", "0", "--store",
                               str(tmp_path / "jobs"), "--token-file", str(tmp_path / "token")],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        port = int(server.stdout.readline().split()[1])
        with BackendClient("127.0.0.1", port, (tmp_path / "token").read_text().strip(), timeout=60) as client:
            capabilities = client.capabilities
            assert [engine["name"] for engine in capabilities["engines"]] == ["warp"]
            assert {engine["name"] for engine in capabilities["unavailable_engines"]} == DIFFUSION_ENGINES
            job, reference = synthetic.warp_job(2, width=64, height=96)
            with pytest.raises(BackendError, match="'echomimic' is unavailable on this backend: needs the Python "
                                                   "package 'diffusers'"):
                client.submit({**job, "engine": "echomimic"}, reference)
            accepted = client.submit(job, reference)
            while (message := client.receive()).type != "done":
                pass
            assert message.header["job_id"] == accepted["job_id"]
    finally:
        server.terminate()
        server.wait(30)


def test_render_options_come_from_the_engine_declaration(capsys):
    with pytest.raises(SystemExit):
        marionette(["render", "--engine", "wan-animate", "--help"])
    text = capsys.readouterr().out
    assert "settings of the wan-animate engine" in text
    for option in ("--carry {1,5}", "--segment SEGMENT", "--offload {none,model,group}", "--mode {animate,replace}",
                   "--prompt TEXT", "--negative-prompt TEXT", "--weights WEIGHTS"):
        assert option in text, option
    with pytest.raises(SystemExit):
        marionette(["render", "--engine", "echomimic", "--help"])
    assert "--accelerated, --no-accelerated" in capsys.readouterr().out
    code = marionette(["render", "--engine", "warp", "--reference", "r.png", "--out", "o", "--steps", "3"])
    assert code == 2
    assert "engine 'warp' has no setting 'steps' (--steps); it has --person" in capsys.readouterr().err
    code = marionette(["render", "--engine", "warp", "--reference", "r.png", "--out", "o", "--carry", "5"])
    assert code == 2 and "has no setting 'carry'" in capsys.readouterr().err


def test_convert_weights_writes_twins_of_any_engines_checkpoints(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    torch.save({"layer.weight": torch.ones(2, 2)}, tmp_path / "denoising_unet_pose_acc.pth")
    torch.save({"state_dict": {"out_fn.bias": torch.zeros(3)}}, tmp_path / "audio2mesh.pt")
    torch.save({"dims": {"n_mels": 80}, "model_state_dict": {}}, tmp_path / "whisper_tiny.pt")
    assert marionette(["convert-weights", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "wrote" in text and "left" in text and "whisper_tiny.pt as it is" in text
    from safetensors.torch import load_file

    assert torch.equal(load_file(tmp_path / "denoising_unet_pose_acc.safetensors")["layer.weight"], torch.ones(2, 2))
    assert set(load_file(tmp_path / "audio2mesh.safetensors")) == {"out_fn.bias"}
    assert not (tmp_path / "whisper_tiny.safetensors").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert marionette(["convert-weights", str(empty)]) == 2
    assert "holds no .pth or .pt checkpoint" in capsys.readouterr().err


def test_pyproject_installs_every_package():
    """A non-editable install carries exactly the packages of the tree."""
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = set()
    for top, folder in (("marionette", ROOT / "backend" / "marionette"), ("marionette_core", ROOT / "blender_addon" / "core")):
        for init in folder.rglob("__init__.py"):
            parts = init.parent.relative_to(folder).parts
            found.add(".".join((top, *parts)))
    assert listed == found
