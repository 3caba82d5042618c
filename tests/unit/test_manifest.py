"""manifest: canonical rendering, versioning, and errors for malformed text."""

from __future__ import annotations

import json

import pytest

from git_theta import manifest
from git_theta.errors import ManifestError
from git_theta.manifest import Entry, Manifest

OID_A = "a" * 64
OID_B = "b" * 64
OID_S = "c" * 64
HASH = "blake3:" + "d" * 64


def entry(name: str, oid: str = OID_A, **extra: object) -> Entry:
    return Entry(name, "F32", (2, 3), HASH, {"type": "dense", "oid": oid, "size": 10}, extra)


def sample() -> Manifest:
    return manifest.build("safetensors", OID_S, 99, [entry("b.weight"), entry("a.bias", OID_B)])


def test_render_is_canonical_text() -> None:
    text = sample().render().decode()
    assert text == (
        "git-theta-manifest 1\n"
        "format safetensors\n"
        f"skeleton {OID_S} 99\n"
        '{"name":"a.bias","dtype":"F32","shape":[2,3],"hash":"' + HASH + '",'
        '"record":{"oid":"' + OID_B + '","size":10,"type":"dense"}}\n'
        '{"name":"b.weight","dtype":"F32","shape":[2,3],"hash":"' + HASH + '",'
        '"record":{"oid":"' + OID_A + '","size":10,"type":"dense"}}\n'
    )


def test_order_of_input_does_not_change_the_bytes() -> None:
    e1, e2, e3 = entry("z"), entry("a"), entry("m")
    r1 = manifest.build("safetensors", OID_S, 1, [e1, e2, e3]).render()
    r2 = manifest.build("safetensors", OID_S, 1, [e3, e1, e2]).render()
    assert r1 == r2
    # record keys are sorted whatever order the dict was built in
    rec = {"size": 10, "type": "dense", "oid": OID_A}
    e = Entry("x", "F32", (1,), HASH, rec)
    assert e.render() == Entry("x", "F32", (1,), HASH, dict(reversed(rec.items()))).render()


def test_parse_round_trips() -> None:
    m = sample()
    back = manifest.parse(m.render())
    assert back == m
    assert back.render() == m.render()
    assert back.oids() == {OID_A, OID_B, OID_S}


def test_extras_and_nested_bases_round_trip() -> None:
    fisher = {"type": "dense", "oid": "e" * 64, "size": 3}
    nested = {
        "type": "sparse",
        "values_oid": "1" * 64,
        "base": {"type": "dense", "oid": "2" * 64, "size": 5},
    }
    e = Entry("w", "BF16", (4,), HASH, nested, {"fisher": fisher})
    m = manifest.build("safetensors", OID_S, 1, [e])
    back = manifest.parse(m.render())
    assert back == m
    assert back.oids() == {OID_S, "e" * 64, "1" * 64, "2" * 64}


def test_empty_checkpoint_and_zero_dim_entries() -> None:
    m = manifest.build("safetensors", OID_S, 8, [])
    assert manifest.parse(m.render()) == m
    scalar = Entry("s", "I64", (), HASH, {"type": "dense", "oid": OID_A, "size": 1})
    empty = Entry("e", "F16", (0, 7), HASH, {"type": "dense", "oid": OID_A, "size": 1})
    m2 = manifest.build("safetensors", OID_S, 8, [scalar, empty])
    assert manifest.parse(m2.render()) == m2
    assert scalar.nbytes == 8 and empty.nbytes == 0


def test_version_2_gets_a_clear_error() -> None:
    text = sample().render().replace(b"git-theta-manifest 1", b"git-theta-manifest 2")
    with pytest.raises(ManifestError) as info:
        manifest.parse(text, "model.safetensors")
    assert str(info.value) == (
        "model.safetensors: malformed git-theta manifest (line 1): version '2' is not "
        "supported by this git-theta (reads 1); check out a good version of the file, or "
        "`git theta fsck`"
    )


def _with_entry_line(line: str) -> bytes:
    return (f"git-theta-manifest 1\nformat safetensors\nskeleton {OID_S} 9\n" + line).encode()


def _line(**override: object) -> str:
    obj: dict[str, object] = {
        "name": "w",
        "dtype": "F32",
        "shape": [2],
        "hash": HASH,
        "record": {"type": "dense", "oid": OID_A, "size": 1},
    }
    obj.update(override)
    return json.dumps({k: v for k, v in obj.items() if v is not ...}) + "\n"


BAD_CASES = [
    (b"", "does not start with"),
    (b"hello world\n", "does not start with"),
    (b"git-theta-manifest 1\n", "missing header lines"),
    (b"git-theta-manifest x\nformat a\nskeleton " + OID_S.encode() + b" 1\n", "version"),
    (
        b"git-theta-manifest 1\nformat a b\nskeleton " + OID_S.encode() + b" 1\n",
        "bad format name",
    ),
    (b"git-theta-manifest 1\nformat a\nskeleton xyz 1\n", "skeleton line"),
    (b"git-theta-manifest 1\nformat a\nskeleton " + OID_S.encode() + b" -1\n", "skeleton"),
    (b"git-theta-manifest 1\nfmt a\nskeleton " + OID_S.encode() + b" 1\n", "expected 'format"),
    (b"git-theta-manifest 1\nformat a\nskeleton " + OID_S.encode() + b" 1\n\xff\n", "ASCII"),
    (_with_entry_line("{not json\n"), "not JSON"),
    (_with_entry_line("[1, 2]\n"), "entry must have"),
    (_with_entry_line(_line(hash=...)), "entry must have"),
    (_with_entry_line(_line(surprise=1)), "entry must have"),
    (_with_entry_line(_line(name="x" * 4097)), "bad parameter name"),
    (_with_entry_line(_line(name=3)), "bad parameter name"),
    (_with_entry_line(_line(dtype="F33")), "unknown dtype"),
    (_with_entry_line(_line(dtype=["F32"])), "unknown dtype"),
    (_with_entry_line(_line(dtype={"a": 1})), "unknown dtype"),
    (_with_entry_line(_line(shape=[-1])), "bad shape"),
    (_with_entry_line(_line(shape=[True])), "bad shape"),
    (_with_entry_line(_line(shape=[2.0])), "bad shape"),
    (_with_entry_line(_line(shape=[1 << 30, 1 << 30])), "bad shape"),
    (_with_entry_line(_line(shape="2")), "bad shape"),
    (_with_entry_line(_line(hash="sha1:00")), "bad hash"),
    (_with_entry_line(_line(record=[])), "bad storage record"),
    (_with_entry_line(_line(record={"type": "dense", "oid": "../x"})), "bad object id"),
    (_with_entry_line(_line(record={"type": "Dense!", "oid": OID_A})), "bad record type"),
    (_with_entry_line(_line(name="b") + _line(name="a")), "not sorted"),
    (_with_entry_line(_line(name="a") + _line(name="a")), "not sorted and unique"),
    (_with_entry_line("[" * 100_000 + "]" * 100_000 + "\n"), "line 4"),
    (
        _with_entry_line(_line(record={"type": "dense", "oid": OID_A, "base": {}})),
        "bad record type",
    ),
]


@pytest.mark.parametrize(
    "data, fragment", BAD_CASES, ids=[f"{i}-{c[1]}" for i, c in enumerate(BAD_CASES)]
)
def test_malformed_manifests_raise_manifest_error(data: bytes, fragment: str) -> None:
    with pytest.raises(ManifestError) as info:
        manifest.parse(data, "m.safetensors")
    msg = str(info.value)
    assert fragment in msg
    assert msg.startswith("m.safetensors: malformed git-theta manifest")
    assert "\n" not in msg


def test_deeply_nested_records_are_refused() -> None:
    rec: dict[str, object] = {"type": "dense", "oid": OID_A}
    for _ in range(300):
        rec = {"type": "sparse", "base": rec}
    with pytest.raises(ManifestError, match="nested too deeply"):
        manifest.parse(_with_entry_line(_line(record=rec)))


def test_is_manifest() -> None:
    assert manifest.is_manifest(sample().render()[:20])
    assert not manifest.is_manifest(b"\x08\x00\x00\x00\x00\x00\x00\x00{}")
