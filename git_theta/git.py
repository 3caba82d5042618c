"""The only module that runs git: small wrappers over plumbing commands."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from git_theta.errors import GitError, NotARepositoryError


def run(
    *args: str, cwd: str | Path | None = None, input: bytes | None = None, check: bool = True
) -> bytes:
    proc = subprocess.run(["git", *args], cwd=cwd, input=input, capture_output=True)
    if check and proc.returncode != 0:
        raise GitError(list(args), proc.returncode, proc.stderr.decode(errors="replace"))
    return proc.stdout


def run_text(*args: str, cwd: str | Path | None = None, check: bool = True) -> str:
    return run(*args, cwd=cwd, check=check).decode().strip()


def common_dir(cwd: str | Path | None = None) -> Path:
    """The git dir shared by all worktrees of the repository containing `cwd`."""
    try:
        out = run_text("rev-parse", "--git-common-dir", cwd=cwd)
    except GitError:
        raise NotARepositoryError(str(cwd or os.getcwd())) from None
    p = Path(out)
    if not p.is_absolute():
        p = Path(cwd or os.getcwd()) / p
    return p.resolve()


def toplevel(cwd: str | Path | None = None) -> Path:
    try:
        return Path(run_text("rev-parse", "--show-toplevel", cwd=cwd))
    except GitError:
        raise NotARepositoryError(str(cwd or os.getcwd())) from None


def config_get(key: str, cwd: str | Path | None = None) -> str | None:
    proc = subprocess.run(["git", "config", "--get", key], cwd=cwd, capture_output=True)
    return proc.stdout.decode().strip() if proc.returncode == 0 else None


def config_set(key: str, value: str, *, scope: str, cwd: str | Path | None = None) -> None:
    run("config", f"--{scope}", key, value, cwd=cwd)


def config_unset_section(section: str, *, scope: str, cwd: str | Path | None = None) -> bool:
    proc = subprocess.run(
        ["git", "config", f"--{scope}", "--remove-section", section], cwd=cwd, capture_output=True
    )
    return proc.returncode == 0


def show_blob(spec: str, cwd: str | Path | None = None) -> bytes | None:
    """Contents of `git cat-file blob SPEC` (e.g. `:path` or `HEAD:path`), None if absent."""
    proc = subprocess.run(["git", "cat-file", "blob", spec], cwd=cwd, capture_output=True)
    return proc.stdout if proc.returncode == 0 else None


# -- index plumbing: `git theta add`, the merge driver, `git theta resolve` ---------------------


def check_attr(attr: str, path: str, cwd: str | Path | None = None) -> str | None:
    """The value of gitattribute `attr` for `path` ("unspecified" and "unset" give None)."""
    out = run_text("check-attr", attr, "--", path, cwd=cwd)
    value = out.rsplit(": ", 1)[-1] if out else ""
    return None if value in ("", "unspecified", "unset") else value


def hash_object(data: bytes, cwd: str | Path | None = None) -> str:
    """Write `data` as a blob exactly as given (no clean filter: it already is a manifest)."""
    return run("hash-object", "-w", "--no-filters", "--stdin", cwd=cwd, input=data).decode().strip()


def stage_blob(path: str, blob: str, mode: str = "100644", cwd: str | Path | None = None) -> None:
    """Put blob `blob` in the index at `path`, stage 0 (this also resolves a conflict)."""
    run("update-index", "--add", "--cacheinfo", f"{mode},{blob},{path}", cwd=cwd)


def index_entries(path: str, cwd: str | Path | None = None) -> dict[int, tuple[str, str]]:
    """{stage: (mode, blob oid)} of `path` in the index: {0: ...} normally, 1-3 in a conflict."""
    out: dict[int, tuple[str, str]] = {}
    raw = run("ls-files", "--stage", "-z", "--", path, cwd=cwd)
    for rec in raw.split(b"\0"):
        if not rec:
            continue
        info, _, name = rec.decode(errors="surrogateescape").partition("\t")
        if name != path:
            continue
        mode, oid, stage = info.split()
        out[int(stage)] = (mode, oid)
    return out


def index_mode(path: str, cwd: str | Path | None = None) -> str | None:
    """The file mode (e.g. 100644) of `path` at stage 0 of the index, None if not there."""
    entry = index_entries(path, cwd=cwd).get(0)
    return entry[0] if entry else None


def add(*paths: str, cwd: str | Path | None = None) -> None:
    run("add", "--", *paths, cwd=cwd)


# -- listing and reading many objects (diff, log, gc, fsck) ------------------------------------


def lines_z(*args: str, cwd: str | Path | None = None) -> list[str]:
    """NUL-separated output of a git command (`-z` listings), as strings."""
    out = run(*args, cwd=cwd).decode("utf-8", "surrogateescape")
    return [s for s in out.split("\0") if s]


def theta_paths(paths: list[str], cwd: str | Path | None = None) -> list[str]:
    """Those of `paths` whose `filter` attribute is `theta` (per the current .gitattributes)."""
    if not paths:
        return []
    data = "\0".join(paths).encode("utf-8", "surrogateescape") + b"\0"
    out = run("check-attr", "-z", "--stdin", "filter", cwd=cwd, input=data)
    fields = out.decode("utf-8", "surrogateescape").split("\0")
    return [fields[i] for i in range(0, len(fields) - 2, 3) if fields[i + 2] == "theta"]


def rev_parse(rev: str, cwd: str | Path | None = None) -> str | None:
    """The full object id `rev` names, or None when it names nothing."""
    proc = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", "--end-of-options", rev],
        cwd=cwd,
        capture_output=True,
    )
    return proc.stdout.decode().strip() if proc.returncode == 0 else None


class BlobReader:
    """One `git cat-file --batch` process reading many objects; use as a context manager."""

    def __init__(self, cwd: str | Path | None = None) -> None:
        self._proc = subprocess.Popen(
            ["git", "cat-file", "--batch"],
            cwd=cwd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )

    def read(self, spec: str) -> tuple[str, bytes] | None:
        """(type, content) of object `spec` (an id or `rev:path`), None when missing."""
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(spec.encode("utf-8", "surrogateescape") + b"\n")
        self._proc.stdin.flush()
        header = self._proc.stdout.readline().decode().split()
        if len(header) != 3:
            return None  # "<spec> missing" or "ambiguous"
        size = int(header[2])
        data = self._proc.stdout.read(size)
        self._proc.stdout.read(1)  # the newline after the content
        return header[1], data

    def close(self) -> None:
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        if self._proc.stdout is not None:
            self._proc.stdout.close()
        self._proc.wait()

    def __enter__(self) -> BlobReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
