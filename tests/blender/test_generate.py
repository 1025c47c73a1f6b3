"""Generate end to end: real Blender with the extension from its zip, a real backend process, a real
socket. The Generate jobs that the modal operator steps are stepped here by hand where a window would
be needed (cancel, a second Generate while one runs); everything else goes through the operators."""

import subprocess
import sys
from pathlib import Path

import pytest

from harness import ROOT, run_in_blender

BACKEND_PYTHON = str(ROOT / ".venv" / "bin" / "python")


def _setup(tmp, frames, port=0, token_file=None, auto_start=False):
    """The demo scene (rig, camera, reference image) with `frames` frames, and the preferences."""
    import bpy
    import scene_helpers as h

    sys.path.insert(0, str(h.ROOT / "rigs"))
    import build_demo_scene

    prefs = bpy.context.preferences.addons["bl_ext.user_default.marionette"].preferences
    prefs.backend_python = BACKEND_PYTHON
    prefs.auto_start = auto_start
    prefs.port = port
    prefs.token_file = str(token_file or Path(tmp) / "backend" / "token")
    scene = build_demo_scene.build_scene(Path(tmp) / "reference.png")
    scene.frame_end = scene.frame_start + frames - 1
    bpy.ops.wm.save_as_mainfile(filepath=str(Path(tmp) / "shot.blend"))
    return scene


def _start_backend(tmp, name="backend"):
    folder = Path(tmp) / name
    process = subprocess.Popen([BACKEND_PYTHON, "-P", "-m", "marionette.cli", "serve", "--port", "0", "--store",
                                str(folder / "jobs"), "--token-file", str(folder / "token")],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    return process, int(process.stdout.readline().split()[1])


def _strip(scene, name):
    import scene_helpers

    return scene_helpers.strip(scene, name)


def _span(strip):
    import scene_helpers

    return scene_helpers.strip_span(strip)


def _session(context, auto_start=False):
    from bl_ext.user_default.marionette.generate.session import GenerateJob
    from bl_ext.user_default.marionette.preferences import backend_settings

    return GenerateJob(context, backend_settings(context), 4096, auto_start=auto_start)


def _step(session) -> bool:
    """One slice of the job, as the modal operator's timer gives it."""
    return session.step(0.05)


def case_generate_streams_every_frame(tmp):
    import bpy

    scene = _setup(tmp, frames=12, auto_start=True)  # no backend yet: Generate starts one
    prefs = bpy.context.preferences.addons["bl_ext.user_default.marionette"].preferences
    import socket
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        prefs.port = probe.getsockname()[1]
    try:
        assert bpy.ops.marionette.generate() == {"FINISHED"}
    finally:
        bpy.ops.marionette.stop_backend()
    frames = Path(tmp) / "marionette" / "frames"
    files = sorted(p.name for p in frames.iterdir())
    strip = _strip(scene, "Marionette frames")
    pose = _strip(scene, "Marionette pose")
    return {"files": files, "strip": [*_span(strip), strip.channel,
                                      [e.filename for e in strip.elements]],
            "pose_channel": pose.channel, "job": scene.marionette.last_job_id,
            # 5.x: the Sequencer editors show the workspace's sequencer scene; it must be this one.
            "sequencer_scenes": [w.sequencer_scene.name if w.sequencer_scene else None for w in bpy.data.workspaces]
            if "sequencer_scene" in bpy.types.WorkSpace.bl_rna.properties else None, "scene": scene.name}


@pytest.mark.smoke
def test_generate_streams_every_frame_into_a_strip(tmp_path):
    result = run_in_blender(case_generate_streams_every_frame, tmp_path, tmp=str(tmp_path))
    expected = [f"{frame:06d}.png" for frame in range(1, 13)]
    assert result["files"] == expected
    start, duration, channel, elements = result["strip"]
    assert (start, duration) == (1, 12) and elements == expected
    assert channel > result["pose_channel"]  # the frames show above the pose maps
    assert len(result["job"]) == 32
    if result["sequencer_scenes"] is not None:
        assert result["sequencer_scenes"] and set(result["sequencer_scenes"]) == {result["scene"]}


def case_cancel_midway(tmp):
    import time

    import bpy

    process, port = _start_backend(tmp)
    try:
        scene = _setup(tmp, frames=96, port=port)
        session = _session(bpy.context)
        while _step(session) and session.received < 5:
            time.sleep(0.01)
        session.cancel()
        while _step(session):
            time.sleep(0.01)
        kept = sorted(p.name for p in (Path(tmp) / "marionette" / "frames").iterdir())
        strip = _strip(scene, "Marionette frames")
        return {"result": session.result, "received": session.received, "kept": len(kept),
                "strip": _span(strip)[1], "job": session.job_id,
                "server_state": __import__("json").loads(
                    (Path(tmp) / "backend" / "jobs" / session.job_id / "status.json").read_text())["state"]}
    finally:
        process.terminate()


def test_cancel_reaches_the_backend_and_keeps_the_frames(tmp_path):
    result = run_in_blender(case_cancel_midway, tmp_path, tmp=str(tmp_path))
    assert result["result"] == "cancelled" and result["server_state"] == "cancelled"
    assert 5 <= result["received"] < 96
    assert result["kept"] == result["received"] == result["strip"]


def case_backend_killed_then_resume(tmp):
    import time

    import bpy

    process, port = _start_backend(tmp)
    scene = _setup(tmp, frames=96, port=port)
    session = _session(bpy.context)
    while _step(session) and session.received < 8:
        time.sleep(0.01)
    process.kill()  # the backend dies mid-job
    process.wait()
    while _step(session):
        time.sleep(0.01)
    failure = session.result
    kept = len(list((Path(tmp) / "marionette" / "frames").glob("*.png")))
    strip_before = _span(_strip(scene, "Marionette frames"))[1]

    # The backend comes back on the same store and port; Resume fetches what is missing.
    restarted = subprocess.Popen([BACKEND_PYTHON, "-P", "-m", "marionette.cli", "serve", "--port", str(port), "--store",
                                  str(Path(tmp) / "backend" / "jobs"), "--token-file",
                                  str(Path(tmp) / "backend" / "token")],
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    restarted.stdout.readline()
    try:
        assert bpy.ops.marionette.resume() == {"FINISHED"}
    finally:
        restarted.terminate()
    files = sorted(p.name for p in (Path(tmp) / "marionette" / "frames").glob("*.png"))
    strip = _strip(scene, "Marionette frames")
    return {"failure": failure, "kept": kept, "strip_before": strip_before, "files": files,
            "strip_after": _span(strip)}


def test_backend_killed_midway_keeps_frames_and_resume_completes(tmp_path):
    result = run_in_blender(case_backend_killed_then_resume, tmp_path, tmp=str(tmp_path))
    assert "Resume" in result["failure"], result["failure"]
    assert 8 <= result["kept"] < 96 and result["strip_before"] == result["kept"]
    assert result["files"] == [f"{frame:06d}.png" for frame in range(1, 97)]
    assert result["strip_after"] == [1, 96]


def case_refusals(tmp):
    import time

    import bpy
    from bl_ext.user_default.marionette.shared import run_state

    process, port = _start_backend(tmp)
    try:
        _setup(tmp, frames=24, port=port, token_file=Path(tmp) / "wrong-token")
        (Path(tmp) / "wrong-token").write_text("f" * 64)
        messages = {}
        try:
            bpy.ops.marionette.generate()
        except RuntimeError as error:
            messages["wrong token"] = str(error)

        prefs = bpy.context.preferences.addons["bl_ext.user_default.marionette"].preferences
        prefs.token_file = str(Path(tmp) / "backend" / "token")
        with __import__("socket").socket() as probe:
            probe.bind(("127.0.0.1", 0))
            prefs.port = probe.getsockname()[1]  # nothing listens there
        try:
            bpy.ops.marionette.generate()
        except RuntimeError as error:
            messages["not running"] = str(error)

        # A second Generate while one runs is refused; the first finishes untouched.
        prefs.port = port
        session = _session(bpy.context)
        run_state.job = session
        try:
            bpy.ops.marionette.generate()
        except RuntimeError as error:
            messages["second"] = str(error)
        while _step(session):
            time.sleep(0.01)
        run_state.job = None
        session.close()
        files = sorted(p.name for p in (Path(tmp) / "marionette" / "frames").glob("*.png"))
        return {"messages": messages, "first": session.result, "files": len(files)}
    finally:
        process.terminate()


def test_wrong_token_no_backend_and_a_second_generate(tmp_path):
    result = run_in_blender(case_refusals, tmp_path, tmp=str(tmp_path))
    messages = result["messages"]
    assert "wrong or missing token" in messages["wrong token"]
    assert "no backend at 127.0.0.1" in messages["not running"]
    assert "Marionette is busy with a generation" in messages["second"]
    assert result["first"] == "done" and result["files"] == 24
