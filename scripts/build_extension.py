"""Build dist/marionette-<version>.zip with Blender's own extension tool, after validating it.

The zip holds the manifest, blender_addon/ (the core/ shared with the backend included), the rig
presets from rigs/presets/ (as rig/presets/) and the canonical face model from rigs/face/ (as
face/model/). Run with the Python of .venv-blender (it finds blender_ext.py in bpy).
"""

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import bpy  # noqa: F401  (only to locate Blender's bundled scripts)

ROOT = Path(__file__).resolve().parent.parent


def blender_ext_tool() -> Path:
    scripts = Path(bpy.utils.resource_path("LOCAL")) / "scripts"
    return scripts / "addons_core" / "bl_pkg" / "cli" / "blender_ext.py"


def main() -> int:
    manifest = tomllib.loads((ROOT / "blender_manifest.toml").read_text())
    stage = ROOT / "build" / "extension" / manifest["id"]
    shutil.rmtree(stage, ignore_errors=True)
    shutil.copytree(ROOT / "blender_addon", stage, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy2(ROOT / "blender_manifest.toml", stage / "blender_manifest.toml")
    shutil.copytree(ROOT / "rigs" / "presets", stage / "rig" / "presets")
    (stage / "face" / "model").mkdir()
    for name in ("canonical_face_mesh.json", "README.md"):  # the data and its licence notice
        shutil.copy2(ROOT / "rigs" / "face" / name, stage / "face" / "model" / name)
    output = ROOT / "dist" / f"{manifest['id']}-{manifest['version']}.zip"
    output.parent.mkdir(exist_ok=True)
    output.unlink(missing_ok=True)
    tool = blender_ext_tool()
    for command in (["validate", str(stage)],
                    ["build", "--source-dir", str(stage), "--output-filepath", str(output)],
                    ["validate", str(output)]):
        result = subprocess.run([sys.executable, str(tool), *command], capture_output=True, text=True)
        if result.returncode != 0:
            print(result.stdout + result.stderr, file=sys.stderr)
            return result.returncode
    print(output.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    sys.stdout.flush()
    import os
    os._exit(main())
