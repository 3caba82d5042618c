"""git's side of the diff: the external diff command and the textconv of `diff=theta`.

`git theta install` sets both `diff.theta.command` and `diff.theta.textconv`:

- `git diff` and `git diff --cached` (and `git log -p --ext-diff`, `git show --ext-diff`) run
  the external command with both versions, so it prints the full per-parameter summary with
  the figures of each change (diff.py).
- `git log -p` and `git show` never run external diff commands unless given `--ext-diff`
  (git's rule); they do run textconv, one version at a time, so a textconv cannot compute
  the size of a change. It prints one line per parameter (name, dtype, shape, content hash)
  and git's own line diff then shows which parameters were added, removed or changed.

git hands both programs temporary files holding the *smudged* version of a blob (a full
checkpoint), or the working-tree file itself. The command therefore prefers the blob id git
also passes (`git cat-file` gives the manifest directly) and cleans only a working-tree
checkpoint, into a scratch overlay (nothing is written to the store). When git-theta's
smudge sees it runs for a diff, it skips rebuilding and hands over the manifest (see
`invoker.py`), which keeps a diff of a large model fast.
"""

from __future__ import annotations

from pathlib import Path

from git_theta import diff, git, manifest, scratch
from git_theta.manifest import Manifest
from git_theta.store import Store

NULL_HEX = "0" * 40
TEXTCONV_RAW_LIMIT = 1 << 20  # a non-checkpoint up to this size is shown as it is


def _read_head(file: str, n: int = 64) -> bytes:
    with open(file, "rb") as f:
        return f.read(n)


def _as_manifest(file: str, hex_id: str, label: str) -> Manifest | None:
    """The manifest behind one side without cleaning anything, if it can be had cheaply."""
    if manifest.is_manifest(_read_head(file)):
        return manifest.parse(Path(file).read_bytes(), label)
    if hex_id != NULL_HEX:
        blob = git.show_blob(hex_id)
        if blob is not None and manifest.is_manifest(blob):
            return manifest.parse(blob, label)
    return None


def external_diff(
    store: Store,
    path: str,
    old_file: str,
    old_hex: str,
    new_file: str,
    new_hex: str,
    patterns: tuple[str, ...] = (),
) -> diff.FileDiff:
    """The diff of one file from git's external-diff arguments."""
    old_absent, new_absent = old_file == "/dev/null", new_file == "/dev/null"
    old = None if old_absent else _as_manifest(old_file, old_hex, path)
    new = None if new_absent else _as_manifest(new_file, new_hex, path)
    with scratch.scratch(store) as overlay:
        if old is None and not old_absent:
            old = scratch.clean_file(Path(old_file), path, overlay, new)
        if new is None and not new_absent:
            new = scratch.clean_file(Path(new_file), path, overlay, old)
        return diff.diff_manifests(path, old, new, overlay, patterns=patterns)


def textconv_lines(file: str) -> list[str]:
    """One line per parameter of the version in `file` (a manifest or a checkpoint)."""
    data_head = _read_head(file)
    rows: list[tuple[str, str, tuple[int, ...], str]]
    if manifest.is_manifest(data_head):
        m = manifest.parse(Path(file).read_bytes(), file)
        rows = [(e.name, e.dtype, e.shape, e.hash) for e in m.entries]
    else:
        rows = [(t.name, t.dtype, t.shape, t.hash) for t in scratch.hash_tensors(Path(file), file)]
    return [
        f"{name}  {dtype} [{','.join(map(str, shape))}]  {h.removeprefix('blake3:')[:16]}"
        for name, dtype, shape, h in rows
    ]
