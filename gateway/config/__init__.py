"""Configuration: one TOML file, validated once into frozen dataclasses (see docs/config.md).

Import from the modules (`gateway.config.load`, `.schema`, `.errors`)."""
