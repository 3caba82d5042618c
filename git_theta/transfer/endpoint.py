"""Where a remote's Git LFS API lives, resolved the way Git LFS resolves it.

In order: `git config lfs.url`, `git config remote.<name>.lfsurl`, the same two keys in a
committed `.lfsconfig` (the working tree's copy, else HEAD's), else derived from the remote
URL: `https://host/org/repo(.git)` -> `https://host/org/repo.git/info/lfs`; an ssh remote
asks the server with `ssh [user@]host git-lfs-authenticate <path> <operation>`, which answers
the endpoint and a header to authenticate with (or, if that fails, the https derivation).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit, urlunsplit

from git_theta import git
from git_theta.errors import TransferError
from git_theta.transfer.base import Remote, local_path, redact

MAX_SSH_REPLY = 1 << 16


@dataclass(frozen=True)
class Endpoint:
    """An LFS API base URL (credentials removed), headers to send, and URL credentials."""

    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)

    def __repr__(self) -> str:  # never show credentials, even in a traceback
        return f"Endpoint({redact(self.url)!r})"


def configured_url(remote: Remote) -> str | None:
    """An LFS URL the user set for `remote` (config or .lfsconfig), else None."""
    keys = ["lfs.url"]
    if remote.name:
        keys.append(f"remote.{remote.name}.lfsurl")
    for key in keys:
        value = git.config_get(key, cwd=remote.repo)
        if value:
            return value
    lfsconfig = remote.repo / ".lfsconfig"
    for key in keys:
        if lfsconfig.is_file():
            value = git.config_get_in(key, file=lfsconfig, cwd=remote.repo)
        else:
            value = git.config_get_in(key, blob="HEAD:.lfsconfig", cwd=remote.repo)
        if value:
            return value
    return None


def resolve(remote: Remote, operation: str) -> Endpoint:
    """The LFS endpoint of `remote` for `operation` ("upload" or "download")."""
    url = configured_url(remote)
    if url is None:
        if local_path(remote.url, remote.repo) is not None:
            raise TransferError(
                f"remote {remote.label} is a path and has no LFS server configured",
                hint="path remotes use the local transfer; set lfs.url to use a server",
            )
        ssh = _ssh_parts(remote.url)
        if ssh is not None:
            found = _ssh_authenticate(*ssh, operation)
            if found is not None:
                return found
            url = f"https://{ssh[1]}/{ssh[3].lstrip('/')}"
        else:
            url = remote.url
        url = derive(url)
    return _split_credentials(url)


def derive(url: str) -> str:
    """The LFS API URL Git LFS derives from a git remote URL."""
    parts = urlsplit(url)
    scheme = "https" if parts.scheme in ("git", "ssh", "git+ssh", "ssh+git") else parts.scheme
    if scheme not in ("http", "https"):
        raise TransferError(
            f"cannot derive an LFS server from remote URL {redact(url)}",
            hint="set `git config remote.<name>.lfsurl`",
        )
    path = parts.path.rstrip("/")
    if not path.endswith(".git"):
        path += ".git"
    netloc = parts.netloc if scheme == parts.scheme else (parts.hostname or "")
    return urlunsplit((scheme, netloc, path + "/info/lfs", "", ""))


def _split_credentials(url: str) -> Endpoint:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise TransferError(f"LFS URL {redact(url)} is not http(s)")
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    clean = urlunsplit((parts.scheme, host, parts.path.rstrip("/"), parts.query, ""))
    user = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    return Endpoint(clean, {}, user, password)


def _ssh_parts(url: str) -> tuple[str | None, str, str | None, str] | None:
    """(user, host, port, path) of an ssh remote URL, None if it is not one."""
    if "://" in url:
        parts = urlsplit(url)
        if parts.scheme not in ("ssh", "git+ssh", "ssh+git"):
            return None
        port = str(parts.port) if parts.port else None
        return parts.username, parts.hostname or "", port, parts.path
    colon, slash = url.find(":"), url.find("/")
    if colon > 0 and (slash < 0 or colon < slash):
        userhost, path = url[:colon], url[colon + 1 :]
        user, _, host = userhost.rpartition("@")
        return user or None, host, None, path
    return None


def _ssh_authenticate(
    user: str | None, host: str, port: str | None, path: str, operation: str
) -> Endpoint | None:
    """Ask the ssh server for the LFS endpoint; None if it does not speak git-lfs."""
    ssh = os.environ.get("GIT_SSH_COMMAND")
    cmd = shlex.split(ssh) if ssh else [os.environ.get("GIT_SSH") or "ssh"]
    if port:
        cmd += ["-p", port]
    target = f"{user}@{host}" if user else host
    cmd += ["--", target, f"git-lfs-authenticate {shlex.quote(path)} {operation}"]
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0 or len(proc.stdout) > MAX_SSH_REPLY:
        return None
    try:
        reply = json.loads(proc.stdout)
        href = reply["href"]
        headers = reply.get("header") or {}
        if not isinstance(href, str) or not isinstance(headers, dict):
            return None
        headers = {str(k): str(v) for k, v in headers.items()}
    except (ValueError, KeyError, TypeError):
        return None
    base = _split_credentials(href)
    return Endpoint(base.url, headers, base.username, base.password)
