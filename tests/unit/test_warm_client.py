"""The warm front's key (which code a server runs), its socket directory checks and its request."""

from __future__ import annotations

import marshal
import os
import shutil
import sys
from pathlib import Path

import pytest

from git_theta import warm_client


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    copy = tmp_path / "git_theta"
    shutil.copytree(
        Path(warm_client.__file__).parent, copy, ignore=shutil.ignore_patterns("__pycache__")
    )
    monkeypatch.setattr(warm_client, "_PACKAGE", str(copy))
    return copy


def test_key_is_stable_and_follows_every_package_file(package: Path) -> None:
    key = warm_client.build_key()
    assert key == warm_client.build_key()
    assert len(key) == 16 and int(key, 16) >= 0
    nested = package / "updates" / "choose.py"
    st = nested.stat()
    os.utime(nested, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    edited = warm_client.build_key()
    assert edited != key
    (package / "new_module.py").write_text("")
    assert warm_client.build_key() != edited


def test_key_follows_installs_but_not_the_repository_directory(
    package: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "lib" / "site-packages"
    site.mkdir(parents=True)
    repo = tmp_path / "repo"
    repo.mkdir()
    monkeypatch.chdir(repo)
    monkeypatch.setattr(sys, "path", [str(repo), str(site), *sys.path])
    key = warm_client.build_key()
    (repo / "model.safetensors").write_bytes(b"x")  # the repository changes: same server
    assert warm_client.build_key() == key
    st = site.stat()
    (site / "other-1.0.dist-info").mkdir()  # a package installed: a new one
    os.utime(site, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert warm_client.build_key() != key


def test_only_a_private_directory_is_used(tmp_path: Path) -> None:
    made = tmp_path / "made"
    assert warm_client.private_dir(str(made), create=True)
    assert made.stat().st_mode & 0o777 == 0o700
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o775)
    assert not warm_client.private_dir(str(shared), create=True)
    link = tmp_path / "link"
    link.symlink_to(made)
    assert not warm_client.private_dir(str(link), create=False)
    assert not warm_client.private_dir(str(tmp_path / "missing"), create=False)


def test_socket_directory_prefers_the_runtime_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert warm_client.socket_dir() == str(tmp_path / "git-theta")
    monkeypatch.setenv("XDG_RUNTIME_DIR", "relative/dir")
    assert warm_client.socket_dir() == f"/tmp/git-theta-{os.getuid()}"


@pytest.mark.parametrize(
    ("argv", "env", "want"),
    [
        (["filter-process"], None, True),
        (["filter-process", "--cold"], None, False),
        (["filter-process"], "0", False),
        (["filter-process"], "off", False),
        (["filter-process"], "1", True),
    ],
)
def test_switch(
    argv: list[str], env: str | None, want: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if env is None:
        monkeypatch.delenv(warm_client.ENV_SWITCH, raising=False)
    else:
        monkeypatch.setenv(warm_client.ENV_SWITCH, env)
    assert warm_client.enabled(argv) is want


def test_request_round_trip_and_malformed_requests(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the front sends is what the worker reads; anything else is refused as malformed
    (the worker then says nothing and the front serves in-process)."""
    monkeypatch.setenv("GIT_THETA_PROBE", "é = value")
    request = warm_client.read_payload(warm_client.request_payload(["filter-process"]))
    assert request["argv"] == ["filter-process"]
    assert request["cwd"] == os.getcwd() and request["pid"] == os.getpid()
    assert request["env"]["GIT_THETA_PROBE"] == "é = value"  # type: ignore[index]
    assert request["namespaces"] == warm_client.namespaces()
    for junk in (b"", b"\xff\x00garbage", marshal.dumps([1, 2])):
        with pytest.raises(ValueError, match="malformed"):
            warm_client.read_payload(junk)
