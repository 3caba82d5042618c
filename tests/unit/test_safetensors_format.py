"""The streaming safetensors parser: split/join round trips, bounded look-ahead, bad files."""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Mapping, Sequence

import numpy as np
import pytest
from safetensors.numpy import save

from git_theta.checkpoints.base import Sink, SkeletonPart, TensorPart
from git_theta.checkpoints.safetensors_format import SafetensorsFormat, parse_header
from git_theta.errors import CheckpointError
from git_theta.streams import ByteSource

FMT = SafetensorsFormat()


class CountingReader:
    """A raw stream that remembers how far it has been read."""

    def __init__(self, data: bytes, step: int = 1 << 16) -> None:
        self.data = data
        self.pos = 0
        self.step = step

    def readinto(self, buf: memoryview) -> int:
        n = min(len(buf), self.step, len(self.data) - self.pos)
        buf[:n] = self.data[self.pos : self.pos + n]
        self.pos += n
        return n


class DictPayloads:
    def __init__(self, tensors: Mapping[str, bytes]) -> None:
        self.tensors = tensors

    def prefetch(self, names: Sequence[str]) -> None:
        pass

    def write(self, name: str, out: Sink) -> None:
        out.write(self.tensors[name])

    def read(self, name: str) -> bytes:
        return self.tensors[name]


def split_all(data: bytes) -> tuple[dict[str, bytes], bytes]:
    tensors: dict[str, bytes] = {}
    skeleton = b""
    for part in FMT.split(ByteSource(io.BytesIO(data)), "m.safetensors"):
        if isinstance(part, TensorPart):
            tensors[part.spec.name] = bytes(part.data)
        else:
            assert isinstance(part, SkeletonPart)
            skeleton = part.data
    return tensors, skeleton


def rebuild(data: bytes) -> bytes:
    tensors, skeleton = split_all(data)
    specs = {
        p.spec.name: p.spec
        for p in FMT.split(ByteSource(io.BytesIO(data)), None)
        if isinstance(p, TensorPart)
    }
    out = io.BytesIO()
    FMT.join(skeleton, specs, DictPayloads(tensors), out)
    return out.getvalue()


def numpy_checkpoint() -> bytes:
    rng = np.random.default_rng(0)
    tensors = {
        "f64": rng.standard_normal((3, 4)),
        "f32": rng.standard_normal((5,)).astype(np.float32),
        "f16": rng.standard_normal((2, 2, 2)).astype(np.float16),
        "i8": np.array([-128, 0, 127], dtype=np.int8),
        "i16": np.array([-(1 << 15), 7], dtype=np.int16),
        "i32": np.array([[1, -2], [3, -4]], dtype=np.int32),
        "i64": np.array([-(1 << 62)], dtype=np.int64),
        "u8": np.arange(256, dtype=np.uint8),
        "u16": np.array([65535], dtype=np.uint16),
        "u32": np.array([1 << 31], dtype=np.uint32),
        "u64": np.array([(1 << 64) - 1], dtype=np.uint64),
        "bool": np.array([True, False, True]),
        "scalar": np.array(3.5, dtype=np.float32),
        "empty": np.zeros((0, 3), dtype=np.float32),
    }
    return save(tensors, metadata={"format": "np", "note": "ünïcode"})


def test_numpy_checkpoint_splits_and_joins_byte_identical() -> None:
    data = numpy_checkpoint()
    tensors, _ = split_all(data)
    assert tensors["scalar"] == np.array(3.5, dtype=np.float32).tobytes()
    assert tensors["empty"] == b""
    assert tensors["u64"] == b"\xff" * 8
    assert rebuild(data) == data


def test_torch_bf16_and_fp8_split_and_join_byte_identical() -> None:
    torch = pytest.importorskip("torch")
    from safetensors.torch import save as tsave

    g = torch.Generator().manual_seed(0)
    tensors = {
        "bf16": torch.randn(7, 3, generator=g).to(torch.bfloat16),
        "e4m3": torch.randn(16, generator=g).to(torch.float8_e4m3fn),
        "e5m2": torch.randn(16, generator=g).to(torch.float8_e5m2),
    }
    data = tsave(tensors, metadata={"framework": "pt"})
    header = json.loads(data[8 : 8 + struct.unpack("<Q", data[:8])[0]])
    assert {header[k]["dtype"] for k in tensors} == {"BF16", "F8_E4M3", "F8_E5M2"}
    assert rebuild(data) == data


def test_parser_reads_at_most_one_tensor_ahead() -> None:
    rng = np.random.default_rng(1)
    tensors = {f"t{i:02d}": rng.standard_normal(10_000 + i).astype(np.float32) for i in range(12)}
    data = save(tensors)
    (hlen,) = struct.unpack("<Q", data[:8])
    layout = parse_header(data[8 : 8 + hlen], None)
    raw = CountingReader(data)
    parts = FMT.split(ByteSource(raw), None)
    for (_start, end, spec), part in zip(layout, parts, strict=False):
        assert isinstance(part, TensorPart) and part.spec == spec
        # when tensor k is handed out, nothing past its last byte has been read
        assert raw.pos <= 8 + hlen + end
        assert bytes(part.data) == tensors[spec.name].tobytes()


# Peak resident memory of this process image. Not ru_maxrss: after a fork/exec Linux folds
# the parent's high-water mark into it (a pytest run that grew to 500 MB shows 500 MB here).
PEAK = """
def peak_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) // 1024
    raise RuntimeError("no VmHWM in /proc/self/status")
"""

STREAM_SCRIPT = (
    PEAK
    + """
import json, struct
from git_theta.checkpoints.base import TensorPart
from git_theta.checkpoints.safetensors_format import SafetensorsFormat
from git_theta.streams import ByteSource

MB = 1 << 20
COUNT, SIZE = 64, 4 * MB  # a 256 MiB checkpoint of 4 MiB tensors, generated on the fly
header = {f"t{i:02d}": {"dtype": "U8", "shape": [SIZE], "data_offsets": [i * SIZE, (i + 1) * SIZE]}
          for i in range(COUNT)}
raw = json.dumps(header).encode()
head = struct.pack("<Q", len(raw)) + raw

class Generated:
    def __init__(self):
        self.pos = 0
        self.total = len(head) + COUNT * SIZE
    def readinto(self, buf):
        n = min(len(buf), 1 << 16, self.total - self.pos)
        if self.pos < len(head):
            n = min(n, len(head) - self.pos)
            buf[:n] = head[self.pos:self.pos + n]
        else:
            k = (self.pos - len(head)) // SIZE
            n = min(n, len(head) + (k + 1) * SIZE - self.pos)
            buf[:n] = bytes([k]) * n
        self.pos += n
        return n

before = peak_mb()
for part in SafetensorsFormat().split(ByteSource(Generated()), None):
    if isinstance(part, TensorPart):
        k = int(part.spec.name[1:])
        assert part.data[0] == k and part.data[-1] == k, part.spec.name
print(peak_mb() - before)
"""
)


def test_memory_stays_near_the_largest_tensor() -> None:
    """Peak resident memory while splitting a 256 MiB stream of 4 MiB tensors grows by a
    few tensors, not by the file (measured in a fresh interpreter)."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", STREAM_SCRIPT], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    grown_mb = int(proc.stdout.strip())
    assert grown_mb < 24, f"resident memory grew by {grown_mb} MiB for 4 MiB tensors"


def _file(header: object, body: bytes = b"") -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + body


GOOD = {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}


BAD_CASES = [
    (b"\x10\x00\x00", "header is incomplete"),
    (_file(GOOD)[:20], "header is incomplete"),
    (_file(GOOD, b"\0" * 5), "tensor a is missing 3 of its 8 bytes"),
    (_file(GOOD, b"\0" * 9), "1 unexpected bytes after the last tensor"),
    (struct.pack("<Q", 1 << 40) + b"{}", "exceeds 100 MB"),
    (struct.pack("<Q", 3) + b"{\xff}", "not valid JSON"),
    (_file([1, 2]), "not a JSON object"),
    (
        struct.pack("<Q", 20) + b'{"a": 1, "a": 2}    ',
        "duplicate key",
    ),
    (_file({"__metadata__": {"k": 1}}), "__metadata__"),
    (_file({"a": 3}), "entry is not an object"),
    (_file({"a": {**GOOD["a"], "dtype": "F4"}}, b"\0" * 8), "unsupported dtype"),
    (_file({"a": {**GOOD["a"], "dtype": ["F32"]}}, b"\0" * 8), "unsupported dtype"),
    (_file({"a": {**GOOD["a"], "shape": [-2]}}, b"\0" * 8), "bad shape"),
    (_file({"a": {**GOOD["a"], "shape": [1 << 30, 1 << 30]}}), "absurdly large"),
    (_file({"a": {**GOOD["a"], "data_offsets": [8, 0]}}), "bad data_offsets"),
    (_file({"a": {**GOOD["a"], "data_offsets": [0, 9]}}), "needs 8"),
    (
        _file({**GOOD, "b": {"dtype": "U8", "shape": [4], "data_offsets": [4, 8]}}),
        "overlaps",
    ),
    (_file({"a": {**GOOD["a"], "data_offsets": [4, 12]}}, b"\0" * 12), "hole"),
    (_file({"a": [[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]}), "entry is not an object"),
    (struct.pack("<Q", 60_000) + b"[" * 30_000 + b"]" * 30_000, "not valid JSON"),
]


@pytest.mark.parametrize(
    "data, fragment", BAD_CASES, ids=[f"{i}-{c[1]}" for i, c in enumerate(BAD_CASES)]
)
def test_bad_files_raise_checkpoint_error_naming_the_file(data: bytes, fragment: str) -> None:
    with pytest.raises(CheckpointError) as info:
        split_all(data)
    msg = str(info.value)
    assert msg.startswith("m.safetensors: ")
    assert fragment in msg
    assert "\n" not in msg


def test_sniff() -> None:
    assert FMT.sniff(numpy_checkpoint()[:4096])
    assert not FMT.sniff(b"git-theta-manifest 1\n")
    assert not FMT.sniff(b"\x02\x00\x00\x00\x00\x00\x00\x00[]")
    assert not FMT.sniff(b"")


CLAIM_SCRIPT = (
    PEAK
    + """
import io, json, struct, sys
from git_theta.checkpoints.safetensors_format import SafetensorsFormat
from git_theta.errors import CheckpointError
from git_theta.streams import ByteSource
n = int(sys.argv[1])
h = json.dumps({"a": {"dtype": "U8", "shape": [n], "data_offsets": [0, n]}}).encode()
data = struct.pack("<Q", len(h)) + h + b"\\0" * 100
try:
    for _ in SafetensorsFormat().split(ByteSource(io.BytesIO(data)), "m.safetensors"):
        pass
except CheckpointError as exc:
    print(str(exc))
print(peak_mb())
"""
)


@pytest.mark.parametrize("claim", [1 << 30, 1 << 39])
def test_a_header_claiming_a_huge_tensor_costs_only_what_the_file_holds(claim: int) -> None:
    """A 100-byte file whose header claims a 1 GiB (or 512 GiB) tensor: a clear error, and
    memory proportional to the bytes that really arrived, not to the claim."""
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-c", CLAIM_SCRIPT, str(claim)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    message, rss_mb = proc.stdout.splitlines()
    assert message.startswith("m.safetensors: ")
    assert "tensor a" in message
    assert int(rss_mb) < 300, f"{rss_mb} MB resident for a 100-byte file"
