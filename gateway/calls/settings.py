"""What call control reads from the config, as one frozen snapshot per config generation.

`CallSettings.from_config` is built once when a config is loaded or reloaded; every call
keeps the snapshot it was admitted under, so a reload changes the next call and never one
half-way (its limits, timers, TURN server and encryption stay those it started with).
`Local` is how this node writes itself into SIP: its listeners change only on restart.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field

from gateway.calls.pin_guard import PinPolicy
from gateway.config.schema import Config, MediaEncryption
from gateway.resolver.rfc3263 import Target
from gateway.sip.session_timer import TimerPolicy
from gateway.transport.peer import Transport
from ice.session import TurnSettings
from routing.engine import Router


@dataclass(frozen=True, slots=True)
class CallLimits:
    """Overload protection (0 = no limit): beyond either, 503 + Retry-After."""

    max_calls: int = 0
    max_calls_per_second: int = 0
    retry_after: int = 30
    # Across every live node of this node's location (`cluster.max_calls`).
    cluster_max_calls: int = 0


@dataclass(frozen=True, slots=True)
class NextHop:
    """A named SIP proxy or Lync server a rule sends its calls through (`call_via`)."""

    address: str
    port: int
    transport: Transport


@dataclass(frozen=True, slots=True)
class CallSettings:
    router: Router
    location: str = ""  # this node's location: where calls arrive
    limits: CallLimits = field(default_factory=CallLimits)
    timers: TimerPolicy = field(default_factory=TimerPolicy)
    encryption: MediaEncryption = "best_effort"
    anchor_sip_media: bool = True  # False: SIP-to-SIP calls are signalling only
    media_timeout: float = 60.0  # seconds of silence on every stream that end a call; 0: never
    next_hops: Mapping[str, NextHop] = field(default_factory=dict)
    static_nat: str = ""
    # By server name, and each location's choice of them ("" the node's own location).
    turn_servers: Mapping[str, TurnSettings] = field(default_factory=dict)
    stun_servers: Mapping[str, tuple[str, int]] = field(default_factory=dict)
    location_turn: Mapping[str, str] = field(default_factory=dict)
    location_stun: Mapping[str, str] = field(default_factory=dict)
    # Each location's default Lync server: where calls toward Lync go when the rule names none.
    location_lync_server: Mapping[str, str] = field(default_factory=dict)
    # The From domain toward Lync per location (the location's override, else the global).
    mssip_domains: Mapping[str, str] = field(default_factory=dict)
    mssip_domain_default: str = ""
    pins: PinPolicy = field(default_factory=PinPolicy)
    generation: int = 1

    @classmethod
    def from_config(cls, config: Config, router: Router, generation: int) -> CallSettings:
        g = config.global_settings
        servers = (*config.sip_proxies, *config.lync_servers)
        locations = config.locations
        return cls(
            router=router, location=config.node.location,
            limits=CallLimits(g.max_calls, g.max_calls_per_second, cluster_max_calls=(
                config.cluster.max_calls if config.cluster is not None else 0)),
            timers=TimerPolicy(g.session_expires_seconds, g.min_session_expires_seconds),
            encryption=g.sip_media_encryption, anchor_sip_media=g.anchor_sip_media,
            media_timeout=float(g.media_timeout_seconds),
            next_hops={s.name: NextHop(s.address, s.port, Transport.parse(s.transport))
                       for s in servers},
            static_nat=config.node.static_nat_address,
            turn_servers={t.name: TurnSettings(t.address, t.port, t.username, t.password,
                                               t.transport) for t in config.turn_servers},
            stun_servers={s.name: (s.address, s.port) for s in config.stun_servers},
            location_turn={loc.name: loc.turn_server for loc in locations},
            location_stun={loc.name: loc.stun_server for loc in locations},
            location_lync_server={loc.name: loc.lync_server for loc in locations
                                  if loc.lync_server},
            mssip_domains={loc.name: loc.mssip_domain for loc in locations if loc.mssip_domain},
            mssip_domain_default=g.mssip_domain,
            pins=PinPolicy(g.pin_attempts, float(g.pin_window_seconds),
                           float(g.pin_lockout_seconds)),
            generation=generation,
        )

    def turn_for(self, rule_choice: str, location: str) -> TurnSettings | None:
        """A rule's TURN server, else that of the call's outgoing location (the node's when
        the rule says automatic)."""
        name = rule_choice or self.location_turn.get(location or self.location, "")
        return self.turn_servers.get(name)

    def stun_for(self, rule_choice: str, location: str) -> tuple[str, int] | None:
        name = rule_choice or self.location_stun.get(location or self.location, "")
        return self.stun_servers.get(name)

    def mssip_domain(self, location: str) -> str:
        """The domain a caller appears in toward Lync: the outgoing location's override,
        else the global MS-SIP domain."""
        return self.mssip_domains.get(location or self.location, self.mssip_domain_default)


@dataclass(frozen=True, slots=True)
class Local:
    """How this node appears in the SIP it writes, to a given peer: behind a static NAT (the
    guide's appendix), a peer outside the node's private network is given the public
    address, one inside the private one."""

    address: str  # Via / Contact host
    ports: dict[Transport, int]  # transport -> listening port, filled as listeners open
    fqdn: str = ""  # the SIP TLS FQDN: the host of our Contact over TLS (Lync checks it)
    static_nat: str = ""  # the public address of a node behind static NAT

    def address_for(self, peer_host: str) -> str:
        """The address `peer_host` reaches this node at."""
        if self.static_nat and not _same_side(self.address, peer_host):
            return self.static_nat
        return self.address

    def is_self(self, target: Target) -> bool:
        """Whether `target` is one of this node's own listeners."""
        if self.ports.get(target.transport) != target.port:
            return False
        loopback = ("127.0.0.1", "::1")
        return target.address == self.address or (
            target.address in loopback and self.address in (*loopback, "0.0.0.0", "::"))

    def via(self, transport: Transport, peer_host: str) -> str:
        return (f"SIP/2.0/{transport} {self.address_for(peer_host)}:"
                f"{self.ports.get(transport, 5060)}")

    def contact(self, transport: Transport, peer_host: str) -> str:
        suffix = "" if transport == Transport.UDP else f";transport={transport.lower()}"
        host = self.fqdn if transport == Transport.TLS and self.fqdn else self.address_for(
            peer_host)
        return f"<sip:{host}:{self.ports.get(transport, 5060)}{suffix}>"


@functools.lru_cache(maxsize=4096)  # a node talks to the same few peers
def _same_side(node: str, peer: str) -> bool:
    """Whether `peer` is on the node's side of a NAT: both globally reachable addresses or
    neither (RFC 1918, loopback, link-local, unique local, shared and documentation space).
    A name, not an address, counts as outside."""
    try:
        return ipaddress.ip_address(node.strip("[]")).is_global == ipaddress.ip_address(
            peer.strip("[]")).is_global
    except ValueError:
        return False
