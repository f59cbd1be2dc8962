"""structlog set-up: JSON lines when not on a terminal (production), readable lines on one."""

from __future__ import annotations

import logging
import sys
import weakref
from typing import Any

import structlog


def configure(*, json: bool | None = None, level: str = "info") -> None:
    """Configure structlog once per process; `json=None` chooses by whether stderr is a TTY."""
    tty = sys.stderr.isatty()
    if json is None:
        json = not tty
    # `--log-format console` into a pipe or file is read with less or grep, where colour codes
    # are noise: colour goes only to a terminal.
    renderer: Any = (
        structlog.processors.JSONRenderer() if json
        else structlog.dev.ConsoleRenderer(colors=tty)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    global _configured
    _configured = True
    for logger in _made:
        _pin(logger)


# Module loggers are structlog's lazy proxies, made at import, before `configure`. A proxy
# finds `log.info` only after a failed attribute look-up (its __getattr__), about 1.4 us for
# a line the level then drops, several times per call; once configured, each proxy gets its
# level methods as plain attributes. Unconfigured (tests), proxies stay lazy, so that
# structlog.testing.capture_logs still sees every line.
_LEVELS = ("debug", "info", "warning", "error", "exception", "critical", "is_enabled_for")
_made: weakref.WeakSet[Any] = weakref.WeakSet()  # a logger made in a function may go
_configured = False


def _pin(proxy: Any) -> None:
    # A proxy used once keeps the logger it cached then (its instance's `bind`): dropped, so
    # that configuring again takes effect.
    vars(proxy).pop("bind", None)
    bound = proxy.bind()
    for level in _LEVELS:
        setattr(proxy, level, getattr(bound, level))


def get(name: str) -> structlog.typing.FilteringBoundLogger:
    """A logger for a module; bind call_id / leg / rule per call on top of it."""
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger(component=name)
    _made.add(logger)
    if _configured:
        _pin(logger)
    return logger
