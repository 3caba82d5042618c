"""clean/smudge as functions over bytes and an explicit store (no git)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save

from git_theta import codec, filters, manifest
from git_theta.errors import (
    CheckpointError,
    GitThetaError,
    ObjectCorruptError,
    ObjectMissingError,
)
from git_theta.manifest import Entry
from git_theta.store import Store
from git_theta.streams import ByteSource


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "theta")


def clean(store: Store, data: bytes, **kw: object) -> bytes:
    return filters.clean(ByteSource(io.BytesIO(data)), "m.safetensors", store, **kw)  # type: ignore[arg-type]


def smudge(store: Store, text: bytes) -> bytes:
    out = io.BytesIO()
    filters.smudge(text, "m.safetensors", store, out)
    return out.getvalue()


def checkpoint(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "enc.weight": rng.standard_normal((32, 16)).astype(np.float32),
        "enc.bias": rng.standard_normal(16).astype(np.float32),
        "steps": np.array(1000, dtype=np.int64),
    }


def test_round_trip_is_byte_identical(store: Store) -> None:
    data = save(checkpoint(), metadata={"a": "b"})
    text = clean(store, data)
    assert smudge(store, text) == data
    m = manifest.parse(text)
    assert [e.name for e in m.entries] == ["enc.bias", "enc.weight", "steps"]
    # every object the manifest names is in the store, and nothing else is
    assert set(store.iter_oids()) == m.oids()


def test_manifest_is_deterministic_across_stores(tmp_path: Path) -> None:
    data = save(checkpoint())
    a = clean(Store(tmp_path / "a"), data)
    b = clean(Store(tmp_path / "b"), data)
    assert a == b
    assert files_under(tmp_path / "a" / "objects") == files_under(tmp_path / "b" / "objects")


def test_identical_tensors_are_stored_once(store: Store) -> None:
    w = np.ones((8, 8), dtype=np.float32)
    text = clean(store, save({"tied.a": w, "tied.b": w.copy(), "other": w[0].copy()}))
    m = manifest.parse(text)
    by = m.by_name()
    assert by["tied.a"].record == by["tied.b"].record
    # tied weight (1 object) + "other" + skeleton
    assert len(set(store.iter_oids())) == 3


def test_unchanged_parameters_are_not_re_encoded(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No zstd frame is made for an unchanged tensor (only the small skeleton is encoded);
    a changed tensor is encoded once, whichever update type clean picks for it. Without the
    indexed version, the raw-value map finds values above RAWMAP_MIN; smaller ones are
    encoded again and stored once, under the same object id."""
    t = checkpoint()
    t["big"] = np.arange(64 * 64, dtype=np.float32).reshape(64, 64)
    assert t["big"].nbytes > filters.RAWMAP_MIN >= t["enc.weight"].nbytes
    first = clean(store, save(t))
    objects = set(store.iter_oids())
    # the skeleton's decoded length (the manifest records its stored size)
    skeleton_size = len(filters.load_blob(store, manifest.parse(first).skeleton_oid))
    frames: list[int] = []
    real = codec.encode_chunk

    def counting(chunk: memoryview | bytes, group: int) -> bytes:
        frames.append(len(chunk))
        return real(chunk, group)

    monkeypatch.setattr(codec, "encode_chunk", counting)
    assert clean(store, save(t), previous=manifest.parse(first)) == first
    assert frames == [skeleton_size]
    frames.clear()
    assert clean(store, save(t)) == first  # no `previous`
    assert sorted(frames) == sorted([skeleton_size, 8, 16 * 4, 32 * 16 * 4])  # not "big"
    assert set(store.iter_oids()) == objects
    frames.clear()
    t["enc.bias"] = t["enc.bias"] + 1
    stats = filters.CleanStats()
    clean(store, save(t), previous=manifest.parse(first), stats=stats)
    assert frames and skeleton_size in frames
    assert 32 * 16 * 4 not in frames and 8 not in frames  # enc.weight and steps untouched
    assert stats.new_objects >= 1


def test_truncated_checkpoint_leaves_the_store_as_it_was(store: Store) -> None:
    clean(store, save({"x": np.zeros(3, dtype=np.float32)}))
    before = files_under(store.root)
    data = save(checkpoint(1))
    with pytest.raises(CheckpointError, match="truncated"):
        clean(store, data[:-10])
    assert files_under(store.root) == before


def test_manifest_passes_through_clean(store: Store) -> None:
    text = clean(store, save(checkpoint()))
    assert clean(store, text) == text


def test_non_manifest_passes_through_smudge(store: Store) -> None:
    assert smudge(store, b"plain bytes committed before tracking") == (
        b"plain bytes committed before tracking"
    )


def test_unknown_content_names_the_file_and_the_fix(store: Store) -> None:
    with pytest.raises(CheckpointError) as info:
        clean(store, b"just some text\n")
    msg = str(info.value)
    assert msg.startswith("m.safetensors: is not a checkpoint in any installed format")
    assert "git theta untrack" in msg


def test_missing_object_fails_before_any_output(store: Store) -> None:
    text = clean(store, save(checkpoint()))
    m = manifest.parse(text)
    victim = m.by_name()["enc.weight"].record["oid"]
    p = store.path(victim)
    p.chmod(0o644)
    p.unlink()
    out = io.BytesIO()
    with pytest.raises(ObjectMissingError) as info:
        filters.smudge(text, "m.safetensors", store, out)
    assert out.getvalue() == b""
    assert "parameter enc.weight" in str(info.value)


def test_object_decoding_to_the_wrong_size_is_refused_before_writing_it(store: Store) -> None:
    """A hostile object (valid hash, valid frames) that decodes to far more than the manifest's
    dtype x shape: refused without streaming the excess into the working tree."""
    text = clean(store, save({"w": np.zeros(4, dtype=np.float32)}))
    m = manifest.parse(text)
    bomb = store.put(codec.encode(b"\0" * (8 << 20), 4))
    e = m.entries[0]
    evil = manifest.build(
        m.format,
        m.skeleton_oid,
        m.skeleton_size,
        [Entry(e.name, e.dtype, e.shape, e.hash, {"type": "dense", "oid": bomb.oid, "size": 1})],
    )

    class Counting:
        n = 0

        def write(self, data: bytes | memoryview) -> None:
            self.n += len(data)

    out = Counting()
    with pytest.raises(ObjectCorruptError) as info:
        filters.smudge(evil.render(), "m.safetensors", store, out)
    assert "parameter w" in str(info.value)
    assert out.n <= 8 + 1024  # the header and at most the tensor's own 16 bytes


@pytest.mark.parametrize("name", ["", 'ü name "quoted"\nnewline', "a" * 4096])
def test_any_name_safetensors_allows_round_trips(store: Store, name: str) -> None:
    data = save({name: np.ones(2, dtype=np.float32), "other": np.zeros(1, dtype=np.int8)})
    text = clean(store, data)
    assert smudge(store, text) == data
    assert len(text.splitlines()) == 5  # header lines + one line per parameter


def test_a_name_the_manifest_cannot_hold_fails_the_clean_and_stores_nothing(store: Store) -> None:
    before = files_under(store.root)
    data = save({"x" * 5000: np.ones(2, dtype=np.float32)})
    with pytest.raises(CheckpointError) as info:
        clean(store, data)
    assert str(info.value) == "m.safetensors: cannot be tracked: bad parameter name"
    assert files_under(store.root) == before


def test_duplicate_names_from_a_format_store_nothing(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    from git_theta.checkpoints.base import SkeletonPart, TensorPart, TensorSpec

    class Twice:
        name = "twice"

        def split(self, src: ByteSource, path: str | None) -> object:
            src.drain()
            for value in (b"\1\0\0\0", b"\2\0\0\0"):
                yield TensorPart(TensorSpec("same", "F32", (1,)), memoryview(value))
            yield SkeletonPart(b"skeleton")

    monkeypatch.setattr(filters, "detect", lambda head, path: Twice())
    before = files_under(store.root)
    with pytest.raises(CheckpointError, match="two tensors share one name"):
        clean(store, b"anything")
    assert files_under(store.root) == before


def test_skeleton_decoding_to_another_size_than_the_manifest_says_is_refused(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The manifest records the skeleton's stored size, and decoded skeletons are bounded: a
    skeleton object of another size, or one that would expand beyond the bound (a
    decompression bomb with a valid hash), is refused before it is decoded."""
    text = clean(store, save({"w": np.zeros(4, dtype=np.float32)}))
    m = manifest.parse(text)
    bomb = store.put(codec.encode(b"\0" * (64 << 20), 1))
    for size, message in [
        (m.skeleton_size, f"is {bomb.size} bytes, the manifest says {m.skeleton_size}"),
        (bomb.size, f"claims {64 << 20} decoded bytes"),
    ]:
        monkeypatch.setattr(filters, "MAX_SKELETON", 1 << 20)
        evil = manifest.build(m.format, bomb.oid, size, m.entries)
        out = io.BytesIO()
        with pytest.raises(ObjectCorruptError) as info:
            filters.smudge(evil.render(), "m.safetensors", store, out)
        assert str(info.value).startswith(
            f"m.safetensors: parameter skeleton: object {bomb.oid[:12]}"
        )
        assert message in str(info.value)
        assert out.getvalue() == b""


def _mixed(store: Store, small: dict[str, np.ndarray], big: dict[str, np.ndarray]) -> bytes:
    """The skeleton of `small` with the entries of `big`: an inconsistent manifest."""
    a = manifest.parse(clean(store, save(small)))
    b = manifest.parse(clean(store, save(big)))
    return manifest.build(a.format, a.skeleton_oid, a.skeleton_size, b.entries).render()


def test_entry_disagreeing_with_the_skeleton_is_an_error_not_a_broken_file(
    store: Store,
) -> None:
    text = _mixed(
        store,
        {"w": np.zeros(4, dtype=np.float32)},
        {"w": np.ones(8, dtype=np.float32)},
    )
    out = io.BytesIO()
    with pytest.raises(GitThetaError) as info:
        filters.smudge(text, "m.safetensors", store, out)
    assert str(info.value).startswith("m.safetensors: ")
    assert "w" in str(info.value)


def test_manifest_entry_missing_from_the_skeleton_is_an_error(store: Store) -> None:
    text = _mixed(
        store,
        {"w": np.zeros(4, dtype=np.float32)},
        {"w": np.zeros(4, dtype=np.float32), "extra": np.ones(2, dtype=np.float32)},
    )
    with pytest.raises(GitThetaError, match="extra"):
        filters.smudge(text, "m.safetensors", store, io.BytesIO())


def many_small_and_one_large(seed: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {f"small.{i:02d}": rng.standard_normal(64 + 5 * i).astype(np.float32) for i in range(40)}
    out["small.20"] = out["small.03"].copy()  # one object serving two values
    out["large"] = rng.standard_normal(4096).astype(np.float32)
    return out


def test_small_values_are_rebuilt_ahead_within_the_byte_budget(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(filters, "SMALL_VALUE", 2048)
    monkeypatch.setattr(filters, "AHEAD_BYTES", 6000)
    monkeypatch.setattr(filters, "AHEAD_VALUES", 12)
    data = save(many_small_and_one_large())
    text = clean(store, data)
    held: list[int] = []
    ahead: list[bool] = []
    take = filters.StorePayloads._take_ahead

    def watch(self: filters.StorePayloads, name: str) -> tuple[bytearray, str] | None:
        held.append(self._ahead_bytes)
        got = take(self, name)
        ahead.append(got is not None)
        return got

    monkeypatch.setattr(filters.StorePayloads, "_take_ahead", watch)
    assert smudge(store, text) == data
    assert max(held) <= 6000
    assert ahead.count(True) == 40  # every small value came from the pool
    assert ahead.count(False) == 1  # the large one streamed


def test_a_damaged_value_rebuilt_ahead_is_reported_as_itself(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = save(many_small_and_one_large())
    text = clean(store, data)
    m = manifest.parse(text)
    victim = m.by_name()["small.30"].record["oid"]
    p = store.path(victim)
    p.chmod(0o644)
    raw = bytearray(p.read_bytes())
    raw[-3] ^= 0xFF
    p.write_bytes(bytes(raw))
    out = io.BytesIO()
    with pytest.raises(ObjectCorruptError) as info:
        filters.smudge(text, "m.safetensors", store, out)
    assert "parameter small.30" in str(info.value)
    assert victim[:12] in str(info.value)
    assert "content hashes to" in str(info.value)  # named by its sha256, checked on failure


@pytest.mark.parametrize("where", [0.1, 0.5, 0.95])
def test_a_damaged_object_of_a_streamed_value_is_named_by_its_hash(
    store: Store, where: float
) -> None:
    rng = np.random.default_rng(5)
    data = save({"big": rng.standard_normal(1 << 21).astype(np.float32)})  # 8 MiB: streamed
    text = clean(store, data)
    victim = manifest.parse(text).by_name()["big"].record["oid"]
    p = store.path(victim)
    p.chmod(0o644)
    raw = bytearray(p.read_bytes())
    raw[int(len(raw) * where)] ^= 0x01
    p.write_bytes(bytes(raw))
    with pytest.raises(ObjectCorruptError) as info:
        smudge(store, text)
    assert f"{victim[:12]}" in str(info.value) and "content hashes to" in str(info.value)
    assert "parameter big" in str(info.value)


def test_checkout_hashes_the_values_not_the_objects_again(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Values are checked against their manifest hash; the objects they come from are not
    also hashed (only the skeleton, which is no value), unless a value fails."""
    import hashlib

    from git_theta import store as store_module

    data = save(many_small_and_one_large())
    text = clean(store, data)
    hashed: list[int] = []
    sha256 = hashlib.sha256

    def counting(data: bytes | memoryview = b"") -> hashlib._Hash:
        hashed.append(len(data))
        return sha256(data)

    monkeypatch.setattr(store_module.hashlib, "sha256", counting)
    assert smudge(store, text) == data
    assert len(hashed) == 1


def many_small(rng: np.random.Generator) -> dict[str, np.ndarray]:
    sizes = [16, 900, 1500, 3000, 20000] * 6
    return {f"t{i:02d}": rng.standard_normal(n).astype(np.float32) for i, n in enumerate(sizes)}


def test_small_changed_values_stored_on_the_pool_match_one_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Small changed values are stored several at once on the pool: the manifests and the
    objects are exactly those of storing them one by one (one worker)."""
    from git_theta import parallel

    rng = np.random.default_rng(3)
    v1 = many_small(rng)
    v2 = {
        k: v * (1 + 1e-3 * rng.standard_normal(v.shape)).astype(np.float32) for k, v in v1.items()
    }
    v2["t05"] = v1["t05"]  # one unchanged among them
    results = []
    for n in (1, 2):
        monkeypatch.setattr(parallel, "workers", lambda n=n: n)
        st = Store(tmp_path / f"store{n}")
        first = clean(st, save(v1))
        second = clean(st, save(v2), previous=manifest.parse(first))
        results.append((first, second, files_under(st.objects)))
        assert not files_under(st.tmp)
    assert results[0] == results[1]
    types = {e.name: e.record["type"] for e in manifest.parse(results[1][1]).entries}
    assert types["t04"] == "delta" and types["t00"] == "dense" and types["t05"] == "dense"
    assert smudge(Store(tmp_path / "store2"), results[1][1]) == save(v2)


def test_a_failure_on_the_pool_leaves_the_store_as_it_was(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One small value failing while others are being stored on the pool: clean fails with
    its error, after every job stopped, and publishes nothing."""
    from git_theta import parallel
    from git_theta.updates import choose

    monkeypatch.setattr(parallel, "workers", lambda: 2)
    rng = np.random.default_rng(4)
    v1 = many_small(rng)
    first = clean(store, save(v1))
    before = files_under(store.root)
    v2 = {k: v + 1 for k, v in v1.items()}
    real = choose.store_changed

    def failing(txn, data, spec, h, old, st):  # type: ignore[no-untyped-def]
        if spec.name == "t13":
            raise GitThetaError("disk on fire")
        return real(txn, data, spec, h, old, st)

    monkeypatch.setattr(choose, "store_changed", failing)
    with pytest.raises(GitThetaError, match="disk on fire"):
        clean(store, save(v2), previous=manifest.parse(first))
    assert files_under(store.root) == before  # no object, no map line, no temporary file


def test_a_damaged_base_gives_a_dense_keyframe_not_a_patch(store: Store) -> None:
    """Clean reads a changed value's base without hashing its objects first (the rebuilt
    base is checked against its manifest hash): a damaged base object must still be caught,
    and the new value stored whole rather than as a patch on wrong bytes."""
    rng = np.random.default_rng(6)
    v1 = {"w": rng.standard_normal((64, 64)).astype(np.float32)}
    first = manifest.parse(clean(store, save(v1)))
    oid = first.entries[0].record["oid"]
    obj = store.path(oid)
    data = bytearray(obj.read_bytes())
    data[-20] ^= 0x01  # inside the last zstd frame
    obj.chmod(0o644)
    obj.write_bytes(bytes(data))
    v2 = {"w": v1["w"] * (1 + 1e-3 * rng.standard_normal((64, 64))).astype(np.float32)}
    second = clean(store, save(v2), previous=first)
    (entry,) = manifest.parse(second).entries
    assert entry.record["type"] == "dense"
    assert smudge(store, second) == save(v2)
