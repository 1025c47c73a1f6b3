"""`make demo`: the whole job on the embedded default engine, from nothing to a video.

    .venv-blender/bin/python scripts/demo.py --out out/demo

1. builds the demo scene (rigs/build_demo_scene.py: demo rig with its motion, camera, reference image);
2. installs the extension zip into a private Blender user folder (HOME=<out>/.blender-home);
3. Generate: control maps, then the `warp` engine on a backend the extension starts itself
   (.venv/bin/python -m marionette.cli serve, on a free loopback port), frames streamed into the VSE;
4. renders the VSE to <out>/demo.mp4 with Blender's FFmpeg output and saves <out>/demo.blend.
"""

import argparse
import os
import socket
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "demo")
    parser.add_argument("--frames", type=int, default=0, help="render only the first N frames (tests)")
    args = parser.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    home = out / ".blender-home"
    home.mkdir(exist_ok=True)
    os.environ["HOME"] = str(home)  # a private Blender user folder: the user's own stays untouched

    import bpy

    sys.path.insert(0, str(ROOT / "rigs"))
    import build_demo_scene

    manifest = tomllib.loads((ROOT / "blender_manifest.toml").read_text())
    extension = ROOT / "dist" / f"{manifest['id']}-{manifest['version']}.zip"
    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.ops.extensions.package_install_files(filepath=str(extension), repo="user_default", enable_on_install=True)
    prefs = bpy.context.preferences.addons["bl_ext.user_default.marionette"].preferences
    prefs.backend_python = str(ROOT / ".venv" / "bin" / "python")
    prefs.token_file = str(out / ".backend" / "token")
    prefs.port = free_port()
    prefs.auto_start = True

    blend = out / "demo.blend"
    scene = build_demo_scene.build_scene(out / "reference.png")
    if args.frames:
        scene.frame_end = scene.frame_start + args.frames - 1
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))
    try:
        bpy.ops.marionette.generate()
    finally:
        bpy.ops.marionette.stop_backend()

    from bl_ext.user_default.marionette import compat

    compat.use_ffmpeg_output(scene.render.image_settings)
    scene.render.ffmpeg.format = "MPEG4"
    scene.render.ffmpeg.codec = "H264"
    scene.render.ffmpeg.constant_rate_factor = "HIGH"
    scene.render.use_sequencer = True
    scene.render.filepath = str(out / "demo.mp4")
    bpy.ops.render.render(animation=True)
    bpy.ops.wm.save_mainfile()
    print(f"video:        {out / 'demo.mp4'}")
    print(f"scene:        {blend}")
    print(f"frames:       {out / 'marionette' / 'frames'}")
    print(f"control maps: {out / 'marionette' / 'control'}")
    return 0


if __name__ == "__main__":
    try:
        code = main()
    except Exception as error:  # one clear line for the user, not a bare traceback
        print(f"demo failed: {error}", file=sys.stderr)
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
