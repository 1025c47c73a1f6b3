"""Build the demo scene: the demo rig with its keyed motion and a front camera, saved to a .blend.

    python rigs/build_demo_scene.py --out FILE.blend           (bpy module)
    blender -b -P rigs/build_demo_scene.py -- --out FILE.blend
"""

import argparse
import os
import sys
from pathlib import Path

import bpy

sys.path.insert(0, str(Path(__file__).resolve().parent))
from demo_rig import add_front_camera, build_demo_rig  # noqa: E402

RESOLUTION = (512, 768)


def build_scene() -> bpy.types.Scene:
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    scene.name = "Marionette Demo"
    scene.render.resolution_x, scene.render.resolution_y = RESOLUTION
    scene.render.resolution_percentage = 100
    build_demo_rig()
    add_front_camera()
    return scene


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="the .blend file to write")
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    build_scene()
    bpy.ops.wm.save_as_mainfile(filepath=str(out))
    print(f"demo scene written to {out}")
    return 0


if __name__ == "__main__":
    arguments = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else sys.argv[1:]
    code = main(arguments)
    sys.stdout.flush()
    os._exit(code)
