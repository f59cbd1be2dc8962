"""RFC 3263: which transport, address and port a SIP URI is sent to, in failover order.

The rules are pure functions over records (`targets_for`, `order_naptr`, `order_srv`); the
`Resolver` feeds them from DNS with dnspython, caches answers for their TTL (and failures for a
short while), and logs `RFC3263 lookup failure` with the name and record type when a look-up
fails, the words the reference guide's troubleshooting searches for.
"""

from __future__ import annotations

import functools
import ipaddress
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import dns.asyncresolver
import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver

from gateway import logs
from gateway.sip.uri import SipUri
from gateway.transport.peer import Transport

log = logs.get(__name__)

# NAPTR services we can use and the transport each names (RFC 3263 4.1).
NAPTR_SERVICES = {"SIPS+D2T": "TLS", "SIP+D2T": "TCP", "SIP+D2U": "UDP"}
# SRV prefixes tried without NAPTR, in our order of preference: TLS first, as Lync wants.
SRV_PREFIXES = (("_sips._tcp.", "TLS"), ("_sip._tcp.", "TCP"), ("_sip._udp.", "UDP"))
# Where another organisation's Lync/SfB Edge takes federated MS-SIP (the guide's federation
# section): tried first for calls toward Lync, over TLS.
FEDERATION_PREFIX = "_sipfederationtls._tcp."
DEFAULT_PORT = {"UDP": 5060, "TCP": 5060, "TLS": 5061}
NEGATIVE_TTL = 30.0  # how long a failed look-up is remembered
MAX_CACHE = 10_000


class ResolveError(Exception):
    """No target could be found for a URI; the message says which name and why. A call
    toward it is refused with `status_hint`."""

    status_hint = 404


class TargetResolver(Protocol):
    """What call control needs of a resolver: `Resolver`, or a test's stand-in."""

    def resolve_now(self, uri: SipUri) -> list[Target] | None:
        """The targets when no DNS look-up is due (or its answer is cached), else None."""
        ...

    async def resolve(self, uri: SipUri, *, federation: bool = False) -> list[Target]:
        """The targets in failover order; raises ResolveError. `federation`: a call toward
        Lync, which another organisation's Edge takes at its federation SRV record."""
        ...


@dataclass(frozen=True, slots=True)
class Target:
    transport: Transport
    host: str  # the name the target was found under: the TLS server name to check
    address: str  # an IP address
    port: int


@dataclass(frozen=True, slots=True)
class Naptr:
    order: int
    preference: int
    flags: str
    service: str
    replacement: str


@dataclass(frozen=True, slots=True)
class Srv:
    priority: int
    weight: int
    port: int
    target: str


# -- the pure rules ------------------------------------------------------------------------
def transports_allowed(uri: SipUri, supported: Sequence[str]) -> tuple[str, ...]:
    """sips: needs TLS (RFC 3263 4.1); an explicit transport parameter narrows the choice."""
    allowed = tuple(t for t in supported if uri.scheme != "sips" or t == "TLS")
    if uri.transport is not None:
        wanted = "TLS" if uri.transport == "tls" or uri.scheme == "sips" else uri.transport.upper()
        allowed = tuple(t for t in allowed if t == wanted)
    return allowed


def transport_without_srv(uri: SipUri, supported: Sequence[str]) -> str | None:
    """The transport when no NAPTR/SRV look-up is due, a numeric host or an explicit port
    (RFC 3263 4.2): the transport parameter, else UDP for sip: and TLS for sips:. None when
    DNS decides (an explicit transport then only narrows the SRV query)."""
    allowed = transports_allowed(uri, supported)
    if not allowed or not (_is_ip(host_of(uri)) or uri.port is not None):
        return None
    return _fixed_transport(uri, allowed)


def _fixed_transport(uri: SipUri, allowed: tuple[str, ...]) -> str:
    default = "TLS" if uri.scheme == "sips" else "UDP"
    return default if default in allowed else allowed[0]


def order_naptr(records: Sequence[Naptr], allowed: Sequence[str]) -> list[tuple[str, str]]:
    """(transport, SRV name) pairs from NAPTR records, by order then preference, keeping
    only services we speak (RFC 3263 4.1, RFC 3403)."""
    usable = [r for r in records
              if r.flags.lower() == "s" and NAPTR_SERVICES.get(r.service.upper()) in allowed]
    usable.sort(key=lambda r: (r.order, r.preference))
    return [(NAPTR_SERVICES[r.service.upper()], r.replacement) for r in usable]


def order_srv(records: Sequence[Srv], rng: random.Random) -> list[Srv]:
    """RFC 2782: ascending priority; within one, a weighted random order in which weight-0
    records come last but are still used. A lone '.' target means 'not available here'."""
    if len(records) == 1 and records[0].target in (".", ""):
        return []
    out: list[Srv] = []
    for priority in sorted({r.priority for r in records}):
        pool = sorted((r for r in records if r.priority == priority), key=lambda r: r.weight)
        while pool:
            total = sum(r.weight for r in pool)
            if total == 0:
                out.extend(pool)
                break
            pick = rng.uniform(0, total)
            running = 0
            for index, record in enumerate(pool):
                running += record.weight
                if record.weight and running >= pick:
                    out.append(pool.pop(index))
                    break
    return out


def host_of(uri: SipUri) -> str:
    """The host to resolve: `maddr` takes its place when present (RFC 3263 4)."""
    return uri.param("maddr") or uri.host_bare


@functools.lru_cache(maxsize=1024)  # the same few hosts on every call; a parse is microseconds
def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


# -- failover --------------------------------------------------------------------------------
async def try_targets(
    targets: Sequence[Target], attempt: Callable[[Target], Awaitable[int]]
) -> tuple[Target, int]:
    """Try each target in order; a timeout or a 503 moves on to the next (RFC 3263 4.3).
    Returns the target that gave a final answer and its status; raises the last timeout when
    every target timed out, or returns the last 503."""
    if not targets:
        raise ResolveError("no targets to try")
    last: tuple[Target, int] | None = None
    timed_out: TimeoutError | None = None
    for target in targets:
        try:
            status = await attempt(target)
        except TimeoutError as exc:
            log.info("target_failed", target=f"{target.address}:{target.port}",
                     transport=target.transport, reason="timeout")
            timed_out = exc
            continue
        if status != 503:
            return target, status
        log.info("target_failed", target=f"{target.address}:{target.port}",
                 transport=target.transport, reason="503")
        last = (target, status)
    if last is not None:
        return last
    assert timed_out is not None
    raise timed_out


# -- DNS -----------------------------------------------------------------------------------
class Resolver:
    """RFC 3263 over DNS, with a TTL cache. `nameserver` points it at one server (tests,
    `doctor --dns-server`); None reads /etc/resolv.conf."""

    def __init__(
        self,
        nameserver: tuple[str, int] | None = None,
        *,
        timeout: float = 3.0,
        transports: Sequence[str] = ("TLS", "TCP", "UDP"),
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        if nameserver is None:
            self._dns = dns.asyncresolver.Resolver()
        else:
            self._dns = dns.asyncresolver.Resolver(configure=False)
            self._dns.nameservers = [nameserver[0]]
            self._dns.port = nameserver[1]
        self._dns.lifetime = timeout
        self.transports = tuple(transports)
        self._clock = clock
        self._rng = rng or random.Random()
        self._cache: dict[tuple[str, str], tuple[float, list[object]]] = {}
        self.queries = 0  # DNS queries actually sent (the cache's hit rate is visible)

    def resolve_now(self, uri: SipUri) -> list[Target] | None:
        """The targets of a URI that needs no DNS (its host is an IP address); None when
        DNS has to answer, which `resolve` asks. Lets a call to an address be placed
        without waiting on the event loop."""
        allowed = transports_allowed(uri, self.transports)
        if not allowed:
            raise ResolveError(f"{uri}: no usable transport (sips: needs TLS)")
        host = host_of(uri)
        if not _is_ip(host):
            return None
        fixed = _fixed_transport(uri, allowed)
        return [Target(Transport(fixed), host, host.strip("[]"), uri.port or DEFAULT_PORT[fixed])]

    async def resolve(self, uri: SipUri, *, federation: bool = False) -> list[Target]:
        found = self.resolve_now(uri)
        if found is not None:
            return found
        host = host_of(uri)
        allowed = transports_allowed(uri, self.transports)
        fixed = transport_without_srv(uri, self.transports)
        if federation and fixed is None and "TLS" in allowed:
            targets = await self._srv_targets("TLS", FEDERATION_PREFIX + host)
            if targets:
                return targets
        if fixed is not None:
            port = uri.port or DEFAULT_PORT[fixed]
            targets = [Target(Transport(fixed), host, a, port) for a in await self._addresses(host)]
        else:
            # With an explicit transport, NAPTR has nothing to choose (RFC 3263 4.1).
            targets = await self._by_service(host, allowed, naptr=uri.transport is None)
        if not targets:
            raise ResolveError(f"{host}: no NAPTR, SRV or A/AAAA records lead to a SIP server")
        return targets

    async def _by_service(
        self, host: str, allowed: tuple[str, ...], *, naptr: bool
    ) -> list[Target]:
        answers = await self._query(host, "NAPTR") if naptr else []
        services = order_naptr([r for r in answers if isinstance(r, Naptr)], allowed)
        from_naptr = bool(services)
        if not services:
            services = [(t, prefix + host) for prefix, t in SRV_PREFIXES if t in allowed]
        targets: list[Target] = []
        for transport, name in services:
            targets += await self._srv_targets(transport, name)
            if from_naptr and targets:
                # With NAPTR, the first service that yields targets is the one to use; its
                # SRV records provide the failover among servers.
                break
        if targets:
            return targets
        # No NAPTR and no SRV: the host itself, UDP for sip: (TCP if UDP is not allowed).
        transport = "TLS" if allowed == ("TLS",) else ("UDP" if "UDP" in allowed else allowed[0])
        return [Target(Transport(transport), host, a, DEFAULT_PORT[transport])
                for a in await self._addresses(host)]

    async def _srv_targets(self, transport: str, name: str) -> list[Target]:
        """The servers an SRV name lists, in RFC 2782 order, with their addresses."""
        srvs = [r for r in await self._query(name, "SRV") if isinstance(r, Srv)]
        return [Target(Transport(transport), srv.target, address, srv.port)
                for srv in order_srv(srvs, self._rng)
                for address in await self._addresses(srv.target)]

    async def _addresses(self, host: str) -> list[str]:
        addresses = [str(a) for a in await self._query(host, "A")]
        addresses += [str(a) for a in await self._query(host, "AAAA")]
        return addresses

    async def _query(self, name: str, rdtype: str) -> list[object]:
        key = (name.lower().rstrip("."), rdtype)
        now = self._clock()
        hit = self._cache.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        self.queries += 1
        try:
            answer = await self._dns.resolve(name, rdtype, search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer, dns.resolver.NoNameservers,
                dns.exception.Timeout, dns.resolver.LifetimeTimeout) as exc:
            # NoAnswer for AAAA or NAPTR is routine; the failure is logged all the same, as
            # operators read these lines to see exactly which look-ups came back empty.
            log.warning("RFC3263 lookup failure", name=name, rdtype=rdtype,
                        error=type(exc).__name__)
            self._store(key, now + NEGATIVE_TTL, [])
            return []
        except dns.exception.DNSException as exc:
            # A name DNS cannot even ask for (an empty label, a label over 63 octets): no
            # target, said in words, rather than an exception the caller never answers.
            raise ResolveError(f"{name}: not a valid DNS name ({exc})") from exc
        records = [_convert(rdata) for rdata in answer]
        ttl = float(answer.rrset.ttl) if answer.rrset is not None else NEGATIVE_TTL
        self._store(key, now + ttl, records)
        return records

    def _store(self, key: tuple[str, str], expires: float, records: list[object]) -> None:
        if len(self._cache) >= MAX_CACHE:
            now = self._clock()
            for old in [k for k, (exp, _) in self._cache.items() if exp <= now]:
                del self._cache[old]
            if len(self._cache) >= MAX_CACHE:
                self._cache.clear()
        self._cache[key] = (expires, records)


def _convert(rdata: Any) -> object:
    kind = getattr(rdata, "rdtype", None)
    if kind == dns.rdatatype.NAPTR:
        return Naptr(
            order=int(rdata.order),
            preference=int(rdata.preference),
            flags=rdata.flags.decode(),
            service=rdata.service.decode(),
            replacement=_name(rdata.replacement),
        )
    if kind == dns.rdatatype.SRV:
        return Srv(
            priority=int(rdata.priority),
            weight=int(rdata.weight),
            port=int(rdata.port),
            target=_name(rdata.target),
        )
    return str(rdata)


def _name(name: dns.name.Name) -> str:
    return name.to_text(omit_final_dot=True) or "."
