"""ssh remotes: the LFS endpoint and its header come from `git-lfs-authenticate`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.conftest import git
from tests.integration.transfer_helpers import repo_name, run_theta, store_of, write_model
from tests.lfs_server import LfsServer

FAKE_SSH = """\
import json, sys
with open({log!r}, "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
print(json.dumps({{"href": {href!r}, "header": {{"Authorization": "RemoteAuth token-1"}},
                   "expires_in": 3600}}))
"""


def test_ssh_remote_asks_git_lfs_authenticate(
    repo: Path, tmp_path: Path, lfs_server: LfsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = repo_name()
    log = tmp_path / "ssh.log"
    script = tmp_path / "fake_ssh.py"
    script.write_text(FAKE_SSH.format(log=str(log), href=lfs_server.endpoint(name)))
    git("remote", "add", "origin", "git@example.invalid:org/model.git", cwd=repo)
    write_model(repo / "m.safetensors", seed=1)
    git("add", "m.safetensors", cwd=repo)
    git("commit", "-qm", "v1", cwd=repo)
    monkeypatch.setenv("GIT_SSH_COMMAND", f"{sys.executable} {script}")
    run_theta(["push", "origin"], cwd=repo)
    assert lfs_server.objects(name) == store_of(repo)
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert calls == [["--", "git@example.invalid", "git-lfs-authenticate org/model.git upload"]]
