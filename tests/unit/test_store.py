"""store: content addressing, write-once atomic publication, verified reads, transactions."""

from __future__ import annotations

import hashlib
import os
import stat
import threading
from pathlib import Path

import pytest

from git_theta import store as store_mod
from git_theta.errors import ObjectCorruptError, ObjectMissingError
from git_theta.store import Store, StoredObject, check_oid


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "theta")


def test_object_id_is_the_sha256_of_the_stored_bytes(store: Store) -> None:
    obj = store.put(b"hello tensors")
    oid = hashlib.sha256(b"hello tensors").hexdigest()
    assert obj == StoredObject(oid, 13)
    path = store.root / "objects" / oid[:2] / oid[2:4] / oid
    assert store.path(oid) == path
    assert hashlib.sha256(path.read_bytes()).hexdigest() == oid
    assert store.has(oid)
    assert store.read(oid) == b"hello tensors"
    assert list(store.iter_oids()) == [oid]


def test_objects_are_read_only_once_published(store: Store) -> None:
    obj = store.put(b"x")
    mode = stat.S_IMODE(os.stat(store.path(obj.oid)).st_mode)
    assert mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH) == 0


def test_same_bytes_twice_are_stored_once_and_leave_no_temp_files(store: Store) -> None:
    a = store.put(b"same")
    b = store.put(b"same")
    assert a == b
    assert files_under(store.root) == {f"objects/{a.oid[:2]}/{a.oid[2:4]}/{a.oid}"}


def test_writer_streams_and_hashes(store: Store) -> None:
    with store.writer() as w:
        for i in range(100):
            w.write(bytes([i]) * 1000)
        obj = w.commit()
    expected = b"".join(bytes([i]) * 1000 for i in range(100))
    assert obj.oid == hashlib.sha256(expected).hexdigest()
    assert obj.size == len(expected)
    assert store.read(obj.oid) == expected


def test_writer_makes_a_file_only_past_the_spool_or_at_commit(store: Store) -> None:
    """A candidate encoding that loses (aborted) never touched the disk when small; a large
    one spills to a temporary file, which abort removes; both commit the same bytes."""
    tmp = store.root / "tmp"
    with store.writer() as small:
        small.write(b"x" * 1000)
        assert not tmp.exists() or not any(tmp.iterdir())
        small.abort()
    big = os.urandom(store_mod.SPOOL // 2)
    with store.writer() as w:
        w.write(big)
        w.write(big)
        assert not any(tmp.glob("obj-*"))  # exactly SPOOL bytes still fit in memory
        w.write(b"!")
        assert len(list(tmp.glob("obj-*"))) == 1
        w.abort()
    assert not any(tmp.glob("obj-*"))
    for data in (b"x" * 1000, big + big + b"!"):
        with store.writer() as w:
            w.write(data[:500])
            w.write(data[500:])
            obj = w.commit()
        assert store.read(obj.oid) == data
        assert obj == StoredObject(hashlib.sha256(data).hexdigest(), len(data))
    assert not any(tmp.glob("obj-*"))


def test_spooled_objects_are_staged_in_a_transaction(store: Store) -> None:
    with store.transaction() as txn:
        obj = txn.put(b"staged")
        assert txn.read(obj.oid) == b"staged"  # readable from the staging file
        assert not store.has(obj.oid)
    assert store.read(obj.oid) == b"staged"


def test_a_failed_write_leaves_no_partial_file(store: Store) -> None:
    with pytest.raises(RuntimeError), store.writer() as w:
        w.write(b"half an object")
        raise RuntimeError("disk full")
    assert files_under(store.root) == set()


def test_concurrent_writers_of_the_same_object_both_succeed(store: Store) -> None:
    data = os.urandom(1 << 20)
    results: list[StoredObject] = []
    errors: list[BaseException] = []

    def put() -> None:
        try:
            results.append(store.put(data))
        except BaseException as exc:  # pragma: no cover - the failure is what we check
            errors.append(exc)

    threads = [threading.Thread(target=put) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len({r.oid for r in results}) == 1
    assert len(files_under(store.root)) == 1
    assert store.read(results[0].oid) == data


def test_transaction_publishes_only_on_success(store: Store) -> None:
    keep = store.put(b"already there")
    before = files_under(store.root)
    with pytest.raises(ValueError), store.transaction() as txn:
        staged = txn.put(b"new object")
        txn.remember("blake3:" + "ab" * 32, "dense/g4", staged)
        assert txn.has(staged.oid)  # visible inside the transaction...
        assert txn.read(staged.oid) == b"new object"
        assert not store.has(staged.oid)  # ...and nowhere else
        raise ValueError("truncated checkpoint")
    assert files_under(store.root) == before
    assert store.recall("blake3:" + "ab" * 32, "dense/g4") is None
    assert store.read(keep.oid) == b"already there"

    with store.transaction() as txn:
        obj = txn.put(b"new object")
        txn.remember("blake3:" + "ab" * 32, "dense/g4", obj)
    assert store.read(obj.oid) == b"new object"
    assert store.recall("blake3:" + "ab" * 32, "dense/g4") == obj
    assert not any(p.startswith("tmp/") for p in files_under(store.root))


def test_transaction_does_not_restage_objects_already_present(store: Store) -> None:
    obj = store.put(b"present")
    with store.transaction() as txn:
        assert txn.put(b"present") == obj
        assert txn.staged == {}


def test_corrupt_object_is_reported_by_name(store: Store) -> None:
    obj = store.put(b"precious weights")
    p = store.path(obj.oid)
    os.chmod(p, 0o644)
    data = bytearray(p.read_bytes())
    data[3] ^= 1
    p.write_bytes(bytes(data))
    with pytest.raises(ObjectCorruptError) as info:
        store.read(obj.oid, param="encoder.weight", path="model.safetensors")
    msg = str(info.value)
    assert msg.startswith(f"model.safetensors: parameter encoder.weight: object {obj.oid[:12]}")
    assert "is corrupt" in msg and "git theta fetch" in msg
    assert "\n" not in msg


def test_missing_object_is_reported_by_name(store: Store) -> None:
    oid = "0" * 64
    with pytest.raises(ObjectMissingError) as info:
        store.read(oid, param="w", path="m.safetensors")
    assert str(info.value) == (
        "m.safetensors: parameter w: object 000000000000 is missing from the local store; "
        "run `git theta fetch` to download it from the remote"
    )


def test_empty_object_reads_back(store: Store) -> None:
    obj = store.put(b"")
    assert obj.oid == hashlib.sha256(b"").hexdigest()
    assert store.read(obj.oid) == b""


@pytest.mark.parametrize("oid", ["../../etc/passwd", "A" * 64, "0" * 63, "0" * 65, ""])
def test_object_ids_cannot_name_other_paths(store: Store, oid: str) -> None:
    with pytest.raises(ValueError):
        store.path(oid)
    with pytest.raises(ValueError):
        check_oid(oid)


def test_put_file_checks_the_hash(store: Store, tmp_path: Path) -> None:
    src = tmp_path / "download"
    src.write_bytes(b"payload")
    with pytest.raises(ObjectCorruptError):
        store.put_file(src, "0" * 64)
    assert not store.has("0" * 64)
    oid = hashlib.sha256(b"payload").hexdigest()
    assert store.put_file(src, oid) == StoredObject(oid, 7)
    assert store.read(oid) == b"payload"


def test_rawmap_forgets_objects_that_are_gone(store: Store) -> None:
    obj = store.put(b"v")
    store.remember("blake3:" + "cd" * 32, "dense/g1", obj)
    store.remember("blake3:" + "cd" * 32, "dense/g1", obj)  # idempotent
    assert store.recall("blake3:" + "cd" * 32, "dense/g1") == obj
    assert store.recall("blake3:" + "cd" * 32, "dense/g2") is None
    p = store.path(obj.oid)
    os.chmod(p.parent, 0o755)
    p.unlink()
    assert store.recall("blake3:" + "cd" * 32, "dense/g1") is None


def test_adopted_files_are_published_like_written_objects(store: Store, tmp_path: Path) -> None:
    """put_file (downloads) is write-once and leaves read-only objects, as put does."""
    oid = hashlib.sha256(b"downloaded").hexdigest()
    first = tmp_path / "first"
    first.write_bytes(b"downloaded")
    store.put_file(first, oid)
    final = store.path(oid)
    assert stat.S_IMODE(final.stat().st_mode) & 0o222 == 0
    inode = final.stat().st_ino
    second = tmp_path / "second"
    second.write_bytes(b"downloaded")
    assert store.put_file(second, oid) == StoredObject(oid, 10)
    assert final.stat().st_ino == inode  # the published object was not replaced
    assert not second.exists()
