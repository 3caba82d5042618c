"""A failing, slow or hostile LFS server: retries, clear errors, nothing half-stored, and
credentials never printed. Faults come from a proxy in front of the real server."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import git
from tests.integration.transfer_helpers import (
    bare_remote,
    fresh_home,
    repo_name,
    run_git,
    store_of,
    write_model,
)
from tests.lfs_server import Fault, FaultProxy, LfsServer

SECRET = "s3cret-pass-8472"


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIT_THETA_TRANSFER_BACKOFF", "0.01")
    monkeypatch.setenv("GIT_THETA_TRANSFER_TIMEOUT", "1.5")
    monkeypatch.setenv("GIT_THETA_TRANSFER_RETRIES", "2")


def _commit(repo: Path, tmp_path: Path, lfs_url: str) -> Path:
    bare = bare_remote(tmp_path)
    git("remote", "add", "origin", str(bare), cwd=repo)
    git("config", "remote.origin.lfsurl", lfs_url, cwd=repo)
    write_model(repo / "m.safetensors", seed=1)
    git("add", "m.safetensors", cwd=repo)
    git("commit", "-qm", "v1", cwd=repo)
    return bare


def _clone(
    tmp_path: Path, bare: Path, lfs_url: str
) -> tuple[Path, subprocess.CompletedProcess[str]]:
    env = fresh_home(tmp_path)
    clone = tmp_path / "clone"
    proc = run_git(
        ["clone", "-q", "-c", f"lfs.url={lfs_url}", str(bare), str(clone)],
        cwd=tmp_path,
        env=env,
        check=False,
    )
    return clone, proc


def _statuses(proxy: FaultProxy, method: str, part: str) -> list[int]:
    return [s for m, p, s in proxy.log if m == method and part in p]


def test_server_errors_are_retried(
    repo: Path, tmp_path: Path, lfs_server: LfsServer, fault_proxy: FaultProxy
) -> None:
    name = repo_name()
    bare = _commit(repo, tmp_path, fault_proxy.endpoint(name))
    fault_proxy.faults = [
        Fault("POST", "/objects/batch", "status", status=500),
        Fault("PUT", "/objects/", "status", status=503),
        Fault("PUT", "/objects/", "status", status=429),
    ]
    git("push", "-q", "origin", "main", cwd=repo)
    assert lfs_server.objects(name) == store_of(repo)
    assert _statuses(fault_proxy, "POST", "/objects/batch")[:2] == [500, 200]
    assert 503 in _statuses(fault_proxy, "PUT", "") and 429 in _statuses(fault_proxy, "PUT", "")

    fault_proxy.faults = [
        Fault("POST", "/objects/batch", "status", status=502),
        Fault("GET", "/objects/", "status", status=500, times=2),
    ]
    clone, proc = _clone(tmp_path, bare, fault_proxy.endpoint(name))
    assert proc.returncode == 0, proc.stderr
    assert (clone / "m.safetensors").read_bytes() == (repo / "m.safetensors").read_bytes()


def _pushed(repo: Path, tmp_path: Path, proxy: FaultProxy) -> tuple[Path, str]:
    name = repo_name()
    bare = _commit(repo, tmp_path, proxy.endpoint(name))
    git("push", "-q", "origin", "main", cwd=repo)
    return bare, name


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("corrupt", "sha256 is"),
        ("extra", "sent more than"),
        ("truncate", "body ended early"),
    ],
)
def test_bad_downloads_are_rejected_and_nothing_is_stored(
    repo: Path, tmp_path: Path, fault_proxy: FaultProxy, kind: str, message: str
) -> None:
    bare, name = _pushed(repo, tmp_path, fault_proxy)
    fault_proxy.faults = [Fault("GET", "/objects/", kind, times=1000)]
    clone, proc = _clone(tmp_path, bare, fault_proxy.endpoint(name))
    assert proc.returncode != 0
    assert message in proc.stderr
    assert "remote origin" in proc.stderr
    assert "smudge filter theta failed" in proc.stderr
    assert store_of(clone) == set()
    assert list((clone / ".git" / "theta" / "tmp").iterdir()) == []
    assert not (clone / "m.safetensors").exists()


def test_a_truncated_body_is_retried(repo: Path, tmp_path: Path, fault_proxy: FaultProxy) -> None:
    bare, name = _pushed(repo, tmp_path, fault_proxy)
    fault_proxy.faults = [Fault("GET", "/objects/", "truncate", times=2)]
    clone, proc = _clone(tmp_path, bare, fault_proxy.endpoint(name))
    assert proc.returncode == 0, proc.stderr
    assert (clone / "m.safetensors").read_bytes() == (repo / "m.safetensors").read_bytes()


def test_redirect_to_another_host_is_refused(
    repo: Path, tmp_path: Path, lfs_server: LfsServer, fault_proxy: FaultProxy
) -> None:
    name = repo_name()
    _commit(repo, tmp_path, fault_proxy.endpoint(name))
    port = lfs_server.url.rsplit(":", 1)[1]
    fault_proxy.faults = [
        Fault("POST", "/objects/batch", "redirect", location=f"http://localhost:{port}")
    ]
    proc = git("push", "origin", "main", cwd=repo, check=False)
    assert proc.returncode != 0
    assert "redirected to another host (http://localhost:" in proc.stderr
    assert "refusing" in proc.stderr
    assert lfs_server.objects(name) == set()


def test_stalled_server_times_out(repo: Path, tmp_path: Path, fault_proxy: FaultProxy) -> None:
    name = repo_name()
    _commit(repo, tmp_path, fault_proxy.endpoint(name))
    fault_proxy.faults = [Fault("POST", "/objects/batch", "stall", delay=4, times=10)]
    proc = git("push", "origin", "main", cwd=repo, check=False)
    assert proc.returncode != 0
    assert "timed out after 1.5 s (gave up after 3 attempts)" in proc.stderr


def test_object_missing_on_server_is_named(
    repo: Path, tmp_path: Path, lfs_server: LfsServer, fault_proxy: FaultProxy
) -> None:
    bare, name = _pushed(repo, tmp_path, fault_proxy)
    victim = sorted(lfs_server.objects(name))[0]
    (lfs_server.store / "test" / name / victim).unlink()
    _clone_dir, proc = _clone(tmp_path, bare, fault_proxy.endpoint(name))
    assert proc.returncode != 0
    assert f"could not download object {victim[:12]}: the server does not have it" in proc.stderr


def test_credentials_from_git_credential_are_used_and_never_shown(
    repo: Path, tmp_path: Path, lfs_server: LfsServer, fault_proxy: FaultProxy
) -> None:
    fault_proxy.credentials = ("alice", SECRET)
    name = repo_name()
    _commit(repo, tmp_path, fault_proxy.endpoint(name))
    helper = f"!f() {{ echo username=alice; echo password={SECRET}; }}; f"
    git("config", "credential.helper", helper, cwd=repo)
    proc = git("push", "origin", "main", cwd=repo)
    assert SECRET not in proc.stdout + proc.stderr
    assert lfs_server.objects(name) == store_of(repo)
    assert _statuses(fault_proxy, "POST", "/objects/batch")[:2] == [401, 200]

    # refused credentials: a clear error, still no secret
    fault_proxy.credentials = ("alice", "another-password")
    write_model(repo / "m.safetensors", seed=2)
    git("commit", "-qam", "v2", cwd=repo)
    proc = git("push", "origin", "main", cwd=repo, check=False)
    assert proc.returncode != 0
    assert "requires credentials and none were accepted" in proc.stderr
    assert SECRET not in proc.stdout + proc.stderr


def test_credentials_in_the_url_never_appear_in_errors(
    repo: Path, tmp_path: Path, fault_proxy: FaultProxy
) -> None:
    name = repo_name()
    url = fault_proxy.endpoint(name).replace("http://", f"http://alice:{SECRET}@")
    _commit(repo, tmp_path, url)
    fault_proxy.faults = [Fault("POST", "/objects/batch", "status", status=500, times=100)]
    proc = git("push", "origin", "main", cwd=repo, check=False)
    assert proc.returncode != 0
    assert "HTTP 500: injected failure (gave up after 3 attempts)" in proc.stderr
    assert SECRET not in proc.stdout + proc.stderr
    assert "alice" not in proc.stderr


def test_a_corrupt_local_object_is_not_uploaded(
    repo: Path, tmp_path: Path, lfs_server: LfsServer, fault_proxy: FaultProxy
) -> None:
    name = repo_name()
    _commit(repo, tmp_path, fault_proxy.endpoint(name))
    victim = sorted(store_of(repo))[0]
    path = next((repo / ".git" / "theta" / "objects").rglob(victim))
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    proc = git("push", "origin", "main", cwd=repo, check=False)
    assert proc.returncode != 0
    assert f"could not upload object {victim[:12]}: the local copy is corrupt" in proc.stderr
    assert victim not in lfs_server.objects(name)


def test_a_clone_fetches_every_checkpoint_in_one_batch(
    repo: Path, tmp_path: Path, fault_proxy: FaultProxy
) -> None:
    name = repo_name()
    bare = _commit(repo, tmp_path, fault_proxy.endpoint(name))
    for i in range(3):
        write_model(repo / f"extra{i}.safetensors", seed=10 + i, n=2)
    git("add", ".", cwd=repo)
    git("commit", "-qm", "more", cwd=repo)
    git("push", "-q", "origin", "main", cwd=repo)
    fault_proxy.log.clear()
    clone, proc = _clone(tmp_path, bare, fault_proxy.endpoint(name))
    assert proc.returncode == 0, proc.stderr
    assert len(_statuses(fault_proxy, "POST", "/objects/batch")) == 1  # 4 files, 1 batch
    assert len(_statuses(fault_proxy, "GET", "/objects/")) == len(store_of(repo))
    for i in range(3):
        p = f"extra{i}.safetensors"
        assert (clone / p).read_bytes() == (repo / p).read_bytes()


def test_an_expired_action_url_gets_a_fresh_batch(
    repo: Path, tmp_path: Path, fault_proxy: FaultProxy
) -> None:
    bare, name = _pushed(repo, tmp_path, fault_proxy)
    fault_proxy.log.clear()
    fault_proxy.faults = [Fault("GET", "/objects/", "status", status=403)]
    clone, proc = _clone(tmp_path, bare, fault_proxy.endpoint(name))
    assert proc.returncode == 0, proc.stderr
    assert _statuses(fault_proxy, "POST", "/objects/batch") == [200, 200]
    assert (clone / "m.safetensors").read_bytes() == (repo / "m.safetensors").read_bytes()
