"""Install the built extension into a private Blender user folder, open the demo scene, render its
control maps (blocking, as on a render farm) and save the .blend with the strips.

    .venv-blender/bin/python scripts/render_demo_maps.py --blend out/demo/demo.blend --zip dist/marionette-X.zip

Set HOME to a private folder before running it (the Makefile does), so your own Blender
configuration is not touched.
"""

import argparse
import os
import sys
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--blend", required=True)
    parser.add_argument("--zip", required=True)
    args = parser.parse_args()
    import bpy

    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.ops.extensions.package_install_files(filepath=str(Path(args.zip).resolve()), repo="user_default",
                                             enable_on_install=True)
    bpy.ops.wm.open_mainfile(filepath=str(Path(args.blend).resolve()))
    scene = bpy.context.scene
    scene.marionette.characters.add().object = bpy.data.objects["DemoRig"]
    bpy.ops.marionette.render_control_maps()
    bpy.ops.wm.save_mainfile()
    out = Path(bpy.path.abspath(scene.marionette.output_dir)).resolve()
    print(f"control maps: {out / 'control' / 'pose'}")
    print(f"keypoints:    {out / 'control' / 'keypoints'}")
    print(f"scene:        {Path(args.blend).resolve()}")
    return 0


if __name__ == "__main__":
    try:
        code = main()
    except Exception as error:  # a clear line for the user, not a bare traceback
        print(f"demo failed: {error}", file=sys.stderr)
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
