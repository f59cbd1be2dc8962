"""Errors of the ICE package; each says why in words a call log can carry."""

from __future__ import annotations


class IceError(Exception):
    """ICE could not be set up or did not complete; the message is the reason. A call that
    needed it is refused with `status_hint` (Service Unavailable + Retry-After)."""

    status_hint = 503


class PortsExhausted(IceError):
    """No free media port in `listen.media_ports`: the call gets 503 + Retry-After."""


class CandidateError(IceError, ValueError):
    """A candidate line that cannot be read; the message names the rule."""
