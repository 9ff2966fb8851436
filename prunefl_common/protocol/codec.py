"""Messages of each kind to and from envelopes: tasks, results, statuses, rejects.

Kept values travel as float32 vectors ``v<i>``; dense importance as float32 arrays ``z<i>`` of their shape; a
mask (``m<param>``) or the added/removed positions of a mask change (``a<param>``/``r<param>``) as coded by
:mod:`prunefl_common.protocol.positions`. Full masks of one message hold at most
:data:`~prunefl_common.protocol.fields.MASK_ELEMENTS_PER_BYTE` elements per body byte (the encoder falls back to
bitmaps where delta coding would exceed it), so decoding never materialises masks out of proportion to the message.

Every ``encode_*`` has a ``*_nbytes`` twin that returns the length of what it would produce, computed by the same
code (the simulator's byte counts).
"""

from __future__ import annotations

import json
import math
import zlib
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from prunefl_common.mask_delta import MaskDelta
from prunefl_common.messages import (
    InitialPruneConfig,
    InitialPruneResult,
    MaskUpdate,
    SparseImportance,
    Task,
    TaskKind,
    TrainConfig,
    TrainResult,
)
from prunefl_common.protocol.envelope import (
    COMMON_FIELDS,
    PREFIX,
    Header,
    MsgKind,
    Tensors,
    common_header,
    container_header,
    envelope,
    envelope_nbytes,
    read_header,
    read_prefix,
)
from prunefl_common.protocol.fields import (
    DEFAULT_LIMITS,
    MASK_ELEMENTS_PER_BYTE,
    MAX_ELEMENTS,
    MAX_ID,
    MAX_INFO_BYTES,
    MAX_PARAMS,
    MAX_REASON_CHARS,
    Limits,
    ProtocolError,
    dumps,
    exact_keys,
    guarded,
    is_int,
    is_num,
    null_nan,
    read_bool,
    read_float,
    read_id,
    read_int,
    read_list,
    read_str,
    show,
)
from prunefl_common.protocol.positions import (
    check_positions,
    decode_indices,
    decode_mask,
    encode_positions,
    sorted_positions,
)
from prunefl_common.protocol.topics import valid_id
from prunefl_common.run_id import split_run

__all__ = [  # what wire.py re-exports
    "STATES", "Decoded", "RejectMsg", "StatusMsg", "decode", "encode_reject", "encode_result", "encode_status",
    "encode_task", "peek_header", "peek_model", "result_nbytes", "task_nbytes",
]

_Parts = tuple[MsgKind, dict[str, Any], dict[str, np.ndarray]]  # an envelope before it is built

STATES = ("online", "offline", "busy")


@dataclass
class StatusMsg:
    state: str  # "online" | "offline" | "busy"
    info: dict[str, Any]  # a JSON object of at most 64 KiB (n_samples, threads, profile, software version ...)


@dataclass
class RejectMsg:
    reason: str  # at most 4096 characters (longer ones are cut when encoded)
    needs_full_mask: bool
    # msg_id of the task it answers: the coordinator counts a REJECT only for a task it sent (None: an edge of
    # before this field, whose REJECT answers nothing the coordinator can check)
    task_id: str | None = None


@dataclass
class Decoded:
    header: Header
    body: Task | TrainResult | InitialPruneResult | StatusMsg | RejectMsg
    model: dict[str, Any] | None  # TASK only: the model description (spec_to_dict form) if the sender included it
    nbytes: int  # len(data)


# ---- configs ---------------------------------------------------------------------------------------------
# field -> (type, lo, hi); every field of TrainConfig and InitialPruneConfig has a rule
_CONFIG_RULES: dict[str, tuple[str, float, float]] = {
    "lr": ("float", 0.0, 1e6), "local_steps": ("int", 1, 10**6), "batch_size": ("int", 1, 65536),
    "momentum": ("float", 0.0, 1.0), "weight_decay": ("float", 0.0, 1e3),
    "collect_importance": ("bool", 0, 0), "upload_importance": ("bool", 0, 0),
    "importance_top": ("float_or_null", 0.0, 1e6),
    "costs": ("costs", 0.0, 1e9), "intercept": ("float", 0.0, 1e9), "n_batches": ("int", 1, 10**6),
    "reconfig_interval": ("int", 1, 10**6), "max_passes": ("int", 0, 10**7), "acc_threshold": ("float", 0.0, 1.0),
    "delta": ("float", 0.0, 1.0), "stop_change": ("float", 0.0, 1e6), "stop_count": ("int", 1, 10**6),
    "max_density": ("float_or_null", 0.0, 1.0), "seed": ("int", 0, 2**63 - 1),
    "masked_importance": ("bool", 0, 0),
}
# fields added after the first release: a message without one decodes to what its (older) sender meant, not to
# today's default (an old coordinator's initial pruning summed the dense gradient)
_ABSENT_MEANS: dict[str, Any] = {"masked_importance": False}
_CONFIGS: dict[str, type[TrainConfig] | type[InitialPruneConfig]] = {"train": TrainConfig,
                                                                      "initial_prune": InitialPruneConfig}
MAX_COSTS = 1024


def _config_from(d: Any, config_kind: str) -> TrainConfig | InitialPruneConfig:
    what = f"task config ({config_kind})"
    cls = _CONFIGS[config_kind]
    names = [f.name for f in fields(cls)]
    out: dict[str, Any] = {}
    if isinstance(d, dict):
        absent = {n: _ABSENT_MEANS[n] for n in names if n in _ABSENT_MEANS and n not in d}
        out.update(absent)
        names = [n for n in names if n not in absent]
    exact_keys(d, frozenset(names), what)
    for name in names:
        if name not in _CONFIG_RULES:
            raise ProtocolError(f"{what}: field {name!r} has no wire rule (the two sides run different versions?)")
        typ, lo, hi = _CONFIG_RULES[name]
        if typ == "float":
            out[name] = read_float(d, name, what, lo, hi)
        elif typ == "int":
            out[name] = read_int(d, name, what, int(lo), int(hi))
        elif typ == "bool":
            out[name] = read_bool(d, name, what)
        elif typ == "float_or_null":
            out[name] = None if d[name] is None else read_float(d, name, what, lo, hi)
        else:
            v = d[name]
            if not isinstance(v, list) or len(v) > MAX_COSTS or not all(
                    is_num(c) and math.isfinite(c) and lo <= c <= hi for c in v):
                raise ProtocolError(f"{what}: {name} must be a list of at most {MAX_COSTS} finite numbers in "
                                    f"[{lo}, {hi}]")
            out[name] = [float(c) for c in v]
    return cls(**out)


def _config_kind(task: Task) -> str:
    cfg = task.config
    want = InitialPruneConfig if task.kind == TaskKind.INITIAL_PRUNE else TrainConfig
    if type(cfg) is not want:
        raise ValueError(f"a {task.kind.value} task carries a {want.__name__}, not {type(cfg).__name__}")
    return "initial_prune" if want is InitialPruneConfig else "train"



def _param(p: Any) -> int:
    if not 0 <= int(p) < MAX_PARAMS:
        raise ValueError(f"parameter index {p} is outside 0..{MAX_PARAMS - 1}")
    return int(p)


class _MaskEncoder:
    """Full masks of one message: each the cheaper encoding, then bitmaps where the element budget needs them."""

    def __init__(self, tensors: dict[str, np.ndarray]) -> None:
        self.tensors = tensors
        self.flats: list[tuple[dict[str, Any], np.ndarray]] = []

    def entries(self, masks: dict[int, np.ndarray]) -> list[dict[str, Any]]:
        out = []
        for p in sorted(masks, key=int):
            m = np.asarray(masks[p], bool)
            if m.ndim < 1 or m.size < 1 or m.ndim > 8 or m.size > MAX_ELEMENTS:
                raise ValueError(f"mask of parameter {p}: shape {m.shape} (1-8 dimensions, 1..{MAX_ELEMENTS} entries)")
            flat = m.ravel()
            enc, arr = encode_positions(np.flatnonzero(flat), flat.size, flat)
            e = {"param": _param(p), "shape": [int(s) for s in m.shape], "enc": enc}
            self.tensors[f"m{e['param']}"] = arr
            self.flats.append((e, flat))
            out.append(e)
        return out

    def fit_budget(self) -> None:
        elements = sum(f.size for _, f in self.flats)
        floor = sum(t.nbytes for t in self.tensors.values())  # the body is larger: this is conservative
        for e, flat in sorted(self.flats, key=lambda ef: -ef[1].size):
            if elements <= MASK_ELEMENTS_PER_BYTE * floor:
                return
            if e["enc"] == "delta":
                name = f"m{e['param']}"
                floor -= self.tensors[name].nbytes
                self.tensors[name] = np.packbits(flat)
                floor += self.tensors[name].nbytes
                e["enc"] = "bitmap"


def _values(values: list[np.ndarray], prefix: str, tensors: dict[str, np.ndarray]) -> int:
    if len(values) > MAX_PARAMS:
        raise ValueError(f"{len(values)} value arrays (at most {MAX_PARAMS})")
    for i, v in enumerate(values):
        tensors[f"{prefix}{i}"] = np.asarray(v, np.float32).ravel()
    return len(values)


def _task_parts(task: Task, federation: str, sender: str, model: dict[str, Any] | None,
                sizes: dict[int, int] | None) -> _Parts:
    """(kind, header, tensors) of a TASK envelope (see :func:`encode_task`)."""
    config_kind = _config_kind(task)
    config = dumps(asdict(task.config))
    try:
        _config_from(json.loads(config), config_kind)
    except ProtocolError as e:
        raise ValueError(str(e)) from None
    h = common_header(MsgKind.TASK, federation, sender, task.round, task.mask.version)
    tensors: dict[str, np.ndarray] = {}
    masks = _MaskEncoder(tensors)
    mu = task.mask
    mask: dict[str, Any] = {"mode": "none"}
    if mu.full is not None and mu.delta is not None:
        raise ValueError("a MaskUpdate carries a full mask or a delta, not both")
    if mu.full is not None:
        mask = {"mode": "full", "entries": masks.entries(mu.full)}
    elif mu.delta is not None:
        d = mu.delta
        if d.version != mu.version:
            raise ValueError(f"the delta produces mask version {d.version}, the update says {mu.version}")
        entries = []
        for p in sorted(set(d.added) | set(d.removed), key=int):
            rec: dict[str, Any] = {"param": _param(p)}
            given = {key: np.asarray(table[p]).ravel() for key, table in (("added", d.added), ("removed", d.removed))
                     if p in table}
            top = max([int(x.max()) + 1 for x in given.values() if x.size] + [1])
            size = int(sizes[p]) if sizes is not None and p in sizes else top
            if not top <= size <= MAX_ELEMENTS:
                raise ValueError(f"mask delta of parameter {p}: index {top - 1} for a parameter of {size} weights")
            rec["size"] = size
            for key in ("added", "removed"):
                rec[key] = None
                if key in given:
                    enc, arr = encode_positions(sorted_positions(given[key], size, f"{key} of {p}"), size)
                    tensors[f"{key[0]}{rec['param']}"] = arr
                    rec[key] = enc
            entries.append(rec)
        mask = {"mode": "delta", "base_version": int(d.base_version), "entries": entries}
        if not -1 <= mask["base_version"] <= MAX_ID:
            raise ValueError(f"base_version {d.base_version} is outside -1..{MAX_ID}")
    n = _values(task.values, "v", tensors)
    masks.fit_budget()
    h.update(task_kind=task.kind.value, config_kind=config_kind, config=json.loads(config), n_values=n, mask=mask,
             model=model)
    return MsgKind.TASK, h, tensors


MAX_HALF_EXP = 200  # |exponent| of a float16 vector's power-of-two scale


def _half(z: np.ndarray) -> tuple[np.ndarray, int]:
    """``z`` (>= 0) as float16 times ``2**e``: the largest entry lands below 2**15, so the relative precision is
    float16's (2**-11) and entries below about 1e-12 of the largest underflow to zero (none of them can be chosen)."""
    z = np.asarray(z, np.float32).ravel()
    top = float(z.max()) if z.size else 0.0
    e = int(np.ceil(np.log2(top / 32768.0))) if top > 0 and np.isfinite(top) else 0
    if not -MAX_HALF_EXP <= e <= MAX_HALF_EXP:
        raise ValueError(f"importance of magnitude {top:g} cannot be scaled into float16")
    return np.ldexp(z, -e).astype(np.float16), e


def _unhalf(h: np.ndarray, e: int) -> np.ndarray:
    return np.ldexp(h.astype(np.float32), e).astype(np.float32)


def _sparse_importance_parts(z: SparseImportance, tensors: dict[str, np.ndarray]) -> dict[str, Any]:
    """Tensors ``zk<i>`` (z at kept positions), ``zp<p>`` (the top pruned z), each float16 with a power-of-two
    scale, and ``zx<p>`` (their positions, coded as masks are); the header lists the scales and the pruned parts
    with their parameter sizes."""
    if len(z.kept) > MAX_PARAMS:
        raise ValueError(f"{len(z.kept)} importance arrays (at most {MAX_PARAMS})")
    kept_exp = []
    for i, k in enumerate(z.kept):
        tensors[f"zk{i}"], e = _half(k)
        kept_exp.append(e)
    pruned = []
    for p in sorted(z.pruned_index, key=int):
        idx, vals = np.asarray(z.pruned_index[p]), np.asarray(z.pruned_z[p], np.float32).ravel()
        if idx.size != vals.size:
            raise ValueError(f"sparse importance of parameter {p}: {idx.size} positions, {vals.size} values")
        size = int(z.sizes[p])
        if not 1 <= size <= MAX_ELEMENTS:
            raise ValueError(f"sparse importance of parameter {p}: size {size} outside 1..{MAX_ELEMENTS}")
        enc, arr = encode_positions(sorted_positions(idx, size, f"pruned importance of {p}"), size)
        tensors[f"zp{_param(p)}"], e = _half(vals)
        tensors[f"zx{p}"] = arr
        pruned.append({"param": int(p), "size": size, "enc": enc, "exp": e})
    return {"kept_exp": kept_exp, "pruned": pruned}


def _result_parts(result: TrainResult | InitialPruneResult, federation: str, sender: str) -> _Parts:
    """(kind, header, tensors) of a RESULT envelope (see :func:`encode_result`)."""
    if not valid_id(result.client_id):
        raise ValueError(f"client_id {result.client_id!r} must be 1-64 characters of A-Z a-z 0-9 _ . -")
    h = common_header(MsgKind.RESULT, federation, sender, result.round, result.mask_version)
    tensors: dict[str, np.ndarray] = {}
    h.update(client_id=result.client_id, n_values=_values(result.values, "v", tensors),
             compute_s=null_nan(result.compute_s))
    if isinstance(result, TrainResult):
        shapes = None
        sparse = None
        if isinstance(result.importance, SparseImportance):
            sparse = _sparse_importance_parts(result.importance, tensors)
        elif result.importance is not None:
            shapes = []
            for i, z in enumerate(result.importance):
                tensors[f"z{i}"] = np.ascontiguousarray(z, np.float32)
                shapes.append([int(s) for s in tensors[f"z{i}"].shape])
            if len(shapes) > MAX_PARAMS:
                raise ValueError(f"{len(shapes)} importance arrays (at most {MAX_PARAMS})")
        h.update(result_kind="train", n_samples=int(result.n_samples), loss=null_nan(result.loss),
                 accuracy=null_nan(result.accuracy), importance=shapes)
        if sparse is not None:  # (a header without the key is a dense or no importance: older messages)
            h["importance_sparse"] = sparse
    else:
        masks = _MaskEncoder(tensors)
        h.update(result_kind="initial_prune", passes=int(result.passes), masks=masks.entries(result.masks),
                 kept_history=[[int(k) for k in row] for row in result.kept_history],
                 densities=[null_nan(float(d)) for d in result.densities],
                 train_accuracy=null_nan(result.train_accuracy))
        masks.fit_budget()
    return MsgKind.RESULT, h, tensors


def encode_task(task: Task, *, federation: str, sender: str, model: dict[str, Any] | None = None,
                sizes: dict[int, int] | None = None) -> bytes:
    """A TASK envelope. ``sizes`` (parameter -> number of weights) lets a mask change's positions go as a bitmap
    of the whole parameter when that is cheaper; without it a change is coded against its largest index + 1."""
    return envelope(*_task_parts(task, federation, sender, model, sizes))


def task_nbytes(task: Task, *, federation: str, sender: str, model: dict[str, Any] | None = None,
                sizes: dict[int, int] | None = None) -> int:
    """``len(encode_task(...))`` with the same arguments, without building the message."""
    return envelope_nbytes(*_task_parts(task, federation, sender, model, sizes))


def encode_result(result: TrainResult | InitialPruneResult, *, federation: str, sender: str) -> bytes:
    """A RESULT envelope; non-finite loss/accuracy/compute_s/densities travel as null (and decode as NaN)."""
    return envelope(*_result_parts(result, federation, sender))


def result_nbytes(result: TrainResult | InitialPruneResult, *, federation: str, sender: str) -> int:
    """``len(encode_result(...))`` with the same arguments, without building the message."""
    return envelope_nbytes(*_result_parts(result, federation, sender))


def encode_status(status: StatusMsg, *, federation: str, sender: str, round: int = -1,  # noqa: A002
                  mask_version: int = -1) -> bytes:
    if status.state not in STATES:
        raise ValueError(f"status state must be one of {STATES}, got {status.state!r}")
    if not isinstance(status.info, dict) or len(dumps(status.info)) > MAX_INFO_BYTES:
        raise ValueError(f"status info must be a JSON object of at most {MAX_INFO_BYTES} bytes")
    h = common_header(MsgKind.STATUS, federation, sender, round, mask_version)
    h.update(state=status.state, info=status.info)
    return envelope(MsgKind.STATUS, h, {})


def encode_reject(reject: RejectMsg, *, federation: str, sender: str, round: int,  # noqa: A002
                  mask_version: int) -> bytes:
    """A REJECT envelope; a reason longer than 4096 characters is cut."""
    h = common_header(MsgKind.REJECT, federation, sender, round, mask_version)
    h.update(reason=str(reject.reason)[:MAX_REASON_CHARS], needs_full_mask=bool(reject.needs_full_mask))
    if reject.task_id is not None:
        if not _is_msg_id(reject.task_id):
            raise ValueError(f"task_id must be 32 lowercase hex digits, got {reject.task_id!r}")
        h["task_id"] = reject.task_id
    return envelope(MsgKind.REJECT, h, {})


def _is_msg_id(v: Any) -> bool:
    return isinstance(v, str) and len(v) == 32 and all(c in "0123456789abcdef" for c in v)



_KIND_FIELDS: dict[MsgKind | str, frozenset[str]] = {
    MsgKind.TASK: COMMON_FIELDS | {"task_kind", "config_kind", "config", "n_values", "mask", "model"},
    "result:train": COMMON_FIELDS | {"result_kind", "client_id", "n_values", "compute_s", "n_samples", "loss",
                                     "accuracy", "importance"},
    "result:initial_prune": COMMON_FIELDS | {"result_kind", "client_id", "n_values", "compute_s", "passes", "masks",
                                       "kept_history", "densities", "train_accuracy"},
    MsgKind.STATUS: COMMON_FIELDS | {"state", "info"},
    MsgKind.REJECT: COMMON_FIELDS | {"reason", "needs_full_mask"},
}



def _masks_from(entries: Any, t: Tensors, what: str, limits: Limits) -> dict[int, np.ndarray]:
    """Full masks: all entries and sizes checked (against the model when the limits name one, and the element
    budget) before any mask is allocated."""
    checked = []
    total = 0
    for e in read_list(entries, what, MAX_PARAMS):
        exact_keys(e, frozenset({"param", "shape", "enc"}), f"{what} entry")
        p = read_int(e, "param", what, 0, MAX_PARAMS - 1)
        shape = e["shape"]
        if not isinstance(shape, list) or not 1 <= len(shape) <= 8 or not all(
                is_int(s) and 1 <= s <= MAX_ELEMENTS for s in shape) or math.prod(shape) > MAX_ELEMENTS:
            raise ProtocolError(f"{what} of parameter {p}: bad shape {show(shape)}")
        if limits.prunable is not None and limits.shapes is not None and (
                p not in limits.prunable or tuple(shape) != limits.shapes[p]):
            want = f"shape {list(limits.shapes[p])}" if p in limits.prunable else "no mask (not a prunable weight)"
            raise ProtocolError(f"{what} of parameter {p}: shape {show(shape)}, the model's parameter {p} has {want}")
        size = math.prod(shape)
        arr = t.take(f"m{p}", what)  # a repeated parameter finds its tensor already used
        check_positions(e["enc"], arr, size, f"{what} of parameter {p}")
        total += size
        checked.append((p, tuple(shape), size, e["enc"], arr))
    if limits.prunable is not None and sorted(p for p, *_ in checked) != sorted(limits.prunable):
        raise ProtocolError(f"{what}: masks for parameters {sorted(p for p, *_ in checked)[:16]}, the model's "
                            f"prunable ones are {sorted(limits.prunable)[:16]}")
    if total > t.budget:
        raise ProtocolError(f"{what}: {total} mask entries from a {t.budget // MASK_ELEMENTS_PER_BYTE}-byte body "
                            f"(at most {MASK_ELEMENTS_PER_BYTE} per byte)")
    return {p: decode_mask(enc, arr, size, f"{what} of parameter {p}").reshape(shape)
            for p, shape, size, enc, arr in checked}


def _check_positions_fit(limits: Limits, p: int, size: int, what: str) -> None:
    """Positions declared over ``size`` weights of parameter ``p``: with the model known, p must be one of its prunable
    weights and have that many (checked before any position array is built)."""
    if limits.prunable is None or limits.shapes is None:
        return
    if p not in limits.prunable or size != math.prod(limits.shapes[p]):
        has = f"has {math.prod(limits.shapes[p])}" if p in limits.prunable else "has no mask"
        raise ProtocolError(f"{what} of parameter {p}: {size} positions, the model's parameter {p} {has}")


def _delta_from(m: dict[str, Any], version: int, t: Tensors, limits: Limits) -> MaskDelta:
    exact_keys(m, frozenset({"mode", "base_version", "entries"}), "task mask")
    base = read_int(m, "base_version", "task mask", -1, MAX_ID)
    added: dict[int, np.ndarray] = {}
    removed: dict[int, np.ndarray] = {}
    for e in read_list(m["entries"], "task mask delta", MAX_PARAMS):
        exact_keys(e, frozenset({"param", "size", "added", "removed"}), "mask delta entry")
        p = read_int(e, "param", "mask delta", 0, MAX_PARAMS - 1)
        size = read_int(e, "size", f"mask delta of parameter {p}", 1, MAX_ELEMENTS)
        _check_positions_fit(limits, p, size, "mask delta")
        for key, table in (("added", added), ("removed", removed)):
            if e[key] is None:
                continue
            what = f"{key} positions of parameter {p}"
            arr = t.take(f"{key[0]}{p}", what)
            check_positions(e[key], arr, size, what)
            table[p] = decode_indices(e[key], arr, size, what)
    return MaskDelta(base, version, added, removed)


def _values_from(h: dict[str, Any], t: Tensors, what: str, limits: Limits) -> list[np.ndarray]:
    """The kept-value vectors ``v<i>``; with a model: one per parameter, none longer than its parameter."""
    n = read_int(h, "n_values", what, 0, MAX_PARAMS)
    if limits.shapes is not None and n not in (0, len(limits.shapes)):
        raise ProtocolError(f"{what}: {n} value arrays, the model has {len(limits.shapes)} parameters")
    values = [t.vector(f"v{i}", f"{what} values") for i in range(n)]
    if limits.shapes is not None:
        for i, v in enumerate(values):
            if v.size > math.prod(limits.shapes[i]):
                raise ProtocolError(f"{what} values: v{i} has {v.size} values, the model's parameter {i} "
                                    f"{math.prod(limits.shapes[i])}")
    return values


def _decode_task(header: Header, h: dict[str, Any], t: Tensors,
                 limits: Limits) -> tuple[Task, dict[str, Any] | None]:
    exact_keys(h, _KIND_FIELDS[MsgKind.TASK], "task header")
    kind_s = h["task_kind"]
    if kind_s not in [k.value for k in TaskKind]:
        raise ProtocolError(f"task: unknown task kind {show(kind_s)}")
    kind = TaskKind(kind_s)
    config_kind = "initial_prune" if kind == TaskKind.INITIAL_PRUNE else "train"
    if h["config_kind"] != config_kind:
        raise ProtocolError(f"task: config_kind must be {config_kind!r} for a {kind.value} task, got "
                            f"{show(h['config_kind'])}")
    config = _config_from(h["config"], config_kind)
    m = h["mask"]
    mode = m.get("mode") if isinstance(m, dict) else None
    if mode == "none":
        exact_keys(m, frozenset({"mode"}), "task mask")
        mu = MaskUpdate(header.mask_version)
    elif mode == "full":
        exact_keys(m, frozenset({"mode", "entries"}), "task mask")
        mu = MaskUpdate(header.mask_version, full=_masks_from(m["entries"], t, "task mask", limits))
    elif mode == "delta":
        mu = MaskUpdate(header.mask_version, delta=_delta_from(m, header.mask_version, t, limits))
    else:
        raise ProtocolError(f"task mask: mode must be none, full or delta, got {show(mode)}")
    values = _values_from(h, t, "task", limits)
    model = h["model"]
    if model is not None and not isinstance(model, dict):
        raise ProtocolError("task: model must be a JSON object or null")
    if model is not None:
        try:
            split_run(model)  # the run id (absent in an older coordinator's tasks) must be well-formed
        except ValueError as e:
            raise ProtocolError(f"task: {e}") from e
    return Task(header.round, kind, mu, values, config), model


def _sparse_importance_from(d: Any, t: Tensors, limits: Limits) -> SparseImportance:
    """Sizes and position codes checked before any position array is built (as for masks)."""
    exact_keys(d, frozenset({"kept_exp", "pruned"}), "result sparse importance")
    exps = read_list(d["kept_exp"], "result sparse importance", MAX_PARAMS)
    kept = []
    for i, e in enumerate(exps):
        if not is_int(e) or not -MAX_HALF_EXP <= e <= MAX_HALF_EXP:
            raise ProtocolError(f"result sparse importance: exponent {show(e)} of zk{i} is not in "
                                f"-{MAX_HALF_EXP}..{MAX_HALF_EXP}")
        kept.append(_unhalf(t.half_vector(f"zk{i}", "result sparse importance"), e))
    index: dict[int, np.ndarray] = {}
    values: dict[int, np.ndarray] = {}
    sizes: dict[int, int] = {}
    for e in read_list(d["pruned"], "result sparse importance", MAX_PARAMS):
        exact_keys(e, frozenset({"param", "size", "enc", "exp"}), "sparse importance entry")
        p = read_int(e, "param", "sparse importance", 0, MAX_PARAMS - 1)
        size = read_int(e, "size", f"sparse importance of parameter {p}", 1, MAX_ELEMENTS)
        _check_positions_fit(limits, p, size, "sparse importance")
        what = f"pruned importance of parameter {p}"
        exp = read_int(e, "exp", what, -MAX_HALF_EXP, MAX_HALF_EXP)
        vals = t.half_vector(f"zp{p}", what)
        arr = t.take(f"zx{p}", what)
        check_positions(e["enc"], arr, size, what)
        if e["enc"] == "delta" and arr.size != vals.size:
            raise ProtocolError(f"{what}: {arr.size} positions for {vals.size} values")
        idx = decode_indices(e["enc"], arr, size, what)
        if idx.size != vals.size:
            raise ProtocolError(f"{what}: {idx.size} positions for {vals.size} values")
        index[p], values[p], sizes[p] = idx, _unhalf(vals, exp), size
    return SparseImportance(kept, index, values, sizes)


def _decode_result(header: Header, h: dict[str, Any], t: Tensors, limits: Limits) -> TrainResult | InitialPruneResult:
    rk = h.get("result_kind")
    if rk not in ("train", "initial_prune"):
        raise ProtocolError(f"result: result_kind must be train or initial_prune, got {show(rk)}")
    # "importance_sparse" is optional (results without it, older ones included, carry dense or no importance)
    optional = {"importance_sparse"} & set(h) if rk == "train" else set()
    exact_keys(h, _KIND_FIELDS[f"result:{rk}"] | optional, f"result ({rk}) header")
    cid = read_id(h, "client_id", "result")
    values = _values_from(h, t, "result", limits)
    compute = read_float(h, "compute_s", "result", 0.0, 1e9, null_is_nan=True)
    if rk == "train":
        importance = None
        if h["importance"] is not None:
            importance = []
            shapes = read_list(h["importance"], "result importance", MAX_PARAMS)
            if limits.shapes is not None and shapes != [list(s) for s in limits.shapes]:
                raise ProtocolError(f"result importance: shapes {show(shapes)}, the model's are "
                                    f"{show([list(s) for s in limits.shapes])}")
            for i, shape in enumerate(shapes):
                z = t.take(f"z{i}", "result importance")
                if z.dtype != np.float32 or not isinstance(shape, list) or list(z.shape) != shape:
                    raise ProtocolError(f"result importance: z{i} is {z.dtype} {list(z.shape)}, the header says "
                                        f"float32 {show(shape)}")
                importance.append(z)
        sparse = h.get("importance_sparse")
        if sparse is not None:
            if importance is not None:
                raise ProtocolError("result: importance is dense and sparse at once")
            importance = _sparse_importance_from(sparse, t, limits)
        n_samples = read_int(h, "n_samples", "result", 0, 10**12)
        return TrainResult(cid, header.round, header.mask_version, n_samples, values, importance,
                           read_float(h, "loss", "result", null_is_nan=True),
                           read_float(h, "accuracy", "result", 0.0, 1.0, True), compute)
    hist = read_list(h["kept_history"], "result kept_history", 10**6)
    if not all(isinstance(row, list) and len(row) <= MAX_PARAMS and all(is_int(k) and 0 <= k <= MAX_ELEMENTS
                                                                          for k in row) for row in hist):
        raise ProtocolError("result: kept_history must be lists of integers in 0..2**34")
    dens = read_list(h["densities"], "result densities", 10**6)
    if not all(d is None or (is_num(d) and math.isfinite(d)) for d in dens):
        raise ProtocolError("result: densities must be finite numbers or null")
    masks = _masks_from(h["masks"], t, "result masks", limits)
    return InitialPruneResult(cid, header.round, masks, values, read_int(h, "passes", "result", 0, 10**9),
                              [list(row) for row in hist], [float("nan") if d is None else float(d) for d in dens],
                              read_float(h, "train_accuracy", "result", 0.0, 1.0, True), compute, header.mask_version)


def _decode_status(h: dict[str, Any]) -> StatusMsg:
    exact_keys(h, _KIND_FIELDS[MsgKind.STATUS], "status header")
    if h["state"] not in STATES:
        raise ProtocolError(f"status: state must be one of {STATES}, got {show(h['state'])}")
    info = h["info"]
    if not isinstance(info, dict) or len(dumps(info)) > MAX_INFO_BYTES:
        raise ProtocolError(f"status: info must be a JSON object of at most {MAX_INFO_BYTES} bytes")
    return StatusMsg(h["state"], info)


def _decode_reject(h: dict[str, Any]) -> RejectMsg:
    fields_ = _KIND_FIELDS[MsgKind.REJECT] | ({"task_id"} if "task_id" in h else set())
    exact_keys(h, fields_, "reject header")
    task_id = h.get("task_id")
    if "task_id" in h and not _is_msg_id(task_id):
        raise ProtocolError(f"reject: task_id must be 32 lowercase hex digits, got {show(task_id)}")
    return RejectMsg(read_str(h, "reason", "reject", MAX_REASON_CHARS), read_bool(h, "needs_full_mask", "reject"),
                     task_id)



def _decode(data: bytes | bytearray | memoryview, limits: Limits) -> Decoded:
    kind, body, crc = read_prefix(data, limits)
    if zlib.crc32(body) != crc:
        raise ProtocolError("checksum mismatch (corrupted in transit)")
    h = container_header(body, limits)
    header = read_header(kind, h)
    if kind == MsgKind.CHUNK:
        raise ProtocolError("a CHUNK envelope is part of a larger message: pass it through a Reassembler first")
    t = Tensors.load(body)
    model = None
    out: Task | TrainResult | InitialPruneResult | StatusMsg | RejectMsg
    if kind == MsgKind.TASK:
        out, model = _decode_task(header, h, t, limits)
    elif kind == MsgKind.RESULT:
        out = _decode_result(header, h, t, limits)
    elif kind == MsgKind.STATUS:
        out = _decode_status(h)
    else:
        out = _decode_reject(h)
    t.all_used()
    return Decoded(header, out, model, len(body) + PREFIX.size)


def decode(data: bytes | bytearray | memoryview, limits: Limits = DEFAULT_LIMITS) -> Decoded:
    """The message in ``data``; :class:`ProtocolError` (only) for anything that is not a well-formed one."""
    return guarded("a message", _decode, data, limits)


def _peek(data: bytes | bytearray | memoryview, limits: Limits) -> Header:
    kind, body, _ = read_prefix(data, limits)
    h = container_header(body, limits)
    return read_header(kind, h)


def _peek_model(data: bytes | bytearray | memoryview, limits: Limits) -> dict[str, Any] | None:
    kind, body, _ = read_prefix(data, limits)
    if kind != MsgKind.TASK:
        return None
    model = container_header(body, limits).get("model")
    return model if isinstance(model, dict) else None


def peek_model(data: bytes | bytearray | memoryview, limits: Limits = DEFAULT_LIMITS) -> dict[str, Any] | None:
    """The model a TASK names (None for another kind, or a task naming none), from the JSON header only: lets an
    edge pick the limits (its model's shapes) before it decodes the tensors."""
    return guarded("a task's model", _peek_model, data, limits)


def peek_header(data: bytes | bytearray | memoryview, limits: Limits = DEFAULT_LIMITS) -> Header:
    """The common header, for routing and logging: prefix and JSON headers only (no checksum, no tensor data)."""
    return guarded("a message header", _peek, data, limits)


