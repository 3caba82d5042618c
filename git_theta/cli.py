"""The `git theta` command line: the only module that talks to the terminal."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from typing import Any

import click

from git_theta import __version__, allocator, attributes, filters, git, materialize
from git_theta.errors import GitThetaError, UnknownFormatError
from git_theta.filter_command import clean_from_git, open_store, skip_smudge, smudge_fetcher
from git_theta.streams import ByteSource
from git_theta.terminal import TerminalProgress, TransferProgress, report

SCOPES = ("global", "local", "system")


def theta_command() -> str:
    """How git should start git-theta: this interpreter, so an unactivated venv still works."""
    from git_theta.transfer import hooks

    return hooks.hook_command(sys.executable)


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
    allocator.tune()


@main.command()
@click.option("--local", "scope", flag_value="local", help="Configure this repository only.")
@click.option(
    "--system", "scope", flag_value="system", help="Configure every user of this machine."
)
@click.option(
    "--global", "scope", flag_value="global", default=True, help="Configure this user (default)."
)
@click.option(
    "--cold",
    is_flag=True,
    help="Start every filter as a fresh process, never through the warm server.",
)
def install(scope: str, cold: bool) -> None:
    """Register git-theta's filters and drivers in git's config."""
    cmd = theta_command()
    settings = {
        "filter.theta.process": f"{cmd} filter-process" + (" --cold" if cold else ""),
        "filter.theta.clean": f"{cmd} clean %f",
        "filter.theta.smudge": f"{cmd} smudge %f",
        "filter.theta.required": "true",
        "merge.theta.name": "git-theta per-parameter merge",
        "merge.theta.driver": f"{cmd} merge-driver %O %A %B %P",
        # per-parameter diffs: the command in git diff, textconv in git log -p / git show
        "diff.theta.command": f"{cmd} diff-driver",
        "diff.theta.textconv": f"{cmd} textconv",
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
    else:  # other repositories may still use a local install's servers: only here stop them
        from git_theta import warm_server

        if warm_server.stop_all():
            removed.append("the warm filter server")
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


@main.command(hidden=True)
@click.argument("path", required=False)
def clean(path: str | None) -> None:
    """Single-shot clean filter: checkpoint on stdin -> manifest on stdout."""
    out = clean_from_git(
        ByteSource(sys.stdin.buffer), path, open_store(), TerminalProgress("adding")
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
    fetcher = smudge_fetcher(store)
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


@main.command("filter-process", hidden=True)
@click.option("--cold", is_flag=True, help="Serve in this process, never a warm worker.")
def filter_process(cold: bool) -> None:
    """git's long-running filter process (filter.theta.process)."""
    from git_theta import warm_client

    warm_client.main(["filter-process", "--cold"] if cold else ["filter-process"])


@main.command("warm-server", hidden=True)
@click.argument("socket_path")
def warm_server_cmd(socket_path: str) -> None:
    """The warm server on SOCKET_PATH (started by filter-process)."""
    from git_theta import warm_server

    warm_server.main([socket_path])


@main.group("warm")
def warm() -> None:
    """The warm server that git's filter hands its work to (see docs/cli.md)."""


@warm.command("status")
def warm_status() -> None:
    """List this user's warm servers: pid, filters served, age."""
    import time

    from git_theta import warm_server

    servers = warm_server.status()
    if not servers:
        click.echo("no warm server is running")
    for s in servers:
        age = time.time() - float(s["started"])
        click.echo(
            f"pid {s['pid']}: {s['served']} filter(s) served, up {age:.0f} s, "
            f"exits after {s['idle_seconds']:.0f} s idle ({s['socket']})"
        )


@warm.command("stop")
def warm_stop() -> None:
    """Stop this user's warm servers (filters then start cold until one starts again)."""
    from git_theta import warm_server

    click.echo(f"stopped {warm_server.stop_all()} warm server(s)")


@main.command("checkout")
@click.argument("paths", nargs=-1)
def checkout_cmd(paths: tuple[str, ...]) -> None:
    """Write out tracked checkpoints whose working-tree file still holds a manifest.

    Needed after `GIT_THETA_SKIP_SMUDGE=1`, or if a direct checkout was interrupted; objects
    missing locally are downloaded from the remote first. Tracked checkpoints that git sees
    as modified only because their index stat data is stale (a direct checkout killed
    between writing the file and refreshing the index) are refreshed too.
    """
    top = git.toplevel()
    os.chdir(top)
    names = list(paths) or tracked_paths()
    todo = materialize.manifests_in_worktree(names)
    store = open_store()
    fetcher = smudge_fetcher(store)
    try:
        written = materialize.finish(
            todo, store, progress=TerminalProgress("checking out"), fetch=fetcher
        )
    finally:
        fetcher.close()
    stale = [p for p in git.lines_z("ls-files", "-m", "-z", "--", *names) if p not in written]
    if stale:
        materialize.refresh_index(stale)
    for p in written:
        click.echo(f"checked out {p}")
    if not written:
        click.echo("nothing to check out")


def tracked_paths() -> list[str]:
    """Files in the index whose `filter` attribute is theta."""
    return git.theta_paths(git.lines_z("ls-files", "-z"))


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


# -- inspecting: diff, log, show, ls-files, status; upkeep: gc, fsck -------------------------


def _human(n: int | float | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # pragma: no cover


def _echo_json(obj: object) -> None:
    import json

    click.echo(json.dumps(obj, indent=2, sort_keys=False))


def _is_rev(arg: str) -> bool:
    if Path(arg).exists():
        return False
    return any(git.rev_parse(r) is not None for r in arg.split("..") if r) or arg in ("..", "...")


@main.command("diff")
@click.argument("args", nargs=-1)
@click.option("--cached", "--staged", "cached", is_flag=True, help="Compare the index with REV.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "--params", "patterns", multiple=True, metavar="PATTERN", help="Only parameters matching "
    "this fnmatch pattern (repeatable)."
)  # fmt: skip
def diff_cmd(args: tuple[str, ...], cached: bool, as_json: bool, patterns: tuple[str, ...]) -> None:
    """Per-parameter diff: [REV [REV]] [-- PATH...], revisions as in `git diff`."""
    from git_theta import diff, versions

    argv = list(args)
    if "--" in sys.argv[1:]:
        # click drops the "--"; what followed it in our own argv are the paths
        n_paths = len(sys.argv) - 1 - sys.argv.index("--")
        revs, paths = argv[: len(argv) - n_paths], argv[len(argv) - n_paths :]
    else:
        # as git does without "--": leading revisions, then paths
        n_revs = 0
        while n_revs < len(argv) and _is_rev(argv[n_revs]):
            n_revs += 1
        revs, paths = argv[:n_revs], argv[n_revs:]
    top = git.toplevel()
    store = open_store()
    diffs = versions.diff_revisions(
        store,
        top,
        revs,
        cached=cached,
        pathspecs=versions.top_pathspecs(paths),
        patterns=patterns,
    )
    if as_json:
        _echo_json({"files": [diff.to_json(d) for d in diffs]})
        return
    for d in diffs:
        click.echo(diff.render(d), nl=False)


@main.command("diff-driver", hidden=True)
@click.argument("args", nargs=-1)
def diff_driver(args: tuple[str, ...]) -> None:
    """git's external diff command (diff.theta.command): PATH OLD OLD-HEX OLD-MODE NEW ..."""
    from git_theta import diff
    from git_theta import diff_driver as driver

    if len(args) == 1:  # an unmerged path: git has nothing to compare yet
        click.echo(f"theta diff {args[0]}: unmerged")
        return
    if len(args) < 7:
        raise GitThetaError(f"diff-driver expects 7 arguments from git, got {len(args)}")
    path, old_file, old_hex, _old_mode, new_file, new_hex, _new_mode = args[:7]
    try:
        d = driver.external_diff(open_store(), path, old_file, old_hex, new_file, new_hex)
    except GitThetaError as exc:
        # git stops the whole diff when an external command fails: say it here, go on
        click.echo(f"theta diff {path}: cannot compare: {exc}")
        return
    click.echo(diff.render(d), nl=False)


@main.command(hidden=True)
@click.argument("file")
def textconv(file: str) -> None:
    """git's textconv (diff.theta.textconv): one line per parameter of FILE."""
    from git_theta import diff_driver as driver

    try:
        lines = driver.textconv_lines(file)
    except UnknownFormatError as exc:
        # not a checkpoint (committed before it was tracked): small files show as they are
        if os.path.getsize(file) <= driver.TEXTCONV_RAW_LIMIT:
            with open(file, "rb") as f:
                sys.stdout.buffer.write(f.read())
            return
        lines = [f"(git-theta cannot list the parameters: {exc})"]
    except GitThetaError as exc:  # a failing textconv would stop git's whole diff
        lines = [f"(git-theta cannot list the parameters: {exc})"]
    for line in lines:
        click.echo(line)


@main.command("log")
@click.argument("args", nargs=-1)
@click.option("-n", "--max-count", type=int, default=None, help="Show at most N commits.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def log_cmd(args: tuple[str, ...], max_count: int | None, as_json: bool) -> None:
    """Per commit: parameters changed, how they are stored, bytes added. [REV] [PATH...]"""
    from git_theta import history, versions

    top = git.toplevel()
    argv = list(args)
    rev = "HEAD"
    if argv and git.rev_parse(argv[0]) is not None and not Path(argv[0]).exists():
        rev = argv.pop(0)
    changes = history.log(open_store(), top, rev, versions.top_pathspecs(argv), max_count=max_count)
    if as_json:
        import dataclasses

        _echo_json([dataclasses.asdict(c) for c in changes])
        return
    for c in changes:
        click.echo(f"{c.commit[:10]} {c.date} {c.subject}")
        for f in c.files:
            if f.deleted:
                click.echo(f"    {f.path}: deleted ({f.removed} parameters)")
                continue
            kinds = ", ".join(f"{k} {n}" for k, n in f.stored_as.items()) or "nothing new"
            missing = f" (+{f.missing} objects not present locally)" if f.missing else ""
            click.echo(
                f"    {f.path}: {f.changed} changed, {f.added} added, {f.removed} removed; "
                f"stored as {kinds}; {_human(f.new_bytes)} in {f.new_objects} new objects"
                f"{missing}"
            )


@main.command("ls-files")
@click.option("--rev", default=None, help="List the tracked checkpoints of REV, not the index.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def ls_files_cmd(rev: str | None, as_json: bool) -> None:
    """Tracked checkpoints with parameter counts, raw size and stored size."""
    import dataclasses

    from git_theta import versions

    rows = versions.ls_files(open_store(), git.toplevel(), rev)
    if as_json:
        _echo_json([dataclasses.asdict(r) for r in rows])
        return
    for r in rows:
        missing = f"  ({r.missing} objects not present locally)" if r.missing else ""
        click.echo(
            f"{r.path}  {r.format}  {r.params} parameters  raw {_human(r.raw_bytes)}  "
            f"stored {_human(r.stored_bytes)}{missing}"
        )


@main.command("show")
@click.argument("spec")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def show_cmd(spec: str, as_json: bool) -> None:
    """The parameters of one version: REV:PATH (or :PATH for the index)."""
    import dataclasses

    from git_theta import versions

    if ":" not in spec:
        spec = "HEAD:" + spec
    m, rows = versions.show(open_store(), git.toplevel(), spec)
    if as_json:
        _echo_json(
            {
                "format": m.format,
                "skeleton_size": m.skeleton_size,
                "params": [dataclasses.asdict(r) for r in rows],
            }
        )
        return
    raw = sum(r.raw_bytes for r in rows)
    click.echo(f"{spec}: {m.format}, {len(rows)} parameters, {_human(raw)} raw")
    width = max((len(r.name) for r in rows), default=0)
    for r in rows:
        shape = "[" + ",".join(map(str, r.shape)) + "]"
        kind = r.record + (f" (chain {r.depth})" if r.depth else "")
        stored = _human(r.stored_bytes) if r.stored_bytes is not None else "missing"
        click.echo(f"  {r.name:<{width}}  {r.dtype:<5} {shape:<14} {kind:<16} {stored:>9}")


@main.command("status")
@click.argument("paths", nargs=-1)
def status_cmd(paths: tuple[str, ...]) -> None:
    """Tracked checkpoints modified in the working tree (writes nothing to the store)."""
    from git_theta import versions

    top = git.toplevel()
    rows = versions.status(open_store(), top, versions.top_pathspecs(list(paths)))
    shown = [r for r in rows if r.state != "unchanged"]
    for r in shown:
        if r.state == "modified":
            click.echo(
                f"modified: {r.path}  ({r.changed} changed, {r.added} added, "
                f"{r.removed} removed of {r.params} parameters)"
            )
        elif r.state == "deleted":
            click.echo(f"deleted:  {r.path}")
        elif r.state == "unreadable":
            click.echo(f"unreadable: {r.path}  ({r.error})")
        else:
            click.echo(f"new:      {r.path}  (not added yet)")
    clean = len(rows) - len(shown)
    click.echo(f"{clean} tracked checkpoint{'s' if clean != 1 else ''} unchanged")


@main.command("gc")
@click.option("--dry-run", "-n", is_flag=True, help="Report what would go; remove nothing.")
@click.option("--now", is_flag=True, help="Also remove unreferenced objects younger than an hour.")
def gc_cmd(dry_run: bool, now: bool) -> None:
    """Remove store objects no ref, reflog, stash or index entry needs."""
    from git_theta import maintenance

    rep = maintenance.gc(
        open_store(), dry_run=dry_run, grace=0.0 if now else maintenance.DEFAULT_GRACE
    )
    verb = "would remove" if dry_run else "removed"
    click.echo(
        f"{rep.manifests} live manifests need {rep.kept} objects ({_human(rep.kept_bytes)}); "
        f"{verb} {rep.removed} objects ({_human(rep.removed_bytes)})"
    )
    if rep.recent:
        click.echo(f"kept {rep.recent} unreferenced objects younger than an hour (use --now)")
    if rep.tmp_removed or rep.rawmap_pruned:
        click.echo(
            f"{verb} {rep.tmp_removed} stale temporary files ({_human(rep.tmp_bytes)}) and "
            f"{rep.rawmap_pruned} raw-map entries"
        )


@main.command("fsck")
@click.option("--no-values", is_flag=True, help="Skip rebuilding values (objects only).")
def fsck_cmd(no_values: bool) -> None:
    """Verify every object and every live manifest; exit 1 if anything is wrong."""
    from git_theta import maintenance

    rep = maintenance.fsck(open_store(), values=not no_values)
    for p in rep.problems:
        click.echo(p.render())
    click.echo(
        f"checked {rep.objects} objects, {rep.manifests} manifests, {rep.values} values: "
        + ("ok" if rep.ok else f"{len(rep.problems)} problems")
    )
    if not rep.ok:
        sys.exit(1)


# -- transfers ---------------------------------------------------------------------------------


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
    from git_theta.transfer import sync

    _move(sync.push, "uploaded to", "uploading to", remote, refs)


@main.command()
@click.argument("remote", required=False)
@click.argument("refs", nargs=-1)
def fetch(remote: str | None, refs: tuple[str, ...]) -> None:
    """Download the objects the checkpoints of REFS (default: HEAD) need from REMOTE."""
    from git_theta.transfer import sync

    _move(sync.fetch, "downloaded from", "downloading from", remote, refs)


def _move(op: Any, done: str, doing: str, remote: str | None, refs: tuple[str, ...]) -> None:
    """`git theta push` / `fetch`: run `op` against REMOTE for REFS (default HEAD)."""
    from git_theta.transfer import base

    repo = git.toplevel()
    target = base.resolve_remote(remote, repo)
    out = op(
        target,
        list(refs) or ["HEAD"],
        open_store(repo),
        TransferProgress(f"{doing} {target.label}"),
    )
    _outcome(done, target, out)


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
