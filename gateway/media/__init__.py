"""Media anchoring: RTP/RTCP relayed at the node between the ICE leg and the SIP leg, with
SRTP <-> RTP translation, latching, payload-type remapping and per-stream counters."""
