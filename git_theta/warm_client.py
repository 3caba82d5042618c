"""The front of `python -m git_theta filter-process`: hand git's pipes to a warm process.

Every git command that touches a tracked file starts the filter, and a cold Python process
spends ~0.1 s importing the standard library, numpy, the encoders and the format plugins
before it can answer git. The warm server (`warm_server.py`) is a per-user process that has
imported all of that once; for each filter it forks a worker, and this front sends it the
three file descriptors git gave us (SCM_RIGHTS), the working directory, the environment and
the umask, then waits for the worker's exit status and exits with it. The worker reads and
writes git's pipes itself, so no data passes through this process.

This module imports only the standard library's cheapest parts: it runs on every start.
It speaks through `_socket`, not `socket` (whose enums and selectors cost 9-14 ms to
import), and sends its request with `marshal` (built in; `json` cost ~6 ms): the server
runs the same interpreter, which the key names.

- No server, or a stale socket: start one (detached, in its own session) and serve this
  command in-process as before; the next command finds the server warm.
- The server is keyed by the interpreter, `sys.path` (with each entry's mtime: installing a
  package changes it) and the package's own files (name, size, mtime), so an upgrade or an
  edit is never served by old code: a new key gets a new server, the old one idles out.
- A worker is used only once it has said it started and we told it to go: until then,
  any failure (refused, timed out, closed) falls back to in-process, and git's pipes have
  not been touched by anyone else.
- If this process dies (killed by a signal, say), the worker notices its end of the socket
  closing and kills itself, as the filter process it replaces would have died.
- `GIT_THETA_WARM=0` (or `git theta install --cold`, which registers `filter-process
  --cold`) turns it off; the socket directory must be private to the user (0700, owned by
  us, not a symlink) or the server is not used.
"""

from __future__ import annotations

import _socket
import marshal
import os
import struct
import sys
import zlib

ENV_SWITCH = "GIT_THETA_WARM"
PROTOCOL = 1
# worker -> front: started (then front -> worker: go), and the exit status at the end
STARTED, GO, EXITED = b"S", b"G", b"E"
START_TIMEOUT = 10.0  # seconds for a worker to say it started, then we serve in-process

_PACKAGE = os.path.dirname(os.path.abspath(__file__))
# Python 3.11+: keep the directory we are started in (git: the repository's top) off sys.path
SAFE_PATH_FLAGS = ["-P"] if sys.version_info >= (3, 11) else []


def code_path() -> list[str]:
    """sys.path without the working directory: git runs us in the repository's top, and a
    cloned repository's `numpy.py` or `git_theta/` must never be imported in place of ours.
    `-P` keeps it off, but an empty PYTHONPATH entry (`PYTHONPATH=$X:$PYTHONPATH` with
    nothing set) or Python 3.10's plain `-m` puts it back."""
    cwd = os.getcwd()
    return [p for p in sys.path if p not in ("", ".") and os.path.abspath(p) != cwd]


def enabled(argv: list[str]) -> bool:
    # Linux: SCM_RIGHTS, SO_PEERCRED and /proc (invoker.py) are what the hand-over relies on
    if "--cold" in argv or not sys.platform.startswith("linux"):
        return False
    return os.environ.get(ENV_SWITCH, "1").lower() not in ("0", "false", "no", "off")


def socket_dir() -> str:
    """Where this user's servers listen: $XDG_RUNTIME_DIR/git-theta, else a /tmp directory
    named after the uid."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isabs(runtime) and os.path.isdir(runtime):
        return os.path.join(runtime, "git-theta")
    return os.path.join("/tmp", f"git-theta-{os.getuid()}")


def private_dir(path: str, *, create: bool) -> bool:
    """True when `path` is a directory only this user can use (made so when `create`)."""
    if create:
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
        except OSError:
            return False
    try:
        st = os.lstat(path)
    except OSError:
        return False
    import stat

    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and st.st_mode & 0o077 == 0


def build_key() -> str:
    """16 hex digits naming the code a server runs: interpreter, sys.path, package files."""
    parts = [str(PROTOCOL), sys.executable, sys.version]
    for entry in code_path():
        # where packages are installed, an install changes the directory's mtime
        parts.append(entry)
        if entry.endswith(("site-packages", "dist-packages")):
            try:  # noqa: SIM105 - contextlib costs this hot path ~4 ms of imports
                parts.append(str(os.stat(entry).st_mtime_ns))
            except OSError:
                pass
    stack = [_PACKAGE]
    while stack:
        top = stack.pop()
        with os.scandir(top) as it:
            for e in sorted(it, key=lambda e: e.name):
                if e.name == "__pycache__":
                    continue
                if e.is_dir():
                    stack.append(e.path)
                elif e.name.endswith(".py"):
                    st = e.stat()
                    parts.append(f"{e.path}:{st.st_size}:{st.st_mtime_ns}")
    text = "\n".join(parts).encode()
    return f"{zlib.crc32(text):08x}{zlib.adler32(text):08x}"


def start_server(path: str) -> None:
    """Start a server for `path` in its own session, detached from our stdio."""
    devnull = os.devnull
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, devnull, os.O_WRONLY, 0),
        (os.POSIX_SPAWN_OPEN, 2, devnull, os.O_WRONLY, 0),
    ]
    # not the repository git ran us in (GIT_DIR, GIT_INDEX_FILE, ...): workers get their own
    env = {
        k: v
        for k, v in os.environ.items()
        if k.startswith("GIT_THETA_") or not k.startswith("GIT_")
    }
    argv = [sys.executable, *SAFE_PATH_FLAGS, "-m", "git_theta", "warm-server", path]
    try:  # noqa: SIM105 - see above
        os.posix_spawn(sys.executable, argv, env, file_actions=actions, setsid=True)
    except OSError:
        pass  # the command is served in-process all the same


def send_request(sock: _socket.socket, payload: bytes, fds: list[int]) -> None:
    header = struct.pack("!I", len(payload))
    rights = bytes(struct.pack(f"{len(fds)}i", *fds))
    sock.sendmsg([header + payload], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, rights)])


NAMESPACES = ("mnt", "pid", "user", "net", "uts", "ipc")


def namespaces() -> list[int]:
    """This process's Linux namespaces (inode numbers): a worker forked in others (the
    command runs in a container or under `unshare`, say) would not see our files."""
    out = []
    for ns in NAMESPACES:
        try:
            out.append(os.stat(f"/proc/self/ns/{ns}").st_ino)
        except OSError:
            out.append(-1)
    return out


def request_payload(argv: list[str]) -> bytes:
    umask = os.umask(0o022)
    os.umask(umask)
    return marshal.dumps(
        {
            "argv": argv,
            "cwd": os.getcwd(),
            "env": dict(os.environ),
            "umask": umask,
            "pid": os.getpid(),  # whose ancestors are git's (invoker.py)
            "namespaces": namespaces(),
        }
    )


def read_payload(data: bytes) -> dict[str, object]:
    """What request_payload sent (the server's side); ValueError if it is not that."""
    try:
        request = marshal.loads(data)
    except (EOFError, TypeError, ValueError):
        raise ValueError("malformed request") from None
    if not isinstance(request, dict):
        raise ValueError("malformed request")
    return request


def recv_exactly(sock: _socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def try_warm(argv: list[str]) -> int | None:
    """Serve this filter through a warm worker: its exit status, or None to serve it here."""
    if not enabled(argv):
        return None
    directory = socket_dir()
    if not private_dir(directory, create=True):
        return None
    path = os.path.join(directory, f"{build_key()}.sock")
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.settimeout(START_TIMEOUT)
        try:
            sock.connect(path)
        except OSError:
            start_server(path)
            return None
        try:
            send_request(sock, request_payload(argv), [0, 1, 2])
            if recv_exactly(sock, 1) != STARTED:
                return None
            sock.sendall(GO)
        except OSError:
            return None
        # from here git's pipes are the worker's: wait for it, however long it takes
        sock.settimeout(None)
        try:
            reply = recv_exactly(sock, 2)
        except OSError:
            reply = b""
        if len(reply) == 2 and reply[:1] == EXITED:
            return reply[1]
        sys.stderr.write("git-theta: error: the warm filter worker ended without a status\n")
        return 1
    finally:
        sock.close()


def main(argv: list[str]) -> None:
    """`python -m git_theta filter-process`: warm if possible, else the in-process filter."""
    code = try_warm(argv)
    if code is not None:
        os._exit(code)
    from git_theta.filter_command import main as cold_main

    cold_main()
