"""Weights in one command: `marionette weights list` and `marionette weights fetch ENGINE --to DIR`.

Each engine package holds a `sources.json` beside its code: for every file the engine reads, the
Hugging Face Hub repository, a revision (a commit, in full or by its short id; `main` for a release
whose commit could not be confirmed, resolved and named at fetch time), the path there, the subfolder
of the engine's folder it goes to, and the repository's licence. Fetching goes through `huggingface_hub`
(its resumable downloads, HF_TOKEN, HF_ENDPOINT for a mirror, HF_HUB_OFFLINE), brings only the
listed files, checks the free disk space against the sizes the Hub reports first, asks once for the
licences that need accepting, verifies each file against the Hub's size and SHA-256 (fetching a
damaged one again, then naming it), and ends with the engine's own check of the folder. Nothing is
loaded, so no pickled code runs. Nothing else in Marionette downloads anything.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
import sys
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path

from .engines import EngineError

# Licences a user takes on by fetching without being asked; any other is shown and must be accepted.
PERMISSIVE = {"apache-2.0", "mit", "bsd-3-clause", "bsd-2-clause", "cc-by-4.0"}
SHA256 = re.compile(r"[0-9a-f]{64}")
SPACE_MARGIN = 1.02  # a little room beyond the files themselves


class FetchError(EngineError):
    """A fetch that cannot go on; the message names the cause (and the file)."""


class FetchCancelled(FetchError):
    """The fetch was cancelled; what was fetched whole stays."""


@dataclass(frozen=True)
class SourceFile:
    repo: str
    revision: str
    licence: str
    path: str  # in the repository
    into: str  # subfolder of the engine's folder
    listed_size: int
    # "file"; "sharded": a checkpoint's index, the shards it names come with it; "either": a checkpoint
    # that is one file, or sharded (its index `<path>.index.json` on the Hub) as the release has it
    layout: str = "file"

    @property
    def target(self) -> str:
        return f"{self.into}/{self.path}" if self.into else self.path


# Packages that may hold a sources.json: every engine package, and lip sync (not an engine).
SOURCE_PACKAGES = ("marionette.lip_sync",)


def _source_files() -> list:
    engines = resources.files("marionette.engines")
    found = [package / "sources.json" for package in sorted(engines.iterdir(), key=lambda p: p.name)]
    found += [resources.files(package) / "sources.json" for package in SOURCE_PACKAGES]
    return [data_file for data_file in found if data_file.is_file()]


@functools.cache  # package data: read once
def _releases() -> dict[str, dict]:
    releases = {}
    for data_file in _source_files():
        for name, entry in json.loads(data_file.read_text()).items():
            if not name.startswith("_"):
                releases[name] = entry
    return releases


def manifests() -> dict[str, list[SourceFile]]:
    """Every release's files (an engine's, a variant of one, or lip sync's), by the name `weights fetch` takes."""
    return {name: [SourceFile(source["repo"], source["revision"], source["licence"], path, source.get("into", ""),
                              int(size), layout)
                   for source in entry["sources"]
                   for layout, listed in (("file", source.get("files", [])), ("sharded", source.get("sharded", [])),
                                          ("either", source.get("weights", [])))
                   for path, size in listed]
            for name, entry in _releases().items()}


def release_engine(name: str) -> str | None:
    """The engine whose folder a release fills (None: lip sync's folder, which no engine reads)."""
    return _releases().get(name, {}).get("engine", name)


def releases_for(engine: str) -> list[str]:
    return [name for name in _releases() if release_engine(name) == engine]


def sources_for(name: str) -> list[SourceFile]:
    known = manifests()
    if name not in known:
        raise FetchError(f"no list of weights for '{name}'; `marionette weights list` shows what has one "
                         f"({', '.join(known)})")
    return known[name]


def pinned(revision: str) -> bool:
    """A revision that names a commit (in full or by the short id the Hub's pages show), not a branch."""
    return re.fullmatch(r"[0-9a-f]{7,40}", revision) is not None


def fetch_hint(engine: str, folder) -> str:
    """What to add to a "the weights folder lacks ..." error: the command that fetches them."""
    names = releases_for(engine)
    if not names:
        return ""
    commands = " or ".join(f"`marionette weights fetch {name} --to {folder}`" for name in names)
    return f"; {commands} fetches them"


def check_naming_fetch(engine: str, folder, check, *args):
    """check(folder, *args), its error also naming the command that fetches the weights."""
    try:
        return check(folder, *args)
    except EngineError as error:
        raise EngineError(f"{error}{fetch_hint(engine, folder)}") from None


def human(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1000
    return f"{size:.1f} GB"


def licences_to_accept(files: list[SourceFile]) -> dict[str, str]:
    """repo -> licence, for every repository whose licence is not a permissive one."""
    return {f.repo: f.licence for f in files if f.licence.lower() not in PERMISSIVE}


def _remote(file: SourceFile) -> tuple[int, str | None]:
    """(size, sha256 or None) of the file as the Hub reports it, without downloading it."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    metadata = get_hf_file_metadata(hf_hub_url(file.repo, file.path, revision=file.revision))
    etag = (metadata.etag or "").strip('"').removeprefix("W/").strip('"')
    return int(metadata.size or 0), etag if SHA256.fullmatch(etag) else None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _intact(path: Path, size: int, sha256: str | None) -> bool:
    return path.is_file() and path.stat().st_size == size and (sha256 is None or _sha256(path) == sha256)


def _progress_bar(report, stop):
    """A tqdm class for huggingface_hub that reports each file's bytes and stops the download when
    `stop` is set (None, None: the client's own bar)."""
    if report is None and stop is None:
        return None
    from tqdm.auto import tqdm

    class Reporting(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

        def update(self, n=1):
            if stop is not None and stop.is_set():
                raise FetchCancelled("the fetch was cancelled")
            super().update(n)
            if report is not None:
                report(n)
    return Reporting


def _download(file: SourceFile, folder: Path, force: bool = False, bar=None) -> Path:
    from huggingface_hub import hf_hub_download

    local = folder / file.into if file.into else folder
    try:
        return Path(hf_hub_download(file.repo, file.path, revision=file.revision, local_dir=local,
                                    force_download=force, tqdm_class=bar))
    except FetchCancelled:
        raise
    except Exception as error:  # offline without the file, the Hub refusing it, a connection that stays down
        raise FetchError(f"cannot fetch {file.target} from {file.repo} at {file.revision[:12]}: "
                         f"{type(error).__name__}: {error}") from None


def _resolve(repo: str, revision: str, say) -> str:
    """The full commit id a revision names now (a short commit id, or a branch for a release that
    has no pinned commit yet), so that every file comes from one commit."""
    from huggingface_hub import HfApi

    try:
        commit = HfApi().resolve_revision(repo, revision=revision).resolved
    except Exception as error:
        raise FetchError(f"cannot find revision {revision} of {repo}: {type(error).__name__}: {error}") from None
    if not pinned(revision):
        say(f"{repo}: {revision} is commit {commit} today")
    return commit


def _is_sharded(file: SourceFile, folder: Path, offline: bool) -> bool:
    """Whether a checkpoint listed as "either" is sharded in the release: its index is on the Hub (or,
    offline, in the folder)."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import EntryNotFoundError

    index = replace(file, path=f"{file.path}.index.json")
    if offline:
        return (folder / index.target).is_file()
    try:
        get_hf_file_metadata(hf_hub_url(index.repo, index.path, revision=index.revision))
    except EntryNotFoundError:
        return False
    except Exception as error:
        raise FetchError(f"cannot ask {file.repo} for {index.path}: {type(error).__name__}: {error}") from None
    return True


def _with_shards(files: list[SourceFile], folder: Path, offline: bool) -> list[SourceFile]:
    """The files with, after each sharded checkpoint's index, the shards that index names (read from
    the Hub's copy of the index, or the folder's when offline); a checkpoint that may be either, as
    the release has it."""
    from huggingface_hub import hf_hub_download

    expanded = []
    for file in files:
        if file.layout == "either":
            file = replace(file, path=f"{file.path}.index.json", layout="sharded") \
                if _is_sharded(file, folder, offline) else replace(file, layout="file")
        expanded.append(file)
        if file.layout != "sharded":
            continue
        try:
            index_path = folder / file.target if offline else Path(hf_hub_download(file.repo, file.path,
                                                                                   revision=file.revision))
            shard_names = sorted(set(json.loads(index_path.read_text())["weight_map"].values()))
        except Exception as error:
            raise FetchError(f"cannot read the shard list {file.target} of {file.repo}: {type(error).__name__}: "
                             f"{error}") from None
        subfolder = file.path.rpartition("/")[0]
        for shard in shard_names:
            expanded.append(SourceFile(file.repo, file.revision, file.licence,
                                       f"{subfolder}/{shard}" if subfolder else shard, file.into,
                                       file.listed_size // max(1, len(shard_names))))
    return expanded


def fetch(engine: str, folder: Path, accept_licences: bool = False, revision: str | None = None,
          ask=input, say=print, progress=None, stop=None, interactive: bool = True) -> list[Path]:
    """Bring a release's files (`engine`: a name `weights list` shows) into `folder` in its engine's
    layout; the paths fetched. `revision` replaces the pinned revision of the release's own
    repository (its first source). `progress(done, total, file)` after each piece; `stop` (an Event)
    cancels between pieces (FetchCancelled). Without `interactive`, licences not accepted are an
    error listing them instead of a question."""
    files = sources_for(engine)
    if revision:
        files = [replace(f, revision=revision) if f.repo == files[0].repo else f for f in files]
    folder = Path(folder).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    if not offline:  # every file of a repository from one commit, named in full
        given = {(f.repo, f.revision) for f in files if len(f.revision) != 40}
        commits = {key: _resolve(*key, say) for key in sorted(given)}
        files = [replace(f, revision=commits.get((f.repo, f.revision), f.revision)) for f in files]
    files = _with_shards(files, folder, offline)

    # What the Hub has, and what is missing here.
    todo: list[tuple[SourceFile, int, str | None]] = []
    for file in files:
        if offline:
            size, sha256 = file.listed_size, None
        else:
            try:
                size, sha256 = _remote(file)
            except Exception as error:  # the client's errors are many kinds: name the file and the cause
                raise FetchError(f"cannot find {file.path} of {file.repo} at {file.revision[:12]}: "
                                 f"{type(error).__name__}: {error}") from None
        target = folder / file.target
        if not (offline and target.is_file()) and not _intact(target, size, sha256):
            todo.append((file, size, sha256))
    if not todo:
        say(f"{engine}: every file is already in {folder}")
        return []

    needed = sum(size for _, size, _ in todo)
    free = shutil.disk_usage(folder).free
    if needed * SPACE_MARGIN > free:
        raise FetchError(f"{engine} needs {human(needed)} more in {folder}, which has {human(free)} free; make room "
                         f"or fetch to another folder")

    pending = licences_to_accept([file for file, _, _ in todo])
    if pending and not accept_licences:
        say("These repositories come under licences you accept by fetching them:")
        for repo, licence in sorted(pending.items()):
            say(f"    {repo}: {licence} (https://huggingface.co/{repo})")
        listed = ", ".join(f"{repo} ({licence})" for repo, licence in sorted(pending.items()))
        if not interactive:
            raise FetchError(f"the licences of {listed} must be accepted first")
        if not sys.stdin.isatty() or ask("Accept them and fetch? [y/N] ").strip().lower() not in ("y", "yes"):
            raise FetchError("the licences were not accepted; read them, then run again with --accept-licences")

    say(f"{engine}: fetching {len(todo)} files, {human(needed)}, into {folder}")
    fetched = []
    done = [0]

    def report_for(file: SourceFile):
        if progress is None:
            return None

        def report(n: int) -> None:
            done[0] += n
            progress(done[0], needed, file.target)
        return report

    for file, size, sha256 in todo:
        if stop is not None and stop.is_set():
            raise FetchCancelled("the fetch was cancelled")
        start = done[0]
        path = _download(file, folder, bar=_progress_bar(report_for(file), stop))
        if not offline and not _intact(path, size, sha256):
            say(f"{file.target} arrived damaged; fetching it again")
            done[0] = start
            path = _download(file, folder, force=True, bar=_progress_bar(report_for(file), stop))
            if not _intact(path, size, sha256):
                raise FetchError(f"{file.target} from {file.repo} arrives damaged (size or SHA-256 differs from what "
                                 f"the Hub lists) twice; check the connection or mirror and run again")
        fetched.append(path)
    return fetched
