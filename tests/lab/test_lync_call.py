"""The lab topology on loopback processes, as docker/compose.yaml builds it: a Lync-side
simulator (SIPp with the Lync-style multipart INVITE) through stunnel over mutual TLS,
lyncgate routing it by a rule whose `call_via` is a Kamailio proxy found through dnsmasq,
a SIPp UAS behind Kamailio on the SIP side, and coturn giving the Lync leg its relay
candidate."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from pathlib import Path

import pytest
import trustme

from gateway.calls.cdr import CdrStore
from tests.daemon.harness import Daemon
from tests.kit.nodes import loopback_node
from tests.peers import SCENARIOS, coturn, dnsmasq, free_port, need, process, sipp, stunnel

pytestmark = pytest.mark.peer


def kamailio_config(port: int, uas_port: int, folder: Path) -> Path:
    """A stateful relay in front of the SIP endpoint, as in the lab (record-route, t_relay)."""
    text = f"""#!KAMAILIO
debug=0
log_stderror=yes
fork=yes
children=2
tcp_children=2
listen=udp:127.0.0.1:{port}
listen=tcp:127.0.0.1:{port}
mpath="/usr/lib/x86_64-linux-gnu/kamailio/modules/"
loadmodule "kex.so"
loadmodule "corex.so"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "siputils.so"
request_route {{
  if (!mf_process_maxfwd_header("10")) {{ sl_send_reply("483","Too Many Hops"); exit; }}
  if (has_totag()) {{
    if (loose_route()) {{ t_relay(); exit; }}
    if (is_method("ACK")) {{ if (t_check_trans()) {{ t_relay(); }} exit; }}
    sl_send_reply("404","Not here"); exit;
  }}
  if (is_method("CANCEL")) {{ if (t_check_trans()) t_relay(); exit; }}
  record_route();
  $du = "sip:127.0.0.1:{uas_port};transport=udp";
  t_relay();
}}
"""
    path = folder / "kamailio.cfg"
    path.write_text(text)
    return path


def answers_sip(port: int) -> bool:
    probe = (f"OPTIONS sip:x@127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;"
             "branch=z9hG4bK-probe\r\nFrom: <sip:p@x>;tag=a\r\nTo: <sip:x@x>;tag=b\r\n"
             "Call-ID: probe\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.2)
        s.bind(("127.0.0.1", 0))
        s.sendto(probe.encode().replace(b":9;", b":%d;" % s.getsockname()[1]),
                 ("127.0.0.1", port))
        try:
            return s.recv(2048).startswith(b"SIP/2.0")
        except OSError:
            return False


def test_lync_call_over_mutual_tls_reaches_the_sip_side_through_kamailio(
    tmp_path: Path,
) -> None:
    ca = trustme.CA()
    node = ca.issue_cert("gw.example.test", common_name="gw.example.test")
    node.cert_chain_pems[0].write_to_path(tmp_path / "node.pem")
    node.private_key_pem.write_to_path(tmp_path / "node.key")
    ca.cert_pem.write_to_path(tmp_path / "ca.pem")
    pool = ca.issue_cert("fepool.example.test")
    pool.private_key_and_cert_chain_pem.write_to_path(tmp_path / "pool.pem")
    kamailio_port, uas_port, stunnel_port = free_port(), free_port(), free_port()

    lab = contextlib.ExitStack()
    dns_port = lab.enter_context(dnsmasq(["--local=/test/",
                                          "--host-record=proxy.lab.test,127.0.0.1"]))
    turn_port = lab.enter_context(coturn())
    daemon = Daemon(tmp_path, loopback_node("gw.example.test") + f"""
[tls]
certificate = "{tmp_path / 'node.pem'}"
private_key = "{tmp_path / 'node.key'}"
trusted_ca = "{tmp_path / 'ca.pem'}"
verify_mode = "on"
[global]
dns_server = "127.0.0.1:{dns_port}"
[[sip_proxies]]
name = "kamailio"
address = "proxy.lab.test"
port = {kamailio_port}
transport = "udp"
[[turn_servers]]
name = "coturn"
address = "127.0.0.1"
port = {turn_port}
username = "lync"
password = "secret"
[[routing_rules]]
name = "Lync to SIP"
priority = 40
protocols = ["mssip"]
match = '.*@vc\\.lab\\.test'
call_via = "kamailio"
turn_server = "coturn"
""")
    kamailio = [need("kamailio"), "-f", str(kamailio_config(kamailio_port, uas_port, tmp_path)),
                "-DD", "-E", "-Y", str(tmp_path), "-P", str(tmp_path / "kamailio.pid")]
    try:
        with process(kamailio, ready=lambda: answers_sip(kamailio_port)), \
                stunnel(tmp_path, accept=stunnel_port, connect=daemon.tls,
                        cert=tmp_path / "pool.pem", check_host="gw.example.test"):
            uas = subprocess.Popen(
                [need("sipp"), "-sf", str(SCENARIOS / "uas_rr.xml"), "-i", "127.0.0.1", "-p",
                 str(uas_port), "-m", "1", "-nostdin", "-timeout", "20s"], cwd=tmp_path,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            time.sleep(0.3)
            lync = sipp(f"127.0.0.1:{stunnel_port}", "lync_multipart_uac.xml", "-s",
                        "meet.alice", "-t", "t1", "-m", "1", "-p", str(free_port()),
                        workdir=str(tmp_path))
            uas_out, _ = uas.communicate(timeout=20)
    finally:
        daemon.stop()
        lab.close()
    assert lync.returncode == 0, lync.stdout + lync.stderr
    assert uas.returncode == 0, uas_out
    routed = daemon.events("call_routed")
    assert routed and routed[0]["protocol"] == "mssip" and routed[0]["rule"] == "Lync to SIP"
    placed = daemon.events("call_placed")[0]
    assert placed["target"] == f"udp:127.0.0.1:{kamailio_port}"
    assert placed["uri"] == "sip:meet.alice@vc.lab.test"
    [cdr] = CdrStore(tmp_path / "state" / "cdr.sqlite3").recent()
    assert cdr["answered"] and cdr["ended_by"] == "caller"
    assert daemon.events("tls_accepted")[0]["client_cert"] is True
    gathered = daemon.events("ice_gathered")[0]["candidates"]
    assert any(c.startswith("relay ") for c in gathered), gathered  # coturn's allocation
