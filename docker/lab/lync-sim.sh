#!/bin/sh
# The Lync side: SIPp (no TLS in Debian's build) behind stunnel, which presents the pool's
# client certificate to lyncgate over mutual TLS, and one call with Lync's multipart offer.
set -eu
cat > /tmp/stunnel.conf <<CONF
foreground = no
pid = /tmp/stunnel.pid
[lync]
client = yes
accept = 127.0.0.1:5070
connect = gw.lab.test:5061
cert = /certs/fepool.lab.test.bundle
CAfile = /certs/ca.pem
verifyChain = yes
checkHost = gw.lab.test
CONF
stunnel4 /tmp/stunnel.conf
sleep 1
exec sipp 127.0.0.1:5070 -sf /scenarios/lync_multipart_uac.xml -s meet.alice -t t1 \
  -i 127.0.0.1 -m "${CALLS:-1}" -nostdin -timeout 30s -timeout_error
