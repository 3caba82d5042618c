"""The warm server behind `filter-process` (see `warm_client.py`): fork a worker per filter.

`python -m git_theta warm-server SOCKET` imports what a filter uses (numpy, the encoders,
the format plugins), then listens on SOCKET, a Unix socket in a directory only its user can
open; it also checks each peer's uid (SO_PEERCRED). For each connection it forks: the child
takes the front's file descriptors, working directory, environment and umask, answers git
exactly as `filter_command` does in a process of its own, and sends back its exit status.
The server itself holds no repository state and starts no threads, so every fork starts
from the same clean, import-only state.

One server per key (a lock file beside the socket): a second one started in a race exits.
It exits by itself after `GIT_THETA_WARM_IDLE` seconds (default 600) with nothing to do,
or when `git theta warm stop` asks it to, and removes its socket.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import json
import os
import select
import signal
import socket
import struct
import sys
import threading
import time
from typing import Any

from git_theta import warm_client
from git_theta.terminal import report

IDLE_ENV = "GIT_THETA_WARM_IDLE"
IDLE_DEFAULT = 600.0
# requests other than a filter's start with one of these (a filter's, with its length)
STOP, STATUS = b"stop", b"stat"
# what a filter imports besides filter_command's WARM_MODULES, loaded once here so that
# no worker imports it again
PRELOAD = (
    "git_theta.filter_process",
    "git_theta.invoker",
    "git_theta.index_stat",
    "git_theta.transfer.sync",
)
MAX_REQUEST = 1 << 20
PEEK_TIMEOUT = 2.0  # seconds a front has to send its request once connected


def idle_seconds() -> float:
    try:
        return max(1.0, float(os.environ.get(IDLE_ENV, IDLE_DEFAULT)))
    except ValueError:
        return IDLE_DEFAULT


def preload() -> None:
    from git_theta import filter_command

    filter_command.import_warm_modules()
    for name in PRELOAD:
        with contextlib.suppress(Exception):  # a worker reports its own import errors
            importlib.import_module(name)


def peer_uid(conn: socket.socket) -> int | None:
    try:
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return None
    return int(struct.unpack("3i", creds)[1])


def receive_request(conn: socket.socket) -> tuple[dict[str, Any], list[int]]:
    """The front's JSON request and the file descriptors that came with it."""
    fds: list[int] = []
    data = b""
    size: int | None = None
    int_size = struct.calcsize("i")
    while size is None or len(data) < 4 + size:
        msg, ancdata, _flags, _addr = conn.recvmsg(1 << 16, socket.CMSG_SPACE(8 * int_size))
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                usable = len(payload) - len(payload) % int_size
                fds.extend(struct.unpack(f"{usable // int_size}i", payload[:usable]))
        if not msg:
            raise ConnectionError("the front closed the connection")
        data += msg
        if size is None and len(data) >= 4:
            (size,) = struct.unpack("!I", data[:4])
            if size > MAX_REQUEST:
                raise ConnectionError("request too large")
    try:
        request = warm_client.read_payload(data[4 : 4 + size])
    except ValueError as exc:
        raise ConnectionError(str(exc)) from None
    return request, fds


def watch_front(conn: socket.socket, done: threading.Event) -> None:
    """Kill this worker if the front goes away before we finished: it was killed, and the
    filter it stands for would have died with it."""

    def run() -> None:
        with contextlib.suppress(OSError):
            conn.recv(1)
        if not done.is_set():
            os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=run, name="git-theta-front-watch", daemon=True).start()


def work(conn: socket.socket) -> int:
    """In the forked child: become the filter the front stands for; its exit status.

    Whatever can fail is checked before the front is told we started, so that a refusal
    (another namespace, a working directory we cannot enter) has it serve in-process."""
    conn.settimeout(warm_client.START_TIMEOUT)
    request, fds = receive_request(conn)
    if len(fds) != 3:
        raise ConnectionError("expected three file descriptors")
    if request.get("namespaces") != warm_client.namespaces():
        raise ConnectionError("the front runs in other namespaces")
    os.chdir(request["cwd"])
    conn.sendall(warm_client.STARTED)
    if warm_client.recv_exactly(conn, 1) != warm_client.GO:
        raise ConnectionError("the front did not let us start")
    conn.settimeout(None)
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.environ.clear()
    os.environ.update(request["env"])
    os.umask(int(request["umask"]))
    sys.argv = [sys.argv[0], *request["argv"]]
    done = threading.Event()
    watch_front(conn, done)
    from git_theta import filter_command, invoker

    invoker.stand_in_for(int(request["pid"]))
    try:
        code = filter_command.serve()
    except Exception as exc:  # a bug: say so on git's stderr, as a cold filter's traceback would
        import traceback

        traceback.print_exc()
        report(f"git-theta: internal error in the warm worker ({exc}); please report this")
        code = 1
    done.set()
    conn.sendall(warm_client.EXITED + bytes([code & 0xFF]))
    return code


def fork_worker(conn: socket.socket, listener: socket.socket) -> None:
    if os.fork():
        return
    code = 1
    try:
        listener.close()
        code = work(conn)
    except BaseException:  # a child must never return into the server's loop
        code = 1
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


RECENT = 64  # workers whose cost `status` reports


class Workers:
    """The server's finished workers: how many, and what the last RECENT cost (CPU seconds
    and peak resident bytes, from wait4: a worker is not a child of the git command it
    serves, so tools that measure git's process tree cannot see it)."""

    def __init__(self) -> None:
        self.finished = 0
        self.recent: list[dict[str, float]] = []

    def reap(self) -> None:
        with contextlib.suppress(ChildProcessError):
            while True:
                pid, _status, ru = os.wait4(-1, os.WNOHANG)
                if not pid:
                    return
                self.finished += 1
                cost = {"pid": pid, "cpu": ru.ru_utime + ru.ru_stime, "rss": ru.ru_maxrss * 1024}
                self.recent.append(cost)
                del self.recent[:-RECENT]


def serve(path: str) -> int:
    directory = os.path.dirname(path)
    if not warm_client.private_dir(directory, create=True):
        return 1
    lock = os.open(path + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return 0  # another server holds this key
    preload()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    os.chmod(path, 0o600)
    listener.listen(64)
    idle = idle_seconds()
    me = os.getuid()
    started, served = time.time(), 0
    done = Workers()  # reaped when a request comes and on exit (a zombie costs nothing)
    try:
        while True:
            ready, _, _ = select.select([listener], [], [], idle)
            done.reap()
            if not ready:
                break
            conn, _ = listener.accept()
            try:
                if peer_uid(conn) != me:
                    continue
                conn.settimeout(PEEK_TIMEOUT)
                head = conn.recv(len(STOP), socket.MSG_PEEK)
                if head in (STOP, STATUS):
                    conn.recv(len(head))  # read, so that closing does not reset the peer
                if head == STOP:
                    break
                if head == STATUS:
                    state = {
                        "pid": os.getpid(),
                        "started": started,
                        "served": served,
                        "finished": done.finished,
                        "recent": done.recent,
                        "idle_seconds": idle,
                        "socket": path,
                    }
                    conn.sendall(json.dumps(state).encode())
                    continue
                fork_worker(conn, listener)
                served += 1
            except OSError:
                pass
            finally:
                conn.close()
    finally:
        # still holding the lock, so no other server can have bound the path meanwhile;
        # closing the listener resets fronts still queued, which then serve in-process
        with contextlib.suppress(OSError):
            os.unlink(path)
        listener.close()
    return 0


def ask(path: str, what: bytes) -> bytes | None:
    """Send `what` (STOP, STATUS) to the server on `path`: its answer, None if none listens."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(5)
    try:
        sock.connect(path)
        sock.sendall(what)
        sock.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := sock.recv(1 << 16):
            out += chunk
        return out
    except OSError:
        return None
    finally:
        sock.close()


def sockets() -> list[str]:
    """The sockets in this user's server directory."""
    directory = warm_client.socket_dir()
    if not warm_client.private_dir(directory, create=False):
        return []
    return sorted(os.path.join(directory, n) for n in os.listdir(directory) if n.endswith(".sock"))


def status() -> list[dict[str, Any]]:
    """What each listening server of this user says of itself."""
    out = []
    for path in sockets():
        answer = ask(path, STATUS)
        if answer:
            with contextlib.suppress(ValueError):
                out.append(json.loads(answer))
    return out


def stop_all() -> int:
    """Stop every server of this user; how many were listening."""
    return sum(ask(path, STOP) is not None for path in sockets())


def main(argv: list[str]) -> None:
    # nothing of the front's stdio or pipes stays open here (see the front's posix_spawn)
    os.closerange(3, 1024)
    os.chdir("/")
    sys.exit(serve(argv[0]))
