"""One config for the cluster: a pushed document holds what every node shares (rules,
services, locations, devices, global settings...); each node's local file keeps what is its
own. A node's config is its local file's own sections over the generation in force.

The generation in force is also kept in the node's state directory: a node that restarts
while PostgreSQL is away runs on the cluster's last config, not on its local file alone."""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.config.errors import ConfigError
from gateway.config.load import parse_data
from gateway.config.schema import Config

# The sections that stay in each node's local file: its identity and addresses (static NAT
# included), its listeners, its certificate, how it reaches the cluster, its status API and
# avatar listener.
PER_NODE = ("node", "listen", "tls", "cluster", "api", "avatar")


def shared_part(text: str, source: str) -> dict[str, Any]:
    """A pushed document, decoded; refused with field paths when it is not TOML or carries
    a node's own sections."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, [f"<toml>: {exc}"]) from exc
    own = [f"{key}: is set per node: keep it in each node's local file, not in the "
           "cluster's config" for key in PER_NODE if key in raw]
    if own:
        raise ConfigError(source, own)
    return raw


def read_local(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), [f"<file>: cannot read: {exc}"]) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), [f"<toml>: {exc}"]) from exc


def merged(local_path: Path, shared: dict[str, Any] | None, source: str) -> Config:
    """The node's config: with no generation pushed yet, its local file alone; else the
    local file's own sections and the shared document's everything else. Every problem
    of the result is raised at once (ConfigError), the field paths those of the files."""
    local = read_local(local_path)
    if shared is None:
        return parse_data(local, str(local_path), base_dir=local_path.parent)
    raw = {**shared, **{key: local[key] for key in PER_NODE if key in local}}
    return parse_data(raw, source, base_dir=local_path.parent)


@dataclass(frozen=True, slots=True)
class Generation:
    number: int
    text: str  # the pushed document as stored (TOML)
    source: str  # the name it was pushed under


def save(path: Path, generation: Generation) -> None:
    """Written beside and renamed over: a crash mid-write leaves the previous one whole."""
    part = path.with_name(path.name + ".part")
    part.write_text(json.dumps({"generation": generation.number, "text": generation.text,
                                "source": generation.source}), "utf-8")
    os.replace(part, path)


def saved(path: Path) -> Generation | None:
    """The generation `save` last wrote at `path`; None when none was ever saved."""
    try:
        raw = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(str(path), [f"<file>: cannot read: {exc}"]) from exc
    if not (isinstance(raw, dict) and isinstance(raw.get("generation"), int)
            and isinstance(raw.get("text"), str) and isinstance(raw.get("source"), str)):
        raise ConfigError(str(path), ["<file>: not a saved cluster config generation"])
    return Generation(raw["generation"], raw["text"], raw["source"])
