"""`git theta add PATH --update-type low-rank|ia3 --update-path FILE`: apply a side-loaded
patch (LoRA factors, IA3 vectors) to a tracked checkpoint and stage it as patch records.

The update file is any checkpoint format git-theta reads (safetensors, ...). Its names
follow either convention (docs/patches.md):

- PEFT: `base_model.model.<module>.lora_A.weight` / `.lora_B.weight` (optionally with the
  adapter name before `.weight`), `lora_embedding_A` / `lora_embedding_B` for embeddings,
  `<module>.ia3_l` for IA3; the parameter patched is `<module>.weight`. LoRA's scale is
  lora_alpha / r (lora_alpha / sqrt(r) with use_rslora, rank_pattern and alpha_pattern
  honoured) from `adapter_config.json` beside the update file, 1.0 without one;
  fan_in_fan_out applies the transposed product.
- plain: `<param>.A` (r, in), `<param>.B` (out, r) and optionally a one-element
  `<param>.scale`; `<param>.ia3` (or `<param>` itself) for IA3.

Everything is checked before anything is written: a bad update file changes nothing.
Then the working-tree file is cleaned as `git add` would (so unstaged edits are included),
the patched values are computed one parameter at a time, the new manifest (with low-rank /
ia3 records nesting their base records) is written into the store and the index, and the
working-tree file is rewritten by smudging that very manifest: what is on disk is exactly
what every later checkout rebuilds, and `git status` is clean.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from git_theta import arrays, dtypes, filters, git, manifest
from git_theta.checkpoints.base import TensorPart, TensorSpec
from git_theta.errors import UpdateError
from git_theta.manifest import Entry, Manifest
from git_theta.store import Store
from git_theta.streams import ByteSource
from git_theta.updates import choose
from git_theta.updates.base import Record, ValueSpec
from git_theta.updates.ia3 import IA3Update, apply_ia3
from git_theta.updates.incremental import Candidate, depth
from git_theta.updates.low_rank import LowRankUpdate, apply_low_rank, factor_shapes

UPDATE_TYPES = ("low-rank", "ia3")
PEFT_PREFIX = "base_model.model."
ADAPTER_CONFIG = "adapter_config.json"
_LORA_RE = re.compile(
    r"^(?P<module>.+)\.lora_(?P<emb>embedding_)?(?P<which>[AB])(\.[^.]+)?(\.weight)?$"
)
_IA3_RE = re.compile(r"^(?P<module>.+)\.ia3_l(\.[^.]+)?$")


@dataclass(frozen=True)
class Tensor:
    dtype: str
    shape: tuple[int, ...]
    data: bytes

    def floats(self) -> np.ndarray:
        return arrays.to_float(self.data, self.dtype, self.shape)


@dataclass(frozen=True)
class Patch:
    """One parameter's patch, ready to apply and to record."""

    param: str
    kind: str  # "low-rank" | "ia3"
    tensors: tuple[Tensor, ...]  # (A, B) or (vector,)
    rank: int = 0
    scale: float = 1.0
    transpose: bool = False
    axis: int = 0

    def apply(self, base: bytes, spec: TensorSpec) -> bytes:
        if self.kind == "low-rank":
            a, b = self.tensors
            return apply_low_rank(
                base, spec.dtype, spec.shape, a.floats(), b.floats(), self.scale, self.transpose
            )
        (v,) = self.tensors
        return apply_ia3(base, spec.dtype, spec.shape, v.floats().reshape(-1), self.axis)

    def candidate(self, base_record: Record) -> Candidate:
        if self.kind == "low-rank":
            a, b = self.tensors
            return LowRankUpdate.candidate(
                base_record, a.data, b.data, a.dtype, self.rank, self.scale, self.transpose
            )
        (v,) = self.tensors
        return IA3Update.candidate(base_record, v.data, v.dtype, self.axis)


@dataclass(frozen=True)
class AddResult:
    path: str
    kind: str
    params: tuple[str, ...]


# -- reading the update --------------------------------------------------------------------


def _open_checkpoint(path: Path) -> tuple[Any, ByteSource, Any]:
    f = open(path, "rb")  # noqa: SIM115 - the caller closes it
    src = ByteSource(f)
    head = src.peek(filters.SNIFF_BYTES)
    if manifest.is_manifest(head):
        f.close()
        raise UpdateError(
            f"{path} holds a git-theta manifest, not the checkpoint",
            hint=f"check it out first: `git checkout -- {path}`",
        )
    return f, src, filters.detect(head, str(path))


def read_tensors(path: Path) -> dict[str, Tensor]:
    """Every tensor of a (small) update file, by name."""
    try:
        f, src, fmt = _open_checkpoint(path)
    except FileNotFoundError:
        raise UpdateError(f"update file {path} does not exist") from None
    out: dict[str, Tensor] = {}
    with f:
        for part in fmt.split(src, str(path)):
            if isinstance(part, TensorPart):
                out[part.spec.name] = Tensor(part.spec.dtype, part.spec.shape, bytes(part.data))
    return out


def read_specs(path: Path) -> dict[str, TensorSpec]:
    """The tensors of a checkpoint, without keeping their values."""
    f, src, fmt = _open_checkpoint(path)
    with f:
        return {p.spec.name: p.spec for p in fmt.split(src, str(path)) if isinstance(p, TensorPart)}


def read_adapter_config(update_path: Path) -> dict[str, Any] | None:
    p = update_path.parent / ADAPTER_CONFIG
    if not p.is_file():
        return None
    try:
        cfg = json.loads(p.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise UpdateError(f"{p} is not valid JSON: {exc}") from None
    if not isinstance(cfg, dict):
        raise UpdateError(f"{p} is not a JSON object")
    return cfg


def _pattern_value(patterns: Any, module: str, default: Any) -> Any:
    """PEFT's rank_pattern / alpha_pattern: the first key that matches the module's name."""
    if isinstance(patterns, Mapping):
        for key, value in patterns.items():
            if re.fullmatch(rf"(.*\.)?{key}", module):
                return value
    return default


def peft_scale(cfg: Mapping[str, Any] | None, module: str, rank: int) -> float:
    if cfg is None:
        return 1.0
    r = _pattern_value(cfg.get("rank_pattern"), module, cfg.get("r", rank))
    alpha = _pattern_value(cfg.get("alpha_pattern"), module, cfg.get("lora_alpha", r))
    if not isinstance(r, (int, float)) or not isinstance(alpha, (int, float)) or r <= 0:
        raise UpdateError(f"{ADAPTER_CONFIG}: r and lora_alpha must be positive numbers")
    if r != rank:
        raise UpdateError(
            f"{module}: the factors have rank {rank} but {ADAPTER_CONFIG} says r = {r}"
        )
    return float(alpha / math.sqrt(r) if cfg.get("use_rslora") else alpha / r)


# -- matching names to parameters -------------------------------------------------------------


def _float_2d(param: str, spec: TensorSpec, kind: str) -> None:
    if not dtypes.get(spec.dtype).is_float:
        raise UpdateError(f"{param} is {spec.dtype}; a {kind} update needs a float parameter")
    if kind == "low-rank" and len(spec.shape) != 2:
        raise UpdateError(f"{param} has shape {list(spec.shape)}; low-rank needs a matrix")


def _factor(name: str, t: Tensor) -> Tensor:
    if not dtypes.get(t.dtype).is_float or len(t.shape) != 2:
        raise UpdateError(f"{name}: factors must be float matrices, not {t.dtype}{list(t.shape)}")
    return t


def low_rank_patches(
    tensors: Mapping[str, Tensor], specs: Mapping[str, TensorSpec], cfg: Mapping[str, Any] | None
) -> list[Patch]:
    groups: dict[str, dict[str, tuple[str, Tensor]]] = {}
    transposed: dict[str, bool] = {}
    modules: dict[str, str] = {}
    unmatched = []
    for name, t in tensors.items():
        key = name.removeprefix(PEFT_PREFIX)
        m = _LORA_RE.match(key)
        if m:
            module = m["module"]
            param = module + ".weight"
            which = m["which"]
            transposed[param] = bool(m["emb"]) or bool(cfg and cfg.get("fan_in_fan_out"))
            modules[param] = module
        else:
            plain = re.match(r"^(?P<param>.+)\.(?P<which>A|B|scale)$", name)
            if not plain or plain["param"] not in specs:
                unmatched.append(name)
                continue
            param, which = plain["param"], plain["which"]
            transposed.setdefault(param, False)
        if which in groups.setdefault(param, {}):
            raise UpdateError(f"two tensors give {which} for {param}: {groups[param][which][0]}")
        groups[param][which] = (name, t)
    _no_strangers(unmatched, "low-rank", "`<param>.A` / `<param>.B` or PEFT's lora_A / lora_B")
    patches = []
    for param, parts in sorted(groups.items()):
        spec = specs.get(param)
        if spec is None:
            names = ", ".join(n for n, _ in parts.values())
            raise UpdateError(f"{names} names no parameter of the checkpoint (no {param})")
        for which in ("A", "B"):
            if which not in parts:
                other = next(iter(parts.values()))[0]
                raise UpdateError(f"{other} has no matching {which} factor for {param}")
        _float_2d(param, spec, "low-rank")
        a, b = _factor(*parts["A"]), _factor(*parts["B"])
        rank = a.shape[0]
        want_a, want_b = factor_shapes(spec.shape, rank, transposed[param])
        if a.shape != want_a or b.shape != want_b or a.dtype != b.dtype:
            raise UpdateError(
                f"{param} is {list(spec.shape)}: factors must be A {list(want_a)} and "
                f"B {list(want_b)} of one dtype, not A {a.dtype}{list(a.shape)} "
                f"and B {b.dtype}{list(b.shape)}"
            )
        if "scale" in parts:
            st = parts["scale"][1]
            if dtypes.numel(st.shape) != 1 or not dtypes.get(st.dtype).is_float:
                raise UpdateError(f"{parts['scale'][0]} must hold a single float")
            scale = float(st.floats().reshape(-1)[0])
        elif param in modules:
            scale = peft_scale(cfg, modules[param], rank)
        else:
            scale = 1.0
        if not math.isfinite(scale):
            raise UpdateError(f"{param}: the scale {scale} is not finite")
        patches.append(Patch(param, "low-rank", (a, b), rank, scale, transposed[param]))
    return patches


def ia3_patches(tensors: Mapping[str, Tensor], specs: Mapping[str, TensorSpec]) -> list[Patch]:
    found: dict[str, tuple[str, Tensor, bool]] = {}
    unmatched = []
    for name, t in tensors.items():
        m = _IA3_RE.match(name.removeprefix(PEFT_PREFIX))
        if m:
            param, peft = m["module"] + ".weight", True
        elif name.endswith(".ia3") and name[: -len(".ia3")] in specs:
            param, peft = name[: -len(".ia3")], False
        elif name in specs:
            param, peft = name, False
        else:
            unmatched.append(name)
            continue
        if param in found:
            raise UpdateError(f"two tensors scale {param}: {found[param][0]} and {name}")
        found[param] = (name, t, peft)
    _no_strangers(unmatched, "ia3", "`<param>.ia3`, `<param>` or PEFT's `<module>.ia3_l`")
    patches = []
    for param, (name, t, _peft) in sorted(found.items()):
        spec = specs.get(param)
        if spec is None:
            raise UpdateError(f"{name} names no parameter of the checkpoint (no {param})")
        _float_2d(param, spec, "ia3")
        if not dtypes.get(t.dtype).is_float:
            raise UpdateError(f"{name} must be a float vector, not {t.dtype}")
        axis = _ia3_axis(name, t.shape, spec.shape)
        patches.append(Patch(param, "ia3", (t,), axis=axis))
    return patches


def _ia3_axis(name: str, vshape: tuple[int, ...], shape: tuple[int, ...]) -> int:
    """0 scales rows (output features), 1 scales columns (input features)."""
    wrong = UpdateError(
        f"{name} has shape {list(vshape)}, which scales neither the rows nor the columns of "
        f"a parameter of shape {list(shape)}",
        hint="give (out,) or (out, 1) to scale rows, (1, in) or (in,) to scale columns",
    )
    if len(shape) == 1:
        if dtypes.numel(vshape) != shape[0] or len(vshape) > 2:
            raise wrong
        return 0
    if len(shape) != 2:
        raise wrong
    out, inp = shape
    if len(vshape) == 2:
        if vshape == (out, 1):
            return 0
        if vshape == (1, inp):
            return 1
        raise wrong
    if len(vshape) == 1:
        if vshape[0] == out:
            return 0
        if vshape[0] == inp:
            return 1
    raise wrong


def _no_strangers(names: list[str], kind: str, expected: str) -> None:
    if names:
        shown = ", ".join(sorted(names)[:5]) + (" ..." if len(names) > 5 else "")
        raise UpdateError(
            f"{len(names)} tensor(s) of the update file match no parameter: {shown}",
            hint=f"a {kind} update file names tensors {expected}",
        )


def parse_update(kind: str, update_path: Path, specs: Mapping[str, TensorSpec]) -> list[Patch]:
    tensors = read_tensors(update_path)
    if not tensors:
        raise UpdateError(f"update file {update_path} holds no tensors")
    if kind == "low-rank":
        patches = low_rank_patches(tensors, specs, read_adapter_config(update_path))
    elif kind == "ia3":
        patches = ia3_patches(tensors, specs)
    else:
        raise UpdateError(f"unknown update type {kind!r}", hint=f"use one of {UPDATE_TYPES}")
    return patches


# -- applying and staging --------------------------------------------------------------------


def add(path: Path, kind: str, update_path: Path, cwd: Path | None = None) -> AddResult:
    """Apply the update in `update_path` to checkpoint `path`, rewrite it, stage the result."""
    path = Path(path).absolute()
    top = git.toplevel(cwd or path.parent)
    try:
        rel = path.resolve().relative_to(top.resolve()).as_posix()
    except ValueError:
        raise UpdateError(f"{path} is outside the repository at {top}") from None
    if not path.is_file():
        raise UpdateError(f"{rel} does not exist")
    if git.check_attr("filter", rel, cwd=top) != "theta":
        raise UpdateError(f"{rel} is not tracked by git-theta", hint=f"run `git theta track {rel}`")
    specs = read_specs(path)
    patches = parse_update(kind, Path(update_path), specs)
    store = Store(git.common_dir(top) / "theta")
    previous = filters.indexed_manifest(rel, cwd=str(top))
    with open(path, "rb") as f:
        current = manifest.parse(filters.clean(ByteSource(f), rel, store, previous=previous), rel)
    staged = _patched_manifest(store, current, patches, rel)
    text = staged.render()
    _rewrite(path, rel, text, store)
    git.stage_blob(
        rel, git.hash_object(text, cwd=top), git.index_mode(rel, cwd=top) or "100644", cwd=top
    )
    return AddResult(rel, kind, tuple(p.param for p in patches))


def _patched_manifest(store: Store, current: Manifest, patches: list[Patch], rel: str) -> Manifest:
    entries = current.by_name()
    for p in patches:
        e = entries[p.param]
        spec = TensorSpec(e.name, e.dtype, e.shape)
        base = b"".join(
            bytes(c)
            for c in filters.rebuild(store, e.record, ValueSpec(e.name, e.dtype, e.shape, rel))
        )
        base_record = e.record
        if depth(base_record) + 1 > max(1, choose.chain_max()):
            # keep checkouts bounded: the patch's base becomes a dense keyframe
            st = filters.CleanStats()
            base_record = filters._store_dense(store, memoryview(base), spec, e.hash, st)
        value = p.apply(base, spec)
        record, _, _ = p.candidate(base_record).commit(store)
        entries[p.param] = Entry(e.name, e.dtype, e.shape, filters.raw_hash(value), record)
    return manifest.build(
        current.format, current.skeleton_oid, current.skeleton_size, entries.values()
    )


def _rewrite(path: Path, rel: str, text: bytes, store: Store) -> None:
    """Replace the working-tree file with the checkpoint `text` describes, atomically."""
    mode = os.stat(path).st_mode & 0o7777
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".theta-tmp")
    try:
        with os.fdopen(fd, "wb", buffering=1 << 20) as out:
            filters.smudge(text, rel, store, out)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
