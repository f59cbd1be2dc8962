"""Configuration: one TOML file, validated once into frozen dataclasses (see docs/config.md).

Import from the modules (`gateway.config.load`, `.schema`, `.errors`): `routing.model` uses
`gateway.config.fields`, and the schema uses `routing.model`, so this package file stays
empty of imports to keep that cycle from closing."""
