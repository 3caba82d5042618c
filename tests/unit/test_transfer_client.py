"""The LFS client and its helpers against in-process fake servers (no git started)."""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from git_theta.errors import TransferError
from git_theta.manifest import Entry, build
from git_theta.store import Store
from git_theta.transfer import endpoint, lfs, walk
from git_theta.transfer.base import ObjectRef, Remote, TransferOptions, describe, local_path, redact

OID = hashlib.sha256(b"hello").hexdigest()
HASH = "blake3:" + "0" * 64

Handler = Callable[[BaseHTTPRequestHandler], None]


@pytest.fixture
def serve() -> Iterator[Callable[[Handler], str]]:
    servers: list[ThreadingHTTPServer] = []

    def start(handle: Handler) -> str:
        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                handle(self)

            do_GET = do_POST

        srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
        srv.daemon_threads = True
        srv.handle_error = lambda request, address: None  # type: ignore[method-assign]
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return f"http://127.0.0.1:{srv.server_address[1]}"

    yield start
    for srv in servers:
        srv.shutdown()
        srv.server_close()


def _reply(h: BaseHTTPRequestHandler, status: int, body: bytes) -> None:
    h.send_response(status)
    h.send_header("Content-Type", "application/vnd.git-lfs+json")
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    h.wfile.write(body)


def _connection(url: str, tmp_path: Path) -> lfs.LfsConnection:
    remote = Remote("origin", url, tmp_path)
    conn = lfs.LfsConnection(remote, TransferOptions(retries=1, timeout=2, backoff=0.01))
    ep = endpoint.Endpoint(url + "/info/lfs")
    conn._endpoints = {"download": ep, "upload": ep}  # resolved without git
    return conn


def test_download_is_verified_then_stored(serve: Callable[[Handler], str], tmp_path: Path) -> None:
    base = ""

    def handle(h: BaseHTTPRequestHandler) -> None:
        if h.path.endswith("/objects/batch"):
            answer = {
                "objects": [{"oid": OID, "size": 5, "actions": {"download": {"href": base + "/o"}}}]
            }
            _reply(h, 200, json.dumps(answer).encode())
        else:
            _reply(h, 200, b"hello")

    base = serve(handle)
    store = Store(tmp_path / "theta")
    stats = _connection(base, tmp_path).download(store, [ObjectRef(OID, 5)])
    assert stats.objects == 1 and stats.bytes == 5
    assert store.read(OID) == b"hello"


def test_hostile_batch_replies_are_refused(serve: Callable[[Handler], str], tmp_path: Path) -> None:
    replies = iter(
        [
            b"[" + b"1," * (9 << 20) + b"1]",  # larger than the bound
            json.dumps(
                {"objects": [{"oid": OID, "actions": {"download": {"href": "file:///etc/passwd"}}}]}
            ).encode(),
            json.dumps({"objects": "nope"}).encode(),
            json.dumps({"transfer": "ssh", "objects": []}).encode(),
        ]
    )

    def handle(h: BaseHTTPRequestHandler) -> None:
        _reply(h, 200, next(replies))

    conn = _connection(serve(handle), tmp_path)
    store = Store(tmp_path / "theta")
    for expected in ("larger than", "not an http(s) URL", "no object list", "is not 'basic'"):
        with pytest.raises(TransferError, match=re.escape(expected)):
            conn.download(store, [ObjectRef(OID, 5)])
    assert not store.has(OID)


def test_answers_for_objects_not_asked_for_are_ignored(
    serve: Callable[[Handler], str], tmp_path: Path
) -> None:
    other = hashlib.sha256(b"other").hexdigest()

    def handle(h: BaseHTTPRequestHandler) -> None:
        answer = {
            "objects": [{"oid": other, "size": 5, "actions": {"download": {"href": "http://x/"}}}]
        }
        _reply(h, 200, json.dumps(answer).encode())

    with pytest.raises(TransferError, match="did not answer for it"):
        _connection(serve(handle), tmp_path).download(Store(tmp_path / "t"), [ObjectRef(OID, 5)])


def test_retry_after_and_5xx_then_success(serve: Callable[[Handler], str], tmp_path: Path) -> None:
    calls: list[str] = []
    base = ""

    def handle(h: BaseHTTPRequestHandler) -> None:
        calls.append(h.path)
        if len(calls) == 1:
            h.send_response(429)
            h.send_header("Retry-After", "0")
            h.send_header("Content-Length", "0")
            h.end_headers()
        elif h.path.endswith("/objects/batch"):
            answer = {
                "objects": [{"oid": OID, "size": 5, "actions": {"download": {"href": base + "/o"}}}]
            }
            _reply(h, 200, json.dumps(answer).encode())
        else:
            _reply(h, 200, b"hello")

    base = serve(handle)
    _connection(base, tmp_path).download(Store(tmp_path / "theta"), [ObjectRef(OID, 5)])
    assert calls == ["/info/lfs/objects/batch", "/info/lfs/objects/batch", "/o"]


def test_derive_like_git_lfs() -> None:
    assert endpoint.derive("https://host/org/repo") == "https://host/org/repo.git/info/lfs"
    assert endpoint.derive("https://host/org/repo.git/") == "https://host/org/repo.git/info/lfs"
    assert endpoint.derive("http://h:8080/r.git") == "http://h:8080/r.git/info/lfs"
    assert endpoint.derive("git://host/org/repo") == "https://host/org/repo.git/info/lfs"
    with pytest.raises(TransferError):
        endpoint.derive("ftp://host/repo")


def test_ssh_urls_are_recognised() -> None:
    assert endpoint._ssh_parts("git@github.com:org/repo.git") == (
        "git",
        "github.com",
        None,
        "org/repo.git",
    )
    assert endpoint._ssh_parts("ssh://me@host:2222/srv/repo") == ("me", "host", "2222", "/srv/repo")
    assert endpoint._ssh_parts("https://host/repo") is None
    assert endpoint._ssh_parts("/srv/repo.git") is None


def test_credentials_are_split_from_urls_and_redacted() -> None:
    ep = endpoint._split_credentials("https://al%40ice:p%3Ass@host:8443/r.git/info/lfs?x=1")
    assert ep.url == "https://host:8443/r.git/info/lfs?x=1"
    assert (ep.username, ep.password) == ("al@ice", "p:ss")
    assert "p:ss" not in repr(ep)
    assert redact("https://u:secret@host/p?sig=secret#f") == "https://host/p"
    assert redact("u:secret@host:path") == "host:path"


def test_local_paths_follow_gits_rules(tmp_path: Path) -> None:
    assert local_path("file:///srv/r.git", tmp_path) == Path("/srv/r.git")
    assert local_path("../r.git", tmp_path / "a") == (tmp_path / "r.git").resolve()
    assert local_path("/abs/r.git", tmp_path) == Path("/abs/r.git")
    assert local_path("host:r.git", tmp_path) is None
    assert local_path("https://h/r", tmp_path) is None
    assert local_path("./a:b", tmp_path) == (tmp_path / "a:b").resolve()


def test_pre_push_lines_and_range() -> None:
    refs = walk.parse_pre_push(
        "refs/heads/main 1111 refs/heads/main 2222\n\nrefs/heads/x 0000 refs/heads/x 3333\n"
    )
    assert [r.local_ref for r in refs] == ["refs/heads/main", "refs/heads/x"]
    assert walk.pushed_range([], "origin", Path(".")) == []


def test_manifest_objects_pair_sizes_by_name() -> None:
    a, b, c, d = (hashlib.sha256(bytes([i])).hexdigest() for i in range(4))
    record = {
        "type": "sparse",
        "values_oid": a,
        "values_size": 10,
        "base": {"type": "dense", "oid": b, "size": 7},
    }
    fisher = {"type": "dense", "oid": c, "size": 3}
    m = build("safetensors", d, 99, [Entry("w", "F32", (2,), HASH, record, {"fisher": fisher})])
    refs = {r.oid: r.size for r in walk.manifest_objects(m)}
    assert refs == {a: 10, b: 7, c: 3, d: 99}
    assert set(refs) == m.oids()


def test_describe_is_short() -> None:
    assert describe(["a" * 64] * 7, limit=2) == "aaaaaaaaaaaa, aaaaaaaaaaaa (and 5 more)"


def test_missing_server_venv_fails_with_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests import lfs_server

    monkeypatch.setattr(lfs_server, "LFS_VENV", tmp_path / "nowhere")
    with pytest.raises(lfs_server.ServerError, match="run `make test`"):
        lfs_server.start_server(tmp_path)


def test_many_objects_go_in_batches_of_100(serve: Callable[[Handler], str], tmp_path: Path) -> None:
    sizes: list[int] = []

    def handle(h: BaseHTTPRequestHandler) -> None:
        sizes.append(int(h.headers["Content-Length"]))
        _reply(h, 200, json.dumps({"objects": []}).encode())

    conn = _connection(serve(handle), tmp_path)
    refs = [ObjectRef(hashlib.sha256(str(i).encode()).hexdigest(), 1) for i in range(250)]
    with pytest.raises(TransferError, match="and 249 more objects"):
        conn.download(Store(tmp_path / "theta"), refs)
    assert len(sizes) == 3
