"""Configuration: one TOML file, validated once into frozen dataclasses (see docs/config.md)."""

from __future__ import annotations

from gateway.config.errors import ConfigError
from gateway.config.load import EMBEDDED_DEFAULT, load_default, load_file, parse_text
from gateway.config.schema import Config

__all__ = ["EMBEDDED_DEFAULT", "Config", "ConfigError", "load_default", "load_file", "parse_text"]
