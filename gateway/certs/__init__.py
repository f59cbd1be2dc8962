"""X.509 work for SIP TLS: CSRs, certificate import and checks, RFC 5922 name matching."""
