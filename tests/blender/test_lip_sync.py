"""Lip Sync in real Blender: landmark offsets made from known shape-key weights (measured through
Blender's evaluated, deformed face) are keyed back onto the demo face's shape keys."""

from pathlib import Path

from harness import run_in_blender

MOUTH_KEYS = ("jawOpen", "mouthSmileLeft", "mouthSmileRight", "mouthFunnel", "mouthPucker")


def _operator():
    """bpy.ops.marionette.lip_sync, as the installed extension registers it."""
    import bpy

    return bpy.ops.marionette.lip_sync


def _demo_face(tmp, fps):
    import sys

    import bpy
    import scene_helpers as h

    if str(h.ROOT / "rigs") not in sys.path:
        sys.path.insert(0, str(h.ROOT / "rigs"))
    import build_demo_scene

    scene = build_demo_scene.build_scene(Path(tmp) / "reference.png")
    scene.render.fps, scene.render.fps_base = fps, 1.0
    face = bpy.data.objects["DemoFace"]
    face.data.shape_keys.animation_data_clear()  # the demo expression would override the values set here
    scene.frame_set(1)  # the rig at rest: the face's world space is its mesh space
    return scene, face


def _canonical_offsets(scene, face, table):
    """Per row of `table` ({key: value}), the 468 landmark offsets from the rest face, measured on
    the evaluated mesh through the face sampler, in the canonical layout's metres. The demo face is
    the canonical mesh moved (checked here), so mesh-space offsets are canonical offsets."""
    import json

    import bpy
    import numpy as np
    import scene_helpers as h
    from bl_ext.user_default.marionette.face.binding import FaceSampler

    data = json.loads((h.ROOT / "rigs" / "face" / "canonical_face_mesh.json").read_text())
    raw = np.array(data["vertices"]) * 0.01
    canonical = np.stack([raw[:, 0], -raw[:, 2], raw[:, 1]], axis=1)
    basis = np.array([v.co for v in face.data.shape_keys.reference_key.data])[:468]
    shift = basis - canonical
    assert np.abs(shift - shift.mean(axis=0)).max() < 1e-6, "the demo face is no longer the canonical mesh moved"

    sampler = FaceSampler(face)
    blocks = face.data.shape_keys.key_blocks
    to_mesh = np.array(face.matrix_world.inverted().to_3x3())

    def landmarks(values):
        for block in blocks[1:]:
            block.value = 0.0
        for name, value in values.items():
            blocks[name].value = value
        bpy.context.view_layer.update()
        return sampler.world_points(bpy.context.evaluated_depsgraph_get(), scene.frame_current)[:468]

    rest = landmarks({})
    offsets = np.array([(landmarks(row) - rest) @ to_mesh.T for row in table])
    landmarks({})
    return offsets


def _write_offsets(path, offsets, fps, seconds=None):
    """An offsets file as `marionette lip-sync` writes it (JSON, base64 little-endian float32)."""
    import base64
    import json

    import numpy as np

    data = np.ascontiguousarray(offsets, dtype="<f4")
    Path(path).write_text(json.dumps({
        "format": "marionette-lip-sync", "version": 1, "fps": float(fps), "frames": len(data), "landmarks": 468,
        "shape": list(data.shape), "dtype": "<f4", "units": "metres", "seconds": seconds,
        "offsets": base64.b64encode(data.tobytes()).decode("ascii")}))


def _keys(face, names):
    """Per shape key: [(frame, value), ...] of its F-curve."""
    import scene_helpers as h

    curves = {c.data_path: c for c in h.compat().fcurves(face.data.shape_keys) or ()}
    result = {}
    for name in names:
        curve = curves.get(f'key_blocks["{name}"].value')
        result[name] = [(p.co.x, p.co.y) for p in curve.keyframe_points] if curve else []
    return result


def _known_table(frames):
    import numpy as np

    table = []
    for i in range(frames):
        phase = i / frames * 2 * np.pi
        row = {"jawOpen": np.clip(0.5 + 0.7 * np.sin(phase), 0, 1), "mouthSmileLeft": np.clip(np.cos(phase), 0, 1),
               "mouthSmileRight": 0.3 + 0.2 * np.sin(2 * phase), "mouthFunnel": np.clip(-np.sin(phase), 0, 1) * 0.8,
               "mouthPucker": 1.0 if i % 7 == 0 else 0.15}
        table.append({k: float(v) for k, v in row.items()})
    return table


def case_known_weights_are_keyed_back(tmp, transform_mesh=False):
    import bpy
    import numpy as np
    from mathutils import Matrix

    lip_sync = _operator()
    scene, face = _demo_face(tmp, 24)
    table = _known_table(30)
    offsets = _canonical_offsets(scene, face, table)
    if transform_mesh:  # another head size and orientation: the canonical fit must carry the offsets over
        turn = Matrix.Rotation(0.5, 4, "Z") @ Matrix.Rotation(-0.3, 4, "X") @ Matrix.Scale(1.4, 4)
        face.data.transform(turn, shape_keys=True)
    _write_offsets(Path(tmp) / "offsets.json", offsets, 24.0)
    bpy.context.view_layer.objects.active = face
    result = lip_sync(offsets_file=str(Path(tmp) / "offsets.json"), frame_start=5, smoothing=0.0)
    assert result == {"FINISHED"}, result
    keys = _keys(face, MOUTH_KEYS + ("eyeBlinkLeft", "browInnerUp"))
    errors = [abs(dict(keys[name]).get(5.0 + i, np.inf) - row[name])
              for i, row in enumerate(table) for name in MOUTH_KEYS]
    return {"worst": float(max(errors)), "frames": {name: [f for f, _ in keys[name]] for name in MOUTH_KEYS},
            "others": len(keys["eyeBlinkLeft"]) + len(keys["browInnerUp"])}


def test_lip_sync_keys_the_demo_face_with_known_weights_solved_back(tmp_path):
    result = run_in_blender(case_known_weights_are_keyed_back, tmp_path, tmp=str(tmp_path))
    assert result["worst"] < 0.02, result["worst"]
    for name, frames in result["frames"].items():  # every frame of the range, one key each
        assert frames == [float(f) for f in range(5, 35)], name
    assert result["others"] == 0  # only the jaw and mouth keys take part by default


def test_the_canonical_fit_carries_offsets_onto_a_turned_scaled_face(tmp_path):
    result = run_in_blender(case_known_weights_are_keyed_back, tmp_path, tmp=str(tmp_path), transform_mesh=True)
    assert result["worst"] < 0.02, result["worst"]


def case_constant_offsets_at_another_rate(tmp):
    import bpy

    lip_sync = _operator()
    scene, face = _demo_face(tmp, 25)
    pose = {"jawOpen": 0.6, "mouthPucker": 0.3}
    offset = _canonical_offsets(scene, face, [pose])[0]
    import numpy as np

    _write_offsets(Path(tmp) / "constant.json", np.repeat(offset[None], 45, axis=0), 30.0, 1.5)  # 1.5 s at 30 fps
    jaw = face.data.shape_keys.key_blocks["jawOpen"]
    for frame in (1, 20, 30, 60, 100):  # keys already there: those inside the keyed range are replaced
        jaw.value = 0.9
        jaw.keyframe_insert("value", frame=frame)
    scene.frame_set(12)
    bpy.context.view_layer.objects.active = face
    assert lip_sync(offsets_file=str(Path(tmp) / "constant.json"), shape_keys="jawOpen, mouthPucker, mouthSmile*") \
        == {"FINISHED"}
    keys = _keys(face, ("jawOpen", "mouthPucker", "mouthSmileLeft", "mouthFunnel"))
    return {name: [[f, v] for f, v in points] for name, points in keys.items()}


def test_constant_offsets_give_constant_keys_on_every_frame_at_the_scene_rate(tmp_path):
    result = run_in_blender(case_constant_offsets_at_another_rate, tmp_path, tmp=str(tmp_path))
    expected_frames = [float(f) for f in range(12, 12 + 38)]  # ceil(1.5 s x 25 fps) frames from the current one
    for name, value in (("jawOpen", 0.6), ("mouthPucker", 0.3), ("mouthSmileLeft", 0.0)):
        keyed = [[f, v] for f, v in result[name] if 12 <= f < 50]
        assert [f for f, _ in keyed] == expected_frames, name
        assert max(abs(v - value) for _, v in keyed) < 1e-4, (name, keyed[:3])
    assert [[f, round(v, 6)] for f, v in result["jawOpen"] if not 12 <= f < 50] == [[1.0, 0.9], [60.0, 0.9],
                                                                                      [100.0, 0.9]]
    assert result["mouthFunnel"] == []  # not chosen


def case_sound_strip_timing_and_errors(tmp):
    import wave

    import bpy
    import numpy as np
    import scene_helpers as h

    lip_sync = _operator()
    scene, face = _demo_face(tmp, 24)
    sound_path = Path(tmp) / "voice.wav"
    with wave.open(str(sound_path), "wb") as handle:  # two seconds of a tone
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(16000)
        tone = (np.sin(np.arange(32000) * 2 * np.pi * 220 / 16000) * 8000).astype("<i2")
        handle.writeframes(tone.tobytes())
    editor = scene.sequence_editor_create()
    strip = h.compat().strips(editor).new_sound("Voice", str(sound_path), 1, 10)
    offset = _canonical_offsets(scene, face, [{"jawOpen": 0.5}])[0]
    _write_offsets(Path(tmp) / "voice.json", np.repeat(offset[None], 48, axis=0), 24.0, 2.0)
    bpy.context.view_layer.objects.active = face
    assert lip_sync(sound="Voice", offsets_file=str(Path(tmp) / "voice.json")) == {"FINISHED"}
    jaw = _keys(face, ("jawOpen",))["jawOpen"]
    errors = {}
    for label, kwargs in (("backend", {"sound": "Voice"}), ("file", {"sound": str(Path(tmp) / "missing.wav")}),
                          ("keys", {"shape_keys": "cheekPuff"}),
                          ("offsets", {"offsets_file": str(Path(tmp) / "missing.json")})):
        try:
            errors[label] = str(lip_sync(**kwargs))
        except RuntimeError as error:  # an operator's error report reaches Python as RuntimeError
            errors[label] = str(error)
    return {"strip_start": h.strip_span(strip)[0], "first": jaw[0][0], "last": jaw[-1][0], "count": len(jaw),
            "value": jaw[20][1], "errors": errors}


def test_a_sound_strip_places_the_keys_and_errors_name_the_cause(tmp_path):
    result = run_in_blender(case_sound_strip_timing_and_errors, tmp_path, tmp=str(tmp_path))
    assert result["strip_start"] == 10
    assert (result["first"], result["last"], result["count"]) == (10.0, 57.0, 48)
    assert abs(result["value"] - 0.5) < 0.02
    errors = result["errors"]
    # No backend runs in the test, and the preferences name no Backend Python to start one.
    assert "Backend Python" in errors["backend"] or "no backend" in errors["backend"], errors
    assert "missing.wav' is neither a sound strip of the scene nor a sound file" in errors["file"], errors
    assert "no shape key cheekPuff" in errors["keys"], errors
    assert "no offsets file" in errors["offsets"], errors
