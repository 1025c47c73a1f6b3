"""Benchmark: the driving video's render per look, against the pose-map pass in the same run; and the
picture of the looks for the README.

The demo scene (rigs/build_demo_scene.py) with the demo body bound to the rig, so the scene look has a
character to draw; Workbench as the scene's engine (EEVEE without a GPU takes seconds per frame).
  1. At 832x480, 24 frames after a warm-up: control maps (bpy.ops.marionette.render_control_maps) and
     the driving render in each look (scene, mannequin, pose maps), ms per frame; the mannequin's
     build time apart.
  2. At the demo's 512x768, frame 30 (jaw open): the reference image, then the scene, mannequin and pose
     looks side by side, written to --picture.

    HOME=<private folder> .venv-blender/bin/python benchmarks/bench_driving.py --zip dist/marionette-X.zip \\
        [--picture docs/images/driving-looks.png]
"""

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FRAMES = 24
WARM_UP = 4
SIZE = (832, 480)
PICTURE_FRAME = 30
LOOKS = ("SCENE", "MANNEQUIN", "POSE")


def demo_scene(work: Path):
    import bpy

    sys.path.insert(0, str(ROOT / "rigs"))
    import build_demo_scene
    import demo_rig

    scene = build_demo_scene.build_scene(work / "reference.png")
    rig = bpy.data.objects["DemoRig"]
    demo_rig.bind_demo_body(rig, demo_rig.build_demo_body(rig, scene.frame_start), scene.frame_start)
    scene.render.engine = "BLENDER_WORKBENCH"
    bpy.ops.wm.save_as_mainfile(filepath=str(work / "bench.blend"))
    return scene, rig


def render_look(scene, rig, look: str, first: int, last: int) -> tuple[float, float]:
    """The driving video in one look over first..last: (seconds per frame, seconds to set up)."""
    from bl_ext.user_default.marionette.control_maps.job import job_settings
    from bl_ext.user_default.marionette.generate.driving import DrivingRenderJob

    start = time.perf_counter()
    job = DrivingRenderJob(scene, [rig], job_settings(scene, 8192, first, last), look)
    built = time.perf_counter()
    try:
        while job.step(1.0):
            pass
        job.finish()
    finally:
        job.close()
    return (time.perf_counter() - built) / (last - first + 1), built - start


def picture(scene, rig, work: Path, path: Path) -> None:
    """Reference | scene | mannequin | pose maps at PICTURE_FRAME, side by side."""
    import bpy
    import numpy as np
    from bl_ext.user_default.marionette.core.png import decode_png, encode_png

    scene.render.resolution_x, scene.render.resolution_y = 512, 768
    bpy.ops.marionette.render_control_maps(frame_start=PICTURE_FRAME, frame_end=PICTURE_FRAME)
    row = [decode_png((work / "reference.png").read_bytes())[..., :3]]
    for look in LOOKS:
        render_look(scene, rig, look, PICTURE_FRAME, PICTURE_FRAME)
        frame = work / "marionette" / "control" / "driving" / f"{PICTURE_FRAME:06d}.png"
        row += [np.full((768, 8, 3), 255, np.uint8), decode_png(frame.read_bytes())[..., :3]]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_png(np.ascontiguousarray(np.concatenate(row, axis=1))))


def gpu_name() -> str:
    try:
        import gpu

        return f"{gpu.platform.vendor_get()} {gpu.platform.renderer_get()}"
    except Exception as error:  # no GPU module in this build: say so rather than fail the benchmark
        return f"unknown ({error})"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--zip", required=True)
    parser.add_argument("--picture", type=Path, default=ROOT / "out" / "bench" / "driving-looks.png")
    args = parser.parse_args()
    import bpy

    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.ops.extensions.package_install_files(filepath=str(Path(args.zip).resolve()), repo="user_default",
                                             enable_on_install=True)
    work = Path(tempfile.mkdtemp(prefix="marionette-driving-"))
    scene, rig = demo_scene(work)
    scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = *SIZE, 100
    first, last = scene.frame_start + WARM_UP, scene.frame_start + WARM_UP + FRAMES - 1

    bpy.ops.marionette.render_control_maps(frame_start=scene.frame_start, frame_end=first - 1)  # warm-up
    for look in LOOKS:
        render_look(scene, rig, look, scene.frame_start, first - 1)
    start = time.perf_counter()
    bpy.ops.marionette.render_control_maps(frame_start=first, frame_end=last)
    maps = (time.perf_counter() - start) / FRAMES
    timings = {look: render_look(scene, rig, look, first, last) for look in LOOKS}

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.python_implementation()} "
          f"{platform.python_version()}, Blender {bpy.app.version_string} (background; OpenGL: "
          f"{gpu_name()})")
    print(f"demo scene, {SIZE[0]}x{SIZE[1]}, {FRAMES} frames after {WARM_UP} warm-up frames; scene engine Workbench")
    print(f"control maps (pose, face, keypoints): {maps * 1000:.1f} ms/frame")
    for look, (per_frame, setup) in timings.items():
        print(f"driving {look.lower():9s}: {per_frame * 1000:.1f} ms/frame ({per_frame / maps:.1f}x the maps), "
              f"set-up {setup * 1000:.0f} ms")
    picture(scene, rig, work, args.picture)
    print(f"picture of the looks: {args.picture}")
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    os._exit(code)
