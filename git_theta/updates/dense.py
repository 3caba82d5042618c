"""`dense`: the whole tensor, byte-grouped and zstd-compressed in one object."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

from git_theta import codec, dtypes, parallel
from git_theta.errors import ObjectCorruptError
from git_theta.store import Store, StoredObject
from git_theta.updates.base import Record, Resolver, UpdateType, ValueSpec


class DenseUpdate(UpdateType):
    name = "dense"

    @staticmethod
    def record(obj: StoredObject) -> dict[str, object]:
        return {"type": "dense", "oid": obj.oid, "size": obj.size}

    def chunks(
        self, record: Record, spec: ValueSpec, store: Store, resolve: Resolver
    ) -> Iterator[bytes | memoryview]:
        yield from read_value(store, record["oid"], spec)


def store_value(store: Store, data: memoryview, group: int) -> StoredObject:
    """Encode `data` into the store, chunks compressed in parallel."""
    with store.writer() as w:
        w.write(codec.header(len(data), group))
        for frame in parallel.ordered_map(
            lambda c: codec.encode_chunk(c, group), codec.chunks(data, group)
        ):
            w.write(frame)
        return w.commit()


def read_value(store: Store, oid: str, spec: ValueSpec) -> Iterator[bytes | memoryview]:
    """Decode object `oid` chunk by chunk (verified, decompressed in parallel).

    The frames already decoded are released from resident memory as the reader moves on,
    so several large objects read side by side (a merge) do not each stay mapped whole.
    """
    with store.open_mapped(oid, param=spec.name, path=spec.path) as mapped:
        try:
            dec = codec.Decoder(mapped.view)
            want = dtypes.nbytes(spec.dtype, spec.shape)
            if dec.size != want:
                # checked before decoding: a hostile object could expand far beyond the value
                raise codec.CodecError(
                    f"holds {dec.size} bytes, {spec.dtype}{list(spec.shape)} needs {want}"
                )
            ends: deque[int] = deque()  # where each frame handed to the pool ends

            def frames() -> Iterator[tuple[memoryview, int]]:
                for frame, size, end in dec.spans():
                    ends.append(end)
                    yield frame, size

            for raw in parallel.ordered_map(
                lambda fw: codec.decode_frame(fw[0], fw[1], dec.group), frames()
            ):
                done = ends.popleft()
                yield raw
                mapped.release(done)
        except codec.CodecError as exc:
            raise ObjectCorruptError(oid, str(exc), param=spec.name, path=spec.path) from None
