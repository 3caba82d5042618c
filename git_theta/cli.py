"""The `git theta` command line: the only module that talks to the terminal."""

from __future__ import annotations

import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import click

from git_theta import __version__, attributes, filters, git, manifest, materialize
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
        "merge.theta.name": "git-theta per-parameter merge",
        "merge.theta.driver": f"{cmd} merge-driver %O %A %B %P",
    }
    for key, value in settings.items():
        git.config_set(key, value, scope=scope)
    click.echo(f"git-theta installed in the {scope} git config ({cmd}).")


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
    filters.smudge(data, path, open_store(), out, progress=TerminalProgress("checking out"))
    out.flush()


def skip_smudge() -> bool:
    return os.environ.get("GIT_THETA_SKIP_SMUDGE", "") not in ("", "0", "false")


@main.command("filter-process", hidden=True)
def filter_process() -> None:
    """git's long-running filter process (filter.theta.process)."""
    from git_theta import filter_process as fp

    store = open_store()
    adding, checking_out = TerminalProgress("adding"), TerminalProgress("checking out")

    def do_clean(src: ByteSource, path: str) -> bytes:
        return filters.clean(
            src,
            path,
            store,
            progress=adding,
            total=_file_size(path),
            previous=filters.indexed_manifest(path),
        )

    limit = materialize.threshold()
    pending: list[materialize.Pending] = []

    def do_smudge(data: bytes, path: str, sink: fp.LazyContent) -> None:
        if skip_smudge():
            sink.write(data)
            return
        if limit is not None and manifest.is_manifest(data):
            size = materialize.checkpoint_size(manifest.parse(data, path))
            if size > limit:
                # written by us when git is done with the working tree (materialize.py)
                sink.write(data)
                pending.append(materialize.Pending(path, data))
                return
        filters.smudge(data, path, store, sink, progress=checking_out)

    code = fp.main_loop(do_clean, do_smudge, report)
    if pending:
        materialize.finish(pending, store, progress=checking_out)
    sys.exit(code)


@main.command("checkout")
@click.argument("paths", nargs=-1)
def checkout_cmd(paths: tuple[str, ...]) -> None:
    """Write out tracked checkpoints whose working-tree file still holds a manifest.

    Needed after `GIT_THETA_SKIP_SMUDGE=1`, or if a direct checkout was interrupted.
    """
    top = git.toplevel()
    os.chdir(top)
    names = list(paths) or tracked_paths()
    todo = materialize.manifests_in_worktree(names)
    store = open_store()
    written = materialize.finish(todo, store, progress=TerminalProgress("checking out"))
    for p in written:
        click.echo(f"checked out {p}")
    if not written:
        click.echo("nothing to check out")


def tracked_paths() -> list[str]:
    """Files in the index whose `filter` attribute is theta."""
    listed = git.run("ls-files", "-z").split(b"\0")
    names = [n.decode() for n in listed if n]
    if not names:
        return []
    out = git.run("check-attr", "-z", "--stdin", "filter", input="\0".join(names).encode())
    fields = out.split(b"\0")
    return [fields[i].decode() for i in range(0, len(fields) - 2, 3) if fields[i + 2] == b"theta"]


# -- merging -----------------------------------------------------------------------------------


@main.command("merge-driver", hidden=True)
@click.argument("base")
@click.argument("ours")
@click.argument("theirs")
@click.argument("path")
def merge_driver(base: str, ours: str, theirs: str, path: str) -> None:
    """git's merge driver (merge.theta.driver): merged manifest of %O %A %B written to %A."""
    from git_theta import merging

    n = merging.run_driver(base, ours, theirs, path, open_store())
    if n:
        report(f"git-theta: {path}: merged {n} conflicting parameter(s)")


@main.command()
@click.argument("path")
@click.option(
    "--strategy",
    "strategy",
    metavar="NAME",
    help="Merge every conflicting parameter this way: take-ours, take-theirs, take-base, "
    "average, fisher, task-arithmetic, ties, dare, or any installed git_theta.merges plugin.",
)
@click.option(
    "-o", "--option", "options", multiple=True, metavar="KEY=VALUE", help="Strategy option."
)
@click.option(
    "--export",
    "export_dir",
    type=click.Path(file_okay=False),
    help="Write the base, ours and theirs checkpoints to DIR instead of merging.",
)
def resolve(
    path: str, strategy: str | None, options: tuple[str, ...], export_dir: str | None
) -> None:
    """Finish the merge of a conflicted checkpoint PATH.

    With --strategy, every conflicting parameter is merged that way; without it the usual
    sources are asked (terminal menu, .thetamerge, theta.merge.strategy). The result is
    written to PATH and staged. With --export DIR the three versions are written as real
    checkpoints for you to merge yourself; then `git add PATH`.
    """
    from git_theta import merging
    from git_theta.merge_driver import parse_choice

    store = open_store()
    if export_dir is not None:
        for p in merging.export(path, store, Path(export_dir)):
            click.echo(f"wrote {p}")
        click.echo(f"merge them into {path}, then `git add {path}` to conclude")
        return
    forced = parse_choice(" ".join([strategy, *map(shlex.quote, options)])) if strategy else None
    rel, n = merging.resolve(path, store, forced=forced)
    click.echo(f"{rel}: merged {n} conflicting parameter(s); staged")


@main.command()
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--update-type",
    type=click.Choice(["low-rank", "ia3"]),
    help="Kind of side-loaded patch: low-rank (LoRA factors, W = base + scale * B @ A) or "
    "ia3 (a vector scaling the rows or columns of each weight, W = base * l).",
)
@click.option(
    "--update-path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="File holding the patch, keyed by parameter name: PEFT's names "
    "(base_model.model.<module>.lora_A.weight / lora_B.weight, <module>.ia3_l; LoRA scale "
    "from adapter_config.json beside it) or plain ones (<param>.A, <param>.B, optional "
    "<param>.scale; <param>.ia3). See docs/patches.md.",
)
@click.option(
    "--fisher",
    "fisher_path",
    type=click.Path(exists=True, dir_okay=False),
    help="Checkpoint of diagonal Fisher information, one tensor per parameter name, stored "
    "with this version for `fisher` merges (see docs/merging.md).",
)
def add(
    path: Path, update_type: str | None, update_path: Path | None, fisher_path: str | None
) -> None:
    """Stage checkpoint PATH like `git add`, with a side-loaded patch and/or Fisher data.

    With --update-type/--update-path the patch is applied to PATH, the file is rewritten in
    place, and the staged manifest stores each patched parameter as the patch itself
    (factors or vector) over its previous value, so the commit costs about the patch's
    size. A bad update file (missing factors, wrong shapes, names matching no parameter) is
    refused before anything changes. With --fisher the Fisher diagonals are stored with
    this version.
    """
    from git_theta import fisher, sideload

    if (update_type is None) != (update_path is None):
        raise click.UsageError("give both --update-type and --update-path")
    if update_type is not None and update_path is not None:
        result = sideload.add(path, update_type, update_path)
        click.echo(
            f"applied the {result.kind} update to {len(result.params)} parameter(s) of "
            f"{result.path} and staged it"
        )
    if fisher_path is not None:
        rel, n = fisher.add_with_fisher(str(path), fisher_path, open_store())
        click.echo(f"{rel}: staged with Fisher information for {n} parameter(s)")
    if update_type is None and fisher_path is None:
        git.add(str(path))
