"""The interface of transfers (plugins, group `git_theta.transfers`) and the values they share.

A transfer moves store objects between the local store and one kind of remote: a Git LFS
server (`lfs`), a repository on a path or `file://` URL (`local`). `select()` asks every
installed transfer whether it serves a remote and takes the one with the highest priority.
"""

from __future__ import annotations

import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar
from urllib.parse import urlsplit, urlunsplit

from git_theta import git, plugins
from git_theta.errors import GitThetaError, TransferError
from git_theta.store import Store

# progress(done_objects, total_objects, done_bytes, total_bytes)
Progress = Callable[[int, int, int, int], None]


def no_progress(done: int, total: int, done_bytes: int, total_bytes: int) -> None:
    pass


@dataclass(frozen=True)
class ObjectRef:
    """One store object to move: its oid and stored size (None when nothing says)."""

    oid: str
    size: int | None = None


@dataclass(frozen=True)
class Remote:
    """A git remote as git-theta sees it: its name (None when given as a URL) and URL."""

    name: str | None
    url: str
    repo: Path = field(compare=False)

    @property
    def label(self) -> str:
        """How errors name the remote: its name, or its URL without credentials."""
        return self.name or redact(self.url)


@dataclass(frozen=True)
class TransferOptions:
    """Knobs shared by every transfer; `from_config` reads git config and the environment."""

    workers: int = 8
    retries: int = 4
    timeout: float = 30.0
    backoff: float = 0.5
    backoff_max: float = 20.0

    @staticmethod
    def from_config(cwd: Path | None = None) -> TransferOptions:
        def pick(env: str, key: str, default: float) -> float:
            raw = os.environ.get(env) or git.config_get(key, cwd=cwd)
            if raw is None:
                return default
            try:
                value = float(raw)
            except ValueError:
                raise GitThetaError(
                    f"{env} / {key} must be a number, not {raw!r}", hint=f"fix `git config {key}`"
                ) from None
            if value < 0:
                raise GitThetaError(f"{key} must not be negative")
            return value

        return TransferOptions(
            workers=max(1, int(pick("GIT_THETA_TRANSFER_WORKERS", "lfs.concurrenttransfers", 8))),
            retries=int(pick("GIT_THETA_TRANSFER_RETRIES", "theta.transfer.retries", 4)),
            timeout=pick("GIT_THETA_TRANSFER_TIMEOUT", "theta.transfer.timeout", 30.0),
            backoff=pick("GIT_THETA_TRANSFER_BACKOFF", "theta.transfer.backoff", 0.5),
        )


@dataclass
class TransferStats:
    """What one upload or download did."""

    objects: int = 0  # objects actually sent or received
    bytes: int = 0
    skipped: int = 0  # already there (on the remote for uploads, locally for downloads)


class ProgressCounter:
    """Thread-safe running totals, reported to a Progress callback."""

    def __init__(self, objects: Sequence[ObjectRef], progress: Progress) -> None:
        self.total = len(objects)
        self.total_bytes = sum(o.size or 0 for o in objects)
        self.done = 0
        self.done_bytes = 0
        self.progress = progress
        self._lock = threading.Lock()

    def add_bytes(self, n: int) -> None:
        with self._lock:
            self.done_bytes += n
            self.progress(self.done, self.total, self.done_bytes, self.total_bytes)

    def finish_object(self) -> None:
        with self._lock:
            self.done += 1
            self.progress(self.done, self.total, self.done_bytes, self.total_bytes)


class Connection(ABC):
    """An open link to one remote; reused for every transfer of a git command."""

    @abstractmethod
    def upload(
        self, store: Store, objects: Sequence[ObjectRef], progress: Progress = no_progress
    ) -> TransferStats:
        """Send every object of `objects` the remote lacks, in parallel.

        Objects the remote already has are skipped. An object the remote lacks that is not
        in the local store either is an error naming it. Raises TransferError naming the
        remote and the objects that could not be sent.
        """

    @abstractmethod
    def download(
        self, store: Store, objects: Sequence[ObjectRef], progress: Progress = no_progress
    ) -> TransferStats:
        """Bring every object of `objects` that the local store lacks into it, in parallel.

        Each object is verified against its oid (and size, when known) before it enters the
        store; nothing partial is ever visible. Raises TransferError naming the remote and
        the objects that could not be fetched; the ones that could are kept.
        """

    def close(self) -> None:
        """Release connections; the default has nothing to release."""
        return


class Transfer(ABC):
    """A kind of remote. Subclasses are entry points of group `git_theta.transfers`."""

    name: ClassVar[str]
    priority: ClassVar[int] = 0

    @abstractmethod
    def accepts(self, remote: Remote) -> bool:
        """Whether this transfer can serve `remote`."""

    @abstractmethod
    def connect(self, remote: Remote, options: TransferOptions) -> Connection:
        """An open connection to `remote` (cheap: real work starts on the first transfer)."""


def select(remote: Remote) -> Transfer:
    """The installed transfer with the highest priority that accepts `remote`."""
    found: list[Transfer] = [
        t for t in plugins.load_all(plugins.TRANSFERS).values() if t.accepts(remote)
    ]
    if not found:
        names = ", ".join(plugins.available(plugins.TRANSFERS)) or "none"
        raise TransferError(
            f"no installed transfer can reach remote {remote.label}",
            hint=f"transfers installed: {names}; set `git config remote.<name>.lfsurl` "
            "to the LFS server of this remote",
        )
    return max(found, key=lambda t: t.priority)


def connect(remote: Remote, options: TransferOptions | None = None) -> Connection:
    return select(remote).connect(remote, options or TransferOptions.from_config(remote.repo))


# -- remotes ------------------------------------------------------------------------------------


def resolve_remote(name_or_url: str | None, repo: Path) -> Remote:
    """A Remote from a remote name, a URL or path, or (None) the default remote."""
    if name_or_url is None:
        name_or_url = default_remote(repo)
    if name_or_url in git.remotes(cwd=repo):
        return Remote(name_or_url, git.remote_url(name_or_url, cwd=repo), repo)
    return Remote(None, name_or_url, repo)


def default_remote(repo: Path) -> str:
    """The current branch's upstream remote, else `origin`, else the only remote."""
    names = git.remotes(cwd=repo)
    branch = git.current_branch(cwd=repo)
    if branch:
        upstream = git.config_get(f"branch.{branch}.remote", cwd=repo)
        if upstream and upstream != ".":
            return upstream
    if "origin" in names:
        return "origin"
    if len(names) == 1:
        return names[0]
    if not names:
        raise TransferError("this repository has no remote", hint="run `git remote add`")
    raise TransferError(
        f"cannot tell which remote to use among {', '.join(names)}",
        hint="name it, e.g. `git theta fetch origin`, or set an upstream branch",
    )


def local_path(url: str, repo: Path) -> Path | None:
    """The directory a path or `file://` remote URL names; None for network URLs.

    Follows git's rules: `scheme://...` is a URL, `[user@]host:path` with the colon before
    any slash is scp-style ssh, anything else is a path (relative to the repository).
    """
    if url.startswith("file://"):
        return Path(urlsplit(url).path)
    if "://" in url:
        return None
    colon, slash = url.find(":"), url.find("/")
    if colon > 0 and (slash < 0 or colon < slash):
        return None
    p = Path(url).expanduser()
    return p if p.is_absolute() else (repo / p).resolve()


def redact(url: str) -> str:
    """`url` without user, password, query and fragment: safe to print."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable url>"
    if not parts.scheme or not parts.netloc:
        return url.split("@", 1)[-1] if "://" not in url else "<url>"
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def describe(oids: Sequence[str], limit: int = 5) -> str:
    """`3fa9c0e1d2b4, 0b1c... (and 7 more)`: a short list of object ids for messages."""
    head = ", ".join(o[:12] for o in list(oids)[:limit])
    return head + (f" (and {len(oids) - limit} more)" if len(oids) > limit else "")
