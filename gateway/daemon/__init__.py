"""The lyncgate daemon: wires config, transports, the SIP core and the services together."""
