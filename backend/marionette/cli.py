"""The `marionette` command: serve, render, lip-sync, convert-weights, token."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import sys
import threading
from pathlib import Path

import numpy as np

from marionette_core.protocol import DEFAULT_PORT

from .audio import SAMPLE_RATE, load_audio
from .auth import default_store, default_token_file, load_or_create_token
from .engines import EngineError, EngineRegistry
from .images import ImageError, check_image, decode_image, encode_png
from .jobs import JobError, build_inputs, check_tracks, write_atomically

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

    render = commands.add_parser("render", help="run an engine offline on files (one PNG per frame)")
    render.add_argument("--engine", default="warp")
    render.add_argument("--reference", type=Path, required=True, help="reference image of the character")
    render.add_argument("--reference-pose", type=Path,
                        help="OpenPose JSON of the rig posed over the reference image")
    render.add_argument("--poses", type=Path, help="folder of OpenPose JSON files, one per frame")
    render.add_argument("--maps", type=Path,
                        help="folder of the control maps the engine draws from (its pose or face maps), one PNG "
                             "per frame")
    render.add_argument("--face-maps", type=Path,
                        help="wan-animate: folder of 512x512 face crops (default: made from --poses)")
    render.add_argument("--background", type=Path, help="replace mode: folder of background plate frames")
    render.add_argument("--mask", type=Path, help="replace mode: folder of masks (white = generate)")
    render.add_argument("--track", action="append", default=[], metavar="NAME=DIR",
                        help="any other image track the engine declares, e.g. --track face_crops=crops/")
    render.add_argument("--prompt", help="engines that take a prompt: what the video shows")
    render.add_argument("--negative-prompt", help="engines that take a prompt: what it should not show")
    render.add_argument("--audio", type=Path,
                        help="engines that take sound (echomimic): the sound of the frame range, from its start; "
                             "WAV, FLAC, MP3, OGG, M4A...")
    render.add_argument("--fps", type=float, default=24.0,
                        help="frames per second: frame i is at i / fps seconds into --audio (default: %(default)s)")
    render.add_argument("--frames", type=int,
                        help="frames to make when neither --poses nor an image track gives the count (default: "
                             "the length of --audio at --fps, rounded up)")
    render.add_argument("--face-box", metavar="X0,Y0,X1,Y1",
                        help="echomimic audio mode: the face's box in output pixels (default: from the face "
                             "landmarks of --reference-pose)")
    render.add_argument("--face-mask", type=Path, metavar="MASK.png",
                        help="echomimic audio mode: an image, white over the face; the box of its white pixels "
                             "is the face box")
    render.add_argument("--mode", help="wan-animate: animate or replace; echomimic: audio or pose (--maps: "
                                       "echomimic-face landmark maps)")
    render.add_argument("--accelerated", action="store_const", const=True,
                        help="echomimic: the accelerated weights (_acc files: 6 steps, no guidance)")
    render.add_argument("--out", type=Path, required=True, help="folder for the frames (same stems as the inputs)")
    render.add_argument("--width", type=int)
    render.add_argument("--height", type=int)
    render.add_argument("--weights", type=Path, help="diffusion engines: the folder of the released weights")
    render.add_argument("--steps", type=int, help="diffusion engines: denoising steps")
    render.add_argument("--guidance", type=float, help="diffusion engines: guidance scale")
    render.add_argument("--seed", type=int, help="diffusion engines: noise seed")
    render.add_argument("--window", type=int, help="animate-anyone, aniportrait: frames per window")
    render.add_argument("--overlap", type=int, help="animate-anyone, aniportrait: frames shared by windows")
    render.add_argument("--device", help="diffusion engines: cuda or cpu")
    render.add_argument("--dtype", help="diffusion engines: float16, bfloat16 or float32")
    render.add_argument("--settings", default="{}", help="other engine settings as JSON, e.g. '{\"carry\": 5}'")

    convert = commands.add_parser("convert-weights", help="write .safetensors twins of the released .pth files")
    convert.add_argument("folder", type=Path, help="the weights folder (laid out like pretrained_weights/)")

    token = commands.add_parser("token", help="print the token clients need (creating it if missing)")
    token.add_argument("--token-file", type=Path, default=default_token_file())

    lip_sync = commands.add_parser(
        "lip-sync", help="face landmark offsets of a sound (AniPortrait's audio2mesh), for Blender's Lip Sync")
    lip_sync.add_argument("--weights", type=Path, required=True,
                          help="folder with audio2mesh.pt (and wav2vec2-base-960h/, as AniPortrait's release)")
    lip_sync.add_argument("--audio", type=Path, required=True, help="the sound: WAV, FLAC, MP3, OGG, M4A...")
    lip_sync.add_argument("--fps", type=float, required=True, help="frames per second of the Blender scene")
    lip_sync.add_argument("--out", type=Path, required=True,
                          help="offsets file for Lip Sync's offsets_file: .json (or .npz)")
    lip_sync.add_argument("--device", help="cuda or cpu (default: cuda where there is one)")

    args = parser.parse_args(argv)
    try:
        if args.command == "serve":
            return run_server(args)
        if args.command == "render":
            return run_render(args)
        if args.command == "lip-sync":
            return run_lip_sync(args)
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


SETTING_OPTIONS = ("weights", "steps", "guidance", "seed", "window", "overlap", "device", "dtype", "mode",
                   "accelerated", "face_box")


def run_render(args) -> int:
    engine = EngineRegistry().get(args.engine)
    info = engine.info
    folders = _track_folders(args, info)
    pose_files = sorted(args.poses.glob("*.json")) if args.poses else []
    if args.poses and not pose_files:
        raise JobError(f"no OpenPose JSON files in {args.poses}")
    tracks = {}
    for name, folder in folders.items():
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg")) \
            if folder.is_dir() else []
        if not files:
            raise JobError(f"no PNG or JPEG images in {folder} (the '{name}' track)")
        tracks[name] = files
    audio = _render_audio(args, info)
    if args.frames is not None and args.frames < 1:
        raise JobError(f"--frames must be at least 1, not {args.frames}")
    counts = {len(files) for files in tracks.values()} | ({len(pose_files)} if pose_files else set()) \
        | ({args.frames} if args.frames is not None else set())
    if len(counts) > 1:
        raise JobError("the inputs disagree on the number of frames: " + ", ".join(
            [f"{len(files)} '{name}' images" for name, files in tracks.items()] +
            ([f"{len(pose_files)} pose files"] if pose_files else []) +
            ([f"--frames {args.frames}"] if args.frames is not None else [])))
    if counts:
        frames = counts.pop()
    elif audio is not None:  # the sound alone: as many frames as it lasts
        frames = max(1, math.ceil(len(audio) * args.fps / SAMPLE_RATE))
    else:
        raise JobError(f"nothing to render: give --poses and the tracks engine '{info.name}' needs")
    stems = pose_files or next(iter(tracks.values()), None)
    names = [path.stem for path in stems] if stems else [f"{index:06d}" for index in range(frames)]
    try:
        settings = json.loads(args.settings)
        if not isinstance(settings, dict):
            raise JobError("--settings must be a JSON object")
        options = {name: getattr(args, name) for name in SETTING_OPTIONS}
        options["face_box"] = _face_box(args)
        for name, value in options.items():
            if value is not None and name in info.settings:
                settings[name] = str(value) if name == "weights" else value
            elif value is not None:
                option = "--" + name.replace("_", "-")
                raise JobError(f"engine '{info.name}' has no setting '{name}' ({option}); it has "
                               f"{', '.join(info.settings) or 'none'}")
        poses = [json.loads(path.read_text()) for path in pose_files] or [{"people": []}] * frames
        reference_pose = json.loads(args.reference_pose.read_text()) if args.reference_pose else {"people": []}
    except json.JSONDecodeError as error:
        raise JobError(f"not JSON: {error}") from None
    if not info.inputs and not (args.reference_pose and pose_files):
        raise JobError(f"the {info.name} engine follows keypoints: give --reference-pose and --poses")
    text = {name: value for name, value in (("prompt", args.prompt), ("negative_prompt", args.negative_prompt))
            if value is not None}
    unwanted = sorted(set(text) - {spec.name for spec in info.inputs if spec.kind == "text"})
    if unwanted:
        raise JobError(f"the {info.name} engine takes no {' or '.join(n.replace('_', ' ') for n in unwanted)}; "
                       f"leave out {' and '.join('--' + n.replace('_', '-') for n in unwanted)}")
    inputs = build_inputs(args.reference.read_bytes(), reference_pose, poses, tracks, args.width, args.height,
                          info.validate_settings(settings), info=info, text=text, fps=args.fps)
    inputs.audio = audio
    check_tracks(info, inputs.tracks, frames)
    check = getattr(engine, "check", None)  # what the engine can refuse before loading anything
    if check is not None:
        check(inputs)
    args.out.mkdir(parents=True, exist_ok=True)
    for output in engine.render(inputs, 0, threading.Event()):
        index, image, extras = output if len(output) == 3 else (*output, {})
        write_atomically(args.out / f"{names[index]}.png", encode_png(image))
        for name, extra in extras.items():
            (args.out / name).mkdir(exist_ok=True)
            write_atomically(args.out / name / f"{names[index]}.png", encode_png(extra))
    print(f"{len(names)} frames written to {args.out}")
    return 0


def _render_audio(args, info):
    """The sound of --audio (16 kHz mono float32), checked against what the engine takes."""
    takes = [spec for spec in info.inputs if spec.kind == "audio"]
    if args.audio is None:
        if any(spec.required for spec in takes):
            raise JobError(f"the {info.name} engine needs the sound of the frames: give --audio FILE (WAV, FLAC, "
                           f"MP3, ...; frame i is at i / --fps seconds)")
        return None
    if not takes:
        raise JobError(f"the {info.name} engine takes no sound; leave out --audio")
    if not args.fps > 0:
        raise JobError(f"--fps must be above 0, not {args.fps:g}")
    return load_audio(args.audio)


def _face_box(args) -> str | None:
    """--face-box as given, or the box of --face-mask's white pixels in output pixels (x1, y1
    exclusive), as the 'face_box' setting."""
    if args.face_mask is None:
        return args.face_box
    if args.face_box is not None:
        raise JobError("give --face-box or --face-mask, not both")
    mask = decode_image(args.face_mask.read_bytes(), f"face mask {args.face_mask}")
    rows, columns = np.nonzero(mask[..., :3].mean(axis=2) >= 128)
    if not len(rows):
        raise JobError(f"the face mask {args.face_mask} has no white pixels; paint the face white on black")
    reference = check_image(args.reference.read_bytes(), "reference image")
    width, height = args.width or reference.width, args.height or reference.height
    scale_x, scale_y = width / mask.shape[1], height / mask.shape[0]
    box = (columns.min() * scale_x, rows.min() * scale_y, (columns.max() + 1) * scale_x, (rows.max() + 1) * scale_y)
    return ",".join(f"{value:g}" for value in box)


def _track_folders(args, info) -> dict[str, Path]:
    """Image tracks from the command line, by the engine's input names: --maps is the engine's first
    drawn track (its pose or face maps), --face-maps its face crops; --track NAME=DIR any other."""
    folders = {}
    drawn = [spec.name for spec in info.inputs if spec.kind == "images" and spec.style not in
             ("face-crop", "background", "rig-mask")]
    named = {"face-crop": args.face_maps, "background": args.background, "rig-mask": args.mask}
    if args.maps is not None:
        if not drawn:
            raise JobError(f"the {info.name} engine takes no control maps; give --poses")
        folders[drawn[0]] = args.maps
    for spec in info.inputs:
        if spec.kind == "images" and named.get(spec.style) is not None:
            folders[spec.name] = named[spec.style]
    for option, value in (("--face-maps", args.face_maps), ("--background", args.background),
                          ("--mask", args.mask)):
        if value is not None and value not in folders.values():
            raise JobError(f"the {info.name} engine takes no {option}")
    for item in args.track:
        name, _, folder = item.partition("=")
        if not folder or info.track(name) is None:
            raise JobError(f"--track {item!r}: give NAME=DIR with a track the {info.name} engine declares "
                           f"({', '.join(s.name for s in info.inputs if s.kind == 'images') or 'none'})")
        folders[name] = Path(folder)
    return folders


def run_lip_sync(args) -> int:
    from .audio import SAMPLE_RATE, load_audio
    from .lip_sync import predict_offsets, write_offsets_file

    samples = load_audio(args.audio)
    offsets = predict_offsets(args.weights, samples, args.fps, device=args.device)
    write_offsets_file(args.out, offsets, args.fps, len(samples) / SAMPLE_RATE)
    print(f"{len(offsets)} frames of face landmark offsets at {args.fps:g} fps written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
