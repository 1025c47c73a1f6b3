"""Bad input gets a clear report naming the cause, leaves earlier outputs untouched and no partial
files, and Blender carries on (a good run still works in the same session)."""

from harness import run_in_blender


def _snapshot(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def case_bad_inputs(tmp):
    import math

    import bpy
    import scene_helpers as h

    scene = h.new_scene()
    rig = h.demo_character()
    camera = h.front_camera()
    h.save_blend(tmp)
    h.render_maps(frame_start=1, frame_end=5)
    control = h.output_dir() / "control"
    good = _snapshot(control)
    assert len(good) == 10

    errors = {}

    def attempt(label, **kwargs):
        try:
            bpy.ops.marionette.render_control_maps(**kwargs)
        except RuntimeError as error:
            errors[label] = str(error)
        else:
            errors[label] = None
        assert _snapshot(control) == good, f"{label}: earlier outputs changed or partial files left"

    scene.camera = None
    attempt("no camera")
    scene.camera = camera

    attempt("empty frame range", frame_start=10, frame_end=5)

    scene.render.resolution_x = 20000
    attempt("resolution over limit")
    scene.render.resolution_x = 512

    scene.marionette.characters.clear()
    rig.select_set(False)
    attempt("no armature")
    scene.marionette.characters.add().object = rig

    saved_dir = scene.marionette.output_dir
    scene.marionette.output_dir = "/proc/marionette-cannot-write-here"
    try:
        bpy.ops.marionette.render_control_maps(frame_start=1, frame_end=2)
        errors["unwritable output folder"] = None
    except RuntimeError as error:
        errors["unwritable output folder"] = str(error)
    scene.marionette.output_dir = saved_dir

    # A NaN transform at frame 4 fails the run after frames 1-3 were drawn: nothing of it is kept.
    bone = rig.pose.bones["lower_arm.L"]
    bone.location = (0.0, 0.0, 0.0)
    bone.keyframe_insert("location", frame=3)
    bone.location = (math.nan, 0.0, 0.0)
    bone.keyframe_insert("location", frame=4)
    attempt("NaN transform", frame_start=1, frame_end=5)
    curves = h.compat().fcurves(rig)
    for curve in [c for c in curves if c.data_path.endswith('"lower_arm.L"].location')]:
        curves.remove(curve)
    bone.location = (0.0, 0.0, 0.0)

    # Blender is fine: a good run works and replaces the outputs.
    h.render_maps(frame_start=2, frame_end=4)
    after = sorted(_snapshot(control))
    return {"errors": errors, "after": after}


def test_bad_inputs_are_reported_and_lose_nothing(tmp_path):
    result = run_in_blender(case_bad_inputs, tmp_path, tmp=str(tmp_path))
    errors = result["errors"]
    expected = {
        "no camera": "no camera",
        "empty frame range": "frame range 10-5 is empty",
        "resolution over limit": "over the limit",
        "no armature": "no armature",
        "unwritable output folder": "cannot write to the output folder",
        "NaN transform": "bone 'lower_arm.L' has a non-finite transform",
    }
    for label, words in expected.items():
        assert errors[label] is not None, f"{label}: no error reported"
        assert words in errors[label], f"{label}: unclear report {errors[label]!r}"
    assert "frame 4" in errors["NaN transform"]
    assert result["after"] == [f"keypoints/00000{f}.json" for f in (2, 3, 4)] + \
        [f"pose/00000{f}.png" for f in (2, 3, 4)]


def case_unsaved_relative_folder():
    import bpy
    import scene_helpers as h

    h.new_scene()
    h.demo_character()
    h.front_camera()
    try:
        bpy.ops.marionette.render_control_maps(frame_start=1, frame_end=1)
    except RuntimeError as error:
        return str(error)
    return None


def test_relative_output_folder_needs_a_saved_file(tmp_path):
    message = run_in_blender(case_unsaved_relative_folder, tmp_path)
    assert message and "not saved yet" in message
