"""A stand-in for the Hugging Face Hub on loopback, for the real `huggingface_hub` client
(HF_ENDPOINT=http://127.0.0.1:PORT): `/api/models/{repo}/revision/{revision}` (a branch or a commit
id, whole or its first 7+ characters, resolved to the full commit as the Hub does) and
`/{repo}/resolve/{revision}/{path}` with the headers the client reads (X-Repo-Commit, ETag, Content-Length), large files redirected to a second host name (as the
Hub sends them to its CDN, with X-Linked-Etag and X-Linked-Size) that serves byte ranges for resumed
downloads. Faults to inject: a connection dropped after some bytes, a damaged body, a slow body,
once each.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

LARGE = 1024  # bytes: files from this size on are served through the "CDN" redirect, as LFS files are


class HubStandIn:
    def __init__(self):
        self.files: dict[tuple[str, str], bytes] = {}  # (repo, path) -> content
        self.commits: dict[str, str] = {}  # repo -> the commit its revisions resolve to
        self.drop_after: dict[str, int] = {}  # path -> bytes sent before the connection drops (once)
        self.damage: set[str] = set()  # paths whose next body arrives damaged (once)
        self.delay: dict[str, float] = {}  # path -> seconds its body waits before it is sent (once)
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Range header)
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_HEAD(self):
                stand_in._serve(self, body=False)

            def do_GET(self):
                stand_in._serve(self, body=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.cdn = f"http://localhost:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def add(self, repo: str, commit: str, files: dict[str, bytes]) -> None:
        self.commits[repo] = commit
        for path, content in files.items():
            self.files[(repo, path)] = content

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # --- serving -------------------------------------------------------------------------

    def _serve(self, handler: BaseHTTPRequestHandler, body: bool) -> None:
        path = unquote(handler.path.split("?")[0])
        self.requests.append((handler.command, path, handler.headers.get("Range")))
        if path.startswith("/cdn/"):
            return self._serve_blob(handler, path.removeprefix("/cdn/"), body)
        if path.startswith("/api/models/"):
            repo, _, revision = path.removeprefix("/api/models/").partition("/revision/")
            if repo not in self.commits:
                return self._error(handler, 404, "RepoNotFound", f"no repository {repo}")
            if not self._names_commit(repo, revision):
                return self._error(handler, 404, "RevisionNotFound", f"no revision {revision} of {repo}")
            data = json.dumps({"id": repo, "sha": self.commits[repo], "siblings": []}).encode()
            return self._send(handler, 200, {"Content-Type": "application/json"}, data if body else None,
                              length=len(data))
        repo, found, rest = path.lstrip("/").partition("/resolve/")
        revision, _, file_path = rest.partition("/")
        if not found or repo not in self.commits:
            return self._error(handler, 404, "RepoNotFound", f"no repository {repo}")
        if not self._names_commit(repo, revision):
            return self._error(handler, 404, "RevisionNotFound", f"no revision {revision} of {repo}")
        content = self.files.get((repo, file_path))
        if content is None:
            return self._error(handler, 404, "EntryNotFound", f"no {file_path} in {repo}")
        headers = {"X-Repo-Commit": self.commits[repo]}
        if len(content) >= LARGE:  # LFS: the etag is the SHA-256, the bytes come from the CDN
            sha = hashlib.sha256(content).hexdigest()
            headers.update({"X-Linked-Etag": f'"{sha}"', "X-Linked-Size": str(len(content)), "ETag": f'"{sha}"',
                            "Location": f"{self.cdn}/cdn/{repo}/{file_path}", "Content-Length": "0"})
            return self._send(handler, 302, headers, b"")
        headers["ETag"] = f'"{hashlib.sha1(content).hexdigest()}"'
        return self._send(handler, 200, headers, content if body else None, length=len(content))

    def _names_commit(self, repo: str, revision: str) -> bool:
        commit = self.commits[repo]
        return revision == "main" or (len(revision) >= 7 and commit.startswith(revision))

    def _serve_blob(self, handler, key: str, body: bool) -> None:
        match = [(r, p) for (r, p) in self.files if key == f"{r}/{p}"]
        if not match:
            return self._error(handler, 404, "EntryNotFound", f"no blob {key}")
        repo, file_path = match[0]
        content = self.files[(repo, file_path)]
        start = 0
        requested = handler.headers.get("Range")
        if requested and requested.startswith("bytes="):
            start = int(requested.removeprefix("bytes=").split("-")[0] or 0)
        part = content[start:]
        if body and file_path in self.delay:
            time.sleep(self.delay.pop(file_path))
        if body and file_path in self.damage:
            self.damage.discard(file_path)
            part = bytes([part[0] ^ 0xFF]) + part[1:]
        status = 206 if start else 200
        headers = {"Content-Range": f"bytes {start}-{len(content) - 1}/{len(content)}"} if start else {}
        headers["ETag"] = f'"{hashlib.sha256(content).hexdigest()}"'
        if body and file_path in self.drop_after:
            cut = self.drop_after.pop(file_path)
            handler.send_response(status)
            for name, value in {**headers, "Content-Length": str(len(part))}.items():
                handler.send_header(name, value)
            handler.end_headers()
            handler.wfile.write(part[:cut])
            handler.wfile.flush()
            handler.close_connection = True
            handler.connection.shutdown(2)
            return
        return self._send(handler, status, headers, part if body else None, length=len(part))

    @staticmethod
    def _send(handler, status: int, headers: dict, body: bytes | None, length: int | None = None) -> None:
        handler.send_response(status)
        for name, value in headers.items():
            handler.send_header(name, value)
        if "Content-Length" not in headers:
            handler.send_header("Content-Length", str(length if length is not None else len(body or b"")))
        handler.end_headers()
        if body:
            handler.wfile.write(body)

    def _error(self, handler, status: int, code: str, message: str) -> None:
        data = ('{"error": "%s"}' % message).encode()
        self._send(handler, status, {"X-Error-Code": code, "X-Error-Message": message,
                                     "Content-Type": "application/json"},
                   data if handler.command != "HEAD" else None, length=len(data))  # HEAD: headers only
