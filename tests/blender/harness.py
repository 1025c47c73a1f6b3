"""Run test code inside real Blender (the bpy module) with the extension installed from the built zip.

Each call starts a fresh process with HOME in a temporary folder, so Blender's user extension
repository starts empty; the extension is installed through Blender's own extension installer.
The bpy module can hang at interpreter exit once an extension was installed, so the runner prints
its result, flushes and leaves with os._exit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# `make test` runs this suite once per Blender version; the environment variable picks the venv.
BLENDER_PYTHON = Path(os.environ.get("MARIONETTE_BLENDER_PYTHON") or ROOT / ".venv-blender" / "bin" / "python")
RUNNER = Path(__file__).with_name("runner.py")
RESULT_MARK = "MARIONETTE-TEST-RESULT:"


def extension_zip() -> Path:
    manifest = tomllib.loads((ROOT / "blender_manifest.toml").read_text())
    return ROOT / "dist" / f"{manifest['id']}-{manifest['version']}.zip"


def build_extension() -> Path:
    subprocess.run([str(BLENDER_PYTHON), str(ROOT / "scripts" / "build_extension.py")], check=True,
                   capture_output=True, timeout=300)
    return extension_zip()


def run_in_blender(case, tmp_path: Path, timeout: float = 600, install: bool = True, **kwargs):
    """Call `case(**kwargs)` (a function defined at module level in a test file) inside Blender and
    return what it returns (JSON-serialisable). A failing assertion inside fails the test with the
    Blender-side traceback."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    request = {
        "zip": str(extension_zip()) if install else None,
        "module": str(Path(sys.modules[case.__module__].__file__).resolve()),
        "function": case.__name__,
        "kwargs": kwargs,
    }
    env = dict(os.environ, HOME=str(home), PYTHONUNBUFFERED="1", MARIONETTE_ROOT=str(ROOT))
    env.pop("PYTHONPATH", None)
    process = subprocess.run([str(BLENDER_PYTHON), str(RUNNER), json.dumps(request)], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=timeout)
    output = process.stdout + process.stderr
    for line in process.stdout.splitlines():
        if line.startswith(RESULT_MARK):
            return json.loads(line[len(RESULT_MARK):])
    tail = "\n".join(output.splitlines()[-60:])
    raise AssertionError(f"Blender-side test failed (exit {process.returncode}):\n{tail}")
