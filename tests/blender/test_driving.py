"""The driving video in real Blender: each look rendered through the scene camera (scene, mannequin,
pose maps), the mannequin on a BVH mocap rig and on the demo rig with its bound face, cancelling,
what is left behind (nothing), and Generate with wan-animate-2 on a real backend with tiny weights.

The mannequin is checked against the control maps' keypoints: where the rig's joints project, the
frame shows the body, not the background. bpy runs as `blender -b` does (bpy.app.background).
"""

import subprocess
from pathlib import Path

import pytest

from harness import ROOT, run_in_blender

BACKEND_PYTHON = str(ROOT / ".venv" / "bin" / "python")
MOCAP = ROOT / "tests" / "data" / "mocap" / "cmu_wave_13_26.bvh"
SIZE = (64, 96)


# --- Blender side ---------------------------------------------------------------------------------

def _data_counts():
    import bpy

    counts = {name: len(getattr(bpy.data, name)) for name in (
        "scenes", "objects", "meshes", "worlds", "materials", "shape_keys", "collections", "cameras")}
    # Any render makes Blender's own "Render Result" image; the user's F12 does too.
    counts["images"] = sum(image.type != "RENDER_RESULT" for image in bpy.data.images)
    return counts


def _run_job(job, cancel_after=None):
    """Step a render job to its end as Generate does (a cancel after `cancel_after` frames)."""
    steps = 0
    try:
        while job.step(0.05):
            steps += 1
            if cancel_after is not None and steps >= cancel_after:
                job.cancel()
        return job.finish()
    finally:
        job.close()


def _bvh_scene(tmp, frames, size):
    import addon_utils
    import bpy
    import scene_helpers as h

    scene = h.new_scene(width=size[0], height=size[1])
    addon_utils.enable("io_anim_bvh", default_set=True)
    bpy.ops.import_anim.bvh(filepath=str(MOCAP), update_scene_fps=True, update_scene_duration=True)
    rig = bpy.context.object
    scene.frame_start = int(rig.animation_data.action.frame_range[0])
    scene.frame_end = scene.frame_start + frames - 1
    scene.marionette.characters.add().object = rig
    height = max(b.head_local.length for b in rig.data.bones) * 2.5
    camera = bpy.data.objects.new("Camera", bpy.data.cameras.new("Camera"))
    scene.collection.objects.link(camera)
    scene.camera = camera
    follow = camera.constraints.new("COPY_LOCATION")
    follow.target, follow.subtarget = rig, "Hips"
    follow.use_offset = True
    track = camera.constraints.new("TRACK_TO")
    track.target, track.subtarget = rig, "Hips"
    track.track_axis, track.up_axis = "TRACK_NEGATIVE_Z", "UP_Y"
    camera.location = (height * 0.5, -height * 1.9, height * 0.2)
    camera.data.lens = 35
    scene.marionette.output_dir = str(Path(tmp) / "marionette")
    return scene, rig


def _covered(image, body: dict, names, background, tolerance=12) -> dict:
    """For each named body point in view: does the frame show something other than the background
    there (within a pixel: a joint seen end-on sits on the body's outline)?"""
    import numpy as np

    found = {}
    for name in names:
        x, y, c = body[name]
        px, py = int(round(x)), int(round(y))
        if c > 0 and 1 <= px < image.shape[1] - 1 and 1 <= py < image.shape[0] - 1:
            window = image[py - 1:py + 2, px - 1:px + 2, :3].astype(int)
            found[name] = bool((np.abs(window - background).max(axis=2) > tolerance).any())
    return found


def case_mannequin_on_a_bvh_rig(tmp):
    import bpy
    import numpy as np
    import scene_helpers as h

    from bl_ext.user_default.marionette.control_maps.job import job_settings
    from bl_ext.user_default.marionette.core.png import decode_png
    from bl_ext.user_default.marionette.generate.driving import DrivingRenderJob, resolve_look

    scene, rig = _bvh_scene(tmp, frames=6, size=(320, 480))
    h.render_maps()
    before = _data_counts()
    look = resolve_look("AUTO", [rig])
    settings = job_settings(scene, 4096)
    job = DrivingRenderJob(scene, [rig], settings, "AUTO")
    built = {"objects": len(bpy.data.objects) - before["objects"], "scenes": len(bpy.data.scenes) - before["scenes"],
             "vertex_groups": sorted({g.name for obj in job.mannequins for g in obj.vertex_groups}),
             "deform_bones": sorted(b.name for b in rig.data.bones if b.use_deform)}
    outcome = _run_job(job)
    folder = h.output_dir() / "control" / "driving"
    frames = list(range(scene.frame_start, scene.frame_end + 1))
    images = {frame: decode_png((folder / f"{frame:06d}.png").read_bytes()) for frame in frames}
    background = images[frames[0]][0, 0, :3].astype(int)
    coverage, lit = [], []
    for frame in frames:
        body = h.body_points(h.read_keypoints(frame))
        coverage.append(_covered(images[frame], body,
                                 ("neck", "r_shoulder", "l_shoulder", "r_elbow", "l_elbow", "r_hip", "l_hip",
                                  "r_knee", "l_knee", "nose"), background))
        lit.append(float((np.abs(images[frame][..., :3].astype(int) - background).max(axis=2) > 12).mean()))
    return {"look": look, "outcome": outcome.message, "built": built, "names": [p.name for p in sorted(folder.iterdir())],
            "sizes": sorted({images[f].shape[:2] for f in frames}), "coverage": coverage, "lit": lit,
            "moved": float((images[frames[0]] != images[frames[-1]]).any(axis=2).mean()),
            "background": background.tolist(), "after": _data_counts(), "before": before,
            "background_mode": bpy.app.background, "staging": sorted(p.name for p in folder.parent.iterdir())}


def test_mannequin_follows_a_bvh_rig_and_leaves_nothing_behind(tmp_path):
    result = run_in_blender(case_mannequin_on_a_bvh_rig, tmp_path, tmp=str(tmp_path))
    assert result["background_mode"]  # as `blender -b` runs
    assert result["look"] == "MANNEQUIN"  # a skeleton without meshes
    built = result["built"]
    assert built["scenes"] == 1 and built["objects"] == 1  # the stage and one body (no bound face)
    assert set(built["vertex_groups"]) <= set(built["deform_bones"]) and len(built["vertex_groups"]) >= 15
    assert result["names"] == [f"{frame:06d}.png" for frame in range(1, 7)], result["names"]
    assert result["sizes"] == [[480, 320]]
    # The body covers every joint the keypoints put in view, on every frame, and it moves.
    for frame_coverage in result["coverage"]:
        assert len(frame_coverage) >= 8 and all(frame_coverage.values()), result["coverage"]
    assert all(0.01 < share < 0.5 for share in result["lit"]), result["lit"]
    assert result["moved"] > 0.01, result["moved"]
    assert result["after"] == result["before"], "the mannequin, its stage or its world was left behind"
    assert "driving" in result["staging"] and not [n for n in result["staging"] if n.startswith(".staging")]
