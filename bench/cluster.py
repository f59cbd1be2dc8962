"""Several nodes on PostgreSQL against one node on SQLite, in the same run (issue 24).

register  REGISTER transactions per CPU-second of the node (utime+stime from /proc): a
          cluster node (bindings in its SQLite and in PostgreSQL, each change NOTIFYed to
          the others) against a single node (SQLite alone), the same SIPp REGISTER load
          (Digest MD5: REGISTER, 401, REGISTER, 200) at the same rate. PostgreSQL's own CPU
          (postmaster and backends) is printed beside it. Goal: cluster >= 0.5x single.
latency   Set-up time of a call to a device registered at node B (a SIPp UAS that
          registered over UDP, so B holds its flow): INVITE -> 200 at a Python UAC on
          loopback, direct to B and through node A (A -> mutual TLS -> B's relay -> device),
          at --rate calls/s for --calls calls each way, in turns. Goal: p99 through A minus
          p99 direct < 5 ms.
push      `lyncgate config push FILE` --pushes times against three nodes (127.0.0.2-4),
          alternating two valid shared configs (a test-call service 'pushed-a' or
          'pushed-b'): for each push, the time until each node's /status shows the new
          generation (cluster.config_generation, polled every 10 ms), from the push
          command's start and from the generation's storing (config_generations.pushed;
          the nodes load it before the command has exited); each node's /dialplan
          then finds that push's alias and not the other's. Goal: every node < 1 s. Then a
          bad push (an invalid regex): refused with its field path, nothing stored, and no
          node's generation changes within 2 s.

PostgreSQL is Debian's, started in a temporary directory on loopback and removed after
(tests/kit/postgres.py). Every run is bounded; take the lock, others bench too:

    flock /tmp/bench.lock .venv/bin/python bench/cluster.py [--count 6000 --reg-rate 300]
                                                            [--calls 1500 --rate 100]
                                                            [--pushes 20]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import aiohttp
import asyncpg
import trustme
from calls import LYNCGATE_ARGS, percentile
from common import (
    ROOT,
    cpu_seconds,
    free_port,
    lyncgate,
    running,
    sipp,
    sipp_counts,
    wait_udp_answer,
)

sys.path.insert(0, str(ROOT))
from tests.kit.cluster import ROOM
from tests.kit.postgres import Postgres, running_postgres

REGISTER_UAC = ROOT / "tests" / "scenarios" / "register_uac.xml"
UAS = ROOT / "tests" / "scenarios" / "uas_rr.xml"
PASSWORD = "s3cret!"  # the kit's room1

def node_config(name: str, host: str, port: int, database: str | None,
                links: Path | None = None, api: int = 0) -> str:
    """A node on `host`:`port` over UDP with the device and its rule; with `database`, a
    cluster member; with `links`, its certificate and the cluster CA for calls between
    nodes (node-to-node port free-picked); with `api`, its status API on `host`:`api`."""
    text = (f'[node]\nname = "{name}"\nsip_tls_fqdn = "{name}.example.com"\n'
            f'address = "{host}"\nstate_dir = "@STATE@"\n'
            f'[listen]\nudp = {port}\ntcp = 0\ntls = 0\n[tls]\nverify_mode = "off"\n')
    if links is not None:
        text += f'certificate = "{links / name}.pem"\nprivate_key = "{links / name}.key"\n'
    if api:
        text += f'[api]\naddress = "{host}"\nport = {api}\n[avatar]\nport = 0\n'
    if database is not None:
        text += f'[cluster]\ndatabase = "{database}"\nheartbeat_seconds = 1\n'
    if links is not None:
        text += f'trusted_ca = "{links}/ca.pem"\nport = {free_port()}\n'
    return text + ROOM


# -- REGISTER per CPU-second ---------------------------------------------------------------
@dataclass
class Registered:
    name: str
    cpu: float
    ok: int
    failed: int
    database_cpu: float | None = None


def register_load(pid: int, host: str, port: int, count: int, rate: int,
                  database_pid: int | None) -> tuple[float, float | None, dict[str, int]]:
    before, db_before = cpu_seconds(pid), cpu_seconds(database_pid) if database_pid else 0.0
    out = sipp(f"{host}:{port}", REGISTER_UAC,
               ["-s", "room1", "-au", "room1", "-ap", PASSWORD, "-p", str(free_port()),
                "-m", str(count), "-r", str(rate), "-l", "500", "-recv_timeout", "5000"],
               timeout=max(60.0, 3 * count / rate))
    time.sleep(1.0)  # the cluster's last outbox pass (every 0.2 s) counted too
    cpu = cpu_seconds(pid) - before
    db = cpu_seconds(database_pid) - db_before if database_pid else None
    return cpu, db, sipp_counts(out)


def registers(server: Postgres, count: int, rate: int, work: Path) -> list[Registered]:
    out: list[Registered] = []
    for name, database in (("single (SQLite)", None), ("cluster (PostgreSQL)",
                                                       server.database())):
        port = free_port()
        with lyncgate(node_config("n1", "127.0.0.1", port, database), args=LYNCGATE_ARGS,
                      log=work / f"register-{'cluster' if database else 'single'}.log"
                      ) as gate:
            wait_udp_answer(port, timeout=30)
            cpu, db, counts = register_load(gate.pid, "127.0.0.1", port, count, rate,
                                            server.pid() if database else None)
        out.append(Registered(name, cpu, counts.get("Successful call", 0),
                              counts.get("Failed call", 0), db))
    return out


# -- set-up latency through another node ---------------------------------------------------
@dataclass
class Uac(asyncio.DatagramProtocol):
    """Calls from 127.0.0.1: INVITE, the 200 timed, ACK, BYE after `hold` seconds."""

    hold: float
    transport: asyncio.DatagramTransport | None = None
    sent: dict[str, float] = field(default_factory=dict)
    answered: dict[str, float] = field(default_factory=dict)
    ended: set[str] = field(default_factory=set)
    failed: dict[str, str] = field(default_factory=dict)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def invite(self, target: tuple[str, int]) -> None:
        assert self.transport is not None
        call = uuid.uuid4().hex
        local = self.transport.get_extra_info("sockname")[1]
        body = ("v=0\r\no=uac 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
                "m=audio 40000 RTP/AVP 9\r\na=rtpmap:9 G722/8000\r\n")
        self.sent[call] = time.perf_counter()
        self.transport.sendto(self._request(
            "INVITE", f"sip:room1@{target[0]}:{target[1]}", call, 1, local, "",
            f"Contact: <sip:uac@127.0.0.1:{local}>\r\nContent-Type: application/sdp\r\n",
            body), target)

    @staticmethod
    def _request(method: str, uri: str, call: str, cseq: int, local: int, to_tag: str,
                 extra: str = "", body: str = "") -> bytes:
        return (f"{method} {uri} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{local};branch=z9hG4bK{uuid.uuid4().hex};rport\r\n"
                f"From: <sip:uac@127.0.0.1>;tag=u{call[:8]}\r\n"
                f"To: <sip:room1@vc.example.com>{to_tag}\r\nCall-ID: {call}\r\n"
                f"CSeq: {cseq} {method}\r\nMax-Forwards: 70\r\n{extra}"
                f"Content-Length: {len(body)}\r\n\r\n{body}").encode()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        now = time.perf_counter()
        head = data.split(b"\r\n\r\n", 1)[0].decode(errors="replace").split("\r\n")
        if not head[0].startswith("SIP/2.0 "):
            return  # the B2BUA asks nothing of this UAC in these calls
        status = int(head[0].split()[1])
        fields: dict[str, str] = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            fields.setdefault(name.strip().lower(), value.strip())
        call, cseq = fields.get("call-id", ""), fields.get("cseq", "")
        if status < 200 or call not in self.sent:
            return
        if cseq.endswith("BYE"):
            self.ended.add(call)
            return
        if status >= 300:
            self.failed[call] = head[0]
            return
        if call in self.answered:
            return  # a retransmitted 200: our ACK crossed it
        self.answered[call] = now
        to = fields["to"]
        tag = to[to.index(";tag="):].split(";")[1]
        contact = fields["contact"].strip("<>").split(">")[0]
        self._send("ACK", contact, call, 1, f";{tag}", addr)
        asyncio.get_running_loop().call_later(self.hold, self._send, "BYE", contact, call, 2,
                                              f";{tag}", addr)

    def _send(self, method: str, uri: str, call: str, cseq: int, to_tag: str,
              addr: tuple[str, int]) -> None:
        if self.transport is not None and not self.transport.is_closing():
            local = self.transport.get_extra_info("sockname")[1]
            self.transport.sendto(self._request(method, uri, call, cseq, local, to_tag), addr)


async def place_calls(target: tuple[str, int], calls: int, rate: int) -> list[float]:
    """`calls` calls at `rate`/s to `target`; the INVITE -> 200 times of those answered
    (ms), after every call ended or 10 s passed. Failures are printed."""
    loop = asyncio.get_running_loop()
    transport, uac = await loop.create_datagram_endpoint(lambda: Uac(hold=0.5),
                                                         local_addr=("127.0.0.1", 0))
    try:
        start = loop.time()
        for n in range(calls):
            await asyncio.sleep(max(0.0, start + n / rate - loop.time()))
            uac.invite(target)
        deadline = loop.time() + 10
        while len(uac.ended) + len(uac.failed) < calls and loop.time() < deadline:
            await asyncio.sleep(0.05)
    finally:
        transport.close()
    lost = calls - len(uac.answered) - len(uac.failed)
    if uac.failed or lost:
        print(f"    {target}: {len(uac.failed)} failed ({sorted(set(uac.failed.values()))}),"
              f" {lost} unanswered")
    return [(uac.answered[c] - uac.sent[c]) * 1000 for c in uac.answered]


def links(folder: Path) -> Path:
    ca = trustme.CA()
    ca.cert_pem.write_to_path(folder / "ca.pem")
    for n, host in (("a", "127.0.0.2"), ("b", "127.0.0.3")):
        cert = ca.issue_cert(f"{n}.example.com", host)
        cert.cert_chain_pems[0].write_to_path(folder / f"{n}.pem")
        cert.private_key_pem.write_to_path(folder / f"{n}.key")
    return folder


async def cluster_ready(database: str, timeout: float = 20.0) -> None:
    """Both nodes publish their node-to-node port and B shares the device's binding."""
    deadline = time.monotonic() + timeout
    conn = await asyncpg.connect(database)
    try:
        while time.monotonic() < deadline:
            ports = await conn.fetchval("SELECT count(*) FROM nodes WHERE port > 0")
            held = await conn.fetchval("SELECT count(*) FROM bindings WHERE node = 'b'")
            if ports == 2 and held == 1:
                await asyncio.sleep(2.5)  # a heartbeat or two: A's view has B's port
                return
            await asyncio.sleep(0.1)
    finally:
        await conn.close()
    raise RuntimeError("the nodes did not publish their ports and binding in time")


@contextlib.contextmanager
def device_at(host: str, port: int, calls: int, work: Path) -> Iterator[None]:
    """A SIPp UAS registered at `host`:`port` from the port it then answers calls on."""
    mine = free_port()
    out = sipp(f"{host}:{port}", REGISTER_UAC, ["-s", "room1", "-au", "room1", "-ap",
               PASSWORD, "-p", str(mine), "-m", "1", "-recv_timeout", "2000"], timeout=10)
    if sipp_counts(out).get("Successful call", 0) != 1:
        raise RuntimeError(f"the device did not register at {host}:{port}:\n{out}")
    cmd = ["sipp", "-sf", str(UAS), "-i", "127.0.0.1", "-p", str(mine), "-m", str(calls),
           "-nostdin", "-timeout", "600s"]
    with running(cmd, cwd=work):
        yield


def latencies(server: Postgres, calls: int, rate: int, turns: int, work: Path
              ) -> dict[str, list[float]]:
    database = server.database()
    times: dict[str, list[float]] = {"direct to B": [], "through A": []}
    folder = links(work)
    a_port, b_port = free_port(), free_port()
    with lyncgate(node_config("b", "127.0.0.3", b_port, database, folder), args=LYNCGATE_ARGS,
                  log=work / "b.log"), \
            lyncgate(node_config("a", "127.0.0.2", a_port, database, folder),
                     args=LYNCGATE_ARGS, log=work / "a.log"):
        wait_udp_answer(b_port, timeout=30, host="127.0.0.3")
        wait_udp_answer(a_port, timeout=30, host="127.0.0.2")
        with device_at("127.0.0.3", b_port, 2 * calls * turns, work):
            asyncio.run(cluster_ready(database))
            for _ in range(turns):
                for name, target in (("direct to B", ("127.0.0.3", b_port)),
                                     ("through A", ("127.0.0.2", a_port))):
                    times[name] += asyncio.run(place_calls(target, calls, rate))
    return times


# -- a pushed config reaching every node ---------------------------------------------------
POLL_S = 0.01
BAD = "[[routing_rules]]\nname = \"broken\"\npriority = 10\nmatch = '(unbalanced'\n"
BAD_PATH = "routing_rules[0].match: invalid regex"


def shared(tag: str) -> str:
    """A shared config whose test-call service answers 'pushed-<tag>'; ROOM keeps the
    nodes' device and rule as their local files had them."""
    return (f'[global]\nmssip_domain = "vc.example.com"\n\n[[services]]\ntype = "test_call"\n'
            f'name = "Pushed {tag}"\naliases = ["pushed-{tag}"]\n' + ROOM)


@dataclass
class Pushed:
    took: float  # the push command's own run, s
    # node -> s from the command's start (its Python start-up and validation included) to
    # /status showing it; the nodes load it before the command has exited, so not its return
    after_start: dict[str, float]
    after_store: dict[str, float]  # node -> s from the generation's storing (its `pushed`)


async def status_of(session: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with session.get(f"{url}/status") as reply:
        return cast(dict[str, Any], (await reply.json())["cluster"])


async def first_seen(session: aiohttp.ClientSession, url: str, wanted: int) -> float:
    """When (time.time()) `url`'s /status first showed generation `wanted`, at the answer."""
    deadline = time.time() + 15
    while time.time() < deadline:
        if (await status_of(session, url))["config_generation"] == wanted:
            return time.time()
        await asyncio.sleep(POLL_S)
    raise RuntimeError(f"{url} did not show config generation {wanted} within 15 s")


async def push(file: Path, local: Path) -> tuple[int | None, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", "config", "push", str(file), "--config",
        str(local), cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode, out.decode(), err.decode()


async def timed_push(session: aiohttp.ClientSession, urls: dict[str, str],
                     conn: asyncpg.Connection, file: Path, local: Path, wanted: int) -> Pushed:
    """Push `file` (the `wanted`th generation) while every node's /status is polled."""
    watches = {name: asyncio.create_task(first_seen(session, url, wanted))
               for name, url in urls.items()}
    start = time.time()
    code, out, err = await push(file, local)
    returned = time.time()
    if code != 0 or f"generation {wanted}\n" not in out:
        for task in watches.values():
            task.cancel()
        raise RuntimeError(f"push {wanted} exited {code}: {out}{err}")
    stored = float(await conn.fetchval("SELECT extract(epoch FROM pushed) FROM "
                                       "config_generations WHERE generation = $1", wanted))
    seen = {name: await task for name, task in watches.items()}
    return Pushed(returned - start, {n: t - start for n, t in seen.items()},
                  {n: t - stored for n, t in seen.items()})


async def in_force(session: aiohttp.ClientSession, urls: dict[str, str], tag: str) -> None:
    """Each node's dial plan finds the pushed config's alias and not the other one's."""
    other = "b" if tag == "a" else "a"
    for name, url in urls.items():
        for alias, service in ((f"pushed-{tag}", f"Pushed {tag}"), (f"pushed-{other}", None)):
            async with session.get(f"{url}/dialplan", params={"alias": alias}) as reply:
                found = (await reply.json())["service"]
            if found != service:
                raise RuntimeError(f"{name}: {alias} -> service {found!r}, not {service!r}")


async def refused_push(session: aiohttp.ClientSession, urls: dict[str, str],
                       conn: asyncpg.Connection, bad: Path, local: Path, kept: int
                       ) -> tuple[str, list[str]]:
    """Push `bad`: its refusal as printed, and what went wrong (nothing: []) - it must exit
    2 naming the field, store nothing, and leave every node on `kept` for 2 s."""
    code, out, err = await push(bad, local)
    wrong = [] if code == 2 and BAD_PATH in err and not out else [
        f"exited {code}: {out}{err}"]
    latest = await conn.fetchval("SELECT max(generation) FROM config_generations")
    if latest != kept:
        wrong.append(f"the database's latest generation is {latest}, not {kept}")
    deadline = time.time() + 2
    while time.time() < deadline and not wrong:
        for name, url in urls.items():
            shown = (await status_of(session, url))["config_generation"]
            if shown != kept:
                wrong.append(f"{name} shows generation {shown}, not {kept}")
        await asyncio.sleep(0.05)
    return err.strip(), wrong


async def connected(session: aiohttp.ClientSession, urls: dict[str, str]) -> None:
    """Every node's status API answers and its membership is connected."""
    deadline = time.time() + 30
    for url in urls.values():
        while True:
            with contextlib.suppress(aiohttp.ClientError):
                if (await status_of(session, url))["connected"]:
                    break
            if time.time() > deadline:
                raise RuntimeError(f"{url}: not connected to the cluster within 30 s")
            await asyncio.sleep(0.1)


async def push_run(urls: dict[str, str], database: str, work: Path, local: Path,
                   count: int) -> tuple[list[Pushed], tuple[str, list[str]]]:
    files = {tag: work / f"shared-{tag}.toml" for tag in "ab"}
    for tag, file in files.items():
        file.write_text(shared(tag))
    bad = work / "bad.toml"
    bad.write_text(BAD)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        await connected(session, urls)
        conn = await asyncpg.connect(database)
        try:
            done: list[Pushed] = []
            for n in range(1, count + 1):
                tag = "ab"[n % 2 - 1]
                done.append(await timed_push(session, urls, conn, files[tag], local, n))
                await in_force(session, urls, tag)
                await asyncio.sleep(0.3)  # pushes a person makes, not a burst
            return done, await refused_push(session, urls, conn, bad, local, count)
        finally:
            await conn.close()


def pushes(server: Postgres, count: int, work: Path
           ) -> tuple[list[Pushed], tuple[str, list[str]]]:
    """Three nodes on 127.0.0.2-4 with their status APIs, and `count` pushes to them."""
    database = server.database()
    urls: dict[str, str] = {}
    with contextlib.ExitStack() as stack:
        for n in range(1, 4):
            name, host, port, api = f"n{n}", f"127.0.0.{n + 1}", free_port(), free_port()
            stack.enter_context(lyncgate(node_config(name, host, port, database, api=api),
                                         args=LYNCGATE_ARGS, log=work / f"push-{name}.log"))
            urls[name] = f"http://{host}:{api}"
        local = work / "pusher.toml"
        local.write_text(node_config("pusher", "127.0.0.1", 0, database)
                         .replace("@STATE@", str(work)))
        return asyncio.run(push_run(urls, database, work, local, count))


def spread(values: list[float]) -> str:
    ms = [v * 1000 for v in values]
    return (f"p50 {percentile(ms, 50):6.1f}  p99 {percentile(ms, 99):6.1f}  "
            f"max {max(ms):6.1f} ms")


def report_pushes(done: list[Pushed], refused: tuple[str, list[str]]) -> bool:
    """Print the figures; False when the bad push was not refused as it must be."""
    refusal, wrong = refused
    print(f"config push to 3 nodes, {len(done)} pushes alternating two configs, each "
          f"node's /status polled every {POLL_S * 1000:.0f} ms; the push command ran "
          f"{spread([p.took for p in done])}")
    for name in done[0].after_start:
        print(f"  {name:9s} after the start {spread([p.after_start[name] for p in done])}"
              f"   after storing {spread([p.after_store[name] for p in done])}")
    last = [max(p.after_store.values()) for p in done]
    print(f"  all nodes after the start {spread([max(p.after_start.values()) for p in done])}"
          f"  after storing {spread(last)}  (goal < 1000 ms: "
          f"{'met' if max(last) < 1 else 'MISSED'})")
    print(f"  bad push refused: {refusal.splitlines()[0] if refusal else '(nothing printed)'}")
    print("  " + ("; ".join(wrong) if wrong else
                  "nothing stored, no node's generation changed within 2 s"))
    return not wrong


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", nargs="?", choices=("all", "register", "latency", "push"),
                        default="all")
    parser.add_argument("--count", type=int, default=6000, help="REGISTERs per node")
    parser.add_argument("--reg-rate", type=int, default=300, help="REGISTERs per second")
    parser.add_argument("--calls", type=int, default=500, help="calls per path per turn")
    parser.add_argument("--rate", type=int, default=100, help="calls per second")
    parser.add_argument("--turns", type=int, default=3, help="turns of direct and through A")
    parser.add_argument("--pushes", type=int, default=20, help="valid config pushes")
    args = parser.parse_args()
    if args.part != "push" and not shutil.which("sipp"):
        print("missing sipp: run scripts/install --test", file=sys.stderr)
        return 2
    with running_postgres() as server, tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.part in ("all", "register"):
            found = registers(server, args.count, args.reg_rate, work)
            print(f"REGISTER (Digest, 2 transactions each) over UDP, {args.count} at "
                  f"{args.reg_rate}/s per node")
            rate: dict[str, float] = {}
            for r in found:
                rate[r.name] = r.ok / r.cpu if r.cpu > 0 else float("inf")
                db = f"  PostgreSQL cpu {r.database_cpu:.2f} s" if r.database_cpu else ""
                print(f"  {r.name:21s} cpu {r.cpu:6.2f} s  {rate[r.name]:7.0f} REGISTER/CPU-s"
                      f"  ok {r.ok} failed {r.failed}{db}")
            single, clustered = (rate[r.name] for r in found)
            print(f"  ratio cluster/single: {clustered / single:.2f}x (goal >= 0.5x)")
        if args.part in ("all", "latency"):
            times = latencies(server, args.calls, args.rate, args.turns, work)
            print(f"call set-up INVITE -> 200 to a device held by B, {args.rate} calls/s, "
                  f"{args.turns} turns of {args.calls} calls each way")
            p99: dict[str, float] = {}
            for name, values in times.items():
                if not values:
                    print(f"  {name:12s} no call answered")
                    return 1
                p99[name] = percentile(values, 99)
                print(f"  {name:12s} answered {len(values):5d}  p50 "
                      f"{percentile(values, 50):6.2f} ms  p90 {percentile(values, 90):6.2f} ms"
                      f"  p99 {p99[name]:6.2f} ms  max {max(values):6.2f} ms")
            print(f"  added p99 through A: {p99['through A'] - p99['direct to B']:+.2f} ms "
                  "(goal < 5 ms)")
        if args.part in ("all", "push") and not report_pushes(*pushes(server, args.pushes,
                                                                      work)):
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
