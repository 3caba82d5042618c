"""The one plugin loader: formats, update types, merge strategies, transfers: all entry points.

Entry points are read from the `entry_points.txt` of the distributions on `sys.path`, as
`importlib.metadata.entry_points()` finds them, by a reader of our own: importing
importlib.metadata costs 35-50 ms (it pulls in the `email` package), which every git
command touching a tracked file would pay again in its filter process. A `sys.path` entry
that is a zip archive (where distributions can hide) hands the search to importlib.metadata.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from dataclasses import dataclass
from functools import cache
from typing import Any

from git_theta.errors import PluginNotFoundError

CHECKPOINTS = "git_theta.checkpoints"
UPDATES = "git_theta.updates"
MERGES = "git_theta.merges"
TRANSFERS = "git_theta.transfers"

_DIST_SUFFIXES = (".dist-info", ".egg-info")


@dataclass(frozen=True)
class EntryPoint:
    """`name = module:attr` of one group (extras, which nothing here uses, are dropped)."""

    name: str
    value: str

    def load(self) -> Any:
        module, _, attr = self.value.split("[")[0].partition(":")
        obj: Any = importlib.import_module(module.strip())
        for part in attr.strip().split(".") if attr.strip() else ():
            obj = getattr(obj, part)
        return obj


def parse_entry_points(text: str) -> dict[str, list[EntryPoint]]:
    """The groups of an `entry_points.txt` (INI: `[group]` headers, `name = value` lines)."""
    groups: dict[str, list[EntryPoint]] = {}
    current: list[EntryPoint] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = groups.setdefault(line[1:-1].strip(), [])
        elif current is not None and "=" in line:
            name, _, value = line.partition("=")
            current.append(EntryPoint(name.strip(), value.strip()))
    return groups


def _dist_key(dirname: str) -> str:
    """A distribution's normalized name from its metadata directory's name."""
    stem = dirname.rsplit(".", 1)[0].split("-")[0]
    return re.sub(r"[-_.]+", "_", stem).lower()


@cache
def installed_entry_points() -> dict[str, list[EntryPoint]] | None:
    """Every entry point by group, from the first distribution of each name on `sys.path`
    only (as importlib.metadata does); None when a `sys.path` entry is an archive."""
    found: dict[str, list[EntryPoint]] = {}
    seen: set[str] = set()
    for entry in sys.path:
        base = entry or "."
        try:
            names = os.listdir(base)
        except NotADirectoryError:
            return None
        except OSError:
            continue
        for name in names:
            if not name.endswith(_DIST_SUFFIXES):
                continue
            key = _dist_key(name)
            if key in seen:
                continue
            seen.add(key)
            try:
                with open(os.path.join(base, name, "entry_points.txt"), encoding="utf-8") as f:
                    text = f.read()
            except (OSError, UnicodeDecodeError):
                continue
            for group, eps in parse_entry_points(text).items():
                found.setdefault(group, []).extend(eps)
    return found


@cache
def available(group: str) -> dict[str, EntryPoint]:
    """Installed plugins of `group`, by name (sorted, so iteration order is stable)."""
    table = installed_entry_points()
    if table is not None:
        eps = table.get(group, [])
    else:
        from importlib.metadata import entry_points

        eps = [EntryPoint(ep.name, ep.value) for ep in entry_points(group=group)]
    found = {ep.name: ep for ep in eps}
    return dict(sorted(found.items()))


@cache
def load(group: str, name: str) -> Any:
    """An instance of plugin `name` of `group` (constructed with no arguments, cached)."""
    eps = available(group)
    if name not in eps:
        raise PluginNotFoundError(group, name, list(eps))
    return eps[name].load()()


def load_all(group: str) -> dict[str, Any]:
    return {name: load(group, name) for name in available(group)}
