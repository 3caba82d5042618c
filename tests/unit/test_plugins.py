"""The entry-point reader (plugins.py) against importlib.metadata and hand-made installs."""

from __future__ import annotations

import sys
import zipfile
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from git_theta import plugins
from git_theta.plugins import EntryPoint, parse_entry_points

GROUPS = (plugins.CHECKPOINTS, plugins.UPDATES, plugins.MERGES, plugins.TRANSFERS)


@pytest.fixture
def fresh() -> Iterator[None]:
    """Plugin tables read again for the test and again after it (sys.path restored)."""
    saved = list(sys.path)
    plugins.installed_entry_points.cache_clear()
    plugins.available.cache_clear()
    yield
    sys.path[:] = saved
    plugins.installed_entry_points.cache_clear()
    plugins.available.cache_clear()


def dist(site: Path, dirname: str, text: str) -> None:
    (site / dirname).mkdir(parents=True)
    (site / dirname / "entry_points.txt").write_text(text)


@pytest.mark.parametrize("group", GROUPS)
def test_finds_what_importlib_metadata_finds(fresh: None, group: str) -> None:
    ours = {name: ep.value for name, ep in plugins.available(group).items()}
    theirs = {ep.name: ep.value for ep in entry_points(group=group)}
    assert ours == theirs
    assert ours  # the project's own plugins are installed


def test_parses_groups_comments_and_extras() -> None:
    text = (
        "# a comment\n[git_theta.merges]\n  fancy = pkg.mod:Fancy [extra1]\n"
        "; another\nplain=pkg.other:Cls.Inner\n\n[console_scripts]\ntool = pkg.cli:main\n"
    )
    groups = parse_entry_points(text)
    assert groups["git_theta.merges"] == [
        EntryPoint("fancy", "pkg.mod:Fancy [extra1]"),
        EntryPoint("plain", "pkg.other:Cls.Inner"),
    ]
    assert groups["console_scripts"] == [EntryPoint("tool", "pkg.cli:main")]


def test_load_resolves_module_and_dotted_attribute() -> None:
    assert EntryPoint("x", "os.path:join").load() is __import__("os").path.join
    assert EntryPoint("x", "collections:OrderedDict.fromkeys [e]").load() == (
        __import__("collections").OrderedDict.fromkeys
    )
    assert EntryPoint("x", "json").load() is __import__("json")


def test_first_distribution_of_a_name_on_sys_path_wins(fresh: None, tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    dist(first, "My_Plugin-1.0.dist-info", "[git_theta.merges]\nmine = json:dumps\n")
    dist(second, "my.plugin-2.0.dist-info", "[git_theta.merges]\nmine = json:loads\n")
    dist(second, "other-0.1.egg-info", "[git_theta.merges]\nother = json:JSONDecoder\n")
    sys.path[:0] = [str(first), str(second)]
    found = plugins.available(plugins.MERGES)
    assert found["mine"].value == "json:dumps"
    assert found["other"].load() is __import__("json").JSONDecoder
    assert "average" in found  # the installed ones are still there


def test_a_zip_on_sys_path_hands_the_search_to_importlib(fresh: None, tmp_path: Path) -> None:
    archive = tmp_path / "plugins.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr(
            "zipped-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: zipped\nVersion: 1.0\n"
        )
        z.writestr("zipped-1.0.dist-info/entry_points.txt", "[git_theta.merges]\nz = json:dumps\n")
    sys.path.insert(0, str(archive))
    assert plugins.installed_entry_points() is None
    assert plugins.available(plugins.MERGES)["z"].value == "json:dumps"
