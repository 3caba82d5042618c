"""The one plugin loader: formats, update types, merge strategies, transfers: all entry points."""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

from git_theta.errors import PluginNotFoundError

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint

CHECKPOINTS = "git_theta.checkpoints"
UPDATES = "git_theta.updates"
MERGES = "git_theta.merges"
TRANSFERS = "git_theta.transfers"


@cache
def available(group: str) -> dict[str, EntryPoint]:
    """Installed plugins of `group`, by name (sorted, so iteration order is stable)."""
    # imported here, not at the top: importlib.metadata takes ~30 ms to import, which the
    # filter process spends on its warm-up thread (filter_command.py)
    from importlib.metadata import entry_points

    found = {ep.name: ep for ep in entry_points(group=group)}
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
