"""Read a TOML file (or the embedded default) into a validated `Config`, or refuse it whole."""

from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress
import re
import sys
import tomllib
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from cryptography import x509

from gateway import logs
from gateway.certs.check import (
    EXPIRY_WARNING,
    KEY_PAIR_MISMATCH,
    load_certificates,
    same_key_pair,
)
from gateway.certs.csr import load_key
from gateway.certs.errors import CertificateError
from gateway.config.errors import ConfigError
from gateway.config.fields import (
    MAX_ADDRESS,
    MAX_USERNAME,
    Problems,
    Section,
    check_reference,
    check_unique,
    join,
)
from gateway.config.routing_sections import RoutingReferences, parse_routing
from gateway.config.schema import (
    ApiConfig,
    AvatarConfig,
    ClusterConfig,
    Config,
    Device,
    GlobalConfig,
    ListenConfig,
    Location,
    NodeConfig,
    PresenceConfig,
    ServerAddress,
    StunServer,
    TlsConfig,
    TurnServer,
)
from routing.model import RoutingRule, Service

EMBEDDED_DEFAULT = "<embedded default>"
_T = TypeVar("_T")
# Accepted by the guide's rule form but not built here: a call would go out as SIP instead.
UNSUPPORTED_OUTGOING = frozenset({"h323", "webrtc", "webrtc-not-allowed"})

# RFC 1123 host names; SIP TLS needs a real FQDN, not an address (RFC 5922 matches names).
_LABEL = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)"
_FQDN = re.compile(rf"^{_LABEL}(\.{_LABEL})*\.?$")


def default_text() -> str:
    return resources.files("gateway.config").joinpath("default.toml").read_text("utf-8")


def load_default() -> Config:
    return parse_text(default_text(), EMBEDDED_DEFAULT, base_dir=None)


def load_file(path: str | Path, *, check_files: bool = True) -> Config:
    """`check_files=False` skips reading the `[tls]` files, for the commands that make them."""
    path = Path(path)
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), [f"<file>: cannot read: {exc}"]) from exc
    return parse_text(text, str(path), base_dir=path.parent, check_files=check_files)


def load_for_command(path: str | None, *, check_files: bool = True) -> Config | None:
    """The config a CLI command runs on (embedded default without a path); on errors, every
    problem is printed to stderr with its field path and None is returned (exit status 2)."""
    try:
        return load_default() if path is None else load_file(path, check_files=check_files)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"{exc.source}: {problem}", file=sys.stderr)
        return None


def parse_text(text: str, source: str, *, base_dir: Path | None,
               check_files: bool = True) -> Config:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, [f"<toml>: {exc}"]) from exc
    return parse_data(raw, source, base_dir=base_dir, check_files=check_files)


def parse_data(raw: dict[str, Any], source: str, *, base_dir: Path | None,
               check_files: bool = True) -> Config:
    """A config from already-decoded TOML: every problem in one ConfigError."""
    problems = Problems()
    raw = _unsupported_outgoing(raw, problems)
    config = _build(raw, source, base_dir, problems, check_files)
    if problems:
        raise ConfigError(source, problems.items)
    return config


def log_warnings(config: Config) -> None:
    """Log what is valid today but will not be for long (a certificate about to expire)."""
    log = logs.get("gateway.config")
    for warning in config.warnings:
        log.warning("config_warning", config=config.source, warning=warning)


def _unsupported_outgoing(raw: dict[str, Any], problems: Problems) -> dict[str, Any]:
    """Refuse outgoing protocols lyncgate cannot place, in words of their own. The rule reader
    gets "sip" in their place so that it adds no second, vaguer problem for the same field;
    the config is refused anyway."""
    rules = raw.get("routing_rules")
    if not isinstance(rules, list):
        return raw
    cleaned: list[Any] = []
    for i, rule in enumerate(rules):
        value = rule.get("outgoing_protocol") if isinstance(rule, dict) else None
        if isinstance(value, str) and value in UNSUPPORTED_OUTGOING:
            problems.add(f"routing_rules[{i}].outgoing_protocol",
                         f"{value!r} is not supported by lyncgate: it places calls as "
                         "\"sip\" or \"mssip\" only")
            rule = {**rule, "outgoing_protocol": "sip"}
        cleaned.append(rule)
    return {**raw, "routing_rules": cleaned}


def _build(raw: dict[str, Any], source: str, base_dir: Path | None, problems: Problems,
           check_files: bool) -> Config:
    root = Section(raw, "", problems)
    warnings: list[str] = []
    node = _node(root.table("node"))
    listen = _listen(root.table("listen"))
    tls = _tls(root.table("tls"), base_dir, check_files, warnings)
    global_settings = _global(root.table("global"))
    api = _api(root.table("api"))
    avatar = _avatar(root.table("avatar"))
    presence = _presence(root.table("presence"))
    cluster = _cluster(root.table("cluster"), node, base_dir, check_files) \
        if root.has("cluster") else None

    lync_servers = tuple(_server(s, ("tls", "tcp")) for s in root.tables("lync_servers"))
    sip_proxies = tuple(_server(s, ("udp", "tcp", "tls")) for s in root.tables("sip_proxies"))
    turn_servers = tuple(_turn(s) for s in root.tables("turn_servers"))
    stun_servers = tuple(_stun(s) for s in root.tables("stun_servers"))
    location_sections = root.tables("locations")
    locations = tuple(_location(s) for s in location_sections)

    Named = Location | ServerAddress | TurnServer | StunServer
    named: tuple[tuple[str, str, tuple[Named, ...]], ...] = (
        ("locations", "location name", locations),
        ("lync_servers", "Lync server name", lync_servers),
        ("sip_proxies", "SIP proxy name", sip_proxies),
        ("turn_servers", "TURN server name", turn_servers),
        ("stun_servers", "STUN server name", stun_servers),
    )
    for key, what, items in named:
        check_unique(
            ((f"{key}[{i}].name", item.name) for i, item in enumerate(items)), problems, what
        )

    refs = RoutingReferences(
        locations=frozenset(loc.name for loc in locations),
        lync_servers=frozenset(s.name for s in lync_servers),
        sip_proxies=frozenset(s.name for s in sip_proxies),
        turn_servers=frozenset(s.name for s in turn_servers),
        stun_servers=frozenset(s.name for s in stun_servers),
    )
    for section, loc in zip(location_sections, locations, strict=True):
        path = section.path
        check_reference(f"{path}.lync_server", loc.lync_server, refs.lync_servers, problems,
                        "Lync server")
        check_reference(f"{path}.turn_server", loc.turn_server, refs.turn_servers, problems,
                        "TURN server")
        check_reference(f"{path}.stun_server", loc.stun_server, refs.stun_servers, problems,
                        "STUN server")
    if locations or node.location:
        check_reference("node.location", node.location, refs.locations, problems, "location")

    devices = tuple(_device(s) for s in root.tables("devices"))
    check_unique(((f"devices[{i}].alias", d.alias) for i, d in enumerate(devices)), problems,
                 "device alias", fold=True)
    check_unique(((f"devices[{i}].username", d.username) for i, d in enumerate(devices)),
                 problems, "device username")
    services, rules = parse_routing(root, refs)
    services, rules = _avatar_files(services, rules, base_dir, check_files, problems)
    root.reject_unknown()
    return Config(
        source=source,
        node=node,
        listen=listen,
        tls=tls,
        global_settings=global_settings,
        locations=locations,
        lync_servers=lync_servers,
        sip_proxies=sip_proxies,
        turn_servers=turn_servers,
        stun_servers=stun_servers,
        services=services,
        routing_rules=rules,
        api=api,
        devices=devices,
        avatar=avatar,
        presence=presence,
        cluster=cluster,
        warnings=tuple(warnings),
    )


def _node(s: Section) -> NodeConfig:
    node = NodeConfig(
        name=s.string("name", "lyncgate"),
        location=s.string("location"),
        sip_tls_fqdn=s.string("sip_tls_fqdn", "localhost", max_len=MAX_ADDRESS),
        address=s.string("address", "127.0.0.1", max_len=MAX_ADDRESS),
        static_nat_address=s.string("static_nat_address", max_len=MAX_ADDRESS),
        state_dir=s.string("state_dir", max_len=4096),
    )
    if node.sip_tls_fqdn and not _FQDN.match(node.sip_tls_fqdn):
        s.problems.add(f"{s.path}.sip_tls_fqdn", f"{node.sip_tls_fqdn!r} is not a valid FQDN")
    elif "*" in node.sip_tls_fqdn:
        s.problems.add(f"{s.path}.sip_tls_fqdn", "wildcards are not allowed (RFC 5922)")
    _check_ip(s, "address", node.address, allow_empty=False)
    _check_ip(s, "static_nat_address", node.static_nat_address, allow_empty=True)
    s.reject_unknown()
    return node


def _check_ip(s: Section, key: str, value: str, *, allow_empty: bool) -> None:
    if allow_empty and not value:
        return
    try:
        ipaddress.ip_address(value)
    except ValueError:
        s.problems.add(f"{s.path}.{key}", f"{value!r} is not an IPv4 or IPv6 address")


def _listen(s: Section) -> ListenConfig:
    udp = s.integer("udp", 5060, low=0, high=65535)
    tcp = s.integer("tcp", 5060, low=0, high=65535)
    tls = s.integer("tls", 5061, low=0, high=65535)
    media = _port_range(s, "media_ports", (40000, 49999))
    if tls and tcp and tls == tcp:
        s.problems.add(f"{s.path}.tls", f"port {tls} is already the TCP listener's")
    s.reject_unknown()
    return ListenConfig(udp=udp, tcp=tcp, tls=tls, media_ports=media)


def _port_range(s: Section, key: str, default: tuple[int, int]) -> tuple[int, int]:
    value = s.value(key)
    path = f"{s.path}.{key}"
    if value is None:
        return default
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        s.problems.add(path, "must be a list of two port numbers [first, last]")
        return default
    first, last = value
    if not (1024 <= first <= last <= 65535):
        s.problems.add(path, f"[{first}, {last}] must satisfy 1024 <= first <= last <= 65535")
        return default
    if last - first < 1:
        s.problems.add(path, "must hold at least two ports (RTP and RTCP)")
        return default
    return (first, last)


def _tls(s: Section, base_dir: Path | None, check_files: bool,
         warnings: list[str]) -> TlsConfig:
    def path_of(key: str) -> Path | None:
        text = s.string(key, max_len=4096)
        if not text:
            return None
        p = Path(text)
        return p if p.is_absolute() or base_dir is None else base_dir / p

    cert, key = path_of("certificate"), path_of("private_key")
    if (cert is None) != (key is None):
        s.problems.add(s.path, "certificate and private_key must be given together")
    config = TlsConfig(
        certificate=cert,
        private_key=key,
        trusted_ca=path_of("trusted_ca"),
        verify_mode=s.choice("verify_mode", "on", ("off", "on")),
    )
    if check_files:
        _tls_files(s, config, warnings)
    s.reject_unknown()
    return config


def _tls_files(s: Section, tls: TlsConfig, warnings: list[str]) -> None:
    """The files must exist, be readable by this process (under systemd, the daemon's user:
    check-config runs as it) and hold PEM of the right kind with a key that fits, so a bad file
    is reported here with its field instead of as a bare errno when the listener starts or a
    reload builds its TLS contexts. No files: the daemon makes a self-signed pair itself."""

    def read(key: str, path: Path | None, load: Callable[[Path], _T]) -> _T | None:
        if path is None:
            return None
        try:
            return load(path)
        except CertificateError as exc:
            s.problems.add(join(s.path, key), str(exc))
            return None

    certs = read("certificate", tls.certificate, load_certificates)
    if certs:
        _validity(s, tls.certificate, certs[0], dt.datetime.now(dt.UTC), warnings)
    key = read("private_key", tls.private_key, load_key)
    read("trusted_ca", tls.trusted_ca, load_certificates)
    if certs and key is not None and not same_key_pair(certs[0], key):
        s.problems.add(join(s.path, "private_key"), f"{tls.private_key}: {KEY_PAIR_MISMATCH} "
                       f"(the certificate is the first one in {tls.certificate})")


def _validity(s: Section, path: Path | None, cert: x509.Certificate, now: dt.datetime,
              warnings: list[str]) -> None:
    """Peers refuse a certificate outside its dates, and a node serving one takes no call over
    TLS: refused here, so check-config, a start and a reload all stop on it. Its last month
    is a warning, time enough to renew."""
    field = join(s.path, "certificate")
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    if now < start:
        s.problems.add(field, f"{path}: not yet valid: valid from {start:%Y-%m-%d %H:%M} UTC")
    elif now > end:
        s.problems.add(field, f"{path}: expired on {end:%Y-%m-%d %H:%M} UTC; renew it with "
                       "`lyncgate csr` and `lyncgate cert import`")
    elif end - now < EXPIRY_WARNING:
        warnings.append(f"{field}: {path}: expires on {end:%Y-%m-%d %H:%M} UTC, in "
                        f"{(end - now).days} days; renew it with `lyncgate csr` and "
                        "`lyncgate cert import`")


def _global(s: Section) -> GlobalConfig:
    domain = s.string("mssip_domain", max_len=MAX_ADDRESS)
    if domain and not _FQDN.match(domain):
        s.problems.add(f"{s.path}.mssip_domain", f"{domain!r} is not a valid domain")
    config = GlobalConfig(
        mssip_domain=domain,
        sip_media_encryption=s.choice(
            "sip_media_encryption", "best_effort", ("off", "best_effort", "required")
        ),
        media_timeout_seconds=s.integer("media_timeout_seconds", 60, low=0, high=3600),
        max_calls=s.integer("max_calls", 0, low=0, high=1_000_000),
        max_calls_per_second=s.integer("max_calls_per_second", 0, low=0, high=100_000),
        dns_server=_host_port(s, "dns_server"),
        session_expires_seconds=s.integer("session_expires_seconds", 1800, low=0, high=86400),
        min_session_expires_seconds=s.integer("min_session_expires_seconds", 90, low=1,
                                              high=86400),
        anchor_sip_media=s.boolean("anchor_sip_media", True),
        pin_attempts=s.integer("pin_attempts", 5, low=1, high=1000),
        pin_window_seconds=s.integer("pin_window_seconds", 600, low=1, high=86400),
        pin_lockout_seconds=s.integer("pin_lockout_seconds", 600, low=1, high=86400),
    )
    if 0 < config.session_expires_seconds < config.min_session_expires_seconds:
        s.problems.add(join(s.path, "session_expires_seconds"),
                       f"{config.session_expires_seconds} is below min_session_expires_seconds "
                       f"({config.min_session_expires_seconds})")
    s.reject_unknown()
    return config


def _device(s: Section) -> Device:
    device = Device(
        alias=s.string("alias", required=True, max_len=MAX_ADDRESS),
        username=s.string("username", required=True, max_len=MAX_USERNAME),
        password=s.string("password", required=True, max_len=MAX_USERNAME),
        description=s.string("description"),
        digest=s.string_list("digest") or ("SHA-256", "MD5"),
    )
    for i, name in enumerate(device.digest):
        if name not in ("SHA-256", "MD5"):
            s.problems.add(f"{s.path}.digest[{i}]", f"{name!r} is not SHA-256 or MD5")
    s.reject_unknown()
    return device


def _api(s: Section) -> ApiConfig:
    config = ApiConfig(
        address=s.string("address", "127.0.0.1", max_len=MAX_ADDRESS),
        port=s.integer("port", 0, low=0, high=65535),
        token=s.string("token"),
    )
    _check_ip(s, "address", config.address, allow_empty=False)
    if config.token and len(config.token) < 16:
        s.problems.add(f"{s.path}.token", "must be at least 16 characters (it guards reload)")
    s.reject_unknown()
    return config


def _avatar(s: Section) -> AvatarConfig:
    config = AvatarConfig(
        address=s.string("address", "127.0.0.1", max_len=MAX_ADDRESS),
        port=s.integer("port", 80, low=0, high=65535),
        url=s.string("url", max_len=MAX_ADDRESS),
    )
    _check_ip(s, "address", config.address, allow_empty=False)
    if config.url and not re.match(r"^https?://[^/\s]+(/\S*)?$", config.url):
        s.problems.add(f"{s.path}.url", f"{config.url!r} is not an http:// or https:// URL")
    s.reject_unknown()
    return config


def _presence(s: Section) -> PresenceConfig:
    config = PresenceConfig(
        max_subscriptions=s.integer("max_subscriptions", 50_000, low=0, high=10_000_000),
        max_subscriptions_per_source=s.integer("max_subscriptions_per_source", 20_000, low=0,
                                               high=10_000_000),
    )
    s.reject_unknown()
    return config


DATABASE_SCHEMES = ("postgresql://", "postgres://")


def _cluster(s: Section, node: NodeConfig, base_dir: Path | None,
             check_files: bool) -> ClusterConfig:
    database = s.string("database", required=True, max_len=4096)
    if database and not database.startswith(DATABASE_SCHEMES):
        s.problems.add(join(s.path, "database"),
                       "must be a postgresql:// URL (libpq's connection URI)")
    ca_text = s.string("trusted_ca", max_len=4096)
    ca = Path(ca_text) if ca_text else None
    if ca is not None and not ca.is_absolute() and base_dir is not None:
        ca = base_dir / ca
    config = ClusterConfig(
        database=database,
        address=s.string("address", node.address, max_len=MAX_ADDRESS),
        trusted_ca=ca,
        heartbeat_seconds=s.integer("heartbeat_seconds", 2, low=1, high=60),
        max_calls=s.integer("max_calls", 0, low=0, high=1_000_000),
        port=s.integer("port", 5071, low=1, high=65535),
    )
    _check_ip(s, "address", config.address, allow_empty=False)
    if check_files and ca is not None:
        try:
            load_certificates(ca)
        except CertificateError as exc:
            s.problems.add(join(s.path, "trusted_ca"), str(exc))
    s.reject_unknown()
    return config


# Larger images are not contact list avatars: Lync shows them at 48-96 pixels.
MAX_AVATAR_BYTES = 1 << 20
_IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff")


def _avatar_files(services: tuple[Service, ...], rules: tuple[RoutingRule, ...],
                  base_dir: Path | None, check_files: bool, problems: Problems) -> tuple[
                      tuple[Service, ...], tuple[RoutingRule, ...]]:
    """Each `avatar` resolved against the config's folder and, unless `check_files` is
    off, read: a missing or unreadable file, or one that is not PNG or JPEG, is named here
    rather than served as a broken image to every contact list."""

    def resolved(path: str, field: str) -> str:
        if not path:
            return path
        p = Path(path)
        if not p.is_absolute() and base_dir is not None:
            p = base_dir / p
        if check_files:
            try:
                with p.open("rb") as image:
                    head = image.read(MAX_AVATAR_BYTES + 1)
            except OSError as exc:
                problems.add(field, f"cannot read {p}: {exc.strerror or exc}")
                return str(p)
            if len(head) > MAX_AVATAR_BYTES:
                problems.add(field, f"{p} is over {MAX_AVATAR_BYTES} bytes")
            elif not head.startswith(_IMAGE_MAGIC):
                problems.add(field, f"{p} is neither a PNG nor a JPEG image")
        return str(p)

    return (
        tuple(dataclasses.replace(s, avatar=resolved(s.avatar, f"services[{i}].avatar"))
              if s.avatar else s for i, s in enumerate(services)),
        tuple(dataclasses.replace(r, avatar=resolved(r.avatar, f"routing_rules[{i}].avatar"))
              if r.avatar else r for i, r in enumerate(rules)),
    )


def _host_port(s: Section, key: str) -> tuple[str, int] | None:
    text = s.string(key, max_len=MAX_ADDRESS)
    if not text:
        return None
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        host = ""
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        s.problems.add(f"{s.path}.{key}", f"{text!r} is not ADDRESS:PORT (an IP address)")
        return None
    return host, int(port)


def _location(s: Section) -> Location:
    loc = Location(
        name=s.string("name", required=True),
        description=s.string("description"),
        lync_server=s.string("lync_server"),
        mssip_domain=s.string("mssip_domain", max_len=MAX_ADDRESS),
        turn_server=s.string("turn_server"),
        stun_server=s.string("stun_server"),
    )
    s.reject_unknown()
    return loc


def _server(s: Section, transports: tuple[str, ...]) -> ServerAddress:
    default_transport = transports[0]
    server = ServerAddress(
        name=s.string("name", required=True),
        description=s.string("description"),
        address=s.string("address", required=True, max_len=MAX_ADDRESS),
        port=s.integer("port", 5061 if default_transport == "tls" else 5060, low=1, high=65535),
        transport=s.choice("transport", default_transport, transports),  # type: ignore[arg-type]
    )
    s.reject_unknown()
    return server


def _turn(s: Section) -> TurnServer:
    server = TurnServer(
        name=s.string("name", required=True),
        description=s.string("description"),
        address=s.string("address", required=True, max_len=MAX_ADDRESS),
        port=s.integer("port", 3478, low=1, high=65535),
        transport=s.choice("transport", "udp", ("udp", "tcp")),
        username=s.string("username", max_len=MAX_USERNAME),
        password=s.string("password", required=True, max_len=MAX_USERNAME),
    )
    s.reject_unknown()
    return server


def _stun(s: Section) -> StunServer:
    server = StunServer(
        name=s.string("name", required=True),
        description=s.string("description"),
        address=s.string("address", required=True, max_len=MAX_ADDRESS),
        port=s.integer("port", 3478, low=1, high=65535),
    )
    s.reject_unknown()
    return server
