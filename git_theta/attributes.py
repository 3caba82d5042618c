"""Editing `.gitattributes`: which paths git hands to git-theta."""

from __future__ import annotations

from pathlib import Path

# -text: git must never convert line endings of the manifest (core.autocrlf would add CRLF
# before smudge), as Git LFS does for its pointers
ATTRS = "filter=theta merge=theta diff=theta -text"


def _pattern(line: str) -> str | None:
    s = line.strip()
    if not s or s.startswith("#"):
        return None
    return s.split()[0]


def is_theta_line(line: str) -> bool:
    return "filter=theta" in line.split()[1:]


def tracked_patterns(path: Path) -> list[str]:
    if not path.exists():
        return []
    return [
        p
        for line in path.read_text().splitlines()
        if (p := _pattern(line)) is not None and is_theta_line(line)
    ]


def track(path: Path, pattern: str) -> bool:
    """Add `pattern` to the attributes file; False if it was already tracked."""
    if any(c.isspace() for c in pattern):
        raise ValueError("patterns cannot contain spaces (use [[:space:]] as gitattributes does)")
    if pattern in tracked_patterns(path):
        return False
    text = path.read_text() if path.exists() else ""
    if text and not text.endswith("\n"):
        text += "\n"
    path.write_text(text + f"{pattern} {ATTRS}\n")
    return True


def untrack(path: Path, pattern: str) -> bool:
    """Remove git-theta's line for `pattern`; False if there was none."""
    if not path.exists():
        return False
    lines = path.read_text().splitlines(keepends=True)
    kept = [ln for ln in lines if not (_pattern(ln) == pattern and is_theta_line(ln))]
    if len(kept) == len(lines):
        return False
    path.write_text("".join(kept))
    return True
