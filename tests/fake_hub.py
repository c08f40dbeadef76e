"""A minimal Hugging Face Hub file server on loopback, for testing the real download code.

It answers ``HEAD``/``GET {endpoint}/{repo_id}/resolve/{revision}/{path}`` the way the Hub does for
plain (non-LFS-redirect) files: ``X-Repo-Commit``, ``ETag`` and ``Content-Length`` headers, and
``404`` with ``X-Error-Code: EntryNotFound`` / ``RepoNotFound`` otherwise. It counts requests so
tests can assert that cached files are not fetched twice.
"""

from __future__ import annotations

import hashlib
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class FakeHub:
    def __init__(self, files: dict[str, dict[str, bytes]]):
        self.files = files  # {repo_id: {path: content}}
        self.gets: Counter[str] = Counter()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def _lookup(self):
                path = unquote(self.path.split("?")[0]).lstrip("/")
                if "/resolve/" not in path:
                    return None, "RepoNotFound", path
                repo_id, rest = path.split("/resolve/", 1)
                _revision, _, fpath = rest.partition("/")
                if repo_id not in hub.files:
                    return None, "RepoNotFound", path
                if fpath not in hub.files[repo_id]:
                    return None, "EntryNotFound", path
                return hub.files[repo_id][fpath], None, path

            def _headers(self, body, code):
                if body is None:
                    self.send_response(404 if code == "EntryNotFound" else 401)
                    self.send_header("X-Error-Code", code)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return False
                self.send_response(200)
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("ETag", '"' + hashlib.sha256(body).hexdigest() + '"')
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Content-Type", "application/octet-stream")
                self.end_headers()
                return True

            def do_HEAD(self):
                body, code, _ = self._lookup()
                self._headers(body, code)

            def do_GET(self):
                body, code, path = self._lookup()
                if self._headers(body, code):
                    hub.gets[path] += 1
                    self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeHub:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
