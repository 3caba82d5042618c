"""The only module that runs git: small wrappers over plumbing commands."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from pathlib import Path

from git_theta.errors import GitError, NotARepositoryError


def run(
    *args: str,
    cwd: str | Path | None = None,
    input: bytes | None = None,
    check: bool = True,
    env: Mapping[str, str] | None = None,
) -> bytes:
    """`git ARGS`; `env` adds variables to this process's environment for it."""
    full = {**os.environ, **env} if env else None
    proc = subprocess.run(["git", *args], cwd=cwd, input=input, capture_output=True, env=full)
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


# -- used by transfer/: remotes, credentials, history walks ------------------------------------


def config_get_in(
    key: str,
    *,
    file: str | Path | None = None,
    blob: str | None = None,
    cwd: str | Path | None = None,
) -> str | None:
    """`git config --get KEY` read from one file (`-f`) or one committed blob (`--blob`)."""
    where = ["-f", str(file)] if file is not None else ["--blob", str(blob)]
    proc = subprocess.run(["git", "config", *where, "--get", key], cwd=cwd, capture_output=True)
    return proc.stdout.decode().strip() if proc.returncode == 0 else None


def remotes(cwd: str | Path | None = None) -> list[str]:
    out = run_text("remote", cwd=cwd)
    return [r for r in out.splitlines() if r]


def remote_url(remote: str, cwd: str | Path | None = None) -> str:
    """The URL git uses for `remote` (a name or already a URL), `insteadOf` applied."""
    return run_text("ls-remote", "--get-url", remote, cwd=cwd)


def current_branch(cwd: str | Path | None = None) -> str | None:
    proc = subprocess.run(
        ["git", "symbolic-ref", "-q", "--short", "HEAD"], cwd=cwd, capture_output=True
    )
    if proc.returncode != 0:
        return None
    return proc.stdout.decode().strip() or None


def hooks_dir(cwd: str | Path | None = None) -> Path:
    """Where git looks for hooks (`core.hooksPath` honoured), absolute."""
    out = Path(run_text("rev-parse", "--git-path", "hooks", cwd=cwd))
    return out if out.is_absolute() else (Path(cwd or os.getcwd()) / out).resolve()


def is_commit(rev: str, cwd: str | Path | None = None) -> bool:
    proc = subprocess.run(
        ["git", "rev-parse", "-q", "--verify", rev + "^{commit}"], cwd=cwd, capture_output=True
    )
    return proc.returncode == 0


def tree_blobs(rev: str, cwd: str | Path | None = None) -> list[tuple[str, str]]:
    """(blob id, path) of every file in the tree of `rev`."""
    out = run("ls-tree", "-r", "-z", "--full-tree", rev, cwd=cwd)
    result = []
    for item in out.split(b"\0"):
        if not item:
            continue
        meta, path = item.split(b"\t", 1)
        _mode, kind, sha = meta.decode().split(" ")
        if kind == "blob":
            result.append((sha, path.decode("utf-8", "surrogateescape")))
    return result


def blob_sizes(ids: list[str], cwd: str | Path | None = None) -> dict[str, int]:
    """Size of every blob among `ids` (other object kinds are left out)."""
    if not ids:
        return {}
    out = run(
        "cat-file",
        "--batch-check=%(objectname) %(objecttype) %(objectsize)",
        cwd=cwd,
        input="\n".join(ids).encode() + b"\n",
    )
    sizes = {}
    for line in out.decode().splitlines():
        parts = line.split(" ")
        if len(parts) == 3 and parts[1] == "blob":
            sizes[parts[0]] = int(parts[2])
    return sizes


def credential(
    action: str, fields: dict[str, str], cwd: str | Path | None = None
) -> dict[str, str]:
    """`git credential fill|approve|reject`: the helpers the user configured answer.

    Never prompts when there is no terminal (GIT_TERMINAL_PROMPT=0 is set for `fill` then),
    so a hook or filter without a terminal fails instead of hanging.
    """
    text = "".join(f"{k}={v}\n" for k, v in fields.items()) + "\n"
    env = dict(os.environ)
    if action == "fill" and not os.isatty(2):
        env["GIT_TERMINAL_PROMPT"] = "0"
    proc = subprocess.run(
        ["git", "credential", action], cwd=cwd, input=text.encode(), capture_output=True, env=env
    )
    if proc.returncode != 0:
        # stderr may echo what the helper said; never pass it on (it can hold secrets)
        raise GitError(["credential", action], proc.returncode, "")
    answer = {}
    for line in proc.stdout.decode(errors="replace").splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            answer[k] = v
    return answer


def ls_files(cwd: str | Path | None = None) -> list[str]:
    """Paths of the files in the index, relative to the top of the working tree."""
    out = run("ls-files", "-z", "--full-name", cwd=cwd)
    return [p.decode("utf-8", "surrogateescape") for p in out.split(b"\0") if p]


def checkout_paths(paths: list[str], cwd: str | Path | None = None) -> None:
    """`git checkout -- PATHS` (each taken literally), through git's own filters."""
    if paths:
        spec = b"\0".join(f":(literal){p}".encode("utf-8", "surrogateescape") for p in paths)
        run("checkout", "--pathspec-from-file=-", "--pathspec-file-nul", "--", cwd=cwd, input=spec)


# what git exports to hooks and filters about *this* repository; a command about another
# repository (a path remote) must not inherit it, or it would answer about this one
_REPO_ENV = (
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_COMMON_DIR",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_PREFIX",
)


def foreign_common_dir(path: str | Path) -> Path:
    """The common git dir of the repository at `path` (bare or not), never of ours."""
    env = {k: v for k, v in os.environ.items() if k not in _REPO_ENV}
    proc = subprocess.run(
        ["git", "rev-parse", "--git-common-dir"], cwd=path, capture_output=True, env=env
    )
    if proc.returncode != 0:
        raise NotARepositoryError(str(path))
    p = Path(proc.stdout.decode().strip())
    return (p if p.is_absolute() else Path(path) / p).resolve()
