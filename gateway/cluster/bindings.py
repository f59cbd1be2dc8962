"""Registrar bindings shared across the cluster, each with the node holding its device's flow.

This node's own bindings stay in its SQLite store (they survive a restart and serve calls
when PostgreSQL is away); the other nodes' are cached in memory with their expiry, filled
from the bindings table at (re)connection and kept current by NOTIFY. Every change made
here waits in an outbox, in order, until it is written to PostgreSQL.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from gateway.calls.registrar import Binding, BindingStore
from gateway.cluster.view import ClusterView
from gateway.resolver.rfc3263 import Target
from gateway.transport.peer import Transport


@dataclass(frozen=True, slots=True)
class BindingOp:
    kind: Literal["save", "remove"]
    aor: str
    contact: str | None  # None: every contact of the AOR held here
    binding: Binding | None = None


class SharedBindings(BindingStore):
    def __init__(self, path: Path | None, view: ClusterView) -> None:
        super().__init__(path)
        self.view = view
        self.outbox: list[BindingOp] = []
        self._remote: dict[str, dict[str, Binding]] = {}  # aor -> contact -> binding
        # This node's bindings by contact: a call forwarded by another node names its
        # device by the contact it was given.
        self._held: dict[str, Binding] = {b.contact: b for b in super().all(0.0)}

    # -- what the registrar does here -----------------------------------------------------
    def save(self, binding: Binding) -> None:
        super().save(binding)
        self._held[binding.contact] = binding
        self._forget_remote(binding.aor.lower(), binding.contact)
        self.outbox.append(BindingOp("save", binding.aor.lower(), binding.contact,
                                     replace(binding, aor=binding.aor.lower())))

    def remove(self, aor: str, contact: str | None = None) -> None:
        self._unhold(aor, contact)
        super().remove(aor, contact)
        self.outbox.append(BindingOp("remove", aor.lower(), contact))

    def lookup(self, aor: str, now: float) -> list[Binding]:
        """This node's live bindings of `aor` and those held by live nodes, newest first."""
        own = super().lookup(aor, now)
        held = self._remote.get(aor.lower())
        if not held:
            return own
        live = own + [b for b in held.values()
                      if b.expires_at > now and self.view.alive(b.node)]
        live.sort(key=lambda b: b.expires_at, reverse=True)
        return live

    def all(self, now: float) -> list[Binding]:
        live = super().all(now) + [b for held in self._remote.values() for b in held.values()
                                   if b.expires_at > now and self.view.alive(b.node)]
        live.sort(key=lambda b: b.aor)
        return live

    def own(self, now: float) -> list[Binding]:
        return super().all(now)

    def held(self, contact: str, now: float) -> Binding | None:
        """This node's live binding of `contact`: a device whose flow is here."""
        binding = self._held.get(contact)
        return binding if binding is not None and binding.expires_at > now else None

    def route(self, binding: Binding) -> Target | None:
        """This node's devices over their flows; another live node's through its
        node-to-node listener (mutual TLS); none through a node gone or taking no calls."""
        if binding.node in ("", self.view.me):
            return super().route(binding)
        link = self.view.link(binding.node)
        if link is None:
            return None
        host, port = link
        return Target(Transport.TLS, host, host, port)

    # -- what the other nodes did ---------------------------------------------------------
    def learned(self, binding: Binding) -> None:
        """Another node holds `binding` now: a copy of it held here is stale, unless this
        node's is the newer registration (the two notices crossed)."""
        if binding.node == self.view.me:
            return
        aor = binding.aor.lower()
        mine = [b for b in super().lookup(aor, 0.0) if b.contact == binding.contact]
        if mine and mine[0].expires_at > binding.expires_at:
            return
        if mine:
            self._unhold(aor, binding.contact)
            super().remove(aor, binding.contact)
        self._remote.setdefault(aor, {})[binding.contact] = binding

    def unlearned(self, aor: str, contact: str | None, node: str) -> None:
        if node == self.view.me:
            return
        held = self._remote.get(aor.lower())
        if held is None:
            return
        for key in [c for c, b in held.items() if b.node == node and contact in (None, c)]:
            del held[key]
        if not held:
            del self._remote[aor.lower()]

    def reload(self, bindings: list[Binding]) -> None:
        """The whole table, as read after a (re)connection."""
        self._remote = {}
        for binding in bindings:
            self.learned(binding)

    def _unhold(self, aor: str, contact: str | None) -> None:
        for b in super().lookup(aor, 0.0):
            if contact in (None, b.contact):
                self._held.pop(b.contact, None)

    def _forget_remote(self, aor: str, contact: str) -> None:
        held = self._remote.get(aor)
        if held is not None and held.pop(contact, None) is not None and not held:
            del self._remote[aor]
