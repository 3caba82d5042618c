"""The filter process git starts for every command stays light until it needs more."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path


def _modules_after(code: str) -> set[str]:
    """The modules a fresh interpreter holds after running `code`."""
    probe = textwrap.dedent(code) + "\nimport sys\nprint('\\n'.join(sorted(sys.modules)))\n"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    return set(out.split())


def test_filter_command_and_format_detection_do_not_import_numpy_or_click() -> None:
    loaded = _modules_after(
        """
        from git_theta import filter_command, filters, plugins
        assert plugins.load(plugins.CHECKPOINTS, "safetensors").sniff(
            b"\\x10\\x00\\x00\\x00\\x00\\x00\\x00\\x00{"
        )
        plugins.load_all(plugins.CHECKPOINTS)  # detect() loads every format plugin
        """
    )
    assert "git_theta.filters" in loaded
    assert "numpy" not in loaded
    assert "click" not in loaded


def test_warm_up_imports_what_changed_tensors_and_smudge_need() -> None:
    loaded = _modules_after(
        """
        from git_theta import filter_command
        filter_command.warm_up().join()
        """
    )
    assert {"numpy", "git_theta.codec", "git_theta.updates.choose"} <= loaded
    assert "click" not in loaded


def test_python_m_git_theta_filter_process_skips_the_command_line(tmp_path: Path) -> None:
    # an empty stdin ends the protocol at once (exit 0); the command line is never loaded
    probe = (
        "import os, runpy, sys\n"
        "os._exit = sys.exit  # the filter ends with os._exit: make it observable here\n"
        "sys.argv = ['git_theta', 'filter-process']\n"
        "try:\n"
        "    runpy.run_module('git_theta', run_name='__main__')\n"
        "except SystemExit as e:\n"
        "    assert not e.code, e.code\n"
        "print('click' in sys.modules, 'git_theta.cli' in sys.modules)\n"
    )
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    out = subprocess.run(
        [sys.executable, "-c", probe], input=b"", capture_output=True, cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr.decode()
    assert out.stdout.split() == [b"False", b"False"]


def test_the_filter_process_exit_status_reaches_git(tmp_path: Path) -> None:
    """It skips the interpreter's teardown (os._exit), after flushing what it wrote."""
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    cmd = [sys.executable, "-m", "git_theta", "filter-process"]
    ok = subprocess.run(cmd, input=b"", capture_output=True, cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr.decode()
    bad = subprocess.run(cmd, input=b"0013not-git-at-all\n0000", capture_output=True, cwd=tmp_path)
    assert bad.returncode == 1
    assert b"git-theta: error:" in bad.stderr and b"handshake" in bad.stderr
