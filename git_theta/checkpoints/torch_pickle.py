"""Reading the pickle of a torch.save file without torch and without running any code.

The unpickler resolves globals only from an allow-list no wider than torch's own
`weights_only=True` (dense tensor rebuild functions, parameters, OrderedDict, storage and
dtype names, torch.Size, torch.device, and the builtins pickle protocol 2 needs for bytes,
sets and complex numbers). Each allowed global becomes an inert stand-in created for this
one load: calling it builds a plain description (TensorRef, StorageRef, dict, tuple, ...)
and nothing else. Any other global is refused. The pickle itself is kept verbatim by the
format, so non-tensor leaves need no faithful reconstruction here, only tensors and the
containers that lead to them.
"""

from __future__ import annotations

import io
import math
import pickle
import pickletools
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from git_theta import dtypes
from git_theta.errors import CheckpointError

# torch dtype attribute -> safetensors dtype name (None: a torch dtype git-theta cannot store)
TORCH_DTYPES: dict[str, str | None] = {
    "float64": "F64",
    "double": "F64",
    "float32": "F32",
    "float": "F32",
    "float16": "F16",
    "half": "F16",
    "bfloat16": "BF16",
    "float8_e4m3fn": "F8_E4M3",
    "float8_e5m2": "F8_E5M2",
    "int64": "I64",
    "long": "I64",
    "int32": "I32",
    "int": "I32",
    "int16": "I16",
    "short": "I16",
    "int8": "I8",
    "uint8": "U8",
    "bool": "BOOL",
    "uint16": "U16",
    "uint32": "U32",
    "uint64": "U64",
    "complex64": "C64",
    "cfloat": "C64",
    "complex128": "C128",
    "cdouble": "C128",
    "float8_e4m3fnuz": None,
    "float8_e5m2fnuz": None,
    "float8_e8m0fnu": None,
    "float4_e2m1fn_x2": None,
    "complex32": None,
    "chalf": None,
    "qint8": None,
    "quint8": None,
    "qint32": None,
    "quint4x2": None,
    "quint2x4": None,
    **{f"uint{b}": None for b in range(1, 8)},
    **{f"int{b}": None for b in range(1, 8)},
}

# legacy typed storage classes (module torch or torch.cuda) -> element dtype
STORAGE_TYPES: dict[str, str | None] = {
    "DoubleStorage": "F64",
    "FloatStorage": "F32",
    "HalfStorage": "F16",
    "BFloat16Storage": "BF16",
    "LongStorage": "I64",
    "IntStorage": "I32",
    "ShortStorage": "I16",
    "CharStorage": "I8",
    "ByteStorage": "U8",
    "BoolStorage": "BOOL",
    "ComplexFloatStorage": "C64",
    "ComplexDoubleStorage": "C128",
    "QInt8Storage": None,
    "QUInt8Storage": None,
    "QInt32Storage": None,
    "QUInt4x2Storage": None,
    "QUInt2x4Storage": None,
}

# Tensor kinds torch can pickle that carry no dense storage git-theta can version.
UNSUPPORTED_REBUILDS = {
    "_rebuild_sparse_tensor": "a sparse tensor",
    "_rebuild_sparse_csr_tensor": "a sparse tensor",
    "_rebuild_qtensor": "a quantized tensor",
    "_rebuild_nested_tensor": "a nested tensor",
    "_rebuild_wrapper_subclass": "a tensor subclass",
    "_rebuild_device_tensor_from_numpy": "a device tensor",
    "_rebuild_device_tensor_from_cpu_tensor": "a device tensor",
    "_rebuild_mkldnn_tensor": "an mkldnn tensor",
    "_rebuild_xla_tensor": "an XLA tensor",
    "_rebuild_mtia_tensor": "an MTIA tensor",
}

MAX_DIMS = 64
MAX_TUPLE_DEPTH = 100
_KEY = re.compile(r"[0-9A-Za-z_]{1,64}")  # torch writes decimal numbers


class _Refused(Exception):
    """Raised inside the unpickler; turned into a CheckpointError naming the file."""


class _Inert:
    """Base of every stand-in: pickle's BUILD opcode may not alter one."""

    __slots__ = ()

    def __setstate__(self, state: object) -> None:
        raise _Refused(f"pickle tries to set state on {self!r}")


class DTypeRef(_Inert):
    __slots__ = ("dtype", "torch_name")

    def __init__(self, torch_name: str, dtype: str | None) -> None:
        self.torch_name = torch_name
        self.dtype = dtype

    def __repr__(self) -> str:
        return f"torch.{self.torch_name}"


class StorageType(_Inert):
    """A storage class named in a persistent id: typed (element dtype known) or untyped."""

    __slots__ = ("dtype", "qualname", "untyped")

    def __init__(self, qualname: str, dtype: str | None, untyped: bool) -> None:
        self.qualname = qualname
        self.dtype = dtype
        self.untyped = untyped

    def __repr__(self) -> str:
        return self.qualname


class StorageRef(_Inert):
    """One storage (one zip member `data/<key>`). For an untyped storage `numel` counts
    bytes and `dtype` is set by the first tensor that views it."""

    __slots__ = ("dtype", "key", "numel", "untyped")

    def __init__(self, key: str, dtype: str | None, numel: int, untyped: bool) -> None:
        self.key = key
        self.dtype = dtype
        self.numel = numel
        self.untyped = untyped

    def __repr__(self) -> str:
        return f"<storage {self.key}>"

    def elements(self) -> int:
        """Element count in the storage's dtype (set once a tensor has viewed it)."""
        if not self.untyped:
            return self.numel
        return self.numel // dtypes.get(self.dtype or "U8").itemsize

    @property
    def nbytes(self) -> int:
        if self.untyped:
            return self.numel
        return self.numel * dtypes.get(self.dtype or "U8").itemsize


class TensorRef(_Inert):
    __slots__ = ("dtype", "index", "offset", "shape", "storage", "stride")

    def __init__(
        self,
        index: int,
        storage: StorageRef,
        offset: int,
        shape: tuple[int, ...],
        stride: tuple[int, ...],
        dtype: str,
    ) -> None:
        self.index = index
        self.storage = storage
        self.offset = offset
        self.shape = shape
        self.stride = stride
        self.dtype = dtype

    def __repr__(self) -> str:
        return f"<tensor {self.index}>"

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    def is_contiguous(self) -> bool:
        expected = 1
        for size, stride in zip(reversed(self.shape), reversed(self.stride), strict=True):
            if size != 1 and stride != expected:
                return False
            expected *= size
        return True

    def covers_storage(self) -> bool:
        """True when this tensor is exactly its storage: offset 0, contiguous, same size."""
        return self.offset == 0 and self.numel == self.storage.elements() and self.is_contiguous()


class MetaTensorRef(_Inert):
    """A tensor on the meta device: shape and dtype only, no data."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<meta tensor>"


class DeviceRef(_Inert):
    __slots__ = ("spec",)

    def __init__(self, spec: str) -> None:
        self.spec = spec

    def __repr__(self) -> str:
        return f"device({self.spec})"


class TensorClass(_Inert):
    """torch.Tensor or torch.nn.Parameter named as a class (for _rebuild_from_type_v2)."""

    __slots__ = ("qualname",)

    def __init__(self, qualname: str) -> None:
        self.qualname = qualname

    def __repr__(self) -> str:
        return self.qualname

    def __call__(self, *args: object) -> object:
        raise _Refused(f"pickle constructs {self.qualname} directly")


class StateDict(dict):  # type: ignore[type-arg]
    """What collections.OrderedDict / Counter become: a dict that may carry attributes
    (state dicts carry `_metadata`), which pickle's BUILD sets on the instance."""


class Global(_Inert):
    """An allowed global: calling it runs a small pure function of plain data."""

    __slots__ = ("fn", "qualname")

    def __init__(self, qualname: str, fn: Callable[..., object]) -> None:
        self.qualname = qualname
        self.fn = fn

    def __repr__(self) -> str:
        return self.qualname

    def __call__(self, *args: object, **kwargs: object) -> object:
        if kwargs:
            raise _Refused(f"{self.qualname} called with keyword arguments")
        return self.fn(*args)


@dataclass
class Loaded:
    """The outcome of reading a pickle: its root object, every tensor and storage in order."""

    root: object
    tensors: list[TensorRef] = field(default_factory=list)
    storages: dict[str, StorageRef] = field(default_factory=dict)


def _int(value: object, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise _Refused(f"{what} is not a non-negative integer: {value!r}")
    return value


def _dims(value: object, what: str) -> tuple[int, ...]:
    if not isinstance(value, tuple) or len(value) > MAX_DIMS:
        raise _Refused(f"{what} is not a tuple of at most {MAX_DIMS} integers")
    return tuple(_int(v, what) for v in value)


class _Reader(pickle.Unpickler):
    def __init__(self, data: bytes) -> None:
        super().__init__(io.BytesIO(data))
        self.out = Loaded(root=None)
        self.globals = self._allowed()

    # -- what the pickle may name ------------------------------------------------------------

    def _allowed(self) -> dict[tuple[str, str], object]:
        g: dict[tuple[str, str], object] = {}

        def fn(module: str, name: str, f: Callable[..., object]) -> None:
            g[(module, name)] = Global(f"{module}.{name}", f)

        fn("collections", "OrderedDict", self._mapping)
        fn("collections", "Counter", self._mapping)
        fn("torch._utils", "_rebuild_tensor", self._rebuild_v1)
        fn("torch._utils", "_rebuild_tensor_v2", self._rebuild_v2)
        fn("torch._utils", "_rebuild_tensor_v3", self._rebuild_v3)
        fn("torch._utils", "_rebuild_parameter", self._parameter)
        fn("torch._utils", "_rebuild_parameter_with_state", self._parameter)
        fn("torch._utils", "_rebuild_meta_tensor_no_storage", lambda *a: MetaTensorRef())
        fn("torch._tensor", "_rebuild_from_type_v2", self._from_type)
        fn("torch", "Size", lambda dims=(): _dims(dims, "torch.Size"))
        fn("torch", "device", self._device)
        for mod in ("builtins", "__builtin__"):
            fn(mod, "set", lambda items=(): set(self._items(items)))
            fn(mod, "frozenset", lambda items=(): frozenset(self._items(items)))
            fn(mod, "bytearray", self._bytearray)
            fn(mod, "complex", self._complex)
        fn("_codecs", "encode", self._encode)
        for qual in ("torch.Tensor", "torch.nn.parameter.Parameter", "torch.nn.Parameter"):
            module, _, name = qual.rpartition(".")
            g[(module, name)] = TensorClass(qual)
        for name, dt in TORCH_DTYPES.items():
            g[("torch", name)] = DTypeRef(name, dt)
        for name, dt in STORAGE_TYPES.items():
            for module in ("torch", "torch.cuda"):
                g[(module, name)] = StorageType(f"{module}.{name}", dt, untyped=False)
        for module in ("torch", "torch.storage"):
            g[(module, "UntypedStorage")] = StorageType(f"{module}.UntypedStorage", None, True)
        return g

    def find_class(self, module: str, name: str) -> Any:
        found = self.globals.get((module, name))
        if found is not None:
            return found
        if module == "torch._utils" and name in UNSUPPORTED_REBUILDS:
            raise _Refused(
                f"holds {UNSUPPORTED_REBUILDS[name]} ({module}.{name}); git-theta versions "
                "dense tensors only: convert it to a dense tensor before saving"
            )
        raise _Refused(
            f"refuses to load code: the pickle names {module}.{name}, which is not a tensor, "
            "storage or plain container"
        )

    def persistent_load(self, pid: Any) -> Any:
        if not isinstance(pid, tuple) or len(pid) != 5 or pid[0] != "storage":
            raise _Refused(f"unknown persistent id {pid!r:.80}")
        _, typ, key, _location, numel = pid
        if not isinstance(typ, StorageType):
            raise _Refused(f"persistent id names {typ!r:.80}, not a storage type")
        if not isinstance(key, str) or not _KEY.fullmatch(key):
            raise _Refused(f"bad storage key {key!r:.80}")
        numel = _int(numel, f"size of storage {key}")
        if typ.dtype is None and not typ.untyped:
            raise _Refused(f"storage {key} is a quantized storage ({typ.qualname})")
        known = self.out.storages.get(key)
        if known is None:
            known = StorageRef(key, typ.dtype, numel, typ.untyped)
            self.out.storages[key] = known
        elif (known.untyped, known.numel) != (typ.untyped, numel) or (
            not typ.untyped and known.dtype != typ.dtype
        ):
            raise _Refused(f"storage {key} is described two different ways")
        return known

    # -- the stand-ins' behaviour ------------------------------------------------------------

    def _mapping(self, items: object = None) -> StateDict:
        d = StateDict()
        if items is not None:
            if isinstance(items, dict):
                d.update(items)
            else:
                for pair in self._items(items):
                    if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                        raise _Refused("OrderedDict built from something that is not pairs")
                    d[pair[0]] = pair[1]
        return d

    @staticmethod
    def _items(items: object) -> list[object]:
        if not isinstance(items, (list, tuple, set, frozenset)):
            raise _Refused(f"collection built from {type(items).__name__}")
        return list(items)

    @staticmethod
    def _bytearray(data: object = b"", encoding: object = None) -> bytearray:
        if isinstance(data, bytes) and encoding is None:
            return bytearray(data)
        if isinstance(data, str) and encoding in ("latin-1", "latin1"):
            return bytearray(data, "latin-1")
        raise _Refused("bytearray built from something other than bytes")

    @staticmethod
    def _complex(real: object = 0.0, imag: object = 0.0) -> complex:
        if not isinstance(real, (int, float)) or not isinstance(imag, (int, float)):
            raise _Refused("complex built from something other than numbers")
        return complex(real, imag)

    @staticmethod
    def _encode(text: object, encoding: object = "utf-8") -> bytes:
        if isinstance(text, str) and encoding in ("latin1", "latin-1"):
            return text.encode("latin-1")
        raise _Refused("_codecs.encode used other than for protocol-2 bytes")

    @staticmethod
    def _device(kind: object, index: object = None) -> DeviceRef:
        if not isinstance(kind, str) or not (index is None or isinstance(index, int)):
            raise _Refused("torch.device built from something other than a name")
        return DeviceRef(kind if index is None else f"{kind}:{index}")

    def _tensor(
        self, storage: object, offset: object, size: object, stride: object, dtype: str | None
    ) -> TensorRef:
        if not isinstance(storage, StorageRef):
            raise _Refused(f"tensor rebuilt from {storage!r:.80}, not a storage")
        shape = _dims(size, "tensor size")
        strides = _dims(stride, "tensor stride")
        if len(strides) != len(shape):
            raise _Refused("tensor size and stride differ in length")
        off = _int(offset, "tensor storage offset")
        if dtype is None:
            dtype = storage.dtype
        if dtype is None:
            raise _Refused(f"tensor on untyped storage {storage.key} has no dtype")
        if storage.untyped:
            if storage.dtype is None:
                storage.dtype = dtype
            itemsize = dtypes.get(dtype).itemsize
            if storage.numel % itemsize:
                raise _Refused(
                    f"storage {storage.key} holds {storage.numel} bytes, not whole {dtype} items"
                )
        if storage.dtype != dtype:
            raise _Refused(f"storage {storage.key} is viewed as both {storage.dtype} and {dtype}")
        t = TensorRef(len(self.out.tensors), storage, off, shape, strides, dtype)
        if t.numel:
            last = off + sum((n - 1) * s for n, s in zip(shape, strides, strict=True))
            if last >= storage.elements():
                raise _Refused(f"a tensor reads past the end of storage {storage.key}")
        if math.prod(shape) > dtypes.MAX_ELEMENTS:
            raise _Refused("a tensor is absurdly large")
        self.out.tensors.append(t)
        return t

    def _rebuild_v1(self, storage: object, offset: object, size: object, stride: object) -> object:
        return self._tensor(storage, offset, size, stride, None)

    def _rebuild_v2(
        self,
        storage: object,
        offset: object,
        size: object,
        stride: object,
        requires_grad: object = False,
        hooks: object = None,
        metadata: object = None,
    ) -> object:
        return self._tensor(storage, offset, size, stride, None)

    def _rebuild_v3(
        self,
        storage: object,
        offset: object,
        size: object,
        stride: object,
        requires_grad: object,
        hooks: object,
        dtype: object,
        metadata: object = None,
    ) -> object:
        if not isinstance(dtype, DTypeRef):
            raise _Refused(f"tensor dtype {dtype!r:.80} is not a torch dtype")
        if dtype.dtype is None:
            raise _Refused(f"a tensor has dtype {dtype!r}, which git-theta cannot store")
        return self._tensor(storage, offset, size, stride, dtype.dtype)

    @staticmethod
    def _parameter(data: object, *rest: object) -> object:
        if not isinstance(data, (TensorRef, MetaTensorRef)):
            raise _Refused("a parameter wraps something other than a tensor")
        return data

    @staticmethod
    def _from_type(func: object, new_type: object, args: object, state: object = None) -> object:
        if not isinstance(func, Global) or not isinstance(new_type, TensorClass):
            raise _Refused("_rebuild_from_type_v2 used on something other than a tensor")
        if not isinstance(args, tuple):
            raise _Refused("_rebuild_from_type_v2 without an argument tuple")
        result = func(*args)
        if not isinstance(result, (TensorRef, MetaTensorRef)):
            raise _Refused("_rebuild_from_type_v2 did not rebuild a tensor")
        return result


_MARK = -1
_TUPLE_OPS = {"TUPLE", "TUPLE1", "TUPLE2", "TUPLE3", "EMPTY_TUPLE"}


def check_tuple_nesting(data: bytes, limit: int = MAX_TUPLE_DEPTH) -> None:
    """Refuse tuples nested deeper than `limit` before unpickling: CPython 3.11 hashes a
    tuple recursively without a recursion guard, so a dict key nested a million tuples
    deep would crash the process. Simulates pickle's stack, tracking tuple depth only."""
    stack: list[int] = []
    memo: dict[int, int] = {}
    for op, arg, _pos in pickletools.genops(data):
        before, after = op.stack_before, op.stack_after
        popped: list[int] = []
        if pickletools.markobject in before:
            while stack and stack[-1] != _MARK:
                popped.append(stack.pop())
            if not stack:
                raise _Refused(f"pickle opcode {op.name} without a mark")
            stack.pop()
            for _ in range(before.index(pickletools.markobject)):
                popped.append(stack.pop())
        else:
            for _ in before:
                popped.append(stack.pop())
        if op.name in _TUPLE_OPS:
            depth = 1 + max(popped, default=0)
            if depth > limit:
                raise _Refused(f"the pickle nests tuples deeper than {limit} levels")
            stack.append(depth)
        elif op.name in ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"):
            key = len(memo) if op.name == "MEMOIZE" else int(arg)  # type: ignore[arg-type]
            memo[key] = stack[-1]
        elif op.name in ("GET", "BINGET", "LONG_BINGET"):
            stack.append(memo.get(int(arg), 0))  # type: ignore[arg-type]
        elif pickletools.markobject in after:
            stack.append(_MARK)
        else:
            stack.extend(0 for _ in after)


def load(data: bytes, path: str | None) -> Loaded:
    """Read a torch pickle into inert descriptions; CheckpointError for anything else."""
    try:
        with warnings.catch_warnings():  # genops warns about odd escapes in text opcodes
            warnings.simplefilter("ignore")
            check_tuple_nesting(data)
    except _Refused as exc:
        raise CheckpointError(path, str(exc)) from None
    except Exception as exc:  # genops rejects malformed opcodes; a short stack underflows
        raise CheckpointError(
            path, f"the pickle in this torch file is malformed ({type(exc).__name__}: {exc})"
        ) from None
    reader = _Reader(data)
    try:
        root = reader.load()
    except _Refused as exc:
        raise CheckpointError(path, str(exc)) from None
    except Exception as exc:  # malformed pickles raise all sorts; none of them may escape raw
        raise CheckpointError(
            path, f"the pickle in this torch file is malformed ({type(exc).__name__}: {exc})"
        ) from None
    reader.out.root = root
    return reader.out
