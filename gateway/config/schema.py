"""The validated, immutable configuration of one node and the deployment it belongs to.

Field names follow `config.md` and the reference guide; they are a contract with operators'
files. Built once by `gateway.config.load`, never re-validated on a hot path; a reload swaps the
whole object.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from routing.model import RoutingRule, Service

Transport = Literal["udp", "tcp", "tls"]
VerifyMode = Literal["off", "on"]
MediaEncryption = Literal["off", "best_effort", "required"]


@dataclass(frozen=True, slots=True)
class NodeConfig:
    name: str
    location: str
    sip_tls_fqdn: str
    address: str
    static_nat_address: str
    # Where the daemon keeps what must survive a restart (self-signed certificate, SQLite).
    # Empty: $STATE_DIRECTORY (systemd), else /var/lib/lyncgate as root, else ~/.local/state.
    state_dir: str


@dataclass(frozen=True, slots=True)
class ListenConfig:
    udp: int
    tcp: int
    tls: int
    media_ports: tuple[int, int]


@dataclass(frozen=True, slots=True)
class TlsConfig:
    # Empty certificate and key: the daemon creates a self-signed pair in its state directory.
    certificate: Path | None
    private_key: Path | None
    trusted_ca: Path | None
    verify_mode: VerifyMode


@dataclass(frozen=True, slots=True)
class GlobalConfig:
    mssip_domain: str
    sip_media_encryption: MediaEncryption
    media_timeout_seconds: int = 60  # no media on any stream this long ends a call; 0 = never
    max_calls: int = 0  # concurrent calls this node takes; beyond it 503; 0 = no limit
    max_calls_per_second: int = 0  # new calls per second; beyond it 503; 0 = no limit
    dns_server: tuple[str, int] | None = None  # RFC 3263 look-ups; None = /etc/resolv.conf
    session_expires_seconds: int = 1800  # RFC 4028 interval we ask for; 0 = ask for none
    min_session_expires_seconds: int = 90  # our Min-SE: shorter intervals get 422
    anchor_sip_media: bool = True  # False: SIP-to-SIP calls are signalling only
    # Brute-force resistance for PINs (the guide's feature table): this many wrong PINs from
    # one source address within the window lock that address out for the lock-out time.
    pin_attempts: int = 5
    pin_window_seconds: int = 600
    pin_lockout_seconds: int = 600


@dataclass(frozen=True, slots=True)
class Location:
    name: str
    description: str
    lync_server: str
    mssip_domain: str
    turn_server: str
    stun_server: str


@dataclass(frozen=True, slots=True)
class ServerAddress:
    """A Lync server or SIP proxy: where outbound signalling goes."""

    name: str
    description: str
    address: str
    port: int
    transport: Transport


@dataclass(frozen=True, slots=True)
class TurnServer:
    name: str
    description: str
    address: str
    port: int
    transport: Literal["udp", "tcp"]
    username: str
    password: str


@dataclass(frozen=True, slots=True)
class StunServer:
    name: str
    description: str
    address: str
    port: int


@dataclass(frozen=True, slots=True)
class Device:
    """A SIP device allowed to register (`[[devices]]`): its alias and digest credentials."""

    alias: str
    username: str
    password: str
    description: str = ""
    # Digest algorithms offered, in order; endpoints that read only the first challenge and
    # know only MD5 (common in older firmware, and SIPp) need ["MD5"].
    digest: tuple[str, ...] = ("SHA-256", "MD5")


@dataclass(frozen=True, slots=True)
class ApiConfig:
    """The status API and metrics over HTTP; port 0 turns it off."""

    address: str = "127.0.0.1"
    port: int = 0
    token: str = ""  # required for reload and anything that changes state; "" = refused


@dataclass(frozen=True, slots=True)
class AvatarConfig:
    """The HTTP listener serving presence avatars (the guide's "HTTP conference avatar",
    TCP 80 from Lync clients); port 0 turns it off. Separate from the status API: it is
    reached from every Lync client, the API only by operators."""

    address: str = "127.0.0.1"
    port: int = 80
    # The URL prefix clients fetch avatars at; "" = http://<node.sip_tls_fqdn>[:port]
    url: str = ""


@dataclass(frozen=True, slots=True)
class PresenceConfig:
    """Caps on presence subscriptions held in memory; beyond either, 503 + Retry-After."""

    max_subscriptions: int = 50_000
    # A Lync pool is one source for all of its users' subscriptions: this is against one
    # client or address flooding, not a pool's share.
    max_subscriptions_per_source: int = 20_000


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """`[cluster]`: this node is one of several sharing state in PostgreSQL. Absent: one node,
    its state in SQLite, no server needed."""

    database: str  # postgresql://user:password@host:port/dbname
    address: str  # where the other nodes reach this one (shown in the nodes table)
    trusted_ca: Path | None  # the cluster's CA: what node certificates are checked against
    heartbeat_seconds: int = 2  # three missed in a row and the others mark this node gone
    max_calls: int = 0  # concurrent calls across the nodes of this node's location; 0 = none
    # The node-to-node SIP listener (mutual TLS under `trusted_ca`) at `address`: calls for
    # a device whose flow another node holds go to that node's.
    port: int = 5071


@dataclass(frozen=True, slots=True)
class Config:
    source: str
    node: NodeConfig
    listen: ListenConfig
    tls: TlsConfig
    global_settings: GlobalConfig
    locations: tuple[Location, ...]
    lync_servers: tuple[ServerAddress, ...]
    sip_proxies: tuple[ServerAddress, ...]
    turn_servers: tuple[TurnServer, ...]
    stun_servers: tuple[StunServer, ...]
    services: tuple[Service, ...]
    routing_rules: tuple[RoutingRule, ...]
    api: ApiConfig = ApiConfig()
    devices: tuple[Device, ...] = ()
    avatar: AvatarConfig = AvatarConfig()
    presence: PresenceConfig = PresenceConfig()
    cluster: ClusterConfig | None = None
    # Valid now but not for long, each `field.path: message` (a certificate near its end).
    warnings: tuple[str, ...] = ()

    def location(self, name: str) -> Location | None:
        return next((loc for loc in self.locations if loc.name == name), None)

    def mssip_domain_for(self, location: str) -> str:
        """The From domain toward Lync: the location's override, else the global domain."""
        loc = self.location(location)
        if loc is not None and loc.mssip_domain:
            return loc.mssip_domain
        return self.global_settings.mssip_domain

    def avatar_base(self) -> str:
        """The absolute URL prefix of the avatars in presence documents ("" when off)."""
        avatar = self.avatar
        if not avatar.port:
            return ""
        if avatar.url:
            return avatar.url.rstrip("/")
        port = "" if avatar.port == 80 else f":{avatar.port}"
        return f"http://{self.node.sip_tls_fqdn or self.node.address}{port}"
