"""The driving video in real Blender: each look rendered through the scene camera (scene, mannequin,
pose maps), the mannequin on a BVH mocap rig and on the demo rig with its bound face, cancelling,
what is left behind (nothing), and Generate with wan-animate-2 on a real backend with tiny weights.

The mannequin is checked against the control maps' keypoints: where the rig's joints project, the
frame shows the body, not the background. bpy runs as `blender -b` does (bpy.app.background).
"""

from pathlib import Path


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


def _demo_scene(tmp, frames, size):
    import sys

    import bpy
    import scene_helpers as h

    if str(h.ROOT / "rigs") not in sys.path:
        sys.path.insert(0, str(h.ROOT / "rigs"))
    import build_demo_scene

    scene = build_demo_scene.build_scene(Path(tmp) / "reference.png")
    scene.render.resolution_x, scene.render.resolution_y = size
    scene.frame_end = scene.frame_start + frames - 1
    scene.render.engine = "BLENDER_WORKBENCH"  # EEVEE needs a GPU to be quick; any engine renders the scene look
    scene.marionette.output_dir = str(Path(tmp) / "marionette")
    return scene, bpy.data.objects["DemoRig"], bpy.data.objects["DemoFace"]


def _render_settings(scene):
    render = scene.render
    return [render.engine, render.filepath, render.use_border, render.use_sequencer, render.use_compositing,
            render.resolution_percentage, render.image_settings.file_format, render.image_settings.color_mode,
            scene.frame_current]


def case_each_look_on_the_demo_rig(tmp):
    import numpy as np
    import scene_helpers as h

    from bl_ext.user_default.marionette.control_maps.job import job_settings
    from bl_ext.user_default.marionette.core.png import decode_png
    from bl_ext.user_default.marionette.generate.driving import DrivingRenderJob, resolve_look

    scene, rig, face = _demo_scene(tmp, frames=4, size=(256, 384))
    h.render_maps()
    control = h.output_dir() / "control"
    frames = list(range(scene.frame_start, scene.frame_end + 1))
    settings = job_settings(scene, 4096)
    before, render_before = _data_counts(), _render_settings(scene)
    results = {}
    for look in ("AUTO", "SCENE", "POSE"):
        face.hide_render = look != "SCENE"  # the scene look renders the demo's face mesh
        job = DrivingRenderJob(scene, [rig], settings, look)
        result = {"look": job.look}
        if job.look == "MANNEQUIN":
            result["made"] = sorted(obj.name for obj in job.mannequins)
            result["face_follows"] = _face_copy_follows(scene, job, face, [1, 13, 30])  # a blink, the jaw open
        result["outcome"] = _run_job(job).message
        images = [decode_png((control / "driving" / f"{frame:06d}.png").read_bytes()) for frame in frames]
        result["names"] = sorted(p.name for p in (control / "driving").iterdir())
        result["shape"] = list(images[0].shape)
        result["pose_equal"] = [(control / "driving" / f"{f:06d}.png").read_bytes() ==
                                (control / "pose" / f"{f:06d}.png").read_bytes() for f in frames]
        corner = images[0][0, 0, :3].astype(int)
        result["corner"] = corner.tolist()
        # The face: the share of pixels inside the face landmarks' box that are not the background.
        people = h.read_keypoints(frames[0])["people"][0]
        points = np.array(people["face_keypoints_2d"]).reshape(-1, 3)
        x1, y1 = points[:, :2].min(axis=0).astype(int)
        x2, y2 = points[:, :2].max(axis=0).astype(int)
        box = images[0][y1:y2, x1:x2, :3].astype(int)
        result["face_shown"] = float((np.abs(box - corner).max(axis=2) > 12).mean())
        # Dark marks on the face (eyes, brows, lips): pixels far darker than the face's median.
        luma = box.mean(axis=2)
        result["face_marks"] = float((luma < np.median(luma) * 0.55).mean())
        result["first"] = images[0][..., :3].astype(np.float64).mean(axis=2).tolist()
        results[look] = result
    face.hide_render = True
    scene.frame_set(scene.frame_start)
    results["after"], results["before"] = _data_counts(), before
    results["render_after"], results["render_before"] = _render_settings(scene), render_before
    for look in ("AUTO", "SCENE", "POSE"):
        results[look]["first"] = np.asarray(results[look].pop("first"))
    looks = ("AUTO", "SCENE", "POSE")
    results["differ"] = {f"{a}-{b}": float(np.abs(results[a]["first"] - results[b]["first"]).mean())
                         for a, b in zip(looks, looks[1:] + looks[:1])}
    for look in looks:
        del results[look]["first"]

    # Esc midway: the driving pass stays as the last complete render made it, nothing half-written.
    kept = {p.name: p.read_bytes() for p in (control / "driving").iterdir()}
    job = DrivingRenderJob(scene, [rig], settings, "MANNEQUIN")
    cancelled = _run_job(job, cancel_after=2)
    results["cancel"] = {"cancelled": cancelled.cancelled, "message": cancelled.message,
                         "kept": {p.name: p.read_bytes() for p in (control / "driving").iterdir()} == kept,
                         "folders": sorted(p.name for p in control.iterdir()), "counts": _data_counts() == before}

    # With the demo's body meshes bound to the rig, Auto renders the scene.
    import demo_rig

    demo_rig.bind_demo_body(rig, demo_rig.build_demo_body(rig, scene.frame_start), scene.frame_start)
    results["auto_with_body"] = resolve_look("AUTO", [rig])
    return results


def _face_copy_follows(scene, job, face, frames):
    """The mannequin's face (a copy) deforms as the bound face does at every frame, and moves."""
    import numpy as np

    copy = next(obj for obj in job.mannequins if obj.data.shape_keys is not None)
    shapes = []
    for frame in frames:
        job.stage.frame_set(frame)
        scene.frame_set(frame)
        evaluated = [obj.evaluated_get(depsgraph) for obj, depsgraph in (
            (copy, job.stage.view_layers[0].depsgraph), (face, scene.view_layers[0].depsgraph))]
        coordinates = []
        for obj in evaluated:
            mesh = obj.to_mesh()
            values = np.empty(len(mesh.vertices) * 3)
            mesh.vertices.foreach_get("co", values)
            coordinates.append((np.array(obj.matrix_world) @ np.c_[values.reshape(-1, 3), np.ones(len(mesh.vertices))].T).T)
            obj.to_mesh_clear()
        shapes.append(coordinates)
    same = max(float(np.abs(a - b).max()) for a, b in shapes)
    moved = float(np.abs(shapes[0][1] - shapes[-1][1]).max())
    return {"same": same, "moved": moved}


def test_each_look_on_the_demo_rig_and_a_cancelled_render(tmp_path):
    result = run_in_blender(case_each_look_on_the_demo_rig, tmp_path, tmp=str(tmp_path))
    names = [f"{frame:06d}.png" for frame in range(1, 5)]
    # The demo's only mesh is its bound face, hidden in renders: a skeleton rig, so Auto is the mannequin.
    auto = result["AUTO"]
    assert auto["look"] == "MANNEQUIN"
    assert auto["made"] == ["Marionette mannequin DemoFace", "Marionette mannequin DemoRig"]
    assert auto["face_follows"]["same"] < 1e-5 and auto["face_follows"]["moved"] > 1e-3, auto["face_follows"]
    assert max(abs(a - b) for a, b in zip(auto["corner"], (63, 63, 66))) <= 2, auto["corner"]  # plain background
    assert auto["face_shown"] > 0.8 and auto["face_marks"] > 0.01, auto
    assert result["SCENE"]["look"] == "SCENE" and result["SCENE"]["face_shown"] > 0.5, result["SCENE"]
    assert result["POSE"]["look"] == "POSE" and all(result["POSE"]["pose_equal"])
    assert not any(auto["pose_equal"]) and not any(result["SCENE"]["pose_equal"])
    for look in ("AUTO", "SCENE", "POSE"):
        assert result[look]["names"] == names and result[look]["shape"] == [384, 256, 3], result[look]
    assert min(result["differ"].values()) > 5, result["differ"]
    assert result["after"] == result["before"]
    assert result["render_after"] == result["render_before"]  # the scene's render settings and frame, as they were
    cancel = result["cancel"]
    assert cancel["cancelled"] and "cancelled" in cancel["message"] and cancel["kept"] and cancel["counts"]
    assert not [name for name in cancel["folders"] if name.startswith(".")], cancel["folders"]
    assert result["auto_with_body"] == "SCENE"
