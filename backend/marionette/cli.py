"""The `marionette` command: serve, render (render_command.py), engines, lip-sync, convert-weights,
token."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path

from marionette_core import lip_sync_offsets
from marionette_core.protocol import DEFAULT_PORT

from .audio import SAMPLE_RATE, AudioError, load_audio
from .auth import default_store, default_token_file, load_or_create_token
from .engines import EngineError, EngineRegistry
from .fetching import release_engine
from .weights_service import release_status, weights_status
from .images import ImageError
from .job_inputs import JobError
from .lip_sync.service import predict_offsets
from .models.checkpoints import convert_to_safetensors
from .render_command import add_render_parser, option_name, run_render, unknown_options
from .receiving import MiB, ServerLimits
from .server import serve

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    registry = EngineRegistry() if argv[:1] in (["render"], ["engines"]) else None
    parser = build_parser(registry, _engine_named(argv))
    args, unknown = parser.parse_known_args(argv)
    try:
        if unknown:
            if args.command != "render":
                raise JobError(f"unknown arguments: {' '.join(unknown)}")
            raise JobError(unknown_options(unknown, args, registry))
        if args.command == "serve":
            return run_server(args)
        if args.command == "render":
            return run_render(args, registry)
        if args.command == "engines":
            return list_engines(args, registry)
        if args.command == "lip-sync":
            return run_lip_sync(args)
        if args.command == "weights":
            return run_weights(args, EngineRegistry())
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
    serve.add_argument("--cluster", metavar="ADDRESS",
                       help="run the jobs on a Ray cluster, side by side: its address (host:port of `ray start "
                            "--head`, ray://host:port, auto), or local (a cluster of this machine)")

    add_render_parser(commands, registry.engines.get(engine_name) if registry is not None else None)

    engines = commands.add_parser("engines", help="list the engines, their inputs and settings, and whether "
                                                  "a weights folder checks out")
    engines.add_argument("name", nargs="?", help="only this engine")
    engines.add_argument("--weights", type=Path, help="check this folder as the engine's weights")
    engines.add_argument("--json", action="store_true", help="the listing as JSON")
    engines.add_argument("--cluster", metavar="ADDRESS", help="also list this Ray cluster's capacity and workers")

    weights = commands.add_parser("weights", help="the engines' weights: where they come from (list), and bringing "
                                                  "them from the Hugging Face Hub into an engine's layout (fetch)")
    weights_commands = weights.add_subparsers(dest="weights_command", required=True)
    listing = weights_commands.add_parser("list", help="each release's repositories, sizes and licences")
    listing.add_argument("--check", type=Path, metavar="DIR", help="also say whether DIR checks out for each one")
    fetch = weights_commands.add_parser("fetch", help="fetch exactly the files an engine reads into DIR (resumable; "
                                                      "HF_TOKEN, HF_ENDPOINT and HF_HUB_OFFLINE apply)")
    fetch.add_argument("engine", help="an engine, a variant of one (wan-animate-2-distilled) or lip-sync (see "
                                      "`marionette weights list`)")
    fetch.add_argument("--to", type=Path, required=True, metavar="DIR", help="the engine's weights folder")
    fetch.add_argument("--revision", help="another revision of the engine's own repository than the pinned one")
    fetch.add_argument("--accept-licences", action="store_true",
                       help="accept the repositories' licences without asking (for scripts)")

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

    cluster = None
    if args.cluster:
        from .cluster import ClusterError, ClusterPool

        try:
            cluster = ClusterPool(args.cluster)
        except ClusterError as error:
            raise JobError(str(error)) from None
        log.info("jobs run on the Ray cluster at %s: %s", args.cluster, cluster.status()["summary"])
    try:
        asyncio.run(serve(args.store, token, args.host, args.port, ready,
                          ServerLimits(in_flight=args.max_in_flight * MiB), cluster))
    except KeyboardInterrupt:
        pass
    return 0


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
            entry["weights"] = weights_status(engine, args.weights)
        listing.append(entry)
    unavailable = [engine.to_json() for name, engine in registry.unavailable.items() if args.name in (None, name)]
    cluster = None
    if args.cluster:
        from .cluster import ClusterError, ClusterPool

        try:
            cluster = ClusterPool(args.cluster).status()
        except ClusterError as error:
            raise JobError(str(error)) from None
    if args.json:
        print(json.dumps({"engines": listing, "unavailable_engines": unavailable,
                          **({"cluster": cluster} if cluster else {})}, indent=1))
        return 0
    for entry in listing:
        needs = f", a run holds 1 GPU of {entry['gpu_memory_gib']:g} GiB" if entry["gpus"] else ""
        print(f"{entry['name']}  ({entry['device']}{', needs weights' if entry['needs_weights'] else ''}{needs}): "
              f"{entry['description']}")
        for spec in entry["inputs"]:
            style = f" {spec['style']}" if spec["style"] else ""
            optional = "" if spec["required"] else " (optional)"
            when = f" when {spec['when']}" if spec["when"] else ""
            print(f"    input {spec['name']}: {spec['kind']}{style}{optional}{when}  {spec['help']}")
        for setting, spec in entry["settings"].items():
            print(f"    {option_name(setting)} {spec.get('type', 'str')} (default {spec.get('default')}): "
                  f"{spec.get('help', '')}")
        if "weights" in entry:
            print(f"    weights {args.weights}: {entry['weights']['status']}")
    for entry in unavailable:
        print(f"{entry['name']}  (unavailable): {entry['reason']}")
    if cluster:
        print(f"{cluster['summary']} ({cluster['nodes']} nodes at {cluster['address']})")
        for worker in cluster["workers"]:
            gpu = f", {worker['gpu']['name']} {worker['gpu']['memory_gib']} GiB" if worker["gpu"] else ""
            print(f"    {worker['engine']} on {worker['host']}{gpu}: {'busy' if worker['busy'] else 'free'}")
    return 0


def run_weights(args, registry: EngineRegistry) -> int:
    from .fetching import PERMISSIVE, fetch, human, manifests, pinned

    if args.weights_command == "list":
        for name, files in manifests().items():
            repos = {}
            for file in files:
                repos.setdefault((file.repo, file.revision, file.licence), []).append(file)
            total = sum(file.listed_size for file in files)
            print(f"{name}: {len(repos)} {'repository' if len(repos) == 1 else 'repositories'}, {human(total)}")
            for (repo, revision, licence), group in repos.items():
                accept = "" if licence.lower() in PERMISSIVE else ", to accept when fetching"
                at = revision[:12] if pinned(revision) else f"{revision} (no pinned commit yet)"
                shards = " and the shards they name" if any(f.layout != "file" for f in group) else ""
                print(f"    {repo}@{at} ({licence}{accept}): {len(group)} file{'s' if len(group) > 1 else ''}{shards}, "
                      f"{human(sum(f.listed_size for f in group))}")
            if args.check is not None:
                print(f"    {args.check}: {release_status(name, args.check, registry)['status']}")
        listed = {release_engine(name) for name in manifests()}
        unlisted = [name for name, engine in registry.engines.items()
                    if engine.info.needs_weights and name not in listed]
        if unlisted:
            print(f"no list yet (download their weights by hand): {', '.join(unlisted)}")
        return 0
    if args.engine not in manifests():
        raise EngineError(f"no list of weights for '{args.engine}'; `marionette weights list` shows what has one "
                          f"({', '.join(manifests())})")
    fetched = fetch(args.engine, args.to, accept_licences=args.accept_licences, revision=args.revision)
    print(f"{len(fetched)} files fetched into {args.to}")
    status = release_status(args.engine, args.to, registry)
    print(f"{args.engine} weights in {args.to}: {status['status']}")
    return 0 if status["ok"] else 1


def run_lip_sync(args) -> int:
    samples = load_audio(args.audio)
    offsets = predict_offsets(args.weights, samples, args.fps, device=args.device)
    lip_sync_offsets.write_file(args.out, offsets, args.fps, len(samples) / SAMPLE_RATE)
    print(f"{len(offsets)} frames of face landmark offsets at {args.fps:g} fps written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
