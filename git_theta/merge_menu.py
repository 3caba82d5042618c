"""The interactive merge menu, on the controlling terminal (/dev/tty).

git runs the merge driver with its standard streams redirected, so the menu talks to the
terminal device itself. Besides cli.py this is the only module that reads from a terminal;
it is used only when /dev/tty opens and neither GIT_THETA_NO_TTY nor CI says otherwise.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import TextIO

from git_theta.errors import GitThetaError, MergeConflictError
from git_theta.merge_driver import (
    Choice,
    Conflict,
    Hint,
    check_choice,
    load_strategy,
    parse_choice,
    strategy_names,
)
from git_theta.merge_rules import Automatic

HELP = (
    "  NAME [KEY=VALUE ...]  merge this parameter with strategy NAME\n"
    "  all NAME [...]        the same for this and every remaining parameter\n"
    "  (empty)               accept the suggestion in brackets\n"
    "  ?                     list the strategies\n"
    "  abort                 stop; the file stays conflicted\n"
)


def interactive_allowed(env: Mapping[str, str] | None = None) -> bool:
    """False when GIT_THETA_NO_TTY is set (not 0) or CI is set: no human is there."""
    env = os.environ if env is None else env
    if env.get("GIT_THETA_NO_TTY", "") not in ("", "0"):
        return False
    return env.get("CI", "") in ("", "0", "false")


def open_tty() -> tuple[TextIO, TextIO] | None:
    """The controlling terminal as (reader, writer), or None when there is none.

    Two handles because a terminal is not seekable, which a single "r+" text file needs.
    """
    try:
        reader = open("/dev/tty", encoding="utf-8", errors="replace")  # noqa: SIM115
    except OSError:
        return None
    try:
        writer = open("/dev/tty", "w", encoding="utf-8")  # noqa: SIM115
    except OSError:
        reader.close()
        return None
    return reader, writer


def _shape(c: Conflict) -> str:
    e = c.ours or c.theirs
    assert e is not None
    sides = []
    for label, x in (("ours", c.ours), ("theirs", c.theirs)):
        sides.append(f"{label} {x.dtype}{list(x.shape)}" if x is not None else f"{label} removed")
    if (
        c.ours is not None
        and c.theirs is not None
        and ((c.ours.dtype, c.ours.shape) == (c.theirs.dtype, c.theirs.shape))
    ):
        return f"{e.dtype}{list(e.shape)}"
    return ", ".join(sides)


def format_hint(h: Hint | None) -> str:
    if h is None:
        return "no common ancestor value to compare with"
    cos = "n/a" if h.cosine is None else f"{h.cosine:+.3f}"
    return (
        f"|d_ours|={h.norm_ours:.4g}  |d_theirs|={h.norm_theirs:.4g}  cos(d_ours, d_theirs)={cos}"
    )


class Menu:
    """Asks, for each conflict, which strategy merges it; a Chooser for merge_driver.merge."""

    def __init__(
        self,
        tty: tuple[TextIO, TextIO],
        *,
        path: str,
        describe: Callable[[Conflict], Hint | None],
        automatic: Automatic,
    ) -> None:
        self.reader, self.writer = tty
        self.path = path
        self.describe = describe
        self.automatic = automatic

    def say(self, text: str) -> None:
        self.writer.write(text)
        self.writer.flush()

    def ask(self, prompt: str) -> str:
        self.say(prompt)
        line = self.reader.readline()
        if not line:
            raise MergeConflictError(self.path, [], aborted=True)
        return line.strip()

    def __call__(self, conflicts: Sequence[Conflict]) -> Mapping[str, Choice]:
        self.say(
            f"\ngit-theta: {self.path}: {len(conflicts)} parameter(s) changed differently on "
            f"both sides.\nStrategies: {', '.join(strategy_names())}. Type '?' for help.\n"
        )
        out: dict[str, Choice] = {}
        for_all: Choice | None = None
        for i, c in enumerate(conflicts, 1):
            if for_all is not None:
                try:
                    check_choice(c, for_all, self.path)
                    out[c.name] = for_all
                    continue
                except GitThetaError as exc:
                    self.say(f"\n  {for_all.strategy} cannot merge {c.name}: {exc}\n")
            choice, apply_all = self._one(i, len(conflicts), c, [x.name for x in conflicts[i:]])
            out[c.name] = choice
            if apply_all:
                for_all = choice
        return out

    def _one(self, i: int, n: int, c: Conflict, remaining: list[str]) -> tuple[Choice, bool]:
        self.say(f"\n[{i}/{n}] {c.name}  {_shape(c)}  ({c.kind})\n")
        try:
            self.say(f"  {format_hint(self.describe(c))}\n")
        except GitThetaError as exc:
            self.say(f"  (cannot compare the values: {exc})\n")
        found = self.automatic.choice(c.name)
        default = found[0] if found else None
        if found:
            self.say(f"  suggested by {found[1]}: {default.render() if default else ''}\n")
        while True:
            answer = self.ask(f"strategy{f' [{default.render()}]' if default else ''}> ")
            if answer in ("abort", "q", "quit"):
                raise MergeConflictError(self.path, [c.name, *remaining], aborted=True)
            if answer in ("?", "help"):
                self.say(HELP + "".join(self._describe_strategies()))
                continue
            apply_all = answer.startswith("all ")
            text = answer[4:].strip() if apply_all else answer
            if not text:
                if default is None:
                    continue
                text = default.render()
            try:
                choice = parse_choice(text)
                check_choice(c, choice, self.path)
            except GitThetaError as exc:
                self.say(f"  {exc}\n")
                continue
            return choice, apply_all

    def _describe_strategies(self) -> list[str]:
        lines = []
        for name in strategy_names():
            s = load_strategy(name)
            opts = f" (options: {', '.join(sorted(s.options))})" if s.options else ""
            lines.append(f"  {name:16s} {s.summary}{opts}\n")
        return lines
