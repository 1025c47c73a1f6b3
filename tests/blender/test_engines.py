"""The GPU engines through the extension, in real Blender: tiny random-weight releases on a real backend.

Generate asks the engine what it consumes and draws exactly that: wan-animate's `wan` pose maps, its
replace mode's background plate (a VSE strip rendered alone) and rig mask, echomimic's sound (the
scene mixed by Blender) and `echomimic-face` maps; Lip Sync asks the backend's audio2mesh. The tiny
weights are written by the backend's environment (.venv: torch, diffusers); the Blender process has
neither. What reached the backend is read back from its job folder.
"""

import json
import subprocess
from pathlib import Path

import pytest

from harness import ROOT, run_in_blender

BACKEND_PYTHON = str(ROOT / ".venv" / "bin" / "python")
SIZE = (64, 96)  # width, height of the jobs: multiples of 16, the demo scene's aspect
PROMPT = "a person dancing"

BUILD_WEIGHTS = """
import sys
from pathlib import Path

sys.path.insert(0, "tests/backend")
root = Path(sys.argv[1])
from tiny_wan_animate import save_tiny_release
save_tiny_release(root / "wan-animate")
from tiny_echomimic import write_release
write_release(root / "echomimic", seed=1, mode="audio")
write_release(root / "echomimic", seed=1, mode="pose")
from tiny_audio2mesh import save_release, tiny_model
save_release(tiny_model(seed=2), root / "audio2mesh")
from tiny_wan_animate_2 import save_tiny_release as save_tiny_wan_animate_2
save_tiny_wan_animate_2(root / "wan-animate-2", "distilled")
from tiny_animate_anyone import tiny_networks as tiny_pose2video
from marionette.engines.animate_anyone.weights import save_release_layout as save_pose2video
networks, config = tiny_pose2video(seed=3, guider="aniportrait")
save_pose2video(networks, config, root / "aniportrait")
from tiny_wan_vace import save_tiny_release as save_tiny_wan_vace
save_tiny_wan_vace(root / "wan-vace", seed=4)
"""


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Folders of tiny releases: wan-animate/, echomimic/ (audio and pose), audio2mesh/, wan-animate-2/
    (distilled), aniportrait/, wan-vace/."""
    root = tmp_path_factory.mktemp("weights")
    process = subprocess.run([BACKEND_PYTHON, "-c", BUILD_WEIGHTS, str(root)], cwd=ROOT, capture_output=True,
                             text=True, timeout=600)
    assert process.returncode == 0, process.stderr[-3000:]
    return {name: str(root / name) for name in ("wan-animate", "echomimic", "audio2mesh", "wan-animate-2",
                                                "aniportrait", "wan-vace")}


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    """A backend on a free port, with its job store (read back by the tests) and token file."""
    folder = tmp_path_factory.mktemp("backend")
    log = open(folder / "backend.log", "w")
    process = subprocess.Popen([BACKEND_PYTHON, "-P", "-m", "marionette.cli", "serve", "--port", "0", "--store",
                                str(folder / "jobs"), "--token-file", str(folder / "token")],
                               stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        port = int(process.stdout.readline().split()[1])
        yield {"port": port, "token_file": str(folder / "token"), "store": str(folder / "jobs"),
               "log": str(folder / "backend.log")}
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def _run(case, tmp_path, backend, **kwargs):
    try:
        return run_in_blender(case, tmp_path, port=backend["port"], token_file=backend["token_file"],
                              tmp=str(tmp_path), **kwargs)
    except AssertionError as error:
        tail = "\n".join(Path(backend["log"]).read_text().splitlines()[-30:])
        raise AssertionError(f"{error}\n--- backend log ---\n{tail}") from None


# --- Blender side ---------------------------------------------------------------------------

def _demo(tmp, port, token_file, frames, engine, size=SIZE, percentage=100):
    """The demo scene (rig, bound face, camera, reference image) at a small size, `frames` frames,
    connected to the backend (Test), `engine` chosen."""
    import scene_helpers as h

    scene = h.connected_demo_scene(tmp, port, token_file, size, frames, percentage)
    scene.marionette.engine = engine
    return scene


def _set(scene, engine, **values):
    """Engine settings as the panel sets them (scene.marionette.engine_settings)."""
    from bl_ext.user_default.marionette.shared.engines import VALUE_FIELDS

    for name, value in values.items():
        item = scene.marionette.engine_settings[f"{engine}/{name}"]
        setattr(item, VALUE_FIELDS[item.kind], value)


def _generate(**kwargs):
    """bpy.ops.marionette.generate; an error report comes back as the message."""
    import bpy

    try:
        return sorted(bpy.ops.marionette.generate(**kwargs))
    except RuntimeError as error:
        return str(error)


def _png_size(path) -> list:
    data = Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    return [int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")]


def _read_png(path):
    from bl_ext.user_default.marionette.core.png import decode_png

    return decode_png(Path(path).read_bytes())


def _names(folder) -> list:
    folder = Path(folder)
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def _strip_info(scene, name):
    import bpy
    import scene_helpers as h

    strip = h.strip(scene, name)
    if strip is None:
        return None
    return {"span": h.strip_span(strip), "elements": [e.filename for e in strip.elements],
            "directory": str(Path(bpy.path.abspath(strip.directory)).resolve())}


def _job(store, scene) -> dict:
    """What the backend received for the scene's last job: job.json and the input folder's listing."""
    folder = Path(store) / scene.marionette.last_job_id
    spec = json.loads((folder / "job.json").read_text())
    tracks = {p.name: len(list(p.iterdir())) for p in (folder / "inputs" / "tracks").iterdir()} \
        if (folder / "inputs" / "tracks").is_dir() else {}
    return {"folder": str(folder), "spec": spec, "tracks": tracks,
            "audio": (folder / "inputs" / "audio").is_file()}


def _keypoint_people(tmp, frame):
    from bl_ext.user_default.marionette.core import openpose_json

    text = (Path(tmp) / "marionette" / "control" / "keypoints" / f"{frame:06d}.json").read_text()
    return openpose_json.loads(text)


def case_wan_animate_streams_frames_and_face_crops(tmp, port, token_file, store, weights):
    import numpy as np
    from bl_ext.user_default.marionette.core.styles import draw as draw_style
    from bl_ext.user_default.marionette.core.styles.wan import stick_width as wan_stick_width

    scene = _demo(tmp, port, token_file, frames=6, engine="wan-animate")
    scene.marionette.prompt = PROMPT
    _set(scene, "wan-animate", weights=weights, segment=5, carry=1, steps=2)
    assert scene.marionette.pose_style == "dwpose"  # the engine's declared style wins over the panel's
    outcome = _generate()

    pose = {}
    for frame in (1, 4, 6):
        people, width, height = _keypoint_people(tmp, frame)
        drawn = _read_png(Path(tmp) / "marionette" / "control" / "pose" / f"{frame:06d}.png")
        pose[frame] = {"wan": bool(np.array_equal(drawn, draw_style("wan", people, width, height))),
                       "dwpose": bool(np.array_equal(drawn, draw_style("dwpose", people, width, height))),
                       "lit": int((drawn.max(axis=2) > 0).sum())}
    job = _job(store, scene)
    sent_pose = Path(job["folder"]) / "inputs" / "tracks" / "pose" / "000000.png"
    crops = Path(tmp) / "marionette" / "face_crops"
    crops_strip = _strip_info(scene, "Marionette face_crops")

    # Again with crops Blender renders (the engine then returns none) and a weights folder relative to
    # the saved .blend: the earlier job's crops strip goes, and the backend gets an absolute folder.
    import bpy

    bpy.ops.wm.save_as_mainfile(filepath=str(Path(tmp) / "shot.blend"))
    scene = bpy.context.scene
    _set(scene, "wan-animate", weights=bpy.path.relpath(weights))
    scene.marionette.face_crops_source = "RENDER"
    again = {"outcome": _generate(), "relative": scene.marionette.engine_settings["wan-animate/weights"].path_value}
    second = _job(store, scene)
    again.update(weights=second["spec"]["settings"]["weights"], tracks=second["tracks"],
                 crops_strip=_strip_info(scene, "Marionette face_crops"))
    return {"outcome": outcome, "again": again, "frames": _names(Path(tmp) / "marionette" / "frames"),
            "frame_size": _png_size(Path(tmp) / "marionette" / "frames" / "000001.png"),
            "strip": _strip_info(scene, "Marionette frames"), "crops": _names(crops),
            "crop_sizes": sorted({tuple(_png_size(p)) for p in crops.glob("*.png")}),
            "crops_strip": crops_strip, "crops_dir": str(crops.resolve()),
            "pose": pose, "stick": wan_stick_width(*SIZE),
            "sent_pose_is_drawn": sent_pose.read_bytes() ==
            (Path(tmp) / "marionette" / "control" / "pose" / "000001.png").read_bytes(),
            "spec": {k: job["spec"].get(k) for k in ("engine", "settings", "text", "width", "height", "frames")},
            "tracks": job["tracks"]}


def test_wan_animate_streams_frames_and_face_crops_into_strips(tmp_path, backend, weights):
    result = _run(case_wan_animate_streams_frames_and_face_crops, tmp_path, backend, store=backend["store"],
                  weights=weights["wan-animate"])
    assert result["outcome"] == ["FINISHED"], result["outcome"]
    expected = [f"{frame:06d}.png" for frame in range(1, 7)]
    assert result["frames"] == expected and result["frame_size"] == list(SIZE)
    assert result["strip"]["span"] == [1, 6] and result["strip"]["elements"] == expected
    # The face crops that drove the face come back as their own strip, at the motion encoder's 512 x 512.
    assert result["crops"] == expected and result["crop_sizes"] == [[512, 512]]
    assert result["crops_strip"]["span"] == [1, 6] and result["crops_strip"]["elements"] == expected
    assert result["crops_strip"]["directory"] == result["crops_dir"]
    # The pose maps are drawn in the engine's `wan` style (the panel says DWPose), and are what was sent.
    assert result["stick"] == 1
    for frame, check in result["pose"].items():
        assert check["wan"] and not check["dwpose"] and check["lit"] > 50, (frame, check)
    assert result["sent_pose_is_drawn"]
    spec = result["spec"]
    assert spec["engine"] == "wan-animate" and spec["text"] == {"prompt": PROMPT}
    assert (spec["width"], spec["height"]) == SIZE and spec["frames"] == list(range(1, 7))
    settings = spec["settings"]
    assert (settings["segment"], settings["carry"], settings["steps"], settings["mode"]) == (5, 1, 2, "animate")
    assert Path(settings["weights"]) == Path(weights["wan-animate"])
    assert result["tracks"].get("pose") == 6 and "face_crops" not in result["tracks"]
    again = result["again"]
    assert again["outcome"] == ["FINISHED"], again["outcome"]
    assert again["relative"].startswith("//") and Path(again["weights"]) == Path(weights["wan-animate"])
    assert again["tracks"].get("face_crops") == 6 and again["crops_strip"] is None


def _write_plate(folder, frames, size):
    """An image sequence of `size`: the top quarter green, the rest a colour per frame (red 40 * i)."""
    import numpy as np
    from bl_ext.user_default.marionette.core.png import encode_png

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    width, height = size
    paths = []
    for index in range(frames):
        image = np.zeros((height, width, 3), dtype=np.uint8)
        image[:, :] = (40 * (index + 1), 0, 200)
        image[: height // 4] = (0, 255, 0)
        path = folder / f"plate_{index + 1:04d}.png"
        path.write_bytes(encode_png(image))
        paths.append(path)
    return paths


def _plate_checks(folder, frames):
    """Per background frame: its size, whether its top rows are green and its middle the frame's colour."""
    checks = []
    for index, frame in enumerate(frames):
        image = _read_png(Path(folder) / f"{frame:06d}.png").astype(int)
        height = image.shape[0]
        top, middle = image[1, image.shape[1] // 2], image[height // 2, image.shape[1] // 2]
        checks.append({"size": [image.shape[1], image.shape[0]], "top": top.tolist(), "middle": middle.tolist(),
                       "green_rows": int((image[:, :, 1] > 200).all(axis=1).sum())})
    return checks


def case_replace_mode_renders_the_plate_and_mask(tmp, port, token_file, store, weights, movie=False):
    import bpy
    import scene_helpers as h

    # The job is 64 x 96 through the render percentage; the plate, added as the Sequencer adds images
    # (scaled to fit), is 320 x 480.
    scene = _demo(tmp, port, token_file, frames=4, engine="wan-animate", size=(640, 960), percentage=10)
    paths = _write_plate(Path(tmp) / "plate", 4, (320, 480))
    editor = scene.sequence_editor_create()
    strips = h.compat().strips(editor)
    plate = strips.new_image(name="Plate", filepath=str(paths[0]), channel=1, frame_start=1, fit_method="FIT")
    for path in paths[1:]:
        plate.elements.append(path.name)
    if movie:
        plate = _as_movie(scene, plate, Path(tmp) / "plate.mkv")
    else:
        h.compat().set_strip_duration(plate, 3)  # trimmed: frame 4 shows no plate
    scene.marionette.background_strip = plate.name
    settings = {"weights": weights, "mode": "replace", "segment": 5, "carry": 1, "steps": 2}
    outcome = _generate(settings=json.dumps(settings))
    control = Path(tmp) / "marionette" / "control"
    job = _job(store, scene) if scene.marionette.last_job_id else {}
    mask = _read_png(control / "mask" / "000002.png") if (control / "mask" / "000002.png").is_file() else None
    return {"outcome": outcome, "background": _names(control / "background"),
            "plate": _plate_checks(control / "background", range(1, 5)) if (control / "background").is_dir() else [],
            "mask": _names(control / "mask"),
            "mask_white": int((mask > 127).all(axis=2).sum()) if mask is not None else 0,
            "mask_size": [mask.shape[1], mask.shape[0]] if mask is not None else None,
            "frames": _names(Path(tmp) / "marionette" / "frames"),
            "strip": _strip_info(scene, "Marionette frames"),
            "scenes": sorted(s.name for s in bpy.data.scenes), "leftovers": _names(control),
            "channels": {strip.name: strip.channel for strip in h.compat().strips(scene.sequence_editor)},
            "mode": job.get("spec", {}).get("settings", {}).get("mode"), "tracks": job.get("tracks")}


def _as_movie(scene, strip, path):
    """The image strip written as a movie (FFmpeg, headless) and put in its place."""
    import bpy
    import scene_helpers as h

    writer = bpy.data.scenes.new("movie writer")
    writer.render.resolution_x, writer.render.resolution_y = 320, 480
    writer.render.resolution_percentage = 100
    writer.frame_start, writer.frame_end = 1, 4
    writer.render.fps = scene.render.fps
    writer.view_settings.view_transform = "Standard"  # the frames' own colours, as the image strip holds them
    h.compat().use_ffmpeg_output(writer.render.image_settings)
    writer.render.ffmpeg.format, writer.render.ffmpeg.codec = "MKV", "FFV1"
    writer.render.filepath = str(path)
    editor = writer.sequence_editor_create()
    copy = h.compat().strips(editor).new_image(name="frames", filepath=bpy.path.abspath(strip.directory) +
                                               strip.elements[0].filename, channel=1, frame_start=1)
    for element in strip.elements[1:]:
        copy.elements.append(element.filename)
    bpy.ops.render.render(animation=True, scene=writer.name)
    bpy.data.scenes.remove(writer)
    assert path.is_file(), f"no movie written at {path}"
    strips = h.compat().strips(scene.sequence_editor)
    strips.remove(strip)
    return strips.new_movie(name="Plate", filepath=str(path), channel=1, frame_start=1, fit_method="FIT")


@pytest.mark.parametrize("movie", [False, True], ids=["image-sequence", "movie"])
def test_replace_mode_sends_the_strip_as_background_and_the_rig_mask(tmp_path, backend, weights, movie):
    result = _run(case_replace_mode_renders_the_plate_and_mask, tmp_path, backend, store=backend["store"],
                  weights=weights["wan-animate"], movie=movie)
    assert result["outcome"] == ["FINISHED"], result["outcome"]
    expected = [f"{frame:06d}.png" for frame in range(1, 5)]
    assert result["background"] == expected and result["mask"] == expected
    # The strip rendered alone as the Sequencer shows it: scaled to fit the frame at the job's size.
    for index, check in enumerate(result["plate"]):
        assert check["size"] == list(SIZE), check
        if index == 3 and not movie:
            assert check["top"] == check["middle"] == [0, 0, 0], check  # past the strip's end: nothing
            continue
        assert check["top"] == [0, 255, 0] and 22 <= check["green_rows"] <= 26, (index, check)
        assert abs(check["middle"][0] - 40 * (index + 1)) <= 3 and abs(check["middle"][2] - 200) <= 3, (index, check)
    assert result["mask_size"] == list(SIZE) and result["mask_white"] > 100
    assert result["mode"] == "replace" and result["tracks"]["background"] == 4 and result["tracks"]["mask"] == 4
    assert result["frames"] == expected and result["strip"]["span"] == [1, 4]
    assert "Marionette background plate" not in result["scenes"]  # the helper scene is gone
    # The maps go above the plate, not over it in its channel; the frames stay on top.
    channels = result["channels"]
    assert channels["Plate"] == 1 and 1 not in [c for name, c in channels.items() if name != "Plate"], channels
    assert channels["Marionette frames"] == max(channels.values()), channels
    assert not [name for name in result["leftovers"] if name.startswith(".")]  # no staging folder left


def _write_wav(path, seconds, rate=44100, channels=2):
    """A tone (a rising pitch, so each moment differs) as 16-bit PCM, written with the stdlib."""
    import wave

    import numpy as np

    t = np.arange(int(seconds * rate)) / rate
    tone = np.sin(2 * np.pi * (220 + 200 * t) * t) * 12000
    data = np.repeat(tone[:, None], channels, axis=1).astype("<i2")
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(channels)
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes(data.tobytes())
    return path


def case_echomimic_from_the_scene_sound(tmp, port, token_file, store, weights):
    import wave

    import numpy as np
    import scene_helpers as h
    from bl_ext.user_default.marionette.core.styles import draw as draw_style

    scene = _demo(tmp, port, token_file, frames=6, engine="echomimic")
    scene.render.fps, scene.render.fps_base = 24, 1.0
    _set(scene, "echomimic", weights=weights, steps=2)
    result = {"no_sound": _generate(), "maps_without_sound": _names(Path(tmp) / "marionette" / "control")}

    editor = scene.sequence_editor_create()
    h.compat().strips(editor).new_sound("Voice", str(_write_wav(Path(tmp) / "voice.wav", 1.0)), 1, 1)
    result["audio_mode"] = _generate()
    job = _job(store, scene)
    with wave.open(str(Path(job["folder"]) / "inputs" / "audio"), "rb") as handle:
        result["wav"] = [handle.getframerate(), handle.getnchannels(), handle.getsampwidth(), handle.getnframes()]
        samples = np.frombuffer(handle.readframes(handle.getnframes()), dtype="<i2")
    result["loudness"] = float(np.abs(samples.astype(float)).mean())
    result["audio_job"] = {"mode": job["spec"]["settings"]["mode"], "fps": job["spec"].get("fps"),
                           "tracks": job["tracks"]}
    result["audio_frames"] = _names(Path(tmp) / "marionette" / "frames")
    result["audio_strip"] = _strip_info(scene, "Marionette frames")

    result["pose_mode"] = _generate(settings=json.dumps({"mode": "pose"}))
    job = _job(store, scene)
    result["pose_job"] = {"mode": job["spec"]["settings"]["mode"], "tracks": job["tracks"], "audio": job["audio"]}
    faces = {}
    for frame in (1, 6):
        people, width, height = _keypoint_people(tmp, frame)
        drawn = _read_png(Path(tmp) / "marionette" / "control" / "face" / f"{frame:06d}.png")
        faces[frame] = {style: bool(np.array_equal(drawn, draw_style(style, people, width, height)))
                        for style in ("echomimic-face", "aniportrait-face")}
        faces[frame]["lit"] = int((drawn.max(axis=2) > 0).sum())
    result["faces"] = faces
    result["pose_frames"] = _names(Path(tmp) / "marionette" / "frames")
    result["pose_strip"] = _strip_info(scene, "Marionette frames")
    return result


def test_echomimic_animates_to_the_scene_sound_in_audio_and_pose_mode(tmp_path, backend, weights):
    result = _run(case_echomimic_from_the_scene_sound, tmp_path, backend, store=backend["store"],
                  weights=weights["echomimic"])
    assert "add the dialogue or song as a sound strip" in result["no_sound"], result["no_sound"]
    assert not result["maps_without_sound"]  # refused before drawing
    expected = [f"{frame:06d}.png" for frame in range(1, 7)]
    assert result["audio_mode"] == ["FINISHED"], result["audio_mode"]
    # Blender mixed the 44.1 kHz stereo strip to 16 kHz mono over the frame range (6 frames at 24 fps).
    rate, channels, width, samples = result["wav"]
    assert (rate, channels, width, samples) == (16000, 1, 2, 4000), result["wav"]  # exactly the range
    assert result["loudness"] > 1000
    assert result["audio_job"]["mode"] == "audio" and result["audio_job"]["fps"] == 24
    assert result["audio_frames"] == expected and result["audio_strip"]["span"] == [1, 6]
    assert result["pose_mode"] == ["FINISHED"], result["pose_mode"]
    assert result["pose_job"]["mode"] == "pose" and result["pose_job"]["tracks"].get("face") == 6
    assert result["pose_job"]["audio"]
    for frame, check in result["faces"].items():
        assert check["echomimic-face"] and not check["aniportrait-face"] and check["lit"] > 0, (frame, check)
    assert result["pose_frames"] == expected and result["pose_strip"]["span"] == [1, 6]


def case_aniportrait_windows_wrapping_around(tmp, port, token_file, weights, store):
    scene = _demo(tmp, port, token_file, frames=5, engine="aniportrait")
    # Windows of 2 overlapping by 1: [0 1] [1 2] [2 3] [3 4] [4 0], as the original's context schedule
    # makes them: the shot's first frame is final last (the backend still streams frames in order).
    _set(scene, "aniportrait", weights=weights, steps=2, window=2, overlap=1)
    outcome = _generate()
    stored = sorted((Path(_job(store, scene)["folder"]) / "frames").glob("*.png"), key=lambda p: p.stat().st_mtime_ns)
    return {"outcome": outcome, "frames": _names(Path(tmp) / "marionette" / "frames"),
            "strip": _strip_info(scene, "Marionette frames"), "stored_order": [p.name for p in stored]}


def test_aniportrait_wrapping_windows_fill_the_strip(tmp_path, backend, weights):
    result = _run(case_aniportrait_windows_wrapping_around, tmp_path, backend, weights=weights["aniportrait"],
                  store=backend["store"])
    expected = [f"{frame:06d}.png" for frame in range(1, 6)]
    assert result["outcome"] == ["FINISHED"], result["outcome"]
    assert result["stored_order"][-1] == "000000.png", result["stored_order"]  # the job's first frame came last
    assert result["frames"] == expected
    assert result["strip"]["span"] == [1, 5] and result["strip"]["elements"] == expected


def case_lip_sync_through_the_backend(tmp, port, token_file, weights):
    import bpy
    import scene_helpers as h

    scene = _demo(tmp, port, token_file, frames=48, engine="warp")
    scene.render.fps, scene.render.fps_base = 24, 1.0
    face = bpy.data.objects["DemoFace"]
    face.data.shape_keys.animation_data_clear()  # the demo expression's keys would mix with the new ones
    editor = scene.sequence_editor_create()
    strip = h.compat().strips(editor).new_sound("Voice", str(_write_wav(Path(tmp) / "voice.wav", 1.5, 16000, 1)),
                                                2, 10)
    bpy.context.view_layer.objects.active = face
    scene.marionette.lip_sync_weights = weights  # the Face panel's field; the operator takes it from there
    try:
        outcome = sorted(bpy.ops.marionette.lip_sync(sound="Voice", smoothing=0.0))
    except RuntimeError as error:
        outcome = str(error)
    curves = {c.data_path: c for c in h.compat().fcurves(face.data.shape_keys) or ()}
    keyed = {}
    for path, curve in curves.items():
        name = path.split('"')[1]
        keyed[name] = [p.co.x for p in curve.keyframe_points]
    values = [p.co.y for p in curves['key_blocks["jawOpen"].value'].keyframe_points] \
        if 'key_blocks["jawOpen"].value' in curves else []
    return {"outcome": outcome, "span": h.strip_span(strip), "keyed": keyed,
            "jaw_range": [min(values), max(values)] if values else None}


def test_lip_sync_asks_the_backend_and_keys_every_frame_of_the_strip(tmp_path, backend, weights):
    result = _run(case_lip_sync_through_the_backend, tmp_path, backend, weights=weights["audio2mesh"])
    assert result["outcome"] == ["FINISHED"], result["outcome"]
    first, duration = result["span"]
    assert (first, duration) == (10, 36)  # 1.5 s at 24 fps
    assert "jawOpen" in result["keyed"], result["keyed"].keys()
    for name, frames in result["keyed"].items():
        assert frames == [float(f) for f in range(first, first + duration)], name
    low, high = result["jaw_range"]
    assert high - low > 1e-3  # the random tiny model moves the mouth: the keys are not one constant


def _generate_panel(engine):
    """What the Generate panel draws for `engine`."""
    import bpy
    import scene_helpers as h
    from bl_ext.user_default.marionette.generate.panel import MARIONETTE_PT_generate

    bpy.context.scene.marionette.engine = engine
    drawn = []
    panel = type("Panel", (), {"layout": h.RecordingLayout(drawn)})()
    context = type("Context", (), {"scene": bpy.context.scene, "window_manager": bpy.context.window_manager})()
    MARIONETTE_PT_generate.draw(panel, context)
    return drawn


def case_engine_settings_follow_the_declaration(tmp, port, token_file):
    import bpy
    import scene_helpers as h
    from bl_ext.user_default.marionette.core.client import BackendClient
    from bl_ext.user_default.marionette.shared import engines as engine_settings

    scene = _demo(tmp, port, token_file, frames=4, engine="warp")
    with BackendClient("127.0.0.1", port, Path(token_file).read_text().strip(), timeout=10) as client:
        declared = {engine["name"]: engine["settings"] for engine in client.capabilities["engines"]}
    items = {item.name: {"engine": item.engine, "setting": item.setting, "kind": item.kind, "value": item.value}
             for item in scene.marionette.engine_settings}
    settings_for = {name: engine_settings.settings_for(scene, name) for name in declared}
    drawn = []
    engine_settings.draw(h.RecordingLayout(drawn), scene, "wan-animate")
    panels = {engine: _generate_panel(engine) for engine in ("wan-animate", "wan-animate-2", "echomimic", "warp")}
    scene.marionette.engine = "warp"

    mode = scene.marionette.engine_settings["wan-animate/mode"]
    mode.choice_value = "replace"
    try:
        mode.choice_value = "sideways"
        refused = None
    except TypeError as error:
        refused = str(error)
    scene.marionette.engine = "wan-animate"
    unsaved = _generate(settings=json.dumps({"weights": "//weights"}))  # relative to a .blend not saved yet
    scene.marionette.engine = "warp"
    bpy.ops.wm.save_as_mainfile(filepath=str(Path(tmp) / "settings.blend"))
    bpy.ops.wm.open_mainfile(filepath=str(Path(tmp) / "settings.blend"))
    scene = bpy.context.scene
    reloaded = engine_settings.settings_for(scene, "wan-animate")["mode"]
    assert bpy.ops.marionette.test_connection() == {"FINISHED"}  # a reconnect keeps the values set
    reconnected = engine_settings.settings_for(scene, "wan-animate")["mode"]

    scene.marionette.engine = "wan-animate"
    errors = {"unknown": _generate(settings='{"stepz": 3}'), "not json": _generate(settings="steps=3"),
              "list": _generate(settings="[1]")}
    maps_written = _names(Path(tmp) / "marionette" / "control")
    errors["wrong type"] = _generate(settings=json.dumps({"weights": "/nowhere", "steps": "many"}))
    # Relative to the saved .blend: the backend is sent (and names) the absolute folder.
    errors["relative"] = _generate(settings=json.dumps({"weights": "//weights", "mode": "animate"}))
    errors["relative folder"] = str(Path(bpy.data.filepath).parent / "weights")
    return {"declared": declared, "items": items, "settings_for": settings_for, "drawn": drawn, "panels": panels,
            "replace": reloaded, "reconnected": reconnected, "refused": refused, "errors": {**errors, "unsaved": unsaved},
            "maps_written": maps_written}


def test_engine_settings_are_the_declared_ones_and_the_json_override_is_checked(tmp_path, backend):
    result = _run(case_engine_settings_follow_the_declaration, tmp_path, backend)
    declared, items = result["declared"], result["items"]
    assert {"warp", "wan-animate", "echomimic"} <= set(declared)
    expected_items = {f"{engine}/{name}" for engine, settings in declared.items() for name in settings}
    assert set(items) == expected_items
    for key, item in items.items():
        spec = declared[item["engine"]][item["setting"]]
        assert item["kind"] == spec.get("type", "str"), key
        default = spec.get("default")
        if default is None:
            assert item["value"] in (None, ""), (key, item)
        else:
            assert item["value"] == default, (key, item, default)
    for engine, settings in declared.items():
        wanted = {name: spec["default"] for name, spec in settings.items() if spec.get("default") not in (None, "")}
        assert result["settings_for"][engine] == wanted, engine
    # The panel draws one row per declared setting, with its help button.
    rows = [entry for entry in result["drawn"] if entry[0] == "prop"]
    assert [row[1] for row in rows] == [f"wan-animate/{name}" for name in declared["wan-animate"]]
    assert ["prop", "wan-animate/mode", "choice_value", "Mode"] in rows
    assert sum(entry == ["operator", "marionette.setting_help"] for entry in result["drawn"]) == len(rows)
    # The Generate panel shows the prompt and the background strip only for an engine that takes them.
    for engine, panel in result["panels"].items():
        shown = {entry[2] for entry in panel if entry[0] == "prop" and entry[1] == ""} | \
            {entry[1] for entry in panel if entry[0] == "prop_search"}
        prompts = {"prompt", "negative_prompt"}
        assert prompts <= shown if engine.startswith("wan-animate") else not prompts & shown, (engine, shown)
        assert ("background_strip" in shown) == (engine == "wan-animate"), (engine, shown)
        assert ("driving_look" in shown) == (engine == "wan-animate-2"), (engine, shown)
        settings = [entry[1] for entry in panel if entry[0] == "prop" and entry[1].startswith(engine + "/")]
        assert settings == [f"{engine}/{name}" for name in declared[engine]], (engine, settings)
    # A choice round-trips through the .blend and a reconnect; a value outside the choices is refused.
    assert result["replace"] == "replace" and result["reconnected"] == "replace"
    assert result["refused"] and "sideways" in result["refused"]
    errors = result["errors"]
    assert "has no setting stepz" in errors["unknown"] and "steps" in errors["unknown"], errors["unknown"]
    assert "must be a JSON object" in errors["not json"] and "must be a JSON object" in errors["list"], errors
    assert not result["maps_written"]  # refused before any control map is drawn
    assert "'steps' must be of type int" in errors["wrong type"], errors["wrong type"]
    assert f"{errors['relative folder']} does not exist" in errors["relative"], errors["relative"]
    assert "setting 'weights' is //weights, relative to the .blend file, which is not saved yet" in errors["unsaved"]


def case_wan_animate_with_face_crops_rendered_in_blender(tmp, port, token_file, store, weights):
    import numpy as np

    scene = _demo(tmp, port, token_file, frames=3, engine="wan-animate")
    import bpy

    scene.render.engine = "BLENDER_WORKBENCH"  # any engine renders the crops; Workbench is quick headless
    bpy.data.objects["DemoFace"].hide_render = False  # the demo's only mesh: its body exists in the picture only
    scene.marionette.face_crops_source = "RENDER"
    _set(scene, "wan-animate", weights=weights, segment=5, carry=1, steps=1)
    render_before = [scene.render.resolution_percentage, scene.render.use_border, scene.render.filepath]
    outcome = _generate()
    crops = Path(tmp) / "marionette" / "control" / "face_crops"
    job = _job(store, scene)
    sent = Path(job["folder"]) / "inputs" / "tracks" / "face_crops"
    images = [_read_png(p) for p in sorted(crops.glob("*.png"))]
    return {"outcome": outcome, "crops": _names(crops), "sizes": sorted({tuple(_png_size(p)) for p in crops.glob("*.png")}),
            "spread": [float(np.asarray(image, dtype=np.float64).std()) for image in images],
            "green_share": [float(((image[..., 1] > 150) & (image[..., 0] < 60)).mean()) for image in images],
            "sent_equal": [(sent / f"{i:06d}.png").read_bytes() == (crops / f"{frame:06d}.png").read_bytes()
                           for i, frame in enumerate(range(1, 4))],
            "tracks": job["tracks"], "frames": _names(Path(tmp) / "marionette" / "frames"),
            "returned_crops": (Path(tmp) / "marionette" / "face_crops").is_dir(),
            "render_after": [scene.render.resolution_percentage, scene.render.use_border, scene.render.filepath],
            "render_before": render_before}


def test_wan_animate_takes_face_crops_rendered_from_the_head_in_blender(tmp_path, backend, weights):
    result = _run(case_wan_animate_with_face_crops_rendered_in_blender, tmp_path, backend, store=backend["store"],
                  weights=weights["wan-animate"])
    assert result["outcome"] == ["FINISHED"], result["outcome"]
    expected = [f"{frame:06d}.png" for frame in range(1, 4)]
    assert result["crops"] == expected and result["sizes"] == [[512, 512]]
    assert min(result["spread"]) > 5, result["spread"]  # a rendered face, not an empty frame
    assert max(result["green_share"]) < 0.05, result["green_share"]  # the 3D view, not the VSE's pose maps
    assert result["tracks"].get("face_crops") == 3 and all(result["sent_equal"]), result
    assert result["frames"] == expected and not result["returned_crops"]  # the engine made none of its own
    assert result["render_after"] == result["render_before"]  # the scene's render settings are restored


# --- wan-animate-2: the performance rendered as the driving video -------------------------------------

def case_wan_animate_2_with_each_driving_look(tmp, port, token_file, store, weights):
    import bpy
    import numpy as np

    scene = _demo(tmp, port, token_file, frames=5, engine="wan-animate-2")
    scene.render.engine = "BLENDER_WORKBENCH"  # the scene look: any engine; Workbench is quick headless
    scene.marionette.prompt = PROMPT
    _set(scene, "wan-animate-2", weights=weights, segment=5, carry=1, steps=1)
    control = Path(tmp) / "marionette" / "control"
    results = {}
    for look in ("AUTO", "SCENE", "POSE"):
        scene.marionette.driving_look = look
        bpy.data.objects["DemoFace"].hide_render = look != "SCENE"  # the scene look renders the face mesh
        outcome = _generate()
        job = _job(store, scene)
        sent = Path(job["folder"]) / "inputs" / "tracks" / "driving"
        driving = [_read_png(control / "driving" / f"{frame:06d}.png") for frame in range(1, 6)]
        results[look] = {
            "outcome": outcome, "engine": job["spec"]["engine"], "tracks": job["tracks"],
            "sent_equal": [(sent / f"{i:06d}.png").read_bytes() == (control / "driving" / f"{f:06d}.png").read_bytes()
                           for i, f in enumerate(range(1, 6))],
            "pose_equal": all((control / "driving" / f"{f:06d}.png").read_bytes() ==
                              (control / "pose" / f"{f:06d}.png").read_bytes() for f in range(1, 6)),
            "sizes": sorted({tuple(image.shape) for image in driving}),
            "mean": float(np.mean([image[..., :3].mean() for image in driving])),
            "strip": _strip_info(scene, "Marionette driving"), "frames_strip": _strip_info(scene, "Marionette frames"),
            "frames": _names(Path(tmp) / "marionette" / "frames"),
            "scenes": sorted(s.name for s in bpy.data.scenes), "worlds": len(bpy.data.worlds),
            "objects": sorted(o.name for o in bpy.data.objects)}
    return results


def test_wan_animate_2_generates_from_the_rendered_performance(tmp_path, backend, weights):
    result = _run(case_wan_animate_2_with_each_driving_look, tmp_path, backend, store=backend["store"],
                  weights=weights["wan-animate-2"])
    names = [f"{frame:06d}.png" for frame in range(1, 6)]
    means = []
    for look, run in result.items():
        assert run["outcome"] == ["FINISHED"], (look, run["outcome"])
        assert run["engine"] == "wan-animate-2" and run["tracks"] == {"driving": 5}, run
        assert all(run["sent_equal"]), (look, run["sent_equal"])  # what drove the model is what the strip shows
        assert run["sizes"] == [[96, 64, 3]], run["sizes"]
        assert run["strip"]["elements"] == names and run["strip"]["span"] == [1, 5], run["strip"]
        assert run["strip"]["directory"] == str((tmp_path / "marionette" / "control" / "driving").resolve())
        assert run["frames"] == names and run["frames_strip"]["elements"] == names
        assert run["scenes"] == ["Marionette Demo"] and run["worlds"] <= 1, run  # the mannequin's stage is gone
        assert not [name for name in run["objects"] if name.startswith("Marionette mannequin")], run["objects"]
        means.append(run["mean"])
    assert result["POSE"]["pose_equal"] and not result["AUTO"]["pose_equal"] and not result["SCENE"]["pose_equal"]
    assert len({round(mean) for mean in means}) == 3, means  # three different pictures


def case_wan_vace_from_the_rigs_pose(tmp, port, token_file, store, weights):
    from bl_ext.user_default.marionette.core.styles import draw

    scene = _demo(tmp, port, token_file, frames=5, engine="wan-vace")
    scene.marionette.prompt = "she dances on a rainy neon street at night"
    _set(scene, "wan-vace", weights=weights, clip=5, carry=1, steps=1)
    control = Path(tmp) / "marionette" / "control"
    outcome = _generate()
    job = _job(store, scene)
    sent = Path(job["folder"]) / "inputs" / "tracks" / "pose"
    maps = [_read_png(control / "pose" / f"{frame:06d}.png")[..., :3] for frame in range(1, 6)]
    drawn = [draw("vace-pose", *_keypoint_people(tmp, frame)) for frame in range(1, 6)]
    result = {"outcome": outcome, "spec": job["spec"], "tracks": job["tracks"],
              # The keypoints file rounds the positions the maps were drawn from, which VACE's 16x larger canvas
              # can move by a pixel: nearly every pixel equal, and far from the dwpose drawing of the same file.
              "vace_pose_equal": min(float((a == b).all(axis=2).mean()) for a, b in zip(maps, drawn)),
              "dwpose_equal": max(float((a == draw("dwpose", *_keypoint_people(tmp, f))).all(axis=2).mean())
                                  for f, a in zip(range(1, 6), maps)),
              "maps_drawn": all(m.any() for m in maps),
              "sent_equal": [(sent / f"{i:06d}.png").read_bytes() == (control / "pose" / f"{f:06d}.png").read_bytes()
                             for i, f in enumerate(range(1, 6))],
              "frames": _names(Path(tmp) / "marionette" / "frames"),
              "frames_strip": _strip_info(scene, "Marionette frames")}
    return result


def test_wan_vace_generates_from_the_rigs_pose_in_vaces_style(tmp_path, backend, weights):
    result = _run(case_wan_vace_from_the_rigs_pose, tmp_path, backend, store=backend["store"],
                  weights=weights["wan-vace"])
    names = [f"{frame:06d}.png" for frame in range(1, 6)]
    assert result["outcome"] == ["FINISHED"], result["outcome"]
    assert result["spec"]["engine"] == "wan-vace" and result["tracks"] == {"pose": 5}, result
    assert result["spec"]["text"]["prompt"] == "she dances on a rainy neon street at night"
    assert result["vace_pose_equal"] > 0.98 and result["dwpose_equal"] < 0.95, result  # the engine's style
    assert result["maps_drawn"]
    assert all(result["sent_equal"])
    assert result["frames"] == names and result["frames_strip"]["elements"] == names


def case_wan_vace_from_the_scenes_depth(tmp, port, token_file, store, weights):
    import bpy
    import numpy as np
    from mathutils import Vector

    scene = _demo(tmp, port, token_file, frames=3, engine="wan-vace")
    scene.marionette.prompt = "a dancer on a stage"
    # The set the animator blocked out: a box in front of the camera, another further back and to the side.
    camera = scene.camera
    forward = (camera.matrix_world.to_3x3() @ Vector((0, 0, -1))).normalized()
    right = (camera.matrix_world.to_3x3() @ Vector((1, 0, 0))).normalized()
    for name, distance, side, size in (("Near box", 4.0, -0.6, 0.5), ("Far box", 9.0, 1.2, 1.2)):
        mesh = bpy.data.meshes.new(name)
        mesh.from_pydata([(x * size, y * size, z * size) for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], [],
                         [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)])
        box = bpy.data.objects.new(name, mesh)
        box.location = camera.matrix_world.translation + forward * distance + right * side
        scene.collection.objects.link(box)
    _set(scene, "wan-vace", weights=weights, clip=5, carry=1, steps=1, control="depth")
    before = {"engine": scene.render.engine, "x": scene.render.resolution_x, "format":
              scene.render.image_settings.file_format, "compositing": scene.render.use_compositing,
              "scenes": sorted(s.name for s in bpy.data.scenes), "groups": len(bpy.data.node_groups)}
    outcome = _generate()
    job = _job(store, scene)
    control = Path(tmp) / "marionette" / "control"
    maps = {frame: _read_png(control / "depth" / f"{frame:06d}.png") for frame in range(1, 4)}
    # Independently: the view-axis depth of rays cast from the camera through pixel centres (at what renders).
    for obj in scene.objects:
        obj.hide_viewport = obj.hide_viewport or obj.hide_render
    scene.frame_set(2)
    depsgraph = bpy.context.evaluated_depsgraph_get()
    frame = [camera.matrix_world @ corner for corner in camera.data.view_frame(scene=scene)]
    top_right, bottom_right, bottom_left, top_left = frame
    origin = camera.matrix_world.translation
    width, height = SIZE
    samples = []
    for y in range(2, height, 7):
        for x in range(2, width, 7):
            u, v = (x + 0.5) / width, (y + 0.5) / height
            target = top_left + (top_right - top_left) * u + (bottom_left - top_left) * v
            hit, location, *_ = scene.ray_cast(depsgraph, origin, (target - origin).normalized())
            samples.append((x, y, float((location - origin).dot(forward)) if hit else None))
    return {"outcome": outcome, "tracks": job["tracks"], "control": job["spec"]["settings"]["control"],
            "grey": all(np.array_equal(m[..., 0], m[..., 1]) and np.array_equal(m[..., 0], m[..., 2])
                        for m in maps.values()),
            "ranges": [[int(m.min()), int(m.max())] for m in maps.values()],
            "samples": [(x, y, z, int(maps[2][y, x, 0])) for x, y, z in samples],
            "strip": _strip_info(scene, "Marionette depth"),
            "after": {"engine": scene.render.engine, "x": scene.render.resolution_x, "format":
                      scene.render.image_settings.file_format, "compositing": scene.render.use_compositing,
                      "scenes": sorted(s.name for s in bpy.data.scenes), "groups": len(bpy.data.node_groups)},
            "before": before, "leftovers": sorted(p.name for p in control.iterdir() if p.name.startswith("."))}


def test_wan_vace_generates_from_the_scenes_depth_rendered_in_blender(tmp_path, backend, weights):
    result = _run(case_wan_vace_from_the_scenes_depth, tmp_path, backend, store=backend["store"],
                  weights=weights["wan-vace"])
    assert result["outcome"] == ["FINISHED"], result["outcome"]
    assert result["tracks"] == {"depth": 3} and result["control"] == "depth"
    assert result["grey"] and all(high == 255 for _low, high in result["ranges"]), result["ranges"]
    assert result["strip"]["elements"] == [f"{frame:06d}.png" for frame in range(1, 4)]
    assert result["after"] == result["before"] and not result["leftovers"]  # the user's scene as it was
    hits = [(z, value) for _x, _y, z, value in result["samples"] if z is not None]
    misses = [value for _x, _y, z, value in result["samples"] if z is None]
    assert len(hits) >= 10 and misses and all(value == 0 for value in misses), result["samples"]  # missed: black
    # Background in the frame: the map is 255 (1/z) / max(1/z), truncated; the nearest sample sets the scale.
    nearest = min(z for z, _ in hits)
    for z, value in hits:
        assert abs(value - 255 * nearest / z) <= 2 + 255 * nearest / z * 0.02, (z, value, nearest)


def case_wan_vace_into_the_plate(tmp, port, token_file, store, weights):
    import scene_helpers as h

    scene = _demo(tmp, port, token_file, frames=3, engine="wan-vace")
    scene.marionette.prompt = "she wears a red coat"
    paths = _write_plate(Path(tmp) / "plate", 3, SIZE)
    strips = h.compat().strips(scene.sequence_editor_create())
    plate = strips.new_image(name="Plate", filepath=str(paths[0]), channel=1, frame_start=1, fit_method="FIT")
    for path in paths[1:]:
        plate.elements.append(path.name)
    scene.marionette.background_strip = plate.name
    _set(scene, "wan-vace", weights=weights, clip=5, carry=1, steps=1, mode="plate")
    outcome = _generate()
    job = _job(store, scene)
    return {"outcome": outcome, "tracks": job["tracks"], "mode": job["spec"]["settings"]["mode"],
            "frames": _names(Path(tmp) / "marionette" / "frames")}


def test_wan_vace_generates_into_the_plate_under_the_rig_mask(tmp_path, backend, weights):
    result = _run(case_wan_vace_into_the_plate, tmp_path, backend, store=backend["store"], weights=weights["wan-vace"])
    assert result["outcome"] == ["FINISHED"], result["outcome"]
    assert result["mode"] == "plate" and result["tracks"] == {"pose": 3, "background": 3, "mask": 3}, result
    assert result["frames"] == [f"{frame:06d}.png" for frame in range(1, 4)]
