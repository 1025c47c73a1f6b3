"""Build the demo scene: the demo rig with its keyed motion, a demo face (ARKit shape keys, a short
keyed expression) on its head, a front camera, and a reference image of the demo character
(rendered here from simple shapes around the rig at frame 1), saved to a .blend.
The reference image is written beside the .blend as reference.png.

    python rigs/build_demo_scene.py --out FILE.blend           (bpy module)
    blender -b -P rigs/build_demo_scene.py -- --out FILE.blend
"""

import argparse
import os
import sys
from pathlib import Path

import bpy

sys.path.insert(0, str(Path(__file__).resolve().parent))
from demo_rig import (add_front_camera, build_demo_body, build_demo_face, build_demo_rig,  # noqa: E402
                      key_demo_expression, render_reference_image)

CANONICAL_FACE = Path(__file__).resolve().parent / "face" / "canonical_face_mesh.json"

RESOLUTION = (512, 768)


REFERENCE_FRAME = 1


def build_scene(reference_path: Path) -> bpy.types.Scene:
    bpy.ops.wm.read_homefile(use_empty=True)  # keeps the preferences (an installed extension stays)
    scene = bpy.context.scene
    scene.name = "Marionette Demo"
    scene.render.resolution_x, scene.render.resolution_y = RESOLUTION
    scene.render.resolution_percentage = 100
    rig = build_demo_rig()
    add_front_camera()
    body = build_demo_body(rig, REFERENCE_FRAME)
    render_reference_image(str(reference_path), REFERENCE_FRAME)
    for part in body:  # the body only made the picture; the rig animates the picture
        bpy.data.objects.remove(part)
    image = bpy.data.images.load(str(reference_path))
    face = build_demo_face(rig, CANONICAL_FACE)
    key_demo_expression(face)
    if hasattr(scene, "marionette"):  # the extension is installed: bind the face, set up Generate
        bpy.context.view_layer.objects.active = face
        bpy.ops.marionette.bind_face()
        scene.marionette.characters.add().object = rig
        scene.marionette.reference_image = image
        scene.marionette.reference_frame = REFERENCE_FRAME
    else:
        background = scene.camera.data.background_images.new()
        background.image, background.alpha = image, 0.6
        scene.camera.data.show_background_images = True
    return scene


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="the .blend file to write")
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    build_scene(out.with_name("reference.png"))
    bpy.ops.wm.save_as_mainfile(filepath=str(out))
    print(f"demo scene written to {out}")
    return 0


if __name__ == "__main__":
    arguments = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else sys.argv[1:]
    code = main(arguments)
    sys.stdout.flush()
    os._exit(code)
