"""The asyncio adapter around the sans-I/O core: transports in, `Endpoint` in the middle,
timers from `next_deadline()`, and the node's life cycle (start, reload, drain, stop)."""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import sqlite3
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path

from gateway import __version__, logs
from gateway.calls.b2bua import B2bua
from gateway.calls.cdr import CdrStore
from gateway.calls.registrar import BindingStore, Registrar
from gateway.calls.settings import CallSettings, Local
from gateway.cluster.bindings import SharedBindings
from gateway.cluster.generations import merged
from gateway.cluster.member import Hooks, Member
from gateway.cluster.relay import Hop, LinkRelay
from gateway.cluster.view import ClusterView
from gateway.config.errors import ConfigError
from gateway.config.load import load_default, load_file
from gateway.config.schema import Config
from gateway.daemon.call_io import CallIo
from gateway.daemon.headroom import Headroom
from gateway.daemon.state import ensure_self_signed, state_dir
from gateway.media import TRANSLATOR_BUILD, prompts
from gateway.presence.handler import OPTION_TAGS, Presence
from gateway.presence.subscriptions import Limits as PresenceLimits
from gateway.resolver.rfc3263 import Resolver
from gateway.sip.endpoint import CallHandler, Endpoint, EndpointSettings
from gateway.sip.timers import DEFAULT, Timers
from gateway.sip.transaction_layer import Event
from gateway.sip.transaction_machines import Send
from gateway.sip.validate import SUPPORTED
from gateway.transport.errors import FramingError
from gateway.transport.layer import Limits, TransportLayer
from gateway.transport.peer import Peer, Transport
from gateway.transport.tls import client_context, server_context
from ice.ports import PortAllocator
from routing.engine import Router

# The core's timers fire on a 10 ms grid: with thousands of transactions the earliest
# deadline moved on nearly every message, and each move cost the loop a new timer handle;
# on the grid, a few hundred timers a second (retransmissions, Timer J/K clean-ups, session
# timers) share one wake-up per tick. SIP's timers are 500 ms (T1) and up: 10 ms late is
# nothing to them.
TIMER_GRID_S = 0.01

log = logs.get(__name__)


@dataclass(frozen=True, slots=True)
class TlsFiles:
    certificate: Path
    private_key: Path
    self_signed: bool


class Node:
    def __init__(self, config: Config, *, timers: Timers = DEFAULT,
                 limits: Limits | None = None, config_path: str | None = None) -> None:
        self.config = config
        self.config_path = config_path  # the local file: a cluster's generations merge with it
        self.shared_config: dict[str, object] | None = None  # the cluster generation in force
        self.view = ClusterView(config.node.name)
        self.router = Router(config.services, config.routing_rules)
        self.generation = 1
        self.local = Local(config.node.address, {}, config.node.sip_tls_fqdn,
                           config.node.static_nat_address)
        self.cdrs = self._open_cdrs(config)
        self.registrar = Registrar(devices=config.devices, realm=_realm(config),
                                   store=self._open_bindings(config, self.view))
        resolver = Resolver(config.global_settings.dns_server)
        self.presence = Presence(self.router, self.local, avatar_base=config.avatar_base(),
                                 limits=_presence_limits(config))
        self.calls = B2bua(CallSettings.from_config(config, self.router, self.generation),
                           local=self.local, resolver=resolver, cdrs=self.cdrs,
                           media_ports=PortAllocator(*config.listen.media_ports),
                           registrar=self.registrar, presence=self.presence)
        self.link_port = 0  # the node-to-node listener's, once open
        self.relay = self._relay(config)
        self.endpoint = Endpoint(
            EndpointSettings(server=f"lyncgate/{__version__}",
                             supported=SUPPORTED | OPTION_TAGS), timers=timers,
            handler=self.relay or self.calls)
        self.transport = TransportLayer(self._on_message, limits=limits,
                                        on_unreachable=self._on_unreachable)
        # Built in the running loop; kept, since asyncio.get_running_loop() costs a getpid()
        # system call, and the core asks the time on every message.
        self._loop = asyncio.get_running_loop()
        self.call_io = CallIo(self.calls, self.endpoint, resolver, spawn=self._spawn,
                              deliver=self._deliver, clock=self._loop.time)
        self.headroom = Headroom(self.endpoint.overload, self.transport, self._loop)
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._work: set[asyncio.Future[None]] = set()
        self.stopped = asyncio.Event()
        self.cluster = self._join(config)

    def _join(self, config: Config) -> Member | None:
        """With [cluster], the node's membership: shared bindings, PIN failures and the
        calls of the location's other nodes wired into call control."""
        store = self.registrar.store
        if config.cluster is None or not isinstance(store, SharedBindings):
            return None
        location = config.node.location
        self.calls.admission.elsewhere = lambda: self.view.elsewhere(location)
        cdr_path = self.cdrs.path if self.cdrs is not None else None
        return Member(config, self.view, store, cdr_path, self.calls.ctx.pin_guard, Hooks(
            load=lambda: len(self.calls.ctx.calls), apply_config=self.apply_generation,
            pin_policy=lambda: self.calls.settings.pins, loop_time=self._loop.time,
            link_port=lambda: self.link_port),
            generation_path=state_dir(config.node) / "cluster_generation.json")

    def _relay(self, config: Config) -> LinkRelay | None:
        """With [cluster], calls between nodes: the proxy toward the devices whose flows
        this node holds, in front of call control."""
        store = self.registrar.store
        if config.cluster is None or not isinstance(store, SharedBindings):
            return None
        local = self.local
        hop = Hop(config.node.name, config.cluster.address, config.cluster.port, local.via,
                  lambda transport, host: f"{local.address_for(host)}:"
                                          f"{local.ports.get(transport, 5060)}")
        handler: CallHandler = self.calls
        return LinkRelay(handler, hop, store, self.view,
                         trusted=lambda peer: self.transport.trusted(peer))

    @staticmethod
    def _open_bindings(config: Config, view: ClusterView) -> BindingStore:
        path = state_dir(config.node) / "registrations.sqlite3"
        shared = config.cluster is not None
        try:
            return SharedBindings(path, view) if shared else BindingStore(path)
        except (OSError, sqlite3.Error) as exc:
            log.error("registrations_not_persistent", path=str(path), error=str(exc),
                      note="registrations are kept in memory and lost on restart")
            return SharedBindings(None, view) if shared else BindingStore(None)

    @staticmethod
    def _open_cdrs(config: Config) -> CdrStore | None:
        path = state_dir(config.node) / "cdr.sqlite3"
        try:
            store = CdrStore(path)
            closed = store.close_interrupted(time.time())
        except (OSError, sqlite3.Error) as exc:
            log.error("cdr_unavailable", path=str(path), error=str(exc),
                      note="calls go on without call detail records")
            return None
        if closed:
            log.warning("cdr_closed_after_restart", calls=closed,
                        note="calls in progress when the node last stopped")
        return store

    # -- life cycle ----------------------------------------------------------------------
    async def start(self) -> None:
        if self.cluster is not None:
            self.cluster.restore()
        cfg = self.config
        host = cfg.node.address
        if cfg.listen.tls:
            files = self._tls_files(cfg)
            self._apply_tls(cfg, files)
        if cfg.listen.udp:
            port = await self.transport.listen_udp(host, cfg.listen.udp)
            self.local.ports[Transport.UDP] = port
            log.info("listening", transport="udp", address=host, port=port)
        if cfg.listen.tcp:
            port = await self.transport.listen_tcp(host, cfg.listen.tcp)
            self.local.ports[Transport.TCP] = port
            log.info("listening", transport="tcp", address=host, port=port)
        if cfg.listen.tls:
            port = await self.transport.listen_tls(host, cfg.listen.tls)
            self.local.ports[Transport.TLS] = port
            log.info("listening", transport="tls", address=host, port=port,
                     verify_mode=cfg.tls.verify_mode)
        if cfg.cluster is not None:
            await self._open_link(cfg)
        self.headroom.start()
        if self.cluster is not None:
            self.cluster.start()
        log.info("node_started", node=cfg.node.name, config=cfg.source,
                 version=__version__, generation=self.generation,
                 video_translator=TRANSLATOR_BUILD.why)

    async def _open_link(self, cfg: Config) -> None:
        """The node-to-node listener: mutual TLS, the node's certificate on both sides and
        the cluster's CA checking the other's. Without that CA no node can be trusted, and
        none takes calls from the others (published port 0)."""
        cluster = cfg.cluster
        assert cluster is not None
        if cluster.trusted_ca is None:
            log.warning("cluster_links_off", note="no cluster.trusted_ca: calls for devices "
                        "registered at another node are not placed, and none are taken")
            return
        files = self._tls_files(cfg)
        server = server_context(files.certificate, files.private_key, cluster.trusted_ca, True)
        client = client_context(files.certificate, files.private_key, cluster.trusted_ca, True)
        view = self.view
        self.transport.links = lambda host, port: client if view.is_link(host, port) else None
        self.transport.link_source = cluster.address
        self.link_port = await self.transport.listen_tls(cluster.address, cluster.port,
                                                         link=server)
        log.info("listening", transport="tls", address=cluster.address, port=self.link_port,
                 purpose="cluster nodes (mutual TLS)")

    def _tls_files(self, cfg: Config) -> TlsFiles:
        if cfg.tls.certificate is not None and cfg.tls.private_key is not None:
            return TlsFiles(cfg.tls.certificate, cfg.tls.private_key, self_signed=False)
        directory = state_dir(cfg.node)
        made = ensure_self_signed(directory, cfg.node, dt.datetime.now(dt.UTC))
        log.warning(
            "tls_self_signed_certificate",
            certificate=str(made.certificate),
            created=made.created,
            note="no [tls] certificate configured; Lync will not trust this one: "
            "use `lyncgate csr` and `lyncgate cert import`",
        )
        return TlsFiles(made.certificate, made.private_key, self_signed=True)

    def _apply_tls(self, cfg: Config, files: TlsFiles) -> None:
        """Build both contexts first (a bad file raises and changes nothing), then swap."""
        verify = cfg.tls.verify_mode == "on"
        server = server_context(files.certificate, files.private_key, cfg.tls.trusted_ca, verify)
        client = client_context(files.certificate, files.private_key, cfg.tls.trusted_ca, verify)
        self.transport.server_tls = server
        self.transport.client_tls = client

    def reload_file(self, path: str | None) -> list[str]:
        """Validate the config at `path` (the embedded default without one) in full, then
        swap it in; on any problem nothing changes and the problems are returned. In a
        cluster, the file's own sections over the generation in force."""
        try:
            if path is None:
                fresh = load_default()
            elif self.shared_config is not None and self.cluster is not None:
                fresh = merged(Path(path), self.shared_config,
                               f"{path} + cluster generation {self.cluster.health.generation}")
            else:
                fresh = load_file(path)
        except ConfigError as exc:
            log.error("reload_refused", config=exc.source, problems=exc.problems,
                      note="the running config stays in force")
            return exc.problems
        try:
            self.reload(fresh)
        except (OSError, ValueError) as exc:
            log.error("reload_refused", config=fresh.source, problems=[str(exc)],
                      note="the running config stays in force")
            return [f"<tls>: {exc}"]
        return []

    def apply_generation(self, generation: int, shared: dict[str, object]) -> list[str]:
        """A cluster config generation over the local file: in force, or refused with its
        problems while the running config stays."""
        if self.config_path is None:
            return ["<cluster>: this node runs without a local config file to merge into"]
        try:
            fresh = merged(Path(self.config_path), shared,
                           f"{self.config_path} + cluster generation {generation}")
            self.reload(fresh)
        except ConfigError as exc:
            return exc.problems
        except (OSError, ValueError) as exc:
            return [f"<tls>: {exc}"]
        self.shared_config = shared
        return []

    def reload(self, config: Config) -> None:
        """Swap in an already validated config; calls in progress keep what they had."""
        changed = _restart_only(self.config, config)
        if changed:
            log.warning("reload_listeners_unchanged", fields=changed,
                        note="these take effect on restart; the running node keeps the old ones")
        if config.listen.tls:
            self._apply_tls(config, self._tls_files(config))
        router = Router(config.services, config.routing_rules)
        self.config, self.router = config, router
        self.generation += 1
        self.calls.configure(CallSettings.from_config(config, router, self.generation))
        self.registrar.configure(config.devices, _realm(config))
        if self.cluster is not None:
            self.cluster.configure(config)
        prompts.forget()  # a theme's files may have changed with it
        self.presence.table.limits = _presence_limits(config)  # for new subscriptions
        self._deliver(self.presence.configure(router, config.avatar_base(), self.generation,
                                              self._loop.time(), self.endpoint))
        log.info("config_reloaded", config=config.source, generation=self.generation)

    async def drain(self, timeout: float) -> None:
        """Stop taking new work, let running transactions finish, then close."""
        log.info("draining", timeout=timeout)
        self.endpoint.draining = True
        self._deliver(self.presence.deactivate(self._loop.time(), self.endpoint))
        self.transport.stop_listening()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.endpoint.busy and loop.time() < deadline:
            await asyncio.sleep(0.1)
        await self.close()

    async def close(self) -> None:
        self.headroom.stop()
        if self.cluster is not None:
            if self.cdrs is not None:
                self.cdrs.flush()  # the calls just ended, for the last shipment
            await self.cluster.stop()
        if self._timer is not None:
            self._timer.cancel()
        for task in list(self._work):
            task.cancel()
        if self.cdrs is not None:
            self.cdrs.close()
        self.registrar.store.close()
        await self.transport.close()
        self.stopped.set()
        log.info("node_stopped", transactions_left=len(self.endpoint.transactions))

    # -- the core's I/O ------------------------------------------------------------------
    def _on_message(self, data: bytes, peer: Peer, error: FramingError | None) -> None:
        now = self._loop.time()
        try:
            events = self.endpoint.receive(data, peer, error, now)
        except Exception:
            # The process must survive any input; this is a bug to fix, logged with the data.
            log.exception("message_crashed_core", peer=f"{peer.host}:{peer.port}",
                          head=data[:200].decode("utf-8", "replace"))
            return
        self._deliver(events)

    def _on_unreachable(self, peer: Peer, reason: str) -> None:
        now = self._loop.time()
        self._deliver(self.endpoint.transport_failed(peer, now))

    def _spawn(self, work: Coroutine[object, object, None]) -> None:
        task = self._loop.create_task(work)
        self._work.add(task)
        task.add_done_callback(self._work_done)

    def _work_done(self, task: asyncio.Future[None]) -> None:
        self._work.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("call_task_crashed", error=repr(task.exception()))

    def _deliver(self, events: list[Event]) -> None:
        """What the core returned goes out, what call control asked for is done, and the
        core's next deadline is armed."""
        self._send(events)
        self.call_io.run()
        self._arm()

    def _send(self, events: list[Event]) -> None:
        for event in events:
            if isinstance(event, Send):
                self.transport.send(event.data, event.peer)

    def _arm(self) -> None:
        deadline = self.endpoint.next_deadline()
        if deadline is not None:
            deadline = math.ceil(deadline / TIMER_GRID_S) * TIMER_GRID_S
        if deadline == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = deadline
        if deadline is not None:
            self._timer = self._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        now = self._loop.time()
        try:
            events = self.endpoint.handle_timeout(now)
        except Exception:
            log.exception("timer_crashed_core")
            events = []
        self._deliver(events)


def _presence_limits(config: Config) -> PresenceLimits:
    presence = config.presence
    return PresenceLimits(max_total=presence.max_subscriptions,
                          max_per_source=presence.max_subscriptions_per_source)


def _realm(config: Config) -> str:
    """The digest realm devices register in: the MS-SIP domain, else the node's FQDN."""
    return config.global_settings.mssip_domain or config.node.sip_tls_fqdn


def _restart_only(old: Config, new: Config) -> list[str]:
    """The fields a reload changed that only a restart applies (listeners are open, the
    node's own addresses are written into calls in progress), by their config path."""
    pairs = {"node.address": (old.node.address, new.node.address),
             "node.static_nat_address": (old.node.static_nat_address,
                                         new.node.static_nat_address),
             "node.sip_tls_fqdn": (old.node.sip_tls_fqdn, new.node.sip_tls_fqdn),
             **{f"listen.{name}": (getattr(old.listen, name), getattr(new.listen, name))
                for name in ("udp", "tcp", "tls", "media_ports")},
             "avatar.address": (old.avatar.address, new.avatar.address),
             "avatar.port": (old.avatar.port, new.avatar.port),
             "cluster": (old.cluster is None, new.cluster is None),
             "cluster.database": (old.cluster and old.cluster.database,
                                  new.cluster and new.cluster.database),
             "cluster.port": (old.cluster and old.cluster.port, new.cluster and new.cluster.port),
             "cluster.trusted_ca": (old.cluster and old.cluster.trusted_ca,
                                    new.cluster and new.cluster.trusted_ca)}
    return [path for path, (was, now) in pairs.items() if was != now]
