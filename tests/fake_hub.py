"""A fake Hugging Face Hub at its HTTP boundary: the endpoints ``huggingface_hub`` calls to create a dataset
repository and commit files to it (preupload, LFS batch + upload, NDJSON commit, repo info, YAML check).

    with FakeHub() as hub:       # HF_ENDPOINT=hub.url
        ...
        hub.repos["org/name"].files["README.md"]   # bytes as committed
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import re
import threading
from dataclasses import dataclass, field
from typing import Any

import yaml


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class FakeRepo:
    repo_type: str
    private: bool
    files: dict[str, bytes] = field(default_factory=dict)
    commits: list[dict[str, Any]] = field(default_factory=list)

    @property
    def sha(self) -> str:
        return self.commits[-1]["oid"] if self.commits else "0" * 40


class FakeHub:
    """A threaded HTTP server on 127.0.0.1; ``fail_next`` injects HTTP 500s per endpoint name."""

    def __init__(self, lfs_suffixes: tuple[str, ...] = (".parquet",)):
        self.repos: dict[str, FakeRepo] = {}
        self.lfs: dict[str, bytes] = {}
        self.requests: list[tuple[str, str]] = []
        self.authorizations: set[str] = set()
        self.fail_next: dict[str, int] = {}
        self.lfs_suffixes = lfs_suffixes
        self.lock = threading.Lock()
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _body(self) -> bytes:
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _send(self, status: int, payload: Any = None) -> None:
                data = json.dumps(payload if payload is not None else {}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802
                hub._handle(self, "GET", b"")

            def do_POST(self) -> None:  # noqa: N802
                hub._handle(self, "POST", self._body())

            def do_PUT(self) -> None:  # noqa: N802
                hub._handle(self, "PUT", self._body())

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> FakeHub:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _failing(self, name: str) -> bool:
        with self.lock:
            if self.fail_next.get(name, 0) > 0:
                self.fail_next[name] -= 1
                return True
        return False

    # ------------------------------------------------------------------------------------ routing
    def _handle(self, handler: Any, method: str, body: bytes) -> None:
        path = handler.path.split("?", 1)[0]
        with self.lock:
            self.requests.append((method, path))
        auth = handler.headers.get("Authorization")
        if auth:
            with self.lock:
                self.authorizations.add(auth)
        routes = [
            ("POST", r"/api/repos/create", self._create),
            ("POST", r"/api/validate-yaml", self._validate_yaml),
            ("POST", r"/api/datasets/(?P<repo>[^/]+/[^/]+)/preupload/(?P<rev>[^/]+)", self._preupload),
            ("POST", r"/datasets/(?P<repo>[^/]+/[^/]+)\.git/info/lfs/objects/batch", self._lfs_batch),
            ("PUT", r"/fake-lfs/(?P<oid>[0-9a-f]{64})", self._lfs_put),
            ("POST", r"/api/datasets/(?P<repo>[^/]+/[^/]+)/commit/(?P<rev>[^/]+)", self._commit),
            ("GET", r"/api/datasets/(?P<repo>[^/]+/[^/]+)(?:/revision/(?P<rev>[^/]+))?", self._info),
        ]
        for verb, pattern, action in routes:
            match = re.fullmatch(pattern, path)
            if verb == method and match:
                if method != "PUT" and not (auth or "").startswith("Bearer "):
                    return handler._send(401, {"error": "Invalid credentials in Authorization header"})
                if self._failing(action.__name__.strip("_")):
                    return handler._send(500, {"error": "injected failure"})
                status, payload = action(body, **match.groupdict())
                return handler._send(status, payload)
        handler._send(404, {"error": f"no route {method} {path}"})

    def _repo(self, repo: str) -> FakeRepo | None:
        found = self.repos.get(repo)
        return found if found and found.repo_type == "dataset" else None

    def _create(self, body: bytes) -> tuple[int, Any]:
        payload = json.loads(body)
        repo_id = f"{payload['organization']}/{payload['name']}" if payload.get("organization") else payload["name"]
        url = f"{self.url}/datasets/{repo_id}"
        if repo_id in self.repos:
            return 409, {"error": "You already created this dataset repo", "url": url}
        self.repos[repo_id] = FakeRepo(payload.get("type") or "model", payload.get("visibility") == "private")
        return 200, {"url": url, "name": repo_id}

    def _validate_yaml(self, body: bytes) -> tuple[int, Any]:
        content = json.loads(body)["content"]
        try:  # the front matter: from a first line "---" to the next line that is exactly "---"
            match = re.match(r"---\r?\n(.*?)^---\r?$", content, re.S | re.M)
            assert match, "no front matter"
            header = yaml.safe_load(match.group(1))
            assert isinstance(header, dict) and header.get("configs")
        except Exception as exc:
            return 400, {"errors": [{"message": f"invalid metadata: {exc}"}], "warnings": []}
        return 200, {"errors": [], "warnings": []}

    def _preupload(self, body: bytes, repo: str, rev: str) -> tuple[int, Any]:
        target = self._repo(repo)
        if target is None:
            return 404, {"error": "Repository not found"}
        files = []
        for entry in json.loads(body)["files"]:
            lfs = entry["path"].endswith(self.lfs_suffixes)
            existing = target.files.get(entry["path"])
            oid = None
            if existing is not None:
                oid = hashlib.sha256(existing).hexdigest() if lfs else git_blob_sha1(existing)
            files.append({"path": entry["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                          "oid": oid})
        return 200, {"files": files, "commitOid": target.sha}

    def _lfs_batch(self, body: bytes, repo: str) -> tuple[int, Any]:
        if self._repo(repo) is None:
            return 404, {"message": "Repository not found"}
        objects = []
        for obj in json.loads(body)["objects"]:
            entry: dict[str, Any] = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
            if obj["oid"] not in self.lfs:
                entry["actions"] = {"upload": {"href": f"{self.url}/fake-lfs/{obj['oid']}", "header": {}}}
            objects.append(entry)
        return 200, {"transfer": "basic", "objects": objects}

    def _lfs_put(self, body: bytes, oid: str) -> tuple[int, Any]:
        if hashlib.sha256(body).hexdigest() != oid:
            return 400, {"error": "sha256 mismatch"}
        self.lfs[oid] = body
        return 200, {}

    def _commit(self, body: bytes, repo: str, rev: str) -> tuple[int, Any]:
        target = self._repo(repo)
        if target is None:
            return 404, {"error": "Repository not found"}
        staged: dict[str, bytes] = {}
        header: dict[str, Any] = {}
        for line in body.decode().splitlines():
            item = json.loads(line)
            value = item["value"]
            if item["key"] == "header":
                header = value
            elif item["key"] == "file":
                staged[value["path"]] = base64.b64decode(value["content"])
            elif item["key"] == "lfsFile":
                if value["oid"] not in self.lfs:
                    return 400, {"error": f"LFS object {value['oid']} of {value['path']} was never uploaded"}
                staged[value["path"]] = self.lfs[value["oid"]]
        target.files.update(staged)
        oid = hashlib.sha1(f"{repo}:{len(target.commits)}:{sorted(staged)}".encode()).hexdigest()
        target.commits.append({"oid": oid, "summary": header.get("summary"), "files": sorted(staged)})
        return 200, {"commitUrl": f"{self.url}/datasets/{repo}/commit/{oid}", "commitOid": oid, "success": True}

    def _info(self, body: bytes, repo: str, rev: str | None = None) -> tuple[int, Any]:
        target = self._repo(repo)
        if target is None:
            return 404, {"error": "Repository not found"}
        return 200, {"id": repo, "sha": target.sha, "private": target.private,
                     "siblings": [{"rfilename": name} for name in sorted(target.files)]}
