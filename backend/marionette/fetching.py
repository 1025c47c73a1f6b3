"""Weights in one command: `marionette weights list` and `marionette weights fetch ENGINE --to DIR`.

Each engine package holds a `sources.json` beside its code: for every file the engine reads, the
Hugging Face Hub repository, a revision pinned to a commit, the path there, the subfolder of the
engine's folder it goes to, and the repository's licence. Fetching goes through `huggingface_hub`
(its resumable downloads, HF_TOKEN, HF_ENDPOINT for a mirror, HF_HUB_OFFLINE), brings only the
listed files, checks the free disk space against the sizes the Hub reports first, asks once for the
licences that need accepting, verifies each file against the Hub's size and SHA-256 (fetching a
damaged one again, then naming it), and ends with the engine's own check of the folder. Nothing is
loaded, so no pickled code runs. Nothing else in Marionette downloads anything.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
from dataclasses import dataclass
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

    @property
    def target(self) -> str:
        return f"{self.into}/{self.path}" if self.into else self.path


def manifests() -> dict[str, list[SourceFile]]:
    """Every engine's files, from the sources.json of each engine package that has one."""
    found: dict[str, list[SourceFile]] = {}
    engines = resources.files("marionette.engines")
    for package in sorted(engines.iterdir(), key=lambda p: p.name):
        data_file = package / "sources.json"
        if not data_file.is_file():
            continue
        data = json.loads(data_file.read_text())
        for engine, entry in data.items():
            if engine.startswith("_"):
                continue
            found[engine] = [SourceFile(source["repo"], source["revision"], source["licence"], path,
                                        source.get("into", ""), int(size))
                             for source in entry["sources"] for path, size in source["files"]]
    return found


def sources_for(engine: str) -> list[SourceFile]:
    known = manifests()
    if engine not in known:
        raise FetchError(f"no list of weights for '{engine}'; `marionette weights list` shows the engines that "
                         f"have one ({', '.join(known)})")
    return known[engine]


def fetch_hint(engine: str, folder) -> str:
    """What to add to a "the weights folder lacks ..." error: the command that fetches them."""
    return f"; `marionette weights fetch {engine} --to {folder}` fetches them" if engine in manifests() else ""


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


def fetch(engine: str, folder: Path, accept_licences: bool = False, revision: str | None = None,
          ask=input, say=print, progress=None, stop=None, interactive: bool = True) -> list[Path]:
    """Bring the engine's files into `folder` in its layout; the paths fetched. `revision` replaces
    the pinned revision of the engine's own repository (its first source). `progress(done, total,
    file)` after each piece; `stop` (an Event) cancels between pieces (FetchCancelled). Without
    `interactive`, licences not accepted are an error listing them instead of a question."""
    files = sources_for(engine)
    if revision:
        main = files[0].repo
        files = [SourceFile(f.repo, revision if f.repo == main else f.revision, f.licence, f.path, f.into,
                            f.listed_size) for f in files]
    folder = Path(folder).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")

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
