"""Hostile input to the decoder and the reassembler: 10,800 payloads from a seeded RNG (deterministic).

Blind mutations of valid messages (bit flips, byte overwrites, truncations, extensions), random bytes, and hostile
but well-formed ones: the JSON header, the safetensors header or the tensor data of a valid message is changed
(huge or negative shapes and ints, wrong types, deep nesting, unknown kinds, NaN, overlapping offsets ...) and
the prefix and CRC are recomputed, so the change reaches the parsers instead of stopping at the checksum.
Every payload goes to ``decode`` and to ``Reassembler.feed``: the only exception allowed is ProtocolError (and
not the decoder's safety net for its own bugs), each call returns within 1 s, and on every 4th payload the
peak allocation (tracemalloc) stays below 16 x the payload size + 1 MiB."""

from __future__ import annotations

import json
import re
import struct
import time
import tracemalloc
from collections import Counter
from typing import Any

import numpy as np
from test_wire import SHAPES, envelope, masks_at, unpack, values_for

from prunefl_common.mask_delta import mask_delta
from prunefl_common.messages import (
    InitialPruneConfig,
    InitialPruneResult,
    MaskUpdate,
    Task,
    TaskKind,
    TrainConfig,
    TrainResult,
)
from prunefl_common.model_spec import spec_to_dict
from prunefl_common.protocol.chunks import Reassembler, split_message
from prunefl_common.protocol.wire import (
    PREFIX,
    Limits,
    ProtocolError,
    RejectMsg,
    StatusMsg,
    decode,
    encode_reject,
    encode_result,
    encode_status,
    encode_task,
)
from prunefl_edge.models import mlp_spec

N_PER_KIND = 1080  # x 10 kinds of payload
STOPPED_EARLY = re.compile(r"checksum|magic|protocol version|unknown message kind|flags|announces a body|shorter than")


def seed_messages() -> list[bytes]:
    rng = np.random.default_rng(7)
    a, b = masks_at(rng, 0.3), masks_at(rng, "one")
    sizes = {p: m.size for p, m in a.items()}
    model = spec_to_dict(mlp_spec((1, 8, 8), (16,)))
    train = TrainConfig(lr=0.1, momentum=0.9, collect_importance=True)
    prune = InitialPruneConfig(lr=0.05, costs=[1e-6, 2e-6], intercept=1.2, max_density=0.5)
    out = [
        encode_task(Task(3, TaskKind.TRAIN, MaskUpdate(2, full=a), values_for(rng, a), train), federation="f",
                    sender="coordinator", model=model),
        encode_task(Task(4, TaskKind.TRAIN, MaskUpdate(3, delta=mask_delta(a, b, 2, 3)), values_for(rng, b), train),
                    federation="f", sender="coordinator", sizes=sizes),
        encode_task(Task(0, TaskKind.INITIAL_PRUNE, MaskUpdate(0), values_for(rng, {}), prune), federation="f",
                    sender="coordinator"),
        encode_task(Task(1, TaskKind.GRADIENT, MaskUpdate(1), [], TrainConfig(lr=0.1)), federation="f",
                    sender="coordinator"),
        encode_result(TrainResult("e1", 3, 2, 10, values_for(rng, a), [rng.random((2, 3), dtype=np.float32)] * 3,
                                  float("nan"), 0.5, 1.5), federation="f", sender="e1"),
        encode_result(InitialPruneResult("e1", 0, a, values_for(rng, a), 40, [[1, 2], [3, 4]], [0.5, 0.25], 0.7),
                      federation="f", sender="e1"),
        encode_status(StatusMsg("online", {"n_samples": 100, "profile": {"a": [1.5, 2]}}), federation="f",
                      sender="e1"),
        encode_reject(RejectMsg("mask version 3 unknown", True), federation="f", sender="e1", round=4, mask_version=3),
    ]
    big = encode_result(TrainResult("e2", 3, 2, 10, [rng.random(3000, dtype=np.float32)]), federation="f",
                        sender="e2")
    return out + split_message(big, 4096, federation="f", sender="e2")


# ---- hostile but well-formed: a change, then a correct length and CRC --------------------------------------------
EVIL = ["null", "true", "false", "0", "-1", "-2", "1", "2", "7", "255", "4095", "4096", "65537", "4294967295",
        "4294967296", "17179869185", "9223372036854775807", "18446744073709551616", "-9223372036854775809", "0.5",
        "-0.0", "1e308", "-1e308", "1e999", "NaN", "Infinity", "-Infinity", '""', '"x"', '"' + "a" * 5000 + '"',
        '"\\u0000"', '"\\ud800"', "[]", "{}", "[0]", "[-1]", "[1.5]", '["1"]', "[2147483648, 2147483648]",
        "[131072, 131072]", "[17179869184]", "[4294967296]", "[1,1,1,1,1,1,1,1,1]", "[0, 10]", '"bitmap"',
        '"delta"', '"rle"', '"full"', '"none"', '"task"', '"result"', '"status"', '"chunk"', '"initial_prune"',
        '"train"', '"gradient"', '"online"', '"' + "0" * 32 + '"', '"' + "A" * 32 + '"', "[" * 5000 + "]" * 5000,
        '{"a":' * 3000 + "1" + "}" * 3000, "9" * 5000, "[" + ",".join(["7"] * 20000) + "]",
        '{"mode": "delta", "base_version": 1, "entries": [{"param": 0, "size": 17179869184, "added": "bitmap", '
        '"removed": null}]}', '[{"param": 0, "shape": [131072, 131072], "enc": "delta"}]']
INTERESTING = {"shape", "enc", "param", "size", "added", "removed", "mode", "n_values", "importance", "kind",
               "task_kind", "config_kind", "result_kind", "index", "count", "total", "crc", "round", "mask_version",
               "msg_id", "base_version", "masks", "entries", "kept_history", "densities", "info", "state", "lr",
               "local_steps", "batch_size", "costs", "max_density", "seed", "mask", "config", "model", "passes",
               "n_samples", "loss", "accuracy", "federation", "sender", "client_id", "reason", "needs_full_mask"}
SENTINEL = "\x00EVIL\x00"


def _paths(obj: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj[:20]):
            out += _paths(v, prefix + (i,))
    return out


def _at(obj: Any, path: tuple) -> Any:
    for k in path:
        obj = obj[k]
    return obj


def hostile_json(rng: np.random.Generator, msg: bytes, targeted: bool) -> bytes:
    """The message's JSON header changed at one place (any place, or a field the parsers care about)."""
    kind, h, tensors = unpack(msg)
    paths = [p for p in _paths(h) if p]
    if targeted:
        paths = [p for p in paths if isinstance(p[-1], str) and p[-1] in INTERESTING] or paths
    path = paths[rng.integers(len(paths))]
    parent, key = _at(h, path[:-1]), path[-1]
    op = rng.integers(8)
    if op == 0 and isinstance(parent, dict):
        del parent[key]
    elif op == 1 and isinstance(parent, dict):
        parent[f"x{rng.integers(100)}"] = 1  # an unknown field
    elif op == 2:
        parent[key] = [parent[key]]  # a wrong type
    elif op == 3 and isinstance(parent[key], int) and not isinstance(parent[key], bool):
        parent[key] += int(rng.choice([-1, 1, 2**31, -(2**31), 2**40]))
    else:
        parent[key] = SENTINEL
    text = json.dumps(h).replace(json.dumps(SENTINEL), EVIL[rng.integers(len(EVIL))])
    if rng.random() < 0.05:
        text = text[:-1] + ', "round": 1}'  # a repeated key
    tensors = {k: v for k, v in tensors.items() if rng.random() > 0.03}  # now and then a tensor goes missing
    from safetensors.numpy import save

    return envelope(kind, save(tensors, metadata={"prunefl": text}))


def hostile_container(rng: np.random.Generator, msg: bytes) -> bytes:
    """The message's safetensors header (or its length field) changed, the data left as it was."""
    kind, body = msg[5], msg[PREFIX.size:]
    (n,) = struct.unpack_from("<Q", body)
    meta = json.loads(body[8:8 + n])
    data = body[8 + n:]
    names = [k for k in meta if k != "__metadata__"]
    op = rng.integers(12)
    if names and op < 7:
        e = meta[names[rng.integers(len(names))]]
        a, b = e["data_offsets"]
        choices = {
            0: ("dtype", ["F64", "I8", "I64", "BOOL", "F16", "U8", "U16", "U32", "U64", "F32", "X", 3, None]),
            1: ("shape", [[2**40], [-1], [], [0], [b - a + 1], e["shape"] * 2, "3", [1.5], [2**31, 2**31], None]),
            2: ("data_offsets", [[0, 2**40], [-1, 0], [b, a], [a, b + 1], [a + 1, b], "x", [a], [0, b - a]]),
        }
        field, options = choices[op % 3]
        e[field] = options[rng.integers(len(options))]
        if op >= 3:  # several fields at once
            e["shape"], e["data_offsets"] = [(b - a) // 4 * 2], [a, a + (b - a) // 2]
    elif names and op == 7:
        meta[f"v{rng.integers(100)}"] = meta.pop(names[rng.integers(len(names))])  # a renamed tensor
    elif names and op == 8:
        del meta[names[rng.integers(len(names))]]  # data nobody claims
    elif op == 9:
        meta["__metadata__"] = [None, {"prunefl": 1}, {}, {"prunefl": "{}", "x": "y"}][rng.integers(4)]
    elif op == 10:
        head = json.dumps(meta).encode() + b" " * int(rng.integers(0, 9))
        delta = int(rng.choice([-9, -1, 1, 8, 2**20, 2**40]))
        return envelope(kind, struct.pack("<Q", max(0, len(head) + delta)) + head + data)
    else:
        meta[f"t{rng.integers(100)}"] = {"dtype": "U8", "shape": [8], "data_offsets": [0, 8]}  # overlapping
    head = json.dumps(meta).encode()
    return envelope(kind, struct.pack("<Q", len(head)) + head + data)


def hostile_data(rng: np.random.Generator, msg: bytes) -> bytes:
    """Bytes of the tensor data changed (mask bitmaps, index gaps, values), or the kind byte; a correct CRC."""
    kind, body = msg[5], bytearray(msg[PREFIX.size:])
    (n,) = struct.unpack_from("<Q", body)
    if rng.random() < 0.2 or len(body) <= 8 + n:
        kind = int(rng.integers(0, 8))
    else:
        for _ in range(rng.integers(1, 6)):
            j = int(rng.integers(8 + n, len(body)))
            body[j] = int(rng.integers(256)) if rng.random() < 0.5 else body[j] ^ (1 << int(rng.integers(8)))
    return envelope(kind, bytes(body))


# ---- blind mutations -------------------------------------------------------------------------------------------
def blind(rng: np.random.Generator, msg: bytes, how: int) -> bytes:
    if how == 0:  # bit flips
        b = bytearray(msg)
        for _ in range(rng.integers(1, 9)):
            j = int(rng.integers(len(b)))
            b[j] ^= 1 << int(rng.integers(8))
        return bytes(b)
    if how == 1:  # byte overwrites
        b = bytearray(msg)
        for _ in range(rng.integers(1, 9)):
            b[int(rng.integers(len(b)))] = int(rng.integers(256))
        return bytes(b)
    if how == 2:  # truncation
        return msg[: rng.integers(0, len(msg))]
    if how == 3:  # extension
        return msg + rng.bytes(int(rng.integers(1, 100)))
    if how == 4:  # random bytes, half of them behind a valid magic and version
        raw = rng.bytes(int(rng.integers(0, 400)))
        return b"PFLE\x01" + raw if rng.random() < 0.5 else raw
    body = rng.bytes(int(rng.integers(0, 400)))  # random body behind a valid prefix and CRC
    if rng.random() < 0.5:
        body = struct.pack("<Q", len(body)) + body
    return envelope(int(rng.integers(1, 6)), body)


# the model the seed messages' masks and values are of (the coordinator decodes against its model so)
MODEL = Limits(shapes=tuple(SHAPES.get(p, (5,)) for p in range(8)), prunable=frozenset(SHAPES))


def decode_for_model(data: bytes) -> Any:
    return decode(data, MODEL)


def test_fuzz_decode_and_reassemble_raise_only_protocol_error():
    rng = np.random.default_rng(20240613)
    seeds = seed_messages()
    reasm = Reassembler(max_pending_messages=16, max_pending_bytes=2**20)
    reasons: Counter[str] = Counter()
    hostile = past_crc = accepted = fit_model = 0
    for i in range(10 * N_PER_KIND):
        msg = seeds[int(rng.integers(len(seeds)))]
        kind = i % 10
        if kind < 6:
            data = blind(rng, msg, kind)
        else:
            data = (hostile_json(rng, msg, targeted=kind == 7) if kind in (6, 7) else
                    hostile_container(rng, msg) if kind == 8 else hostile_data(rng, msg))
            hostile += 1
        measure = i % 4 == 0
        if measure:
            tracemalloc.start()
        t0 = time.perf_counter()
        outcome = "accepted"
        for fn in (decode, decode_for_model, reasm.feed):
            try:
                fn(data)
                if fn is decode:
                    accepted += 1
                elif fn is decode_for_model:
                    fit_model += 1
            except ProtocolError as e:
                text = str(e)
                assert "unexpected decoder error" not in text, (i, kind, text)
                reasons[fn.__name__ + ": " + re.sub(r"\d+|'[^']*'|\"[^\"]*\"|\[.*\]", "_", text)[:60]] += 1
                if fn is decode:
                    outcome = text
            except Exception as e:  # noqa: BLE001 - the point of the test
                raise AssertionError(f"payload {i} (kind {kind}): {fn.__name__} raised {type(e).__name__}: {e}") from e
        elapsed = time.perf_counter() - t0
        if measure:
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            assert peak < 16 * len(data) + 2**20, (i, kind, len(data), peak)
        assert elapsed < 1.0, (i, kind, elapsed)
        if kind >= 6 and not STOPPED_EARLY.search(outcome):
            past_crc += 1
    assert i + 1 >= 10_000
    # the hostile payloads exercise the parsers, not the checksum: nearly all get past it (the rest changed the
    # kind byte to one that does not exist), and they are turned away for many different reasons
    assert past_crc > 0.9 * hostile, (past_crc, hostile)
    assert len(reasons) > 80, reasons.most_common()
    assert 0 < accepted < hostile  # some changes leave a valid message (a changed value, a padding space): fine
    assert 0 < fit_model < accepted  # of those, the ones that still fit the model
    assert reasm.pending_bytes <= 2**20 and reasm.pending_messages <= 16
