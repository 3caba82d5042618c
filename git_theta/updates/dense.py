"""`dense`: the whole tensor, byte-grouped and zstd-compressed in one object."""

from __future__ import annotations

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
    """Decode object `oid` chunk by chunk (verified, decompressed in parallel)."""
    with store.open_verified(oid, param=spec.name, path=spec.path) as view:
        try:
            dec = codec.Decoder(view)
            want = dtypes.nbytes(spec.dtype, spec.shape)
            if dec.size != want:
                # checked before decoding: a hostile object could expand far beyond the value
                raise codec.CodecError(
                    f"holds {dec.size} bytes, {spec.dtype}{list(spec.shape)} needs {want}"
                )
            yield from parallel.ordered_map(
                lambda fw: codec.decode_frame(fw[0], fw[1], dec.group), dec.frames()
            )
        except codec.CodecError as exc:
            raise ObjectCorruptError(oid, str(exc), param=spec.name, path=spec.path) from None
