"""A backend that cannot import `diffusers` (no diffusion extra): the Generate panel lists the
diffusion engines greyed with the reason under its engine list, the Backend panel counts them,
Generate on one of them names the reason, and warp still generates."""

import subprocess

from harness import ROOT, run_in_blender

BACKEND_PYTHON = str(ROOT / ".venv" / "bin" / "python")
WITHOUT_DIFFUSERS = "import sys; sys.modules['diffusers'] = None; from marionette.cli import main; sys.exit(main())"


def case_engines_without_diffusers(tmp, port, token_file):
    import bpy
    import scene_helpers as h
    from bl_ext.user_default.marionette.connection.panel import MARIONETTE_PT_backend
    from bl_ext.user_default.marionette.generate.panel import MARIONETTE_PT_generate

    scene = h.connected_demo_scene(tmp, port, token_file, (128, 192), frames=3)

    def drawn_by(panel_class) -> list:
        drawn = []
        panel_class.draw(type("Panel", (), {"layout": h.RecordingLayout(drawn)})(), bpy.context)
        return [entry[1] for entry in drawn if entry[0] == "label"]

    scene.marionette.engine = "echomimic"
    result = {"engines": [item.name for item in bpy.context.window_manager.marionette_engines],
              "backend_panel": drawn_by(MARIONETTE_PT_backend), "generate_panel": drawn_by(MARIONETTE_PT_generate)}
    try:
        bpy.ops.marionette.generate()
        result["echomimic"] = "generated"
    except RuntimeError as error:
        result["echomimic"] = str(error)
    scene.marionette.engine = "warp"
    result["warp"] = sorted(bpy.ops.marionette.generate())
    return result


def test_unavailable_engines_are_listed_with_the_reason(tmp_path):
    folder = tmp_path / "backend"
    process = subprocess.Popen([BACKEND_PYTHON, "-P", "-c", WITHOUT_DIFFUSERS, "serve", "--port", "0", "--store",
                                str(folder / "jobs"), "--token-file", str(folder / "token")],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        port = int(process.stdout.readline().split()[1])
        result = run_in_blender(case_engines_without_diffusers, tmp_path, tmp=str(tmp_path), port=port,
                                token_file=str(folder / "token"))
    finally:
        process.terminate()
        process.wait(30)
    assert result["engines"] == ["warp"]
    reason = "needs the Python package 'diffusers', which cannot be imported here"
    assert " ".join(result["backend_panel"]).endswith("engines: warp (6 unavailable) Address, token and Python: "
                                                      "Preferences > Add-ons"), result["backend_panel"]
    unavailable = [line for line in result["generate_panel"] if reason in line and not line.startswith("Unavailable")]
    assert {line.split(":")[0] for line in unavailable} == {"animate-anyone", "aniportrait", "echomimic",
                                                            "wan-animate", "wan-animate-2", "wan-vace"}, \
        result["generate_panel"]
    assert any(line.startswith("Unavailable: " + reason) for line in result["generate_panel"]), result["generate_panel"]
    assert "cannot run the engine 'echomimic': " + reason in result["echomimic"], result["echomimic"]
    assert result["warp"] == ["FINISHED"]
