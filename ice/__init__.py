"""ICE toward Lync clients, the Edge relay and endpoints, on aioice: candidates in standard
and Microsoft forms, media ports from the configured range, static NAT, STUN and TURN."""
