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

    render = commands.add_parser("render", help="run an engine offline on files")
    render.add_argument("--engine", default="warp")
    render.add_argument("--reference", type=Path, required=True, help="reference image of the character")
    render.add_argument("--reference-pose", type=Path, required=True,
                        help="OpenPose JSON of the rig posed over the reference image")
    render.add_argument("--poses", type=Path, required=True, help="folder of OpenPose JSON files, one per frame")
    render.add_argument("--maps", type=Path, help="folder of control-map PNGs, one per frame (diffusion engines)")
    render.add_argument("--out", type=Path, required=True, help="folder for the frames (same stems as the poses)")
    render.add_argument("--width", type=int)
    render.add_argument("--height", type=int)
    render.add_argument("--settings", default="{}", help="engine settings as JSON, e.g. '{\"person\": 0}'")

    token = commands.add_parser("token", help="print the token clients need (creating it if missing)")
    token.add_argument("--token-file", type=Path, default=default_token_file())

    args = parser.parse_args(argv)
    try:
        if args.command == "serve":
            return run_server(args)
        if args.command == "render":
            return run_render(args)
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
    pose_files = sorted(args.poses.glob("*.json"))
    if not pose_files:
        raise JobError(f"no OpenPose JSON files in {args.poses}")
    map_files = sorted(args.maps.glob("*.png")) if args.maps else []
    if args.maps and len(map_files) != len(pose_files):
        raise JobError(f"{len(map_files)} control maps in {args.maps} for {len(pose_files)} pose files")
    try:
        settings = json.loads(args.settings)
        poses = [json.loads(path.read_text()) for path in pose_files]
        reference_pose = json.loads(args.reference_pose.read_text())
    except json.JSONDecodeError as error:
        raise JobError(f"not JSON: {error}") from None
    engine = EngineRegistry().get(args.engine)
    inputs = build_inputs(args.reference.read_bytes(), reference_pose, poses,
                          [path.read_bytes() for path in map_files], args.width, args.height, settings)
    args.out.mkdir(parents=True, exist_ok=True)
    for index, image in engine.render(inputs, 0, threading.Event()):
        write_atomically(args.out / f"{pose_files[index].stem}.png", encode_png(image))
    print(f"{len(pose_files)} frames written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
