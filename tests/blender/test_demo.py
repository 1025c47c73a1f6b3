"""`make demo`'s script from start to finish: scene, backend, Generate, a video with every frame."""

import os
import subprocess

from harness import BLENDER_PYTHON, ROOT, run_in_blender


def case_count_video_frames(path):
    import bpy

    clip = bpy.data.movieclips.load(path)
    return {"frames": clip.frame_duration, "size": list(clip.size)}


def test_demo_makes_a_video_with_every_frame(tmp_path):
    out = tmp_path / "demo"
    # Every deprecation warning printed: the demo touches no API a supported Blender deprecates.
    env = dict(os.environ, PYTHONWARNINGS="always::DeprecationWarning")
    result = subprocess.run([str(BLENDER_PYTHON), str(ROOT / "scripts" / "demo.py"), "--out", str(out)],
                            capture_output=True, text=True, timeout=600, cwd=ROOT, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    output = result.stdout + result.stderr
    warnings = [line for line in output.splitlines() if "DeprecationWarning" in line or "does not support" in line]
    assert not warnings, warnings
    assert (out / "demo.blend").is_file() and (out / "reference.png").is_file()
    frames = sorted(p.name for p in (out / "marionette" / "frames").glob("*.png"))
    assert frames == [f"{frame:06d}.png" for frame in range(1, 97)]
    video = run_in_blender(case_count_video_frames, tmp_path, install=False, path=str(out / "demo.mp4"))
    assert video == {"frames": 96, "size": [512, 768]}
