"""Where a merge strategy comes from when nobody is asked: rules file, git config, env var.

The rules file `.thetamerge` at the repository root is committed with the project:

    # parameter-name pattern   strategy   [KEY=VALUE ...]
    classifier.*               take-theirs
    *.bias                     average weights=1,3
    *                          average

Patterns are shell-style (fnmatch, case-sensitive) over parameter names; the first matching
line wins. A pattern may be limited to some files with `FILE-GLOB:PARAM-GLOB`
(`*.safetensors:encoder.*`). After the rules come `git config theta.merge.strategy` and then
the environment variable GIT_THETA_MERGE_STRATEGY, both written like a rule's right side.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from git_theta.errors import MergeError
from git_theta.merge_driver import Choice, Conflict, parse_choice

RULES_FILE = ".thetamerge"
CONFIG_KEY = "theta.merge.strategy"
ENV_VAR = "GIT_THETA_MERGE_STRATEGY"


@dataclass(frozen=True)
class Rule:
    file_glob: str | None
    param_glob: str
    choice: Choice

    def matches(self, path: str, param: str) -> bool:
        if self.file_glob is not None and not fnmatch.fnmatchcase(path, self.file_glob):
            return False
        return fnmatch.fnmatchcase(param, self.param_glob)


def parse_rules(text: str, where: str = RULES_FILE) -> list[Rule]:
    rules = []
    for lineno, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        parts = stripped.split(None, 1)
        if len(parts) != 2:
            raise MergeError(f"{where}:{lineno}: expected 'PATTERN STRATEGY [KEY=VALUE ...]'")
        pattern, rest = parts
        file_glob: str | None = None
        if ":" in pattern:
            file_glob, pattern = pattern.split(":", 1)
        choice = parse_choice(rest, where=f"{where}:{lineno}")
        rules.append(Rule(file_glob, pattern, choice))
    return rules


def load_rules(root: Path) -> list[Rule]:
    p = root / RULES_FILE
    try:
        text = p.read_text()
    except FileNotFoundError:
        return []
    return parse_rules(text, str(p))


@dataclass(frozen=True)
class Automatic:
    """Rules, then a fallback (git config, else the environment), for one file."""

    path: str
    rules: Sequence[Rule]
    fallback: Choice | None

    def choice(self, param: str) -> tuple[Choice, str] | None:
        """(choice, where it came from) for one parameter, or None."""
        for rule in self.rules:
            if rule.matches(self.path, param):
                return rule.choice, RULES_FILE
        if self.fallback is not None:
            return self.fallback, "config"
        return None

    def __call__(self, conflicts: Sequence[Conflict]) -> Mapping[str, Choice]:
        out = {}
        for c in conflicts:
            found = self.choice(c.name)
            if found is not None:
                out[c.name] = found[0]
        return out


def fallback_choice(
    config_value: str | None, env: Mapping[str, str] | None = None
) -> Choice | None:
    env = os.environ if env is None else env
    if config_value:
        return parse_choice(config_value, where=f"git config {CONFIG_KEY}")
    value = env.get(ENV_VAR, "").strip()
    if value:
        return parse_choice(value, where=ENV_VAR)
    return None
