"""The status API and Prometheus metrics over HTTP (aiohttp)."""
