"""One ICE session per media stream, on aioice, gathering where an operator expects:

- host candidates on the node's address, on ports from `listen.media_ports` (aioice alone
  binds ephemeral ports on every interface);
- server-reflexive via the configured STUN server, relayed via the configured TURN server;
  a failure of either is kept as a reason instead of being dropped silently;
- host addresses advertised as `node.static_nat_address` when one is set (public DMZ).

`connect()` runs the checks in the controlling or controlled role and returns the selected
pair per component (the event the B2BUA turns into the re-INVITE with a=remote-candidates),
or raises IceError with the reason.

aioice has no hook for where host candidates bind, so `_NodeConnection` overrides its
`get_component_candidates` and uses its `StunProtocol` (and its `transactions`), `_protocols`
and `_nominated` internals; pyproject pins the aioice versions this was checked against.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aioice
from aioice import stun
from aioice.candidate import candidate_foundation, candidate_priority
from aioice.ice import (
    CandidatePair,
    StunProtocol,
    relayed_candidate,
    server_reflexive_candidate,
)

from ice import msice2
from ice.candidate import Candidate, is_draft6, parse_candidate
from ice.errors import CandidateError, IceError
from ice.ports import PortAllocator


@dataclass(frozen=True, slots=True)
class TurnSettings:
    address: str
    port: int
    username: str
    password: str
    transport: str = "udp"  # or "tcp"


@dataclass(frozen=True, slots=True)
class SelectedPair:
    component: int
    local: Candidate
    remote: Candidate


@dataclass
class IceStats:
    """What gathering and checking found, for logs, the CDR and failure reasons."""

    problems: list[str] = field(default_factory=list)
    skipped_remote: list[str] = field(default_factory=list)
    pairs_checked: int = 0
    # The integrity the peer signs with, once known, and what told us: "hint" (an MS-SIP
    # leg), its "check", its "answer" to a check, or its answer to a "probe".
    peer_form: msice2.Form | None = None
    peer_form_from: str = ""
    probes: int = 0  # MS-ICE2 copies of our checks, sent while the peer's form is unknown
    probe_answers: int = 0  # probes whose answer was taken as their check's


class _Protocol(StunProtocol):
    """aioice's STUN socket, speaking MS-ICE2 integrity to the peers that sign that way:
    their messages are re-signed RFC 5389 style before aioice reads them, and what goes
    back to them is signed theirs (see ice/msice2.py).

    Until the peer's form is known, each check goes in both forms: aioice's, and a probe,
    its MS-ICE2 copy under a transaction ID of its own (a peer may answer a repeated ID
    from its cache). An MS-ICE2 peer's success answer to the probe is handed to aioice as
    the check's, so the pair succeeds one round trip after checks start rather than when
    the peer's own first check arrives (its pacing, 20 ms and more). Whatever else answers
    a probe (an RFC 5389 agent's 400 or 401) is dropped, so probing never fails a pair."""

    receiver: _NodeConnection

    def __init__(self, receiver: _NodeConnection) -> None:
        super().__init__(receiver)
        # While the peer's form is unknown: our checks in flight, to resend at once in
        # MS-ICE2 form when the peer turns out to be MS-ICE2 (rather than after aioice's
        # 500 ms retransmission timer), and the probe sent with each (probe ID -> check ID).
        self.in_flight: dict[bytes, tuple[stun.Message, tuple[str, int]]] = {}
        self.probes: dict[bytes, bytes] = {}

    def datagram_received(self, data: bytes | str, addr: tuple[Any, ...]) -> None:
        if isinstance(data, bytes) and data[:1] in (b"\x00", b"\x01"):
            converted = self._from_peer(data)
            if converted is None:
                return
            data = converted
        super().datagram_received(data, addr)

    def _from_peer(self, data: bytes) -> bytes | None:
        """STUN as aioice is to read it, or None for an answer to a probe that is not an
        MS-ICE2 success. What the peer signed tells its form."""
        key = self._key(data, outgoing=False)
        form = msice2.signed_form(data, key) if key is not None else None
        answer = bool(data[0] & 0x01)
        check = self.probes.pop(data[8:20], None) if answer else None
        if check is not None:
            if form != "msice2" or data[1] & 0x10:
                return None  # no MS-ICE2 success (an RFC 5389 agent's 401): not the check's
            self.in_flight.pop(check, None)  # answered here: not to be resent
            if check in self.transactions:
                self.receiver.session.stats.probe_answers += 1
            data = msice2.with_transaction_id(data, check)
        if form is not None:
            source = "probe" if check is not None else "answer" if answer else "check"
            self.receiver.learn(form, source)
        if key is not None and form == "msice2":
            data = msice2.resign(msice2.username_padding(data, inside=False), key,
                                 "rfc5389")
        return data

    def peer_known(self, form: msice2.Form) -> None:
        """Probing is over; checks in flight go again at once if the peer is MS-ICE2."""
        in_flight, self.in_flight, self.probes = self.in_flight, {}, {}
        if form == "msice2":
            for tid, (message, addr) in in_flight.items():
                if tid in self.transactions:
                    self.send_stun(message, addr)

    def send_stun(self, message: stun.Message, addr: tuple[str, int]) -> None:
        stats = self.receiver.session.stats
        if stats.peer_form == "msice2":
            self.transport.sendto(self._msice2(bytes(message)), addr)
            return
        super().send_stun(message, addr)
        tid = message.transaction_id
        if (stats.peer_form is None and message.message_class == stun.Class.REQUEST
                and "MESSAGE-INTEGRITY" in message.attributes and tid not in self.in_flight):
            # Once per check: its retransmissions (same ID) are not probed again.
            self.in_flight[tid] = (message, addr)
            probe = os.urandom(12)
            self.probes[probe] = tid
            stats.probes += 1
            self.transport.sendto(
                self._msice2(msice2.with_transaction_id(bytes(message), probe)), addr)

    def _msice2(self, data: bytes) -> bytes:
        key = self._key(data, outgoing=True)
        if key is None:
            return data
        return msice2.resign(msice2.username_padding(data, inside=True), key, "msice2")

    def _key(self, data: bytes, *, outgoing: bool) -> bytes | None:
        """Short-term credentials: a request is signed with the password of the agent that
        answers it, and the answer with the same one."""
        conn = self.receiver
        request = (data[0] & 0x01) == 0 and (data[1] & 0x10) == 0
        password = conn.remote_password if request == outgoing else conn.local_password
        return password.encode() if password else None


class _NodeConnection(aioice.Connection):
    def __init__(self, session: IceSession, *, controlling: bool, components: int) -> None:
        ipv6 = ":" in session.address
        super().__init__(ice_controlling=controlling, components=components,
                         use_ipv4=not ipv6, use_ipv6=ipv6)
        self.session = session
        # Set once every component has a nominated pair: aioice's connect() returns only
        # after one more pacing interval (Ta, 20 ms), which the call set-up need not wait.
        self.all_nominated: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def learn(self, form: msice2.Form, source: str) -> None:
        """The peer signed a message in `form`: every check of ours goes that way from now
        on. One agent is behind all the peer's candidates, so this holds for all of them.
        MS-ICE2 is final: such a peer must be answered its way whatever else it sent."""
        stats = self.session.stats
        if stats.peer_form in (form, "msice2"):
            return
        stats.peer_form, stats.peer_form_from = form, source
        for protocol in self._protocols:
            if isinstance(protocol, _Protocol):  # all are: host and relay sockets alike
                protocol.peer_known(form)

    def data_received(self, data: bytes, component: int) -> None:
        if data[:1] < b"\x40":
            # STUN aioice could not read (an MS-ICE2 keep-alive indication with the legacy
            # FINGERPRINT, say): never media, whose first two bits are RTP's version 2.
            return
        # Media goes straight to the relay when one is attached, not through aioice's queue.
        if self.session.on_data is not None:
            self.session.on_data(data, component)
        else:
            super().data_received(data, component)

    def check_complete(self, pair: CandidatePair) -> None:
        super().check_complete(pair)
        if not self.all_nominated.done() and self._components <= set(self._nominated):
            self.all_nominated.set_result(None)

    async def get_component_candidates(
        self, component: int, addresses: list[str], timeout: int = 5
    ) -> list[aioice.Candidate]:
        s = self.session
        candidates: list[aioice.Candidate] = []
        jobs: dict[str, asyncio.Task[tuple[aioice.Candidate, StunProtocol | None]]] = {}
        if not s.relay_only:
            _transport, protocol, port = await s.ports.bind_udp(lambda: _Protocol(self),
                                                               s.address)
            s.bound.append(port)
            protocol.local_candidate = aioice.Candidate(
                foundation=candidate_foundation("host", "udp", s.address),
                component=component, transport="udp",
                priority=candidate_priority(component, "host"), host=s.address, port=port,
                type="host",
            )
            self._protocols.append(protocol)
            candidates.append(protocol.local_candidate)
            if s.stun is not None:
                jobs["STUN"] = asyncio.ensure_future(
                    server_reflexive_candidate(protocol, s.stun))
        if s.turn is not None:
            turn = s.turn
            jobs["TURN"] = asyncio.ensure_future(relayed_candidate(
                component=component, hide_related_address=False,
                protocol_factory=lambda: _Protocol(self),
                turn_server=(turn.address, turn.port), turn_username=turn.username,
                turn_password=turn.password, turn_ssl=False, turn_transport=turn.transport,
            ))
        if jobs:
            try:
                await asyncio.wait(jobs.values(), timeout=timeout)
            except asyncio.CancelledError:
                await _abandon(list(jobs.values()))
                raise
        for what, job in jobs.items():
            if not job.done():
                job.cancel()
                s.stats.problems.append(f"{what} server did not answer within {timeout} s")
                continue
            exc = job.exception()
            if exc is not None:
                s.stats.problems.append(_reason(what, exc))
                continue
            candidate, relay = job.result()
            candidates.append(candidate)
            if relay is not None:
                self._protocols.append(relay)
        return candidates


async def _abandon(jobs: list[asyncio.Task[tuple[aioice.Candidate, StunProtocol | None]]]
                   ) -> None:
    """Gathering stopped (the session closed): STUN and TURN requests still out are
    stopped, and a TURN allocation already made is released, as no one else will."""
    for job in jobs:
        job.cancel()
    await asyncio.wait(jobs)
    for job in jobs:
        if not job.cancelled() and job.exception() is None:
            relay = job.result()[1]
            if relay is not None:
                relay.transport.close()


def _reason(what: str, exc: BaseException) -> str:
    if isinstance(exc, stun.TransactionFailed):
        code = exc.response.attributes.get("ERROR-CODE", (0, "no error code"))
        verb = "allocation" if what == "TURN" else "binding"
        return f"{what} {verb} refused: {code[0]} {code[1]}"
    if isinstance(exc, stun.TransactionTimeout):
        return f"{what} server did not answer"
    return f"{what} failed: {type(exc).__name__}: {exc}"


class IceSession:
    def __init__(
        self,
        *,
        controlling: bool,
        components: int,
        address: str,
        ports: PortAllocator,
        static_nat_address: str = "",
        stun_server: tuple[str, int] | None = None,
        turn: TurnSettings | None = None,
        relay_only: bool = False,
        msice2_peer: bool = False,
    ) -> None:
        if relay_only and turn is None:
            raise IceError("relay-only ICE needs a TURN server")
        self.address = address
        self.relay_only = relay_only  # only the TURN relay is offered (host stays private)
        self.ports = ports
        self.static_nat_address = static_nat_address
        self.stun = stun_server
        self.turn = turn
        self.stats = IceStats()
        if msice2_peer:
            # The peer is known to be a Lync/SfB agent (an MS-SIP leg): MS-ICE2 from the
            # first check. Without the hint the peer's form is learned (see _Protocol).
            self.stats.peer_form, self.stats.peer_form_from = "msice2", "hint"
        self.components = components
        self.bound: list[int] = []
        self.selected: list[SelectedPair] = []
        self.connection = _NodeConnection(self, controlling=controlling, components=components)
        self._closing: asyncio.Future[None] | None = None  # set: closed or closing
        self._gathering: asyncio.Future[None] | None = None
        self._checks: asyncio.Future[None] | None = None
        # Set by the media relay: called with (packet, component) for every media packet.
        self.on_data: Callable[[bytes, int], None] | None = None

    # -- local side ----------------------------------------------------------------------
    async def gather(self) -> None:
        """Gather the local candidates. A close() meanwhile (the call ended) stops it, ports
        and allocations released, and it raises IceError."""
        if self._closing is not None:
            raise IceError("the session was closed before gathering")
        self._gathering = asyncio.ensure_future(self.connection.gather_candidates())
        try:
            await self._gathering
        except asyncio.CancelledError:
            if self._closing is None:  # our caller was cancelled, not the session closed
                await self.close()
                raise
            raise IceError(self._why("the session was closed while gathering")) from None
        except BaseException:
            await self.close()
            raise
        if not self.connection.local_candidates:
            await self.close()
            raise IceError(self._why("no local candidate"))

    @property
    def ufrag(self) -> str:
        return str(self.connection.local_username)

    @property
    def pwd(self) -> str:
        return str(self.connection.local_password)

    def local_candidates(self) -> list[Candidate]:
        """As advertised: host addresses replaced by the static NAT address if set."""
        out = []
        for c in self.connection.local_candidates:
            candidate = Candidate.from_aioice(c)
            if candidate.type == "host" and self.static_nat_address:
                candidate = candidate.with_address(self.static_nat_address)
            out.append(candidate)
        return out

    def candidate_attributes(self) -> list[str]:
        """`a=` values for the SDP: `candidate:...` (and `x-candidate-ipv6:...`)."""
        return [c.attribute() for c in self.local_candidates()]

    def default_candidate(self, component: int = 1) -> Candidate:
        """The c=/m= address: the relay if there is one (it always works), else host."""
        own = [c for c in self.local_candidates() if c.component == component]
        if not own:
            raise IceError("no local candidates: call gather() first")
        return min(own, key=lambda c: c.priority)

    # -- remote side ---------------------------------------------------------------------
    async def set_remote(self, ufrag: str, pwd: str, attributes: Sequence[str]) -> None:
        """The peer's credentials and its candidate attributes (`candidate:...`,
        `x-candidate-ipv6:...`). Candidates aioice cannot use (TCP, draft-6, unreadable)
        are skipped and listed in `stats.skipped_remote`."""
        self.connection.remote_username = ufrag
        self.connection.remote_password = pwd
        for attribute in attributes:
            _, _, value = attribute.partition(":")
            if is_draft6(value):
                self.stats.skipped_remote.append(f"draft-6 candidate {value.split()[5]}")
                continue
            try:
                candidate = parse_candidate(value)
            except CandidateError as exc:
                self.stats.skipped_remote.append(str(exc))
                continue
            if not candidate.is_udp:
                self.stats.skipped_remote.append(
                    f"{candidate.transport} candidate {candidate.address}:{candidate.port}")
                continue
            if not 1 <= candidate.component <= self.components:
                self.stats.skipped_remote.append(f"component {candidate.component} not used")
                continue
            await self.connection.add_remote_candidate(candidate.to_aioice())
        await self.connection.add_remote_candidate(None)

    async def connect(self, timeout: float = 10.0) -> list[SelectedPair]:
        """Run the checks; the selected pair of each component, or IceError saying why."""
        usable = len(self.connection.remote_candidates)
        checks = asyncio.ensure_future(self.connection.connect())
        # It may finish after we returned; its outcome is read here so none goes unseen.
        checks.add_done_callback(lambda t: t.cancelled() or t.exception())
        self._checks = checks
        done, _ = await asyncio.wait({checks, self.connection.all_nominated}, timeout=timeout,
                                     return_when=asyncio.FIRST_COMPLETED)
        if not done:
            checks.cancel()
            raise IceError(self._why(f"no pair selected within {timeout:g} s"))
        if checks.done() and checks.exception() is not None:
            if not usable:
                raise IceError(self._why("no remote candidate we can use"))
            raise IceError(self._why(f"no candidate pair succeeded ({usable} remote "
                                     "candidate(s) checked)"))
        self.selected = [
            SelectedPair(component, Candidate.from_aioice(pair.local_candidate),
                         Candidate.from_aioice(pair.remote_candidate))
            for component, pair in sorted(self.connection._nominated.items())
        ]
        return self.selected

    def _why(self, what: str) -> str:
        details = self.stats.problems + [f"skipped {s}" for s in self.stats.skipped_remote]
        return what + (f" ({'; '.join(details)})" if details else "")

    def remote_candidates_attribute(self) -> str:
        """`remote-candidates:` for the re-INVITE/UPDATE after ICE (RFC 5245 9.1.2.2)."""
        if not self.selected:
            raise IceError("no selected pair yet")
        return "remote-candidates:" + " ".join(
            f"{p.component} {p.remote.address} {p.remote.port}" for p in self.selected)

    # -- media -------------------------------------------------------------------------------
    async def send(self, data: bytes, component: int = 1) -> None:
        await self.connection.sendto(data, component)

    def send_now(self, data: bytes, component: int = 1) -> None:
        """Send on the selected pair without a coroutine per packet (the relay's path)."""
        pair = self.connection._nominated.get(component)
        if pair is not None:
            pair.protocol.transport.sendto(data, pair.remote_addr)

    async def recv(self) -> tuple[bytes, int]:
        data, component = await self.connection.recvfrom()
        return bytes(data), int(component)

    async def close(self) -> None:
        """Close sockets and allocations; the ports go back to the range. Idempotent: a
        later call returns when the first one has released everything."""
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._release())
        await asyncio.shield(self._closing)

    async def _release(self) -> None:
        for work in (self._gathering, self._checks):
            if work is not None and not work.done():
                work.cancel()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                if work is not None:
                    await work
        with contextlib.suppress(Exception):
            await self.connection.close()
        for port in self.bound:
            self.ports.release(port)
        self.bound.clear()
