"""The edge agent's configuration file (TOML; default /etc/prunefl-edge/edge.toml). See
firmware_scripts/edge.toml.example for every key with its meaning.

    [edge]   id, federation, threads, state_dir, max_payload_bytes, max_message_bytes
    [broker] url, keepalive, ca_file, cert_file, key_file, username, password_file, max_packet_bytes
    [data]   path, format, partition, num_partitions, partition_index, seed
    [profile] measure, model, file, comm_s_per_weight
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prunefl_common.protocol.mqtt_client import BrokerConfig
from prunefl_common.protocol.topics import valid_id
from prunefl_common.toml_file import read_toml
from prunefl_edge.edge_profile import ProfileConfig

DEFAULT_CONFIG = "/etc/prunefl-edge/edge.toml"
CONFIG_ENV = "PRUNEFL_EDGE_CONFIG"


class ConfigError(ValueError):
    """A configuration the agent cannot run with; the message names the key and what to write instead."""


@dataclass(frozen=True)
class DataConfig:
    path: str
    format: str | None = None  # noqa: A003 - the file's word
    partition: str | None = None  # iid / dirichlet / shards: this edge takes one part of the data set (demos)
    num_partitions: int = 1
    partition_index: int = 0
    seed: int = 0


@dataclass(frozen=True)
class EdgeConfig:
    id: str  # noqa: A003
    federation: str
    broker: BrokerConfig
    data: DataConfig
    threads: int = 1
    state_dir: str = "/var/lib/prunefl-edge"
    max_payload_bytes: int = 4 * 2**20  # larger results are sent in chunks (below the broker's packet limit)
    # the largest (reassembled) task accepted; partial chunked tasks held are bounded by twice this. About the
    # model's dense task (4 bytes a parameter) with room: 64 MiB holds Conv-2 and VGG-11 tasks
    max_message_bytes: int = 64 * 2**20
    source: str = ""
    profile: ProfileConfig = ProfileConfig()


_SECTIONS = {
    "edge": {"id", "federation", "threads", "state_dir", "max_payload_bytes", "max_message_bytes"},
    "broker": {"url", "keepalive", "ca_file", "cert_file", "key_file", "username", "password_file",
               "max_packet_bytes"},
    "data": {"path", "format", "partition", "num_partitions", "partition_index", "seed"},
    "profile": {"measure", "model", "file", "comm_s_per_weight"},
}


def _get(table: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str, default: Any = None) -> Any:
    if key not in table:
        return default
    v = table[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(v, kinds) or (isinstance(v, bool) and bool not in kinds):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        section = next((s for s, keys in _SECTIONS.items() if key in keys), "?")
        raise ConfigError(f"{where}: [{section}] {key} must be a {names}, got {v!r}")
    return v


def config_path(explicit: str | None) -> str:
    return explicit or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG


def load_edge_config(path: str) -> EdgeConfig:
    doc = read_toml(path, ConfigError, path,
                    missing_hint=": write one from firmware_scripts/edge.toml.example or pass --config",
                    permission_hint=" (it holds credentials: run as the prunefl user or root)")
    for section, table in doc.items():
        if section not in _SECTIONS or not isinstance(table, dict):
            raise ConfigError(f"{path}: unknown section [{section}]; sections: {', '.join(_SECTIONS)}")
        unknown = set(table) - _SECTIONS[section]
        if unknown:
            raise ConfigError(f"{path}: [{section}] has unknown keys {sorted(unknown)}; known: "
                              f"{sorted(_SECTIONS[section])}")
    edge, broker, data = doc.get("edge", {}), doc.get("broker", {}), doc.get("data", {})
    where = path
    eid = _get(edge, "id", str, where)
    fed = _get(edge, "federation", str, where, "default")
    if eid is None or not valid_id(eid) or eid == "CHANGE-ME":
        raise ConfigError(f"{path}: [edge] id must be set to this device's id: 1-64 of A-Z a-z 0-9 _ . - "
                          f"(got {eid!r})")
    if not valid_id(fed):
        raise ConfigError(f"{path}: [edge] federation {fed!r} must be 1-64 of A-Z a-z 0-9 _ . -")
    threads = _get(edge, "threads", int, where, 1)
    if not 1 <= threads <= 256:
        raise ConfigError(f"{path}: [edge] threads must be 1..256 (a Raspberry Pi 4 has 4 cores), got {threads}")
    payload = _get(edge, "max_payload_bytes", int, where, 4 * 2**20)
    if payload < 64 * 1024:
        raise ConfigError(f"{path}: [edge] max_payload_bytes must be >= 65536 (the broker limit is usually MiBs)")
    max_message = _get(edge, "max_message_bytes", int, where, 64 * 2**20)
    if max_message < 64 * 1024:
        raise ConfigError(f"{path}: [edge] max_message_bytes must be >= 65536 (about the model's dense task size: 4 "
                          "bytes a parameter)")
    password = None
    pw_file = _get(broker, "password_file", str, where)
    if pw_file is not None:
        try:
            password = Path(pw_file).read_text().strip()
        except OSError as e:
            raise ConfigError(f"{path}: [broker] password_file {pw_file}: {e.strerror}") from e
    bc = BrokerConfig(url=_get(broker, "url", str, where, "mqtt://127.0.0.1:1883"),
                      keepalive=_get(broker, "keepalive", int, where, 30),
                      ca_file=_get(broker, "ca_file", str, where), cert_file=_get(broker, "cert_file", str, where),
                      key_file=_get(broker, "key_file", str, where), username=_get(broker, "username", str, where),
                      password=password, max_packet_bytes=_get(broker, "max_packet_bytes", int, where))
    try:
        bc.check()
    except ValueError as e:
        raise ConfigError(f"{path}: [broker] {e}") from e
    dpath = _get(data, "path", str, where)
    if dpath is None:
        raise ConfigError(f"{path}: [data] path is missing: the local training data (a file or directory, or "
                          f"a bundled data set: mnist5k, digits)")
    part = _get(data, "partition", str, where)
    if part is not None and part not in ("iid", "dirichlet", "shards"):
        raise ConfigError(f"{path}: [data] partition must be iid, dirichlet or shards, got {part!r}")
    n_parts = _get(data, "num_partitions", int, where, 1)
    index = _get(data, "partition_index", int, where, 0)
    if n_parts < 1 or not 0 <= index < n_parts:
        raise ConfigError(f"{path}: [data] partition_index must be in 0..num_partitions-1 ({index} of {n_parts})")
    dc = DataConfig(dpath, _get(data, "format", str, where), part, n_parts, index, _get(data, "seed", int, where, 0))
    return EdgeConfig(eid, fed, bc, dc, threads, _get(edge, "state_dir", str, where, "/var/lib/prunefl-edge"),
                      payload, max_message, path, _profile_config(doc.get("profile", {}), path))


def _profile_config(table: dict[str, Any], path: str) -> ProfileConfig:
    pfile = _get(table, "file", str, path)
    if pfile is not None and not Path(pfile).is_file():
        raise ConfigError(f"{path}: [profile] file {pfile} does not exist: measure one with `prunefl-edge profile "
                          f"--out {pfile}`, or remove the key to measure at start")
    comm = _get(table, "comm_s_per_weight", (int, float), path)
    if comm is not None and not (0 <= comm < 1):
        raise ConfigError(f"{path}: [profile] comm_s_per_weight must be seconds per weight in [0, 1), got {comm}")
    return ProfileConfig(measure=_get(table, "measure", bool, path, True), model=_get(table, "model", str, path,
                         "conv2"), file=pfile, comm_s_per_weight=None if comm is None else float(comm))


def write_edge_config(path: str | Path, values: dict[str, dict[str, Any]]) -> None:
    """A config file from sections of plain values (used by the local federation launcher and the tests)."""
    lines = []
    for section, table in values.items():
        lines.append(f"[{section}]")
        for k, v in table.items():
            if v is None:
                continue
            if isinstance(v, bool):
                lines.append(f"{k} = {'true' if v else 'false'}")
            elif isinstance(v, int | float):
                lines.append(f"{k} = {v}")
            else:
                lines.append(f"{k} = {json_str(str(v))}")
        lines.append("")
    Path(path).write_text("\n".join(lines))


def json_str(s: str) -> str:
    import json

    return json.dumps(s)  # a TOML basic string is a JSON string for these characters
