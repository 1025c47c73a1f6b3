"""The `marionette` command: serve, render, engines, lip-sync, convert-weights, token.

`render` takes each engine's settings as options made from the engine's own declaration
(`marionette render --engine NAME --help` lists them), so a new engine's settings work here with
no change to this file; its inputs come as folders named by their style (--maps, --face-maps,
--background, --mask) or by their name (--track NAME=DIR).
"""

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

from marionette_core import lip_sync_offsets, styles
from marionette_core.protocol import DEFAULT_PORT

from .audio import SAMPLE_RATE, AudioError, load_audio
from .auth import default_store, default_token_file, load_or_create_token
from .engines import EngineError, EngineRegistry
from .images import ImageError, check_image, decode_image, encode_png
from .job_inputs import JobError, Limits, check_images, prepare_inputs, validate_job
from .jobs import write_atomically
from .lip_sync import predict_offsets
from .models.checkpoints import convert_to_safetensors
from .server import MiB, ServerLimits, serve

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
SETTING_TYPES = {"int": int, "float": float, "str": str, "path": str, "choice": str}
# Folder options of `render`, by the style of the track they give.
STYLE_OPTIONS = {"face-crop": "face_maps", "background": "background", "rig-mask": "mask"}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    registry = EngineRegistry() if argv[:1] in (["render"], ["engines"]) else None
    parser = build_parser(registry, _engine_named(argv))
    args, unknown = parser.parse_known_args(argv)
    try:
        if unknown:
            raise JobError(_unknown_options(unknown, args, registry))
        if args.command == "serve":
            return run_server(args)
        if args.command == "render":
            return run_render(args, registry)
        if args.command == "engines":
            return list_engines(args, registry)
        if args.command == "lip-sync":
            return run_lip_sync(args)
        if args.command == "convert-weights":
            written, skipped = convert_to_safetensors(args.folder)
            for path in written:
                print(f"wrote {path}")
            for path in skipped:
                print(f"left {path} as it is: not a state dict of tensors")
            return 0
        print(load_or_create_token(args.token_file))
        return 0
    except (EngineError, ImageError, JobError, AudioError, ValueError, OSError) as error:
        print(f"marionette: {error}", file=sys.stderr)
        return 2


def _engine_named(argv: list[str]) -> str:
    """The --engine of a render command line (before the parser that depends on it exists)."""
    for index, item in enumerate(argv):
        if item == "--engine" and index + 1 < len(argv):
            return argv[index + 1]
        if item.startswith("--engine="):
            return item.partition("=")[2]
    return "warp"


def build_parser(registry: EngineRegistry | None, engine_name: str = "warp") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="marionette", description="Marionette backend")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the backend server")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT)
    serve.add_argument("--store", type=Path, default=default_store(), help="job folder (default: %(default)s)")
    serve.add_argument("--token-file", type=Path, default=default_token_file(),
                       help="token clients must present; created on first start (default: %(default)s)")
    serve.add_argument("--max-in-flight", type=int, default=ServerLimits.in_flight // MiB, metavar="MIB",
                       help="MiB of messages the server receives at once, all clients together; a larger upload "
                            "waits with a 'busy' error (default: %(default)s)")

    render = commands.add_parser(
        "render", allow_abbrev=False, help="run an engine offline on files (one PNG per frame)",
        description="Run an engine offline on files. The engine's own settings are options too: "
                    "see `marionette render --engine NAME --help`.")
    render.add_argument("--engine", default="warp")
    render.add_argument("--reference", type=Path, required=True, help="reference image of the character")
    render.add_argument("--reference-pose", type=Path,
                        help="OpenPose JSON of the rig posed over the reference image")
    render.add_argument("--poses", type=Path, help="folder of OpenPose JSON files, one per frame")
    render.add_argument("--maps", type=Path,
                        help="folder of the control maps the engine draws from (its pose or face maps), one PNG "
                             "per frame")
    render.add_argument("--face-maps", type=Path, help="face-crop style: folder of 512x512 face crops (engines "
                                                       "that take them make them from --poses when not given)")
    render.add_argument("--background", type=Path, help="background style: folder of background plate frames")
    render.add_argument("--mask", type=Path, help="rig-mask style: folder of masks (white = generate)")
    render.add_argument("--track", action="append", default=[], metavar="NAME=DIR",
                        help="any image track the engine declares, by name, e.g. --track face_crops=crops/")
    render.add_argument("--audio", type=Path,
                        help="engines that take sound: the sound of the frame range, from its start; "
                             "WAV, FLAC, MP3, OGG, M4A...")
    render.add_argument("--fps", type=float, default=24.0,
                        help="frames per second: frame i is at i / fps seconds into --audio (default: %(default)s)")
    render.add_argument("--frames", type=int,
                        help="frames to make when neither --poses nor an image track gives the count (default: "
                             "the length of --audio at --fps, rounded up)")
    render.add_argument("--face-mask", type=Path, metavar="MASK.png",
                        help="engines with a face_box setting: an image, white over the face; the box of its "
                             "white pixels is the face box")
    render.add_argument("--out", type=Path, required=True, help="folder for the frames (same stems as the inputs)")
    render.add_argument("--width", type=int)
    render.add_argument("--height", type=int)
    render.add_argument("--settings", default="{}", help="engine settings as JSON, e.g. '{\"carry\": 5}' (the "
                                                         "options below win)")
    engine = registry.engines.get(engine_name) if registry is not None else None
    if engine is not None:
        _add_engine_options(render, engine.info)

    engines = commands.add_parser("engines", help="list the engines, their inputs and settings, and whether "
                                                  "a weights folder checks out")
    engines.add_argument("name", nargs="?", help="only this engine")
    engines.add_argument("--weights", type=Path, help="check this folder as the engine's weights")
    engines.add_argument("--json", action="store_true", help="the listing as JSON")

    convert = commands.add_parser("convert-weights",
                                  help="write a .safetensors twin of each .pth/.pt checkpoint of a weights folder "
                                       "(any engine's; the engines then read them without pickle)")
    convert.add_argument("folder", type=Path, help="the weights folder")

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
    return parser


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def _add_engine_options(render: argparse.ArgumentParser, info) -> None:
    """An option per declared setting and per declared text input of the engine."""
    taken = {option for action in render._actions for option in action.option_strings}
    group = render.add_argument_group(f"settings of the {info.name} engine")
    for name, spec in info.settings.items():
        option = _option(name)
        if option in taken:
            continue  # clashes with a fixed option: --settings '{"name": ...}' still sets it
        text = spec.get("help", "")
        if spec.get("default") not in (None, ""):
            text += f" (default: {spec['default']})"
        kind = spec.get("type", "str")
        if kind == "bool":
            group.add_argument(option, dest=f"setting_{name}", action=argparse.BooleanOptionalAction, help=text)
        else:
            group.add_argument(option, dest=f"setting_{name}", type=SETTING_TYPES.get(kind, str),
                               choices=spec.get("choices"), metavar=None if spec.get("choices") else name.upper(),
                               help=text)
    for spec in info.inputs:
        if spec.kind == styles.TEXT and _option(spec.name) not in taken:
            group.add_argument(_option(spec.name), dest=f"text_{spec.name}", metavar="TEXT", help=spec.help)


def _unknown_options(unknown: list[str], args, registry: EngineRegistry | None) -> str:
    if getattr(args, "command", None) != "render" or registry is None:
        return f"unknown arguments: {' '.join(unknown)}"
    engine = registry.get(args.engine)  # EngineError for an unknown or unavailable engine
    info = engine.info
    options = [item for item in unknown if item.startswith("--")] or unknown
    names = [item.partition("=")[0][2:].replace("-", "_") for item in options]
    if all(name in ("prompt", "negative_prompt") for name in names):
        return f"the {info.name} engine takes no {' or '.join(n.replace('_', ' ') for n in names)}; leave out " \
               f"{' and '.join(options)}"
    known = [_option(name) for name in info.settings] + \
        [_option(spec.name) for spec in info.inputs if spec.kind == styles.TEXT]
    return (f"engine '{info.name}' has no setting {', '.join(repr(n) for n in names)} ({' '.join(options)}); it has "
            f"{', '.join(known) or 'none'} (see `marionette render --engine {info.name} --help`)")


def run_server(args) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    log = logging.getLogger("marionette")
    token = load_or_create_token(args.token_file)
    if args.host not in LOOPBACK:
        log.warning("listening on %s: any machine that reaches it and holds the token can submit jobs; "
                    "prefer the default loopback address and an SSH tunnel", args.host)
    if args.max_in_flight < 1:
        raise ValueError(f"--max-in-flight must be at least 1 MiB, not {args.max_in_flight}")

    def ready(port: int) -> None:
        log.info("marionette backend listening on %s:%d (token file %s, jobs in %s)",
                 args.host, port, args.token_file, args.store)
        print(f"READY {port}", flush=True)

    try:
        asyncio.run(serve(args.store, token, args.host, args.port, ready,
                          ServerLimits(in_flight=args.max_in_flight * MiB)))
    except KeyboardInterrupt:
        pass
    return 0


def run_render(args, registry: EngineRegistry) -> int:
    engine = registry.get(args.engine)
    info = engine.info
    tracks = {name: _images_in(folder, name) for name, folder in _track_folders(args, info).items()}
    pose_files = sorted(args.poses.glob("*.json")) if args.poses else []
    if args.poses and not pose_files:
        raise JobError(f"no OpenPose JSON files in {args.poses}")
    audio = _render_audio(args, info)
    frames = _frame_count(args, tracks, pose_files, audio)
    stems = pose_files or next(iter(tracks.values()), None)
    names = [path.stem for path in stems] if stems else [f"{index:06d}" for index in range(frames)]
    try:
        poses = [json.loads(path.read_text()) for path in pose_files] or [{"people": []}] * frames
        reference_pose = json.loads(args.reference_pose.read_text()) if args.reference_pose else {"people": []}
    except json.JSONDecodeError as error:
        raise JobError(f"not JSON: {error}") from None
    if not info.inputs and not (args.reference_pose and pose_files):
        raise JobError(f"the {info.name} engine follows keypoints: give --reference-pose and --poses")
    job = {"engine": info.name, "settings": _settings(args, info), "width": args.width, "height": args.height,
           "frames": list(range(frames)), "poses": poses, "reference_pose": reference_pose, "fps": args.fps,
           "text": {spec.name: getattr(args, f"text_{spec.name}") for spec in info.inputs
                    if spec.kind == styles.TEXT and getattr(args, f"text_{spec.name}", None) is not None}}
    limits = Limits()
    reference = args.reference.read_bytes()
    spec = validate_job(job, info, tracks, args.audio if audio is not None else None,
                        check_images(reference, tracks, limits), limits)
    inputs = prepare_inputs(spec, engine, reference, reference_pose, poses, tracks, args.audio, limits)
    args.out.mkdir(parents=True, exist_ok=True)
    for output in engine.render(inputs, 0, threading.Event()):
        index, image, extras = output if len(output) == 3 else (*output, {})
        write_atomically(args.out / f"{names[index]}.png", encode_png(image))
        for name, extra in extras.items():
            (args.out / name).mkdir(exist_ok=True)
            write_atomically(args.out / name / f"{names[index]}.png", encode_png(extra))
    print(f"{len(names)} frames written to {args.out}")
    return 0


def _images_in(folder: Path, name: str) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg")) \
        if folder.is_dir() else []
    if not files:
        raise JobError(f"no PNG or JPEG images in {folder} (the '{name}' track)")
    return files


def _frame_count(args, tracks: dict, pose_files: list, audio) -> int:
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
        return counts.pop()
    if audio is not None:  # the sound alone: as many frames as it lasts
        return max(1, math.ceil(len(audio) * args.fps / SAMPLE_RATE))
    raise JobError(f"nothing to render: give --poses and the tracks engine '{args.engine}' needs")


def _settings(args, info) -> dict:
    """--settings JSON, with the engine's own options over it; paths as given (the backend's)."""
    try:
        settings = json.loads(args.settings)
    except json.JSONDecodeError as error:
        raise JobError(f"--settings is not JSON: {error}") from None
    if not isinstance(settings, dict):
        raise JobError("--settings must be a JSON object")
    for name, spec in info.settings.items():
        value = getattr(args, f"setting_{name}", None)
        if value is not None:
            settings[name] = str(value) if spec.get("type") == "path" else value
    if args.face_mask is not None:
        if "face_box" not in info.settings:
            raise JobError(f"the {info.name} engine has no face_box setting; leave out --face-mask")
        if settings.get("face_box"):
            raise JobError("give --face-box or --face-mask, not both")
        settings["face_box"] = _face_box_of_mask(args)
    return settings


def _render_audio(args, info):
    """The sound of --audio (16 kHz mono float32), checked against what the engine takes."""
    takes = [spec for spec in info.inputs if spec.kind == styles.AUDIO]
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


def _face_box_of_mask(args) -> str:
    """The box of --face-mask's white pixels in output pixels (x1, y1 exclusive), as a face_box."""
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
    drawn track (its pose or face maps), the style options (--face-maps, --background, --mask) the
    tracks of their style; --track NAME=DIR any track by name."""
    folders = {}
    images = [spec for spec in info.inputs if spec.kind == styles.IMAGES]
    drawn = [spec.name for spec in images if styles.style(spec.style).draw is not None
             and styles.style(spec.style).folder in (styles.POSE, styles.FACE)]
    if args.maps is not None:
        if not drawn:
            raise JobError(f"the {info.name} engine takes no control maps; give --poses")
        folders[drawn[0]] = args.maps
    for style_name, option in STYLE_OPTIONS.items():
        folder = getattr(args, option)
        if folder is None:
            continue
        named = [spec.name for spec in images if spec.style == style_name]
        if not named:
            raise JobError(f"the {info.name} engine takes no {_option(option)}")
        folders[named[0]] = folder
    for item in args.track:
        name, _, folder = item.partition("=")
        if not folder or info.track(name) is None:
            raise JobError(f"--track {item!r}: give NAME=DIR with a track the {info.name} engine declares "
                           f"({', '.join(s.name for s in images) or 'none'})")
        folders[name] = Path(folder)
    return folders


def list_engines(args, registry: EngineRegistry) -> int:
    """`marionette engines`: what each engine takes, and whether a weights folder checks out."""
    if args.name is not None:
        registry.get(args.name)  # EngineError for an unknown or unavailable engine
    listing = []
    for name, engine in registry.engines.items():
        if args.name not in (None, name):
            continue
        entry = engine.info.to_json()
        if args.weights is not None:
            entry["weights"] = _weights_status(engine, args.weights)
        listing.append(entry)
    unavailable = [engine.to_json() for name, engine in registry.unavailable.items() if args.name in (None, name)]
    if args.json:
        print(json.dumps({"engines": listing, "unavailable_engines": unavailable}, indent=1))
        return 0
    for entry in listing:
        print(f"{entry['name']}  ({entry['device']}{', needs weights' if entry['needs_weights'] else ''}): "
              f"{entry['description']}")
        for spec in entry["inputs"]:
            style = f" {spec['style']}" if spec["style"] else ""
            optional = "" if spec["required"] else " (optional)"
            when = f" when {spec['when']}" if spec["when"] else ""
            print(f"    input {spec['name']}: {spec['kind']}{style}{optional}{when}  {spec['help']}")
        for setting, spec in entry["settings"].items():
            print(f"    {_option(setting)} {spec.get('type', 'str')} (default {spec.get('default')}): "
                  f"{spec.get('help', '')}")
        if "weights" in entry:
            print(f"    weights {args.weights}: {entry['weights']['status']}")
    for entry in unavailable:
        print(f"{entry['name']}  (unavailable): {entry['reason']}")
    return 0


def _weights_status(engine, folder: Path) -> dict:
    if not engine.info.needs_weights:
        return {"ok": True, "status": "needs no weights"}
    try:
        note = engine.check_weights(str(folder))
    except EngineError as error:
        return {"ok": False, "status": str(error)}
    return {"ok": True, "status": "checks out" + (f" ({note})" if note else "")}


def run_lip_sync(args) -> int:
    samples = load_audio(args.audio)
    offsets = predict_offsets(args.weights, samples, args.fps, device=args.device)
    lip_sync_offsets.write_file(args.out, offsets, args.fps, len(samples) / SAMPLE_RATE)
    print(f"{len(offsets)} frames of face landmark offsets at {args.fps:g} fps written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
