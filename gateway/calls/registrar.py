"""The registrar (RFC 3261 10): REGISTER from the configured `[[devices]]`, authenticated
with Digest (SHA-256 or MD5), bindings kept with their expiry in SQLite so a restart keeps
them, and looked up when a rule routes a call to a registered device.

A binding remembers where the REGISTER came from (transport, address, port): calls to the
device go there, which behind NAT is what works (and on TCP/TLS reuses its connection).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from gateway import logs
from gateway.calls import digest
from gateway.config.schema import Device
from gateway.resolver.rfc3263 import Target
from gateway.sip.errors import SipParseError
from gateway.sip.message import Request, make_response
from gateway.sip.transaction_layer import Event
from gateway.sip.transaction_machines import ServerTransaction
from gateway.sip.uri import SipUri
from gateway.transport.peer import Peer, Transport

if TYPE_CHECKING:
    from gateway.sip.endpoint import Endpoint

log = logs.get(__name__)
MIN_EXPIRES, MAX_EXPIRES, DEFAULT_EXPIRES = 60, 3600, 3600


@dataclass(frozen=True, slots=True)
class Binding:
    aor: str
    contact: str  # the device's Contact URI
    expires_at: float  # Unix time
    transport: str
    host: str  # where the REGISTER came from
    port: int
    call_id: str
    cseq: int
    # The cluster node holding the device's flow (its REGISTER came there); "" = this node.
    node: str = ""

    @property
    def peer(self) -> Peer:
        return Peer(Transport.parse(self.transport), self.host, self.port)


class BindingStore:
    """Bindings in SQLite (WAL), `path` None keeping them in memory only; every binding is
    also held in a dict by AOR, because a call routed by a registered-device rule (and every
    call's check of its caller) looks them up, and a query per call cost more than the
    routing decision itself."""

    def __init__(self, path: Path | None) -> None:
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(":memory:" if path is None else path, isolation_level=None)
        if path is not None:
            self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS binding (aor TEXT NOT NULL, contact TEXT NOT NULL, "
            "expires_at REAL NOT NULL, transport TEXT NOT NULL, host TEXT NOT NULL, "
            "port INTEGER NOT NULL, call_id TEXT NOT NULL, cseq INTEGER NOT NULL, "
            "PRIMARY KEY (aor, contact))")
        self._by_aor: dict[str, dict[str, Binding]] = {}
        for row in self.db.execute("SELECT * FROM binding"):
            binding = Binding(*row)
            self._by_aor.setdefault(binding.aor, {})[binding.contact] = binding

    def lookup(self, aor: str, now: float) -> list[Binding]:
        """The live bindings of `aor`, newest expiry first."""
        held = self._by_aor.get(aor.lower())
        if not held:
            return []
        live = [b for b in held.values() if b.expires_at > now]
        live.sort(key=lambda b: b.expires_at, reverse=True)
        return live

    def all(self, now: float) -> list[Binding]:
        live = [b for held in self._by_aor.values() for b in held.values()
                if b.expires_at > now]
        live.sort(key=lambda b: b.aor)
        return live

    def save(self, binding: Binding) -> None:
        aor = binding.aor.lower()
        self.db.execute("INSERT OR REPLACE INTO binding VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (aor, binding.contact, binding.expires_at, binding.transport,
                         binding.host, binding.port, binding.call_id, binding.cseq))
        self._by_aor.setdefault(aor, {})[binding.contact] = replace(binding, aor=aor)

    def remove(self, aor: str, contact: str | None = None) -> None:
        aor = aor.lower()
        if contact is None:
            self.db.execute("DELETE FROM binding WHERE aor = ?", (aor,))
            self._by_aor.pop(aor, None)
            return
        self.db.execute("DELETE FROM binding WHERE aor = ? AND contact = ?", (aor, contact))
        held = self._by_aor.get(aor, {})
        held.pop(contact, None)
        if not held:
            self._by_aor.pop(aor, None)

    def route(self, binding: Binding) -> Target | None:
        """Where a call to `binding` goes: where its REGISTER came from (the device's flow).
        A cluster's store sends another node's devices through that node, or nowhere."""
        return Target(binding.peer.transport, binding.host, binding.host, binding.port)

    def purge(self, now: float) -> None:
        self.db.execute("DELETE FROM binding WHERE expires_at <= ?", (now,))
        for aor in list(self._by_aor):
            held = self._by_aor[aor]
            for contact in [c for c, b in held.items() if b.expires_at <= now]:
                del held[contact]
            if not held:
                del self._by_aor[aor]

    def close(self) -> None:
        self.db.close()


def aor_of(uri: object) -> str | None:
    """`user@host` of a SIP URI, lower case, as bindings are keyed."""
    if not isinstance(uri, SipUri) or not uri.user:
        return None
    return f"{uri.user_unescaped}@{uri.host_bare}".lower()


class Registrar:
    """`devices` and `realm` are the config's; `configure` swaps them in on a reload."""

    def __init__(self, *, devices: tuple[Device, ...], realm: str, store: BindingStore,
                 clock: Callable[[], float] = time.time,
                 nonces: digest.Nonces | None = None) -> None:
        self.devices = devices
        self.realm = realm
        self.store = store
        self.clock = clock
        self.nonces = nonces or digest.Nonces()

    def configure(self, devices: tuple[Device, ...], realm: str) -> None:
        self.devices, self.realm = devices, realm

    def device_for(self, aor: str) -> Device | None:
        """The device an AOR belongs to: its alias as configured, or the alias's user part
        when the alias has no domain."""
        user = aor.split("@", 1)[0]
        for device in self.devices:
            alias = device.alias.lower()
            if alias == aor or ("@" not in alias and alias == user):
                return device
        return None

    def bindings(self, aor: str) -> list[Binding]:
        return self.store.lookup(aor, self.clock())

    def routes(self, aor: str) -> list[tuple[Binding, Target]]:
        """The live bindings of `aor` a call can reach, newest first, each with where the
        call goes."""
        return [(b, target) for b in self.bindings(aor)
                if (target := self.store.route(b)) is not None]

    def register(self, request: Request, txn: ServerTransaction, peer: Peer, now: float,
                 core: Endpoint) -> list[Event]:
        def answer(status: int, reason: str | None = None,
                   headers: tuple[tuple[str, str], ...] = ()) -> list[Event]:
            return core.respond(request, txn, make_response(
                request, status, reason, to_tag=core.new_tag(), headers=headers), now)

        aor = aor_of(request.to.uri)
        device = self.device_for(aor) if aor else None
        if aor is None or device is None:
            log.info("register_refused", aor=aor, reason="not a configured device")
            return answer(404, "Not Found (no such device)")
        wall = self.clock()
        refusal = self._authenticate(request, device, wall)
        if refusal is not None:
            stale = refusal == "stale"
            nonce = self.nonces.issue(wall)
            log.info("register_challenged", aor=aor, reason=refusal)
            return answer(401, "Unauthorized", tuple(
                ("WWW-Authenticate", c) for c in digest.challenges(
                    self.realm, nonce, stale=stale, algorithms=device.digest)))
        try:
            return self._update(request, aor, peer, wall, answer)
        except SipParseError as exc:
            return answer(400, exc.reason)

    def _authenticate(self, request: Request, device: Device, wall: float) -> str | None:
        """None when the request carries a valid answer to our challenge, else why not."""
        header = request.headers.get("Authorization")
        if header is None:
            return "no credentials"
        creds = digest.parse_authorization(header)
        if creds is None or creds.username != device.username or creds.realm != self.realm:
            return "wrong username or realm"
        if creds.algorithm not in device.digest:
            return f"algorithm {creds.algorithm} not offered to this device"
        nonce = self.nonces.check(creds.nonce, wall)
        if nonce is not None:
            return nonce
        if not digest.verify(creds, request.method, device.password):
            return "wrong password"
        return None

    def _update(self, request: Request, aor: str, peer: Peer, wall: float,
                answer: Callable[..., list[Event]]) -> list[Event]:
        header_expires = request.expires
        if request.contact_star:
            if header_expires != 0:
                return answer(400, "Bad Request (Contact: * needs Expires: 0)")
            self.store.remove(aor)
            log.info("unregistered", aor=aor, all=True)
            return answer(200, "OK")
        for contact in request.contacts:
            param = contact.param("expires")
            expires = int(param) if param and param.isdigit() else (
                header_expires if header_expires is not None else DEFAULT_EXPIRES)
            uri = str(contact.uri)
            if expires == 0:
                self.store.remove(aor, uri)
                log.info("unregistered", aor=aor, contact=uri)
                continue
            if expires < MIN_EXPIRES:
                return answer(423, "Interval Too Brief",
                              (("Min-Expires", str(MIN_EXPIRES)),))
            self.store.save(Binding(aor, uri, wall + min(expires, MAX_EXPIRES),
                                    peer.transport, peer.host, peer.port, request.call_id,
                                    request.cseq.seq))
            log.info("registered", aor=aor, contact=uri, expires=min(expires, MAX_EXPIRES),
                     source=f"{peer.transport.lower()}:{peer.host}:{peer.port}")
        current = self.store.lookup(aor, wall)
        return answer(200, "OK", tuple(
            ("Contact", f"<{b.contact}>;expires={int(b.expires_at - wall)}") for b in current))
