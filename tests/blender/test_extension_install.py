"""The extension installs from its zip through Blender's installer and registers cleanly, repeatedly."""

import pytest

from harness import run_in_blender


def case_register_cycle():
    import addon_utils
    import bpy

    module = "bl_ext.user_default.marionette"
    assert addon_utils.check(module)[1], "extension not enabled after install"
    assert hasattr(bpy.types.Scene, "marionette")
    assert bpy.context.scene.marionette.pose_style == "dwpose"
    assert bpy.context.scene.marionette.output_dir == "//marionette"
    for _ in range(2):
        bpy.ops.preferences.addon_disable(module=module)
        assert not hasattr(bpy.types.Scene, "marionette"), "scene settings left behind after unregister"
        assert not hasattr(bpy.ops.marionette, "render_control_maps") or \
            "render_control_maps" not in dir(bpy.ops.marionette)
        bpy.ops.preferences.addon_enable(module=module)
        assert hasattr(bpy.types.Scene, "marionette")
        assert bpy.ops.marionette.render_control_maps.poll()
    return {"ok": True}


@pytest.mark.smoke
def test_install_register_unregister_register(tmp_path):
    assert run_in_blender(case_register_cycle, tmp_path) == {"ok": True}
