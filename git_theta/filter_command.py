"""`git-theta filter-process`: what git starts for every command that touches a tracked file.

It runs once per git command (add, commit's index refresh, checkout, status, ...), so its
start-up is paid again and again: `python -m git_theta filter-process` comes here without
loading the command line (click) or anything a plain re-hash of unchanged tensors does not
need. What a changed tensor or a checkout needs (numpy, the encoders, the format plugins)
is imported on a background thread while git and this process exchange the handshake and
the first bytes, so a command that needs them waits for less of it.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import threading
from concurrent.futures import Future
from functools import cache
from pathlib import Path
from typing import Any

from git_theta import allocator, clean_record, filters, git, manifest, materialize, parallel
from git_theta.errors import GitThetaError
from git_theta.store import Store
from git_theta.streams import ByteSource
from git_theta.terminal import TerminalProgress, TransferProgress, report

# imported ahead, in this order, by warm_up(): what clean of a changed tensor and smudge use
WARM_MODULES = (
    "git_theta.plugins",
    "numpy",
    "git_theta.codec",
    "git_theta.updates.choose",
)


def open_store(cwd: str | Path | None = None) -> Store:
    return Store(git.common_dir(cwd) / "theta")


def file_size(path: str) -> int | None:
    try:
        return os.stat(path).st_size
    except OSError:
        return None


def skip_smudge() -> bool:
    if os.environ.get("GIT_THETA_SKIP_SMUDGE", "") not in ("", "0", "false"):
        return True
    # git diff / log -p / show smudge only to feed the diff driver, which wants the manifest
    from git_theta import invoker

    return invoker.diff_context()


def smudge_fetcher(store: Store) -> Any:
    from git_theta.transfer.sync import SmudgeFetcher

    return SmudgeFetcher(store, None, TransferProgress("downloading"))


def ensure_hook() -> None:
    """A clone made with a global install gets its pre-push hook on its first checkout."""
    from git_theta.transfer import hooks

    try:
        if hooks.needs_install():
            hooks.install(hooks.hook_command(sys.executable), git.toplevel())
    except (GitThetaError, OSError):
        pass  # never fail a checkout over the hook; `git theta install` reports problems


def import_warm_modules() -> None:
    """Import WARM_MODULES and load the format plugins: on the warm-up thread, or once in
    the warm server. A failure is left to whoever uses the module, which reports it."""
    with contextlib.suppress(Exception):
        for name in WARM_MODULES:
            importlib.import_module(name)
        from git_theta import plugins

        plugins.load_all(plugins.CHECKPOINTS)


def warm_up() -> threading.Thread:
    """import_warm_modules() on a daemon thread (Python's import locks make a module the main
    thread needs meanwhile wait for this thread's import to finish, never load it twice)."""
    t = threading.Thread(target=import_warm_modules, name="git-theta-warm-up", daemon=True)
    t.start()
    return t


def _read_chain_max() -> None:
    from git_theta.updates import choose

    choose.chain_max()


def clean_from_git(
    src: ByteSource, path: str | None, store: Store, progress: TerminalProgress
) -> bytes:
    """The manifest of the working-tree file `path` that git sends on `src` (both the filter
    process and the single-shot `clean` command): answered from the record of a direct
    checkout when the file is one just written, or from the record of the last clean when
    the file provably has not changed since (clean_record.py), else cleaned against the
    indexed version."""
    known = materialize.clean_fresh(src, path)
    if known is None:
        known = clean_record.answer(store, src, path)
    if known is not None:
        return known
    # the indexed version (`git cat-file`, 10-20 ms) is read while git sends the first bytes,
    # and so is the chain cap (`git config`) that storing a changed tensor needs
    previous = parallel.pool().submit(filters.indexed_manifest, path)
    parallel.pool().submit(_read_chain_max)
    try:
        text = filters.clean(
            src,
            path,
            store,
            progress=progress,
            total=file_size(path) if path else None,
            previous=previous,
        )
    finally:
        previous.cancel()
    if path:
        clean_record.remember(store, path, text, src.position)
    return text


class LazyFetcher:
    """The SmudgeFetcher, made when a smudge first needs it: a `git add` never does, so it
    skips the transfer modules' import. Serves as the filter's `Delayer` and smudge's
    `fetch` callback, like the fetcher itself."""

    def __init__(self, store: Future[Store]) -> None:
        self.store = store
        self._fetcher: Any = None

    def get(self) -> Any:
        if self._fetcher is None:
            self._fetcher = smudge_fetcher(self.store.result())
        return self._fetcher

    def defer(self, data: bytes, path: str) -> bool:
        return bool(self.get().defer(data, path))

    def fetch_pending(self) -> None:
        self.get().fetch_pending()

    def close(self) -> None:
        if self._fetcher is not None:
            self._fetcher.close()


def run() -> int:
    """Serve git until it closes the pipe; the exit status for git."""
    from git_theta import filter_process as fp

    warm_up()
    # `git rev-parse` (~5 ms) runs while git and this process exchange the handshake
    locating = parallel.pool().submit(open_store)
    adding, checking_out = TerminalProgress("adding"), TerminalProgress("checking out")
    fetcher = LazyFetcher(locating)
    pending: list[materialize.Pending] = []

    @cache
    def direct_threshold() -> int | None:
        """Set up on the first smudge: the hook check, then the direct-checkout size (none
        when git smudges into an archive rather than the working tree)."""
        from git_theta import invoker

        ensure_hook()
        return None if invoker.output_context() else materialize.threshold()

    def do_clean(src: ByteSource, path: str) -> bytes:
        return clean_from_git(src, path, locating.result(), adding)

    def do_smudge(data: bytes, path: str, sink: fp.LazyContent) -> None:
        store = locating.result()
        if skip_smudge():
            sink.write(data)
            return
        limit = direct_threshold()
        if limit is not None and manifest.is_manifest(data):
            size = materialize.checkpoint_size(manifest.parse(data, path))
            if size > limit:
                # written now to a temporary file (a failure fails git's command as usual);
                # git writes the manifest, and the file is put in place once git is done
                tmp = materialize.write_temp(
                    Path(path), data, store, progress=checking_out, fetch=fetcher.get()
                )
                pending.append(materialize.Pending(path, data, tmp))
                sink.write(data)
                return
        filters.smudge(
            data,
            path,
            store,
            sink,
            progress=checking_out,
            fetch=lambda st, oids, p: fetcher.get()(st, oids, p, data),
        )

    try:
        code = fp.main_loop(do_clean, do_smudge, report, None if skip_smudge() else fetcher)
        if pending:
            materialize.finish(pending, locating.result())
    finally:
        materialize.discard(pending)
        fetcher.close()
    return code


def serve() -> int:
    """run(), with known errors reported as one line (exit status 1) and the output flushed:
    what this process, or a warm worker standing for it, exits with."""
    allocator.tune()
    try:
        code = run()
    except GitThetaError as exc:
        report(f"git-theta: error: {exc}")
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    return code


def main() -> None:
    """`python -m git_theta filter-process` served in this process.

    git waits for its filter to exit before it exits itself, so once everything is written
    and flushed the process ends at once, skipping the interpreter's teardown (joining the
    worker threads, freeing every module), measured at 40-70 ms of every git command.
    """
    os._exit(serve())
