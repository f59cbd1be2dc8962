"""Deployment checks: the DNS, certificate and reachability mistakes that break most Lync
integrations, each found and explained (what was found, what to do).

Every check is an async generator taking a `Probe` (the config plus a DNS resolver pointed
where the operator says) and yielding `Result`s as it finds them, so that `lyncgate doctor`
can print each as it completes; none raises for a broken deployment. Each failure says what
was tried, what happened in words, and what to do.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import errno
import ipaddress
import os
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import dns.asyncresolver
import dns.exception
import dns.resolver
from aioice import stun, turn
from cryptography import x509

from gateway import __version__
from gateway.certs.check import load_certificates
from gateway.certs.names import matches, sip_names
from gateway.config.schema import Config, ServerAddress, StunServer, TurnServer
from gateway.sip.message import Request, new_branch, new_call_id, new_tag
from gateway.transport.tls import client_context, failure_reason, peer_name_ok

Level = Literal["pass", "warn", "fail"]
TIMEOUT = 3.0
HOSTS_FILE = Path("/etc/hosts")


@dataclass(frozen=True, slots=True)
class Result:
    check: str
    level: Level
    found: str
    action: str = ""


@dataclass(frozen=True, slots=True)
class Answer:
    """A look-up's records, or why there are none and, when DNS itself failed rather than the
    record being absent, what to do about the DNS server."""

    records: list[str]
    why: str = ""
    fix: str = ""


@dataclass
class Probe:
    config: Config
    dns_server: tuple[str, int] | None = None
    pool: str = ""  # the trusted application pool FQDN, when the node is one of a pool
    pool_nodes: tuple[tuple[str, str], ...] = ()  # (FQDN, address) of every node of the pool
    timeout: float = TIMEOUT
    hosts_file: Path = HOSTS_FILE
    # Told what is about to be tried (a terminal shows it while a check waits on the network).
    progress: Callable[[str], None] = field(default=lambda _: None, repr=False)
    _resolver: dns.asyncresolver.Resolver | None = field(default=None, repr=False)

    @property
    def resolver(self) -> dns.asyncresolver.Resolver:
        if self._resolver is None:
            if self.dns_server is None:
                self._resolver = dns.asyncresolver.Resolver()
            else:
                self._resolver = dns.asyncresolver.Resolver(configure=False)
                self._resolver.nameservers = [self.dns_server[0]]
                self._resolver.port = self.dns_server[1]
            self._resolver.lifetime = self.timeout
        return self._resolver

    @property
    def dns_name(self) -> str:
        """The DNS server asked, as the operator would write it."""
        if self.dns_server is not None:
            host, port = self.dns_server
            return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        servers = ", ".join(str(n) for n in self.resolver.nameservers) or "none"
        return f"{servers} (from /etc/resolv.conf)"

    async def lookup(self, name: str, rdtype: str) -> Answer:
        self.progress(f"DNS {rdtype} {name} from {self.dns_name}")
        try:
            answer = await self.resolver.resolve(name, rdtype, search=False)
        except dns.resolver.NXDOMAIN:
            return Answer([], f"{name} does not exist in DNS (NXDOMAIN from {self.dns_name})")
        except dns.resolver.NoAnswer:
            return Answer([], f"{name} exists in DNS but has no {rdtype} record")
        except dns.exception.Timeout:
            return Answer([], f"no answer from the DNS server {self.dns_name} within "
                          f"{self.timeout:g} s for the {rdtype} record of {name}",
                          "check that the DNS server is running and reachable from here "
                          "(UDP and TCP port 53), or ask another with --dns-server ADDRESS:PORT")
        except dns.resolver.NoNameservers:
            return Answer([], f"the DNS server {self.dns_name} failed or refused the {rdtype} "
                          f"look-up of {name} (SERVFAIL or REFUSED)",
                          "check that the DNS server serves or forwards this zone, or ask "
                          "another with --dns-server ADDRESS:PORT")
        except dns.exception.DNSException as exc:
            return Answer([], f"the {rdtype} look-up of {name} failed: {exc}",
                          "check the name and the DNS server")
        return Answer([r.to_text() for r in answer])

    async def addresses(self, host: str) -> Answer:
        """IP addresses of `host` from the probe's DNS (a literal stands for itself)."""
        try:
            ipaddress.ip_address(host)
        except ValueError:
            return await self.lookup(host, "A")
        return Answer([host])

    def hosts(self, name: str) -> list[str]:
        """Addresses /etc/hosts gives `name`, as the system resolver would find them first."""
        try:
            text = self.hosts_file.read_text("utf-8", "replace")
        except OSError:
            return []
        wanted = name.rstrip(".").lower()
        found = []
        for line in text.splitlines():
            fields = line.split("#", 1)[0].split()
            if len(fields) >= 2 and wanted in (n.rstrip(".").lower() for n in fields[1:]):
                found.append(fields[0])
        return found

    @property
    def node_address(self) -> str:
        """The address others reach this node on: the static NAT address in a public DMZ."""
        node = self.config.node
        return node.static_nat_address or node.address

    @property
    def loopback_only(self) -> bool:
        """A node nothing outside this machine talks to (the embedded default): no Lync server,
        no federation domain, no pool, listening on a loopback address. Nothing about it is
        published in DNS, so nothing is asked of DNS."""
        config = self.config
        try:
            loopback = ipaddress.ip_address(config.node.address).is_loopback
        except ValueError:
            return False
        return (loopback and not config.node.static_nat_address and not config.lync_servers
                and not config.global_settings.mssip_domain and not self.pool
                and not self.pool_nodes)

    def nodes(self) -> list[tuple[str, str]]:
        own = (self.config.node.sip_tls_fqdn, self.node_address)
        return [own, *(n for n in self.pool_nodes if n[0] != own[0])]


Check = Callable[[Probe], AsyncIterator[Result]]


# -- DNS ---------------------------------------------------------------------------------------
async def node_a_records(probe: Probe) -> AsyncIterator[Result]:
    for fqdn, address in probe.nodes():
        yield await _node_a_record(probe, fqdn, address)


async def _node_a_record(probe: Probe, fqdn: str, address: str) -> Result:
    name = f"A {fqdn}"
    local = probe.hosts(fqdn)
    is_localhost = fqdn.rstrip(".").lower() in ("localhost", "localhost.localdomain")
    if probe.loopback_only:
        # Resolved on this machine the way its resolver does it: /etc/hosts first, and
        # "localhost" is always loopback (RFC 6761 6.3).
        if address in local:
            return Result(name, "pass", f"{fqdn} -> {', '.join(local)} (/etc/hosts)")
        if is_localhost:
            return Result(name, "pass", f"{fqdn} is this machine's loopback name (RFC 6761)")
        if local:
            return Result(name, "fail", f"/etc/hosts gives {fqdn} {', '.join(local)}, not "
                          f"{address} (node.address)",
                          f"make /etc/hosts say `{address} {fqdn}`, or set node.address")
        return Result(name, "warn", f"{fqdn} is not in {probe.hosts_file}; a loopback node is "
                      "not looked up in DNS",
                      f"add `{address} {fqdn}` to {probe.hosts_file} for clients on this "
                      "machine that verify the name")
    if is_localhost:
        return Result(name, "fail", f"node.sip_tls_fqdn is {fqdn}, which names each machine "
                      "itself: a Lync server cannot reach this node by it",
                      "set node.sip_tls_fqdn to the node's own FQDN and create its A record")
    answer = await probe.lookup(fqdn, "A")
    if answer.why:
        also = (f"; only this machine's {probe.hosts_file} has it, and Lync servers look it "
                "up in DNS") if local else ""
        return Result(name, "fail", answer.why + also,
                      answer.fix or f"create an A record {fqdn} -> {address}")
    if address not in answer.records:
        return Result(name, "fail", f"resolves to {', '.join(answer.records)}, not {address}",
                      f"point {fqdn} at {address} (the node's "
                      f"{'static NAT ' if probe.config.node.static_nat_address else ''}"
                      "address)")
    return Result(name, "pass", f"{fqdn} -> {', '.join(answer.records)}")


async def pool_round_robin(probe: Probe) -> AsyncIterator[Result]:
    if not probe.pool:
        return
    answer = await probe.lookup(probe.pool, "A")
    wanted = sorted({address for _, address in probe.nodes()})
    name = f"pool {probe.pool}"
    if answer.why:
        yield Result(name, "fail", answer.why, answer.fix or
                     f"create one A record per node: {probe.pool} -> {', '.join(wanted)}")
        return
    missing = [a for a in wanted if a not in answer.records]
    if missing:
        yield Result(name, "fail", f"resolves to {', '.join(answer.records)}; missing "
                     f"{', '.join(missing)}", "add an A record for every node of the pool")
        return
    yield Result(name, "pass", f"round robin over {', '.join(answer.records)}")


async def federation_srv(probe: Probe) -> AsyncIterator[Result]:
    if probe.loopback_only:
        return  # nothing federates with a node only this machine can reach
    domain = probe.config.global_settings.mssip_domain
    if not domain:
        yield Result("SRV _sipfederationtls", "warn", "global.mssip_domain is not set",
                     "set the domain Lync federates with")
        return
    name = f"_sipfederationtls._tcp.{domain}"
    answer = await probe.lookup(name, "SRV")
    check = f"SRV {name}"
    if answer.why:
        yield Result(check, "fail", answer.why,
                     answer.fix or f"publish {name} SRV 0 0 5061 <node or pool FQDN>")
        return
    for record in answer.records:
        _priority, _weight, port_text, target = record.split()
        target = target.rstrip(".").lower()
        port = int(port_text)
        problems = []
        if port != 5061:
            problems.append(f"port {port}, not 5061")
        if not (target == domain or target.endswith("." + domain)):
            problems.append(f"target {target} is outside {domain} (Lync requires the same "
                            "domain)")
        addresses = await probe.lookup(target, "A")
        reach = {a for _, a in probe.nodes()}
        if addresses.why:
            problems.append(addresses.why)
        elif not reach & set(addresses.records):
            problems.append(f"{target} resolves to {', '.join(addresses.records)}, none of "
                            "them a node")
        if problems:
            yield Result(check, "fail", f"-> {target}:{port}: " + "; ".join(problems),
                         "point the SRV record at a node or pool FQDN in the domain, "
                         "port 5061")
        else:
            yield Result(check, "pass",
                         f"-> {target}:{port} ({', '.join(addresses.records)})")


# -- certificate -----------------------------------------------------------------------------
def _node_certificate(probe: Probe) -> x509.Certificate | None:
    """None for a node without one (self-signed); the file parsed when the config loaded."""
    path = probe.config.tls.certificate
    if path is None:
        return None
    return load_certificates(path)[0]


async def certificate_names(probe: Probe) -> AsyncIterator[Result]:
    cert = _node_certificate(probe)
    if cert is None:
        # A loopback node has no Lync peer to refuse the self-signed certificate (yet).
        yield Result("certificate", "warn" if probe.loopback_only else "fail",
                     "no [tls] certificate: the node serves a self-signed one that Lync will "
                     "not trust", "run `lyncgate csr`, have it signed, `lyncgate cert import`")
        return
    for fqdn, _ in probe.nodes():
        if matches(cert, fqdn):
            yield Result(f"SAN {fqdn}", "pass", "in the certificate")
        else:
            yield Result(f"SAN {fqdn}", "fail", "not in the certificate's SAN (it names "
                         f"{', '.join(sip_names(cert)) or 'nothing'})",
                         "request a certificate whose SAN lists every node FQDN")
    domain = probe.config.global_settings.mssip_domain
    if domain:
        answer = await probe.lookup(f"_sipfederationtls._tcp.{domain}", "SRV")
        cn_attrs = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        cn = str(cn_attrs[0].value).lower() if cn_attrs else ""
        for record in answer.records:
            target = record.split()[3].rstrip(".").lower()
            if cn == target:
                yield Result("CN = SRV target", "pass", f"CN {cn}")
            else:
                yield Result("CN = SRV target", "fail", f"CN {cn or '(none)'} but the SRV "
                             f"record points at {target}",
                             "the certificate's subject CN must be the SRV target")
    days = (cert.not_valid_after_utc - dt.datetime.now(dt.UTC)).days
    level: Level = "fail" if days < 0 else "warn" if days < 30 else "pass"
    yield Result("certificate expiry", level, f"{days} days left",
                 "renew with `lyncgate csr` + `lyncgate cert import`" if level != "pass"
                 else "")


# -- reachability ----------------------------------------------------------------------------
async def lync_tls(probe: Probe) -> AsyncIterator[Result]:
    for server in probe.config.lync_servers:
        if server.transport != "tls":
            yield Result(f"Lync {server.name}", "warn", f"transport {server.transport}",
                         "Lync trusted applications use TLS on 5061")
            continue
        answer = await probe.addresses(server.address)
        if answer.why:
            yield Result(f"Lync {server.name}", "fail", answer.why,
                         answer.fix or f"create an A record for {server.address}")
            continue
        yield await _tls_options(probe, server, answer.records[0])


# Alerts a TLS server sends about the client's certificate: under TLS 1.3 they arrive after
# the client's handshake has finished, so only reading from the connection reveals them.
_CERTIFICATE_ALERTS = frozenset({
    "TLSV1_ALERT_UNKNOWN_CA", "SSLV3_ALERT_BAD_CERTIFICATE", "SSLV3_ALERT_CERTIFICATE_EXPIRED",
    "SSLV3_ALERT_CERTIFICATE_REVOKED", "SSLV3_ALERT_CERTIFICATE_UNKNOWN",
    "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE", "TLSV1_ALERT_ACCESS_DENIED",
    "TLSV13_ALERT_CERTIFICATE_REQUIRED",
})
_OURS_REFUSED = {
    "no client certificate": "configure [tls] certificate: Lync wants mutual TLS",
    "certificate expired": "renew our certificate: `lyncgate csr`, then `lyncgate cert import`",
}
_THEIRS_REFUSED = {
    "unknown CA": "add the CA that issued the Lync pool certificate to tls.trusted_ca",
}


async def _tls_options(probe: Probe, server: ServerAddress, address: str) -> Result:
    """Mutual TLS, then an OPTIONS on the connection: any SIP answer means the server took our
    certificate; its refusal surfaces as the alert that ends the connection instead."""
    name = f"TLS {server.name} {server.address}:{server.port}"
    tls = probe.config.tls
    ctx = client_context(tls.certificate, tls.private_key, tls.trusted_ca, True)
    probe.progress(f"{name}: mutual TLS to {address}:{server.port}")
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(address, server.port, ssl=ctx,
                                    server_hostname=server.address), probe.timeout)
    except ssl.SSLError as exc:
        return _refused(name, exc, "handshake failed")
    except (OSError, TimeoutError) as exc:
        return Result(name, "fail", f"TCP and TLS to {address}:{server.port}: "
                      f"{_network_error(exc, probe.timeout)}",
                      f"check lync_servers {server.name!r}: its address and port (the pool's "
                      "SIP TLS port, 5061), that the server is up, and that no firewall "
                      "between drops the connection")
    try:
        writer.write(_options_request(probe.config, server))
        status = await asyncio.wait_for(_status_line(reader), probe.timeout)
        ssl_object = writer.get_extra_info("ssl_object")
        der, version = ssl_object.getpeercert(binary_form=True), ssl_object.version()
    except TimeoutError:
        return Result(name, "fail", f"no answer to OPTIONS within {probe.timeout:g} s",
                      "check that the port is the server's SIP TLS port")
    except (OSError, ssl.SSLError) as exc:
        return _refused(name, exc, "connection lost before OPTIONS was answered")
    finally:
        writer.close()
    if not status:
        return Result(name, "fail", "the server closed the connection without answering "
                      "OPTIONS", "see the server's log for why it dropped us")
    if not status.startswith("SIP/2.0 "):
        return Result(name, "fail", f"answered OPTIONS with {status[:40]!r}, not SIP",
                      "check that the port is the server's SIP TLS port")
    if not peer_name_ok(der, server.address):
        return Result(name, "fail", f"certificate does not name {server.address} (RFC 5922: "
                      "SAN dNSName, no wildcards)", "use the name in the pool certificate")
    return Result(name, "pass", f"mutual TLS ok ({version}), OPTIONS answered "
                  f"{status.removeprefix('SIP/2.0 ')}")


def _refused(name: str, exc: BaseException, what: str) -> Result:
    if isinstance(exc, ssl.SSLError) and getattr(exc, "reason", None) in _CERTIFICATE_ALERTS:
        reason = failure_reason(exc)
        return Result(name, "fail", f"the server refused our certificate: {reason}",
                      _OURS_REFUSED.get(reason, "add the CA that issued our certificate to the "
                                        "Lync servers' trusted root store"))
    reason = (failure_reason(exc) if isinstance(exc, ssl.SSLError)
              else _network_error(exc, None))
    return Result(name, "fail", f"{what}: {reason}",
                  _THEIRS_REFUSED.get(reason, "check the address, port and both sides' "
                                      "certificates"))


def _network_error(exc: BaseException, timeout: float | None) -> str:
    """A failed connection or exchange in words: asyncio's own text for a refused connection
    is "Connect call failed (address)", which says neither what failed nor why."""
    if isinstance(exc, TimeoutError | stun.TransactionTimeout):
        within = f" within {timeout:g} s" if timeout is not None else ""
        return (f"no answer{within} (the address is wrong, the server is down, or a firewall "
                "drops the packets)")
    if isinstance(exc, socket.gaierror):
        return f"the name does not resolve ({exc.strerror})"
    if isinstance(exc, ConnectionRefusedError) or getattr(exc, "errno", None) == \
            errno.ECONNREFUSED:
        return "connection refused: nothing listens on that port"
    code = getattr(exc, "errno", None)
    if isinstance(code, int):
        return os.strerror(code).lower()
    return str(exc) or type(exc).__name__


def _options_request(config: Config, server: ServerAddress) -> bytes:
    """An OPTIONS as the node would send it; the answer comes back on this connection."""
    fqdn, port = config.node.sip_tls_fqdn, config.listen.tls or 5061
    request = Request("OPTIONS", f"sip:{server.address}:{server.port};transport=tls")
    for header, value in (
        ("Via", f"SIP/2.0/TLS {config.node.address}:{port};branch={new_branch()};rport"),
        ("Max-Forwards", "70"),
        ("From", f"<sip:{fqdn}>;tag={new_tag()}"),
        ("To", f"<sip:{server.address}>"),
        ("Call-ID", new_call_id(fqdn)),
        ("CSeq", "1 OPTIONS"),
        ("Contact", f"<sip:{fqdn}:{port};transport=tls>"),
        ("User-Agent", f"lyncgate/{__version__} doctor"),
    ):
        request.headers.add(header, value)
    return request.to_bytes()


async def _status_line(reader: asyncio.StreamReader) -> str:
    """The first line of the answer, past keep-alive CRLFs (RFC 5626); '' if the server closed
    the connection instead."""
    while line := await reader.readline():
        if line.strip():
            return line.decode("utf-8", "replace").strip()
    return ""


async def stun_servers(probe: Probe) -> AsyncIterator[Result]:
    for server in probe.config.stun_servers:
        probe.progress(f"STUN {server.name}: binding request to {server.address}:{server.port}")
        yield await _stun_binding(server, probe.timeout)


async def _stun_binding(server: StunServer, timeout: float) -> Result:
    name = f"STUN {server.name} {server.address}:{server.port}"
    request = stun.Message(message_method=stun.Method.BINDING,
                           message_class=stun.Class.REQUEST)
    try:
        response = await _udp_exchange(bytes(request), (server.address, server.port), timeout,
                                       request.transaction_id)
    except (OSError, TimeoutError) as exc:
        return Result(name, "fail", f"STUN binding request over UDP to {server.address}:"
                      f"{server.port}: {_network_error(exc, timeout)}",
                      f"check stun_servers {server.name!r}: its address and port, that it "
                      "is a STUN server, and that UDP reaches it")
    mapped = response.attributes.get("XOR-MAPPED-ADDRESS")
    if response.message_class != stun.Class.RESPONSE or mapped is None:
        return Result(name, "fail", "binding refused", "check the server is a STUN server")
    return Result(name, "pass", f"reflexive address {mapped[0]}:{mapped[1]}")


async def _udp_exchange(data: bytes, addr: tuple[str, int], timeout: float,
                        transaction_id: bytes) -> stun.Message:
    loop = asyncio.get_running_loop()
    info = await loop.getaddrinfo(addr[0], addr[1], type=socket.SOCK_DGRAM)
    got: asyncio.Future[stun.Message] = loop.create_future()

    class Client(asyncio.DatagramProtocol):
        def datagram_received(self, payload: bytes, _: object) -> None:
            try:
                message = stun.parse_message(payload)
            except ValueError:
                return
            if message.transaction_id == transaction_id and not got.done():
                got.set_result(message)

    host, port = str(info[0][4][0]), int(info[0][4][1])
    transport, _ = await loop.create_datagram_endpoint(Client, remote_addr=(host, port))
    try:
        for _ in range(3):  # STUN over UDP retransmits (RFC 5389 7.2.1)
            transport.sendto(data)
            with contextlib.suppress(TimeoutError):
                return await asyncio.wait_for(asyncio.shield(got), timeout / 3)
        raise TimeoutError("timeout")
    finally:
        transport.close()


async def turn_servers(probe: Probe) -> AsyncIterator[Result]:
    for server in probe.config.turn_servers:
        probe.progress(f"TURN {server.name}: allocation at {server.address}:{server.port}"
                       f"/{server.transport}")
        yield await _turn_allocation(server, probe.timeout)


async def _turn_allocation(server: TurnServer, timeout: float) -> Result:
    name = f"TURN {server.name} {server.address}:{server.port}/{server.transport}"
    try:
        transport, _ = await asyncio.wait_for(
            turn.create_turn_endpoint(asyncio.DatagramProtocol, (server.address, server.port),
                                      server.username, server.password, lifetime=60,
                                      transport=server.transport),
            timeout * 2)
    except stun.TransactionFailed as exc:
        code = exc.response.attributes.get("ERROR-CODE", (0, ""))
        action = ("check the username and password (long-term credentials)"
                  if code[0] == 401 else "see the TURN server's log")
        return Result(name, "fail", f"allocation refused: {code[0]} {code[1]}", action)
    except (OSError, TimeoutError, stun.TransactionTimeout, ConnectionError) as exc:
        return Result(name, "fail", f"TURN allocation over {server.transport.upper()} to "
                      f"{server.address}:{server.port}: {_network_error(exc, timeout * 2)}",
                      f"check turn_servers {server.name!r}: its address, port and transport "
                      "(udp or tcp), and that the firewall lets them through")
    relayed = transport.get_extra_info("sockname")
    transport.close()
    return Result(name, "pass", f"allocation ok, relayed address {relayed[0]}:{relayed[1]}")


ALL_CHECKS: tuple[Check, ...] = (
    node_a_records, pool_round_robin, federation_srv, certificate_names, lync_tls,
    stun_servers, turn_servers,
)


async def run_all(probe: Probe,
                  on_result: Callable[[Result], None] | None = None) -> list[Result]:
    """Every check in order; `on_result` sees each result the moment it is known."""
    out: list[Result] = []
    for check in ALL_CHECKS:
        async for result in check(probe):
            out.append(result)
            if on_result is not None:
                on_result(result)
    return out
