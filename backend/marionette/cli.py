"""The `marionette` command: serve, render, token."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import threading
from pathlib import Path

from marionette_core.protocol import DEFAULT_PORT

from .auth import default_store, default_token_file, load_or_create_token
from .engines import EngineError, EngineRegistry
from .images import ImageError, encode_png
from .jobs import JobError, build_inputs, write_atomically

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="marionette", description="Marionette backend")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the backend server")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT)
    serve.add_argument("--store", type=Path, default=default_store(), help="job folder (default: %(default)s)")
    serve.add_argument("--token-file", type=Path, default=default_token_file(),
                       help="token clients must present; created on first start (default: %(default)s)")

    render = commands.add_parser("render", help="run an engine offline on files (one PNG per pose file)")
    render.add_argument("--engine", default="warp")
    render.add_argument("--reference", type=Path, required=True, help="reference image of the character")
    render.add_argument("--reference-pose", type=Path,
                        help="OpenPose JSON of the rig posed over the reference image (warp)")
    render.add_argument("--poses", type=Path, help="folder of OpenPose JSON files, one per frame")
    render.add_argument("--maps", type=Path, help="folder of control-map PNGs, one per frame (diffusion engines)")
    render.add_argument("--out", type=Path, required=True, help="folder for the frames (same stems as the poses)")
    render.add_argument("--width", type=int)
    render.add_argument("--height", type=int)
    render.add_argument("--weights", type=Path, help="diffusion engines: folder laid out like pretrained_weights/")
    render.add_argument("--steps", type=int, help="diffusion engines: DDIM steps (default 25)")
    render.add_argument("--guidance", type=float, help="diffusion engines: guidance scale (default 3.5)")
    render.add_argument("--seed", type=int, help="diffusion engines: noise seed (default 42)")
    render.add_argument("--window", type=int, help="diffusion engines: frames per window (default 24)")
    render.add_argument("--overlap", type=int, help="diffusion engines: frames shared by windows (default 4)")
    render.add_argument("--device", help="diffusion engines: cuda or cpu")
    render.add_argument("--dtype", help="diffusion engines: float16, bfloat16 or float32")
    render.add_argument("--settings", default="{}", help="other engine settings as JSON, e.g. '{\"person\": 0}'")

    convert = commands.add_parser("convert-weights", help="write .safetensors twins of the released .pth files")
    convert.add_argument("folder", type=Path, help="the weights folder (laid out like pretrained_weights/)")

    token = commands.add_parser("token", help="print the token clients need (creating it if missing)")
    token.add_argument("--token-file", type=Path, default=default_token_file())

    args = parser.parse_args(argv)
    try:
        if args.command == "serve":
            return run_server(args)
        if args.command == "render":
            return run_render(args)
        if args.command == "convert-weights":
            from .engines.animate_anyone.checkpoints import convert_to_safetensors

            for path in convert_to_safetensors(args.folder):
                print(f"wrote {path}")
            return 0
        print(load_or_create_token(args.token_file))
        return 0
    except (EngineError, ImageError, JobError, ValueError, OSError) as error:
        print(f"marionette: {error}", file=sys.stderr)
        return 2


def run_server(args) -> int:
    from .server import serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    log = logging.getLogger("marionette")
    token = load_or_create_token(args.token_file)
    if args.host not in LOOPBACK:
        log.warning("listening on %s: any machine that reaches it and holds the token can submit jobs; "
                    "prefer the default loopback address and an SSH tunnel", args.host)

    def ready(port: int) -> None:
        log.info("marionette backend listening on %s:%d (token file %s, jobs in %s)",
                 args.host, port, args.token_file, args.store)
        print(f"READY {port}", flush=True)

    try:
        asyncio.run(serve(args.store, token, args.host, args.port, ready))
    except KeyboardInterrupt:
        pass
    return 0


def run_render(args) -> int:
    if args.poses is None and args.maps is None:
        raise JobError("give --poses (keypoints, for warp) or --maps (control maps, for diffusion engines)")
    pose_files = sorted(args.poses.glob("*.json")) if args.poses else []
    if args.poses and not pose_files:
        raise JobError(f"no OpenPose JSON files in {args.poses}")
    map_files = sorted(args.maps.glob("*.png")) if args.maps else []
    if args.maps and not map_files:
        raise JobError(f"no control-map PNGs in {args.maps}")
    if pose_files and map_files and len(map_files) != len(pose_files):
        raise JobError(f"{len(map_files)} control maps in {args.maps} for {len(pose_files)} pose files")
    names = [path.stem for path in (map_files or pose_files)]
    try:
        settings = json.loads(args.settings)
        for name in ("weights", "steps", "guidance", "seed", "window", "overlap", "device", "dtype"):
            if getattr(args, name) is not None:
                settings[name] = str(getattr(args, name)) if name == "weights" else getattr(args, name)
        poses = [json.loads(path.read_text()) for path in pose_files] or [{"people": []}] * len(map_files)
        reference_pose = json.loads(args.reference_pose.read_text()) if args.reference_pose else {"people": []}
    except json.JSONDecodeError as error:
        raise JobError(f"not JSON: {error}") from None
    engine = EngineRegistry().get(args.engine)
    if "keypoints" in engine.info.styles and not (args.reference_pose and pose_files):
        raise JobError(f"the {args.engine} engine follows keypoints: give --reference-pose and --poses")
    if "keypoints" not in engine.info.styles and not map_files:
        raise JobError(f"the {args.engine} engine draws from control maps: give --maps")
    inputs = build_inputs(args.reference.read_bytes(), reference_pose, poses,
                          [path.read_bytes() for path in map_files], args.width, args.height, settings)
    args.out.mkdir(parents=True, exist_ok=True)
    for index, image in engine.render(inputs, 0, threading.Event()):
        write_atomically(args.out / f"{names[index]}.png", encode_png(image))
    print(f"{len(names)} frames written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
