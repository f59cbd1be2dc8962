"""Locating SIP servers: RFC 3263 NAPTR, SRV and A/AAAA look-ups with dnspython."""
