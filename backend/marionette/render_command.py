"""`marionette render`: an engine run on files, for scripts and render farms.

The engine's settings and text inputs are options made from its own declaration (`marionette render
--engine NAME --help` lists them), so a new engine's settings work here with no change to this file;
its image inputs come as folders named by their style (--maps, --face-maps, --background, --mask) or
by their name (--track NAME=DIR). The job goes through the server's own validator (job_inputs.py)
and the engine's check before anything is written; frames are written as the engine yields them.
"""

from __future__ import annotations

import argparse
import json
import math
import threading
from pathlib import Path

import numpy as np

from marionette_core import styles

from .audio import SAMPLE_RATE, load_audio
from .engines import Engine, EngineRegistry
from .images import check_image, decode_image, encode_png
from .job_inputs import JobError, Limits, check_images, prepare_inputs, validate_job
from .jobs import write_atomically

SETTING_TYPES = {"int": int, "float": float, "str": str, "path": str, "choice": str}
# Folder options, by the style of the track they give.
STYLE_OPTIONS = {"face-crop": "face_maps", "background": "background", "rig-mask": "mask", "driving": "driving"}


def add_render_parser(commands, engine: Engine | None) -> None:
    """The `render` command, with `engine`'s own options when it is known."""
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
    render.add_argument("--driving", type=Path, help="driving style: folder of the driving video's frames (the "
                                                     "performance), one per output frame, in name order")
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
    render.add_argument("--cluster", metavar="ADDRESS", help="run the job on this Ray cluster (its frames are "
                                                          "written here)")
    if engine is not None:
        _add_engine_options(render, engine.info)


def option_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def _add_engine_options(render: argparse.ArgumentParser, info) -> None:
    """An option per declared setting and per declared text input of the engine."""
    taken = {option for action in render._actions for option in action.option_strings}
    group = render.add_argument_group(f"settings of the {info.name} engine")
    for name, spec in info.settings.items():
        option = option_name(name)
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
        if spec.kind == styles.TEXT and option_name(spec.name) not in taken:
            group.add_argument(option_name(spec.name), dest=f"text_{spec.name}", metavar="TEXT", help=spec.help)


def unknown_options(unknown: list[str], args, registry: EngineRegistry) -> str:
    """What to say of options the engine does not have."""
    engine = registry.get(args.engine)  # EngineError for an unknown or unavailable engine
    info = engine.info
    options = [item for item in unknown if item.startswith("--")] or unknown
    names = [item.partition("=")[0][2:].replace("-", "_") for item in options]
    if all(name in ("prompt", "negative_prompt") for name in names):
        return f"the {info.name} engine takes no {' or '.join(n.replace('_', ' ') for n in names)}; leave out " \
               f"{' and '.join(options)}"
    known = [option_name(name) for name in info.settings] + \
        [option_name(spec.name) for spec in info.inputs if spec.kind == styles.TEXT]
    return (f"engine '{info.name}' has no setting {', '.join(repr(n) for n in names)} ({' '.join(options)}); it has "
            f"{', '.join(known) or 'none'} (see `marionette render --engine {info.name} --help`)")


def run_render(args, registry: EngineRegistry) -> int:
    """Run the engine on the files the options name; one PNG per frame in --out."""
    engine = registry.get(args.engine)
    info = engine.info
    settings = _settings(args, info)
    tracks = {name: _images_in(folder, name) for name, folder in _track_folders(args, info, settings).items()}
    pose_files = sorted(args.poses.glob("*.json")) if args.poses else []
    if args.poses and not pose_files:
        raise JobError(f"no OpenPose JSON files in {args.poses}")
    audio = _render_audio(args, info)
    frames = _frame_count(args, info, tracks, pose_files, audio, settings)
    stems = pose_files or next(iter(tracks.values()), None)
    names = [path.stem for path in stems] if stems else [f"{index:06d}" for index in range(frames)]
    try:
        poses = [json.loads(path.read_text()) for path in pose_files] or [{"people": []}] * frames
        reference_pose = json.loads(args.reference_pose.read_text()) if args.reference_pose else {"people": []}
    except json.JSONDecodeError as error:
        raise JobError(f"not JSON: {error}") from None
    if not info.inputs and not (args.reference_pose and pose_files):
        raise JobError(f"the {info.name} engine follows keypoints: give --reference-pose and --poses")
    job = {"engine": info.name, "settings": settings, "width": args.width, "height": args.height,
           "frames": list(range(frames)), "poses": poses, "reference_pose": reference_pose, "fps": args.fps,
           "text": {spec.name: getattr(args, f"text_{spec.name}") for spec in info.inputs
                    if spec.kind == styles.TEXT and getattr(args, f"text_{spec.name}", None) is not None}}
    limits = Limits()
    reference = args.reference.read_bytes()
    spec = validate_job(job, info, tracks, args.audio if audio is not None else None,
                        check_images(reference, tracks, limits), limits)
    inputs = prepare_inputs(spec, engine, reference, reference_pose, poses, tracks, args.audio, limits,
                            engine_check=not args.cluster)  # on a cluster the worker checks weights and device
    args.out.mkdir(parents=True, exist_ok=True)
    if args.cluster:
        outputs = _cluster_frames(args.cluster, engine, spec, inputs, frames)
    else:
        outputs = ((index, encode_png(image), {name: encode_png(extra) for name, extra in extras.items()})
                   for index, image, extras in _with_extras(engine.render(inputs, 0, threading.Event())))
    for index, png, extras in outputs:
        write_atomically(args.out / f"{names[index]}.png", png)
        for name, extra in extras.items():
            (args.out / name).mkdir(exist_ok=True)
            write_atomically(args.out / name / f"{names[index]}.png", extra)
    print(f"{len(names)} frames written to {args.out}")
    return 0


def _with_extras(outputs):
    for output in outputs:
        yield output if len(output) == 3 else (*output, {})


def _cluster_frames(address: str, engine, spec: dict, inputs, frames: int):
    """The job's frames (index, PNG, {name: PNG}) from a worker of the Ray cluster at `address`."""
    import uuid

    from .cluster import ClusterError, ClusterPool, engine_name, job_frames, run_needs

    try:
        pool = ClusterPool(address)
        try:
            yield from job_frames(pool, engine_name(engine), run_needs(engine.info, spec["settings"]),
                                  f"render-{uuid.uuid4().hex}", inputs, 0, frames, threading.Event())
        finally:
            pool.close()
    except ClusterError as error:
        raise JobError(str(error)) from None


def _images_in(folder: Path, name: str) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg")) \
        if folder.is_dir() else []
    if not files:
        raise JobError(f"no PNG or JPEG images in {folder} (the '{name}' track)")
    return files


def _frame_count(args, info, tracks: dict, pose_files: list, audio, settings: dict) -> int:
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
    needed = [_track_option(spec, info, settings) for spec in info.inputs
              if spec.kind == styles.IMAGES and (spec.required or spec.name in _map_tracks(info, settings)[:1])]
    raise JobError(f"nothing to render: give {' and '.join(['--poses', *needed]) if needed else '--poses'} "
                   f"(the {info.name} engine's inputs)")


def _track_option(spec, info, settings: dict) -> str:
    """The option that gives an image track: its style's (--driving, --mask, ...), --maps for the
    engine's first control-map track, else --track NAME=DIR."""
    option = STYLE_OPTIONS.get(spec.style)
    if option is not None:
        return f"{option_name(option)} DIR"
    return "--maps DIR" if _map_tracks(info, settings)[:1] == [spec.name] else f"--track {spec.name}=DIR"


def _map_tracks(info, settings: dict) -> list[str]:
    """The engine's image tracks of control maps (pose or face maps drawn from keypoints, or depth)
    that the settings use (an input declared for other setting values is skipped)."""
    values = {name: spec.get("default") for name, spec in info.settings.items()} | settings
    return [spec.name for spec in info.inputs if spec.kind == styles.IMAGES
            and styles.style(spec.style).folder in styles.CONTROL_MAP_PASSES
            and all(values.get(key) == value for key, value in (spec.when or {}).items())]


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


def _track_folders(args, info, settings: dict) -> dict[str, Path]:
    """Image tracks from the command line, by the engine's input names: --maps is the engine's first
    control-map track the settings use (its pose, face or depth maps), the style options (--face-maps,
    --background, --mask) the tracks of their style; --track NAME=DIR any track by name."""
    folders = {}
    images = [spec for spec in info.inputs if spec.kind == styles.IMAGES]
    drawn = _map_tracks(info, settings)
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
            raise JobError(f"the {info.name} engine takes no {option_name(option)}")
        folders[named[0]] = folder
    for item in args.track:
        name, _, folder = item.partition("=")
        if not folder or info.track(name) is None:
            raise JobError(f"--track {item!r}: give NAME=DIR with a track the {info.name} engine declares "
                           f"({', '.join(s.name for s in images) or 'none'})")
        folders[name] = Path(folder)
    return folders
