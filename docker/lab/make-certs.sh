#!/bin/sh
# A throwaway CA, the gateway's certificate (SIP TLS FQDN in the SAN, serverAuth+clientAuth)
# and the simulated Lync pool's client certificate, into /certs (a shared volume).
set -eu
cd /certs
[ -f ca.pem ] && exit 0
openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 30 -subj "/CN=Lab CA"
for name in gw.lab.test fepool.lab.test; do
  openssl req -newkey rsa:2048 -nodes -keyout "$name.key" -out "$name.csr" -subj "/CN=$name"
  printf 'subjectAltName=DNS:%s\nextendedKeyUsage=serverAuth,clientAuth\n' "$name" > "$name.ext"
  openssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 30 \
    -extfile "$name.ext" -out "$name.pem"
done
cat fepool.lab.test.key fepool.lab.test.pem > fepool.lab.test.bundle
chmod 0644 ./*
