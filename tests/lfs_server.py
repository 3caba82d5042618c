"""A real Git LFS server (giftless, in its own virtualenv) for the tests, and a small proxy
that injects faults in front of it. `make test` installs the server; without it the tests
that need it fail (never skip) with a message saying so."""

from __future__ import annotations

import base64
import http.client
import os
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LFS_VENV = ROOT / ".lfs-venv"

CONFIG = """\
LEGACY_ENDPOINTS: false
AUTH_PROVIDERS:
  - giftless.auth.allow_anon:read_write
PRE_AUTHORIZED_ACTION_PROVIDER:
  factory: giftless.auth.jwt:factory
  options:
    algorithm: HS256
    private_key: "integration-test-secret-key-at-least-32-bytes-long"
    default_lifetime: 900
TRANSFER_ADAPTERS:
  basic:
    options:
      storage_options:
        path: {store}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LfsServer:
    url: str  # http://127.0.0.1:PORT
    store: Path
    process: subprocess.Popen[bytes] = field(repr=False)

    def endpoint(self, repo: str) -> str:
        return f"{self.url}/test/{repo}.git/info/lfs"

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def stored_bytes(self, repo: str) -> int:
        d = self.store / "test" / repo
        return sum(p.stat().st_size for p in d.iterdir()) if d.is_dir() else 0

    def objects(self, repo: str) -> set[str]:
        d = self.store / "test" / repo
        return {p.name for p in d.iterdir()} if d.is_dir() else set()


def _answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url + "/", timeout=1)
    except urllib.error.HTTPError:
        return True  # giftless answers 404 on /: it is up
    except OSError:
        return False
    return True


class ServerError(RuntimeError):
    pass


def start_server(workdir: Path) -> LfsServer:
    """Start giftless on a free port of 127.0.0.1 and wait until it answers."""
    python = LFS_VENV / "bin" / "python"
    if not (LFS_VENV / ".installed").exists() or not python.exists():
        raise ServerError(
            "the Git LFS test server (giftless) is not installed in .lfs-venv: run `make test` "
            "(or `make lfs-server`), which installs it"
        )
    store = workdir / "lfs-store"
    store.mkdir(parents=True, exist_ok=True)
    cfg = workdir / "giftless.yaml"
    cfg.write_text(CONFIG.format(store=store))
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "GIFTLESS_CONFIG_FILE": str(cfg),
        "FLASK_APP": "giftless.wsgi_entrypoint",
        "HOME": str(workdir),
    }
    for _attempt in range(3):
        port = free_port()
        log = open(workdir / f"giftless-{port}.log", "wb")  # noqa: SIM115 - lives with the server
        proc = subprocess.Popen(
            [str(python), "-m", "flask", "run", "--host", "127.0.0.1", "--port", str(port)],
            cwd=workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None:
            if _answers(url):
                return LfsServer(url, store, proc)
            time.sleep(0.1)
        proc.kill()
        proc.wait()
    log_text = (workdir / f"giftless-{port}.log").read_text(errors="replace")[-2000:]
    raise ServerError(f"the Git LFS test server did not start:\n{log_text}")


@pytest.fixture(scope="session")
def lfs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LfsServer]:
    try:
        server = start_server(tmp_path_factory.mktemp("giftless"))
    except ServerError as exc:
        pytest.fail(str(exc))
    try:
        yield server
    finally:
        server.stop()


# -- the fault-injecting proxy ------------------------------------------------------------------


@dataclass
class Fault:
    """Applies to the next `times` requests whose method is `method` and whose path contains
    `match`. kind: status (answer `status`), corrupt (flip a body byte), extra (send one byte
    more), truncate (close after half the body), redirect (to `location`), stall (`delay` s)."""

    method: str
    match: str
    kind: str
    times: int = 1
    status: int = 500
    location: str = ""
    delay: float = 0.0


class FaultProxy:
    """An HTTP proxy on 127.0.0.1 in front of `upstream` that injects faults, requires basic
    credentials when `credentials` is set, and counts the bytes uploaded through it."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.removeprefix("http://")
        self.faults: list[Fault] = []
        self.credentials: tuple[str, str] | None = None
        self.log: list[tuple[str, str, int]] = []
        self.put_bytes = 0
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _any(self) -> None:
                proxy.handle(self)

            do_GET = do_PUT = do_POST = _any

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.handle_error = lambda request, address: None  # type: ignore[method-assign]
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def endpoint(self, repo: str) -> str:
        return f"{self.url}/test/{repo}.git/info/lfs"

    def _take(self, method: str, path: str) -> Fault | None:
        with self.lock:
            for f in self.faults:
                if f.times > 0 and f.method == method and f.match in path:
                    f.times -= 1
                    return f
        return None

    def _reply(self, h: BaseHTTPRequestHandler, status: int, body: bytes = b"") -> None:
        h.send_response(status)
        h.send_header("Content-Type", "application/vnd.git-lfs+json")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    def handle(self, h: BaseHTTPRequestHandler) -> None:
        method, path = h.command, h.path
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        if method == "PUT":
            with self.lock:
                self.put_bytes += len(body)
        if self.credentials is not None and "/objects/batch" in path:
            expected = "Basic " + base64.b64encode(":".join(self.credentials).encode()).decode()
            if h.headers.get("Authorization") != expected:
                self.log.append((method, path, 401))
                h.send_response(401)
                h.send_header("WWW-Authenticate", 'Basic realm="test"')
                h.send_header("Content-Length", "0")
                h.end_headers()
                return
        fault = self._take(method, path)
        if fault is not None and fault.kind == "status":
            self.log.append((method, path, fault.status))
            self._reply(h, fault.status, b'{"message":"injected failure"}')
            return
        if fault is not None and fault.kind == "redirect":
            self.log.append((method, path, 307))
            h.send_response(307)
            h.send_header("Location", fault.location + path)
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        if fault is not None and fault.kind == "stall":
            time.sleep(fault.delay)
        conn = http.client.HTTPConnection(self.upstream, timeout=60)
        # the proxy's own Basic credentials stay here; the server's Bearer tokens pass
        headers = {
            k: v
            for k, v in h.headers.items()
            if not (k.lower() == "authorization" and v.startswith("Basic "))
        }
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
        self.log.append((method, path, resp.status))
        if fault is not None and fault.kind == "corrupt" and data:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        if fault is not None and fault.kind == "extra":
            data = data + b"\0"
        h.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() not in (
                "content-length",
                "transfer-encoding",
                "connection",
                "date",
                "server",
            ):
                h.send_header(k, v)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        if fault is not None and fault.kind == "truncate":
            h.wfile.write(data[: len(data) // 2])
            h.wfile.flush()
            h.close_connection = True
            return
        h.wfile.write(data)


@pytest.fixture
def fault_proxy(lfs_server: LfsServer) -> Iterator[FaultProxy]:
    proxy = FaultProxy(lfs_server.url)
    try:
        yield proxy
    finally:
        proxy.close()
