"""The `git theta` command line: the only module that talks to the terminal."""

from __future__ import annotations

import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import click

from git_theta import __version__, attributes, filters, git
from git_theta.errors import GitThetaError
from git_theta.store import Store
from git_theta.streams import ByteSource

SCOPES = ("global", "local", "system")


def open_store(cwd: str | Path | None = None) -> Store:
    return Store(git.common_dir(cwd) / "theta")


def theta_command() -> str:
    """How git should start git-theta: this interpreter, so an unactivated venv still works."""
    return f"{shlex.quote(sys.executable)} -m git_theta"


class TerminalProgress:
    """`path: 45% (120 MB / 260 MB)` on stderr, at most 10 times a second, only on a terminal."""

    def __init__(self, verb: str) -> None:
        self.verb = verb
        self.enabled = sys.stderr.isatty() and not os.environ.get("GIT_THETA_NO_PROGRESS")
        if os.environ.get("GIT_THETA_PROGRESS") == "1":
            self.enabled = True
        self.last = 0.0
        self.shown = False

    def __call__(self, path: str, done: int, total: int | None) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        finished = total is not None and done >= total
        if not finished and now - self.last < 0.1:
            return
        self.last = now
        mb = done / 1e6
        if total:
            pct = 100 * done // total
            line = f"git-theta: {self.verb} {path}: {pct:3d}% ({mb:.0f} / {total / 1e6:.0f} MB)"
        else:
            line = f"git-theta: {self.verb} {path}: {mb:.0f} MB"
        sys.stderr.write("\r\x1b[K" + line + ("\n" if finished else ""))
        sys.stderr.flush()
        self.shown = not finished


def report(message: str) -> None:
    sys.stderr.write(message.rstrip("\n") + "\n")
    sys.stderr.flush()


class Group(click.Group):
    """Known errors become one line and exit 1; bugs keep their traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except GitThetaError as exc:
            report(f"git-theta: error: {exc}")
            sys.exit(1)


@click.group(cls=Group)
@click.version_option(__version__, prog_name="git-theta")
def main() -> None:
    """Version machine-learning checkpoints with git, parameter by parameter."""


@main.command()
@click.option("--local", "scope", flag_value="local", help="Configure this repository only.")
@click.option(
    "--system", "scope", flag_value="system", help="Configure every user of this machine."
)
@click.option(
    "--global", "scope", flag_value="global", default=True, help="Configure this user (default)."
)
def install(scope: str) -> None:
    """Register git-theta's filters and drivers in git's config."""
    cmd = theta_command()
    settings = {
        "filter.theta.process": f"{cmd} filter-process",
        "filter.theta.clean": f"{cmd} clean %f",
        "filter.theta.smudge": f"{cmd} smudge %f",
        "filter.theta.required": "true",
    }
    for key, value in settings.items():
        git.config_set(key, value, scope=scope)
    click.echo(f"git-theta installed in the {scope} git config ({cmd}).")
    _install_hook(cmd, required=scope == "local")


def _install_hook(cmd: str, *, required: bool) -> None:
    """The pre-push hook of the current repository (if we are in one), chained, not
    overwriting one already there. Outside a repository, clones get it on first checkout."""
    from git_theta.transfer import hooks

    try:
        top = git.toplevel()
    except GitThetaError:
        if required:
            raise
        return
    hook = hooks.install(cmd, top)
    click.echo(f"pre-push hook installed: {hook}")


@main.command()
@click.option("--local", "scope", flag_value="local", help="Remove from this repository's config.")
@click.option("--system", "scope", flag_value="system")
@click.option("--global", "scope", flag_value="global", default=True)
def uninstall(scope: str) -> None:
    """Remove git-theta's filters and drivers from git's config (tracked files stay tracked)."""
    removed = [
        s
        for s in ("filter.theta", "merge.theta", "diff.theta")
        if git.config_unset_section(s, scope=scope)
    ]
    if scope == "local":
        from git_theta.transfer import hooks

        if hooks.uninstall(git.toplevel()):
            removed.append("the pre-push hook")
    click.echo(f"removed {', '.join(removed) or 'nothing'} from the {scope} git config.")


@main.command()
@click.argument("patterns", nargs=-1, required=True)
def track(patterns: tuple[str, ...]) -> None:
    """Have git-theta handle files matching PATTERNS (writes .gitattributes)."""
    path = git.toplevel() / ".gitattributes"
    for pattern in patterns:
        try:
            added = attributes.track(path, pattern)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
        click.echo(f"tracking {pattern!r}" if added else f"{pattern!r} is already tracked")
    click.echo("commit .gitattributes with your checkpoints: git add .gitattributes")


@main.command()
@click.argument("patterns", nargs=-1, required=True)
def untrack(patterns: tuple[str, ...]) -> None:
    """Stop handling files matching PATTERNS (they stay as they are in history)."""
    path = git.toplevel() / ".gitattributes"
    for pattern in patterns:
        if attributes.untrack(path, pattern):
            click.echo(f"untracked {pattern!r}")
        else:
            click.echo(f"{pattern!r} was not tracked by git-theta")


def _file_size(path: str) -> int | None:
    try:
        return os.stat(path).st_size
    except OSError:
        return None


@main.command(hidden=True)
@click.argument("path", required=False)
def clean(path: str | None) -> None:
    """Single-shot clean filter: checkpoint on stdin -> manifest on stdout."""
    store = open_store()
    src = ByteSource(sys.stdin.buffer)
    out = filters.clean(
        src,
        path,
        store,
        progress=TerminalProgress("adding"),
        total=_file_size(path) if path else None,
        previous=filters.indexed_manifest(path),
    )
    sys.stdout.buffer.write(out)


@main.command(hidden=True)
@click.argument("path", required=False)
def smudge(path: str | None) -> None:
    """Single-shot smudge filter: manifest on stdin -> checkpoint on stdout."""
    data = sys.stdin.buffer.read()
    if skip_smudge():
        sys.stdout.buffer.write(data)
        return
    out = sys.stdout.buffer
    store = open_store()
    fetcher = _smudge_fetcher(store)
    try:
        filters.smudge(
            data,
            path,
            store,
            out,
            progress=TerminalProgress("checking out"),
            fetch=lambda store, oids, p: fetcher(store, oids, p, data),
        )
    finally:
        fetcher.close()
    out.flush()


def skip_smudge() -> bool:
    return os.environ.get("GIT_THETA_SKIP_SMUDGE", "") not in ("", "0", "false")


@main.command("filter-process", hidden=True)
def filter_process() -> None:
    """git's long-running filter process (filter.theta.process)."""
    from git_theta import filter_process as fp

    store = open_store()
    adding, checking_out = TerminalProgress("adding"), TerminalProgress("checking out")
    fetcher = _smudge_fetcher(store)
    _ensure_hook()

    def do_clean(src: ByteSource, path: str) -> bytes:
        return filters.clean(
            src,
            path,
            store,
            progress=adding,
            total=_file_size(path),
            previous=filters.indexed_manifest(path),
        )

    def do_smudge(data: bytes, path: str, sink: fp.LazyContent) -> None:
        if skip_smudge():
            sink.write(data)
            return
        filters.smudge(
            data,
            path,
            store,
            sink,
            progress=checking_out,
            fetch=lambda st, oids, p: fetcher(st, oids, p, data),
        )

    try:
        code = fp.main_loop(do_clean, do_smudge, report, None if skip_smudge() else fetcher)
    finally:
        fetcher.close()
    sys.exit(code)


# -- transfers ---------------------------------------------------------------------------------


class TransferProgress:
    """`git-theta: uploading to origin: 12/40 objects, 120/300 MB` on stderr (terminals only)."""

    def __init__(self, verb: str) -> None:
        self.verb = verb
        self.line = TerminalProgress(verb)
        self.last = 0.0

    def __call__(self, done: int, total: int, done_bytes: int, total_bytes: int) -> None:
        if not self.line.enabled:
            return
        now = time.monotonic()
        finished = done >= total
        if not finished and now - self.last < 0.1:
            return
        self.last = now
        line = (
            f"git-theta: {self.verb}: {done}/{total} objects, "
            f"{done_bytes / 1e6:.0f}/{total_bytes / 1e6:.0f} MB"
        )
        sys.stderr.write("\r\x1b[K" + line + ("\n" if finished else ""))
        sys.stderr.flush()


def _smudge_fetcher(store: Store) -> Any:
    from git_theta.transfer.sync import SmudgeFetcher

    return SmudgeFetcher(store, None, TransferProgress("downloading"))


def _ensure_hook() -> None:
    """A clone made with a global install gets its pre-push hook on its first checkout."""
    from git_theta.transfer import hooks

    try:
        if hooks.needs_install():
            hooks.install(theta_command(), git.toplevel())
    except (GitThetaError, OSError):
        pass  # never fail a checkout over the hook; `git theta install` reports problems


def _outcome(verb: str, remote: Any, out: Any) -> None:
    st = out.stats
    report(
        f"git-theta: {verb} {remote.label}: {st.objects} objects ({st.bytes / 1e6:.1f} MB) "
        f"moved, {st.skipped} already there"
    )
    if out.malformed:
        report(
            f"git-theta: warning: skipped {len(out.malformed)} malformed manifests "
            f"(blobs {', '.join(b[:12] for b in out.malformed[:5])})"
        )


@main.command("pre-push", hidden=True)
@click.argument("remote")
@click.argument("url")
def pre_push(remote: str, url: str) -> None:
    """The pre-push hook: upload the objects the pushed commits need and the remote lacks."""
    from git_theta.transfer import sync

    repo = git.toplevel()
    target = sync.hook_remote(remote, url, repo)
    text = sys.stdin.read()
    out = sync.pre_push(
        target, text, open_store(repo), TransferProgress(f"uploading to {target.label}")
    )
    if out.stats.objects or out.malformed:
        _outcome("uploaded to", target, out)


@main.command()
@click.argument("remote", required=False)
@click.argument("refs", nargs=-1)
def push(remote: str | None, refs: tuple[str, ...]) -> None:
    """Upload the objects that REFS (default: HEAD) need, in all their history, to REMOTE.

    The server is asked which objects it lacks; use it after a push made without the hook.
    """
    from git_theta.transfer import base, sync

    repo = git.toplevel()
    target = base.resolve_remote(remote, repo)
    out = sync.push(
        target,
        list(refs) or ["HEAD"],
        open_store(repo),
        TransferProgress(f"uploading to {target.label}"),
    )
    _outcome("uploaded to", target, out)


@main.command()
@click.argument("remote", required=False)
@click.argument("refs", nargs=-1)
def fetch(remote: str | None, refs: tuple[str, ...]) -> None:
    """Download the objects the checkpoints of REFS (default: HEAD) need from REMOTE."""
    from git_theta.transfer import base, sync

    repo = git.toplevel()
    target = base.resolve_remote(remote, repo)
    out = sync.fetch(
        target,
        list(refs) or ["HEAD"],
        open_store(repo),
        TransferProgress(f"downloading from {target.label}"),
    )
    _outcome("downloaded from", target, out)


@main.command()
@click.argument("remote", required=False)
def pull(remote: str | None) -> None:
    """Fetch what HEAD's checkpoints need, then turn every working-tree file that still
    holds a manifest (a clone made with GIT_THETA_SKIP_SMUDGE=1) into its checkpoint."""
    from git_theta.transfer import base, sync

    repo = git.toplevel()
    target = base.resolve_remote(remote, repo)
    store = open_store(repo)
    out = sync.fetch(target, ["HEAD"], store, TransferProgress(f"downloading from {target.label}"))
    _outcome("downloaded from", target, out)
    os.environ.pop("GIT_THETA_SKIP_SMUDGE", None)  # pull asks for checkpoints, not manifests
    for path in sync.materialize(repo):
        click.echo(f"checked out {path}")
