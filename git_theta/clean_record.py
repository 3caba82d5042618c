"""What the last clean of a working-tree file answered, to answer git's re-check of it.

git (built without nanosecond timestamps) cannot trust the stat data of a file modified in
the same second as the index was written: the next command that refreshes the index
(`git commit` right after `git add`, `git status`) cleans the whole file again to compare.
For a 91 MB checkpoint that is ~0.2 s: git sends every byte again and every tensor is
hashed again. When the file provably has not changed since a clean read it, the manifest
that clean answered is the answer, and git's bytes are drained unread.

The proof is the file's change time (ctime; no program can set it). A clean made during git
command G records the manifest's digest and the file's stat key (device, inode, size, mtime
and ctime in nanoseconds) taken once git had sent the last byte, and only if that ctime is
older than G's start by more than MARGIN_NS. Any write after G started would have given the
file a ctime no older than G's start less one clock tick (the kernel stamps files from a
clock that lags by at most a tick), so the file was last written before G started, and G
read exactly the bytes it still holds as long as its stat key is unchanged. A later clean
of the file with an equal stat key, while the index holds that manifest (`git cat-file`,
which a clean reads anyway), answers it.

- Only git commands that read the file itself record (`git hash-object --path` sends other
  bytes under its name), and only if the bytes received are the file's size.
- A filesystem whose change times carry no sub-second part (1-2 s granularity) never
  records: its ctime can be older than the write that set it.
- A record answers only while the index holds its manifest for the file: a clean reuses the
  indexed entries of unchanged tensors (records, Fisher extras), so with another manifest
  of the same bytes staged since (`git theta add --fisher`), that one is the answer.
- A record is a cache: unreadable, missing or stale, the file is cleaned as usual.
- Linux only (/proc gives G's start time); elsewhere nothing is recorded.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import time

from git_theta import git, invoker, manifest
from git_theta.errors import GitThetaError
from git_theta.materialize import stat_key
from git_theta.store import Store
from git_theta.streams import ByteSource

# twice the longest tick of the kernel's file clock (10 ms at HZ=100); /proc's start times are
# rounded down, which only makes the test stricter
MARGIN_NS = 20_000_000
# commands whose clean reads the working-tree file under the pathname git gives
RECORDING = frozenset({"add", "commit", "stash", "status", "diff", "update-index"})


def _record_path(store: Store, path: str) -> str:
    name = hashlib.sha1(os.path.abspath(path).encode("utf-8", "surrogateescape")).hexdigest()
    return os.path.join(store.root, "cleaned", name)


def git_started_ns() -> tuple[str, int] | None:
    """The nearest git process above us: its subcommand and when it started (ns since the
    epoch, rounded down to /proc's 10 ms). None off Linux or when none is found."""
    found = invoker.nearest_git()
    if found is None:
        return None
    pid, command = found
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        ticks = int(stat[stat.rfind(")") + 2 :].split()[19])  # field 22: starttime
        hz = os.sysconf("SC_CLK_TCK")
        boot_now, real_now = time.clock_gettime_ns(time.CLOCK_BOOTTIME), time.time_ns()
    except (OSError, ValueError, IndexError, AttributeError):
        return None
    return command, real_now - (boot_now - ticks * 1_000_000_000 // hz)


def remember(store: Store, path: str, text: bytes, received: int) -> None:
    """Record `text` as the clean of `path`, if the proof above holds; never fails."""
    started = git_started_ns()
    if started is None or started[0] not in RECORDING:
        return
    try:
        st = os.stat(path)
    except OSError:
        return
    if st.st_size != received or st.st_ctime_ns % 1_000_000_000 == 0:
        return
    if st.st_ctime_ns >= started[1] - MARGIN_NS:
        return  # written too recently: git may have read it while it was being written
    # the manifest's digest, not its text: the index holds the text (a copy per checkpoint
    # would add ~30 KB per MiniLM-sized file to .git)
    record = {"stat": stat_key(st), "manifest_sha256": hashlib.sha256(text).hexdigest()}
    target = _record_path(store, path)
    with contextlib.suppress(OSError):
        os.makedirs(os.path.dirname(target), exist_ok=True)
        store.tmp.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=store.tmp, prefix="cleaned-")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(record, f)
            os.replace(name, target)
        except OSError:
            os.unlink(name)
            raise


def answer(store: Store, src: ByteSource, path: str | None) -> bytes | None:
    """The manifest staged for `path` when the file's stat key is the recorded one, the
    staged manifest is the recorded one and every object it names is still stored (git's
    bytes on `src` are then drained unread); None otherwise."""
    if not path:
        return None
    try:
        with open(_record_path(store, path)) as f:
            record = json.load(f)
        if stat_key(os.stat(path)) != record["stat"]:
            return None
        want = str(record["manifest_sha256"])
    except (OSError, ValueError, TypeError, KeyError):
        return None
    if invoker.nearest_git_command() not in RECORDING:
        return None  # git may be sending other bytes under this name
    # A clean reuses the indexed entries of unchanged tensors (their records and extras):
    # with another manifest of these bytes staged since (`git theta add --fisher`, a
    # side-loaded patch), that manifest, not the recorded one, is what a clean answers.
    text = git.show_blob(":" + path)
    if text is None or hashlib.sha256(text).hexdigest() != want:
        return None
    from git_theta import filters

    try:
        m = manifest.parse(text, path)
    except GitThetaError:
        return None
    if filters.missing_objects(store, m):
        return None  # collected since (gc): clean stores them again
    src.drain()
    return text
