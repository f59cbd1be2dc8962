"""Media anchoring: RTP/RTCP relayed at the node between the ICE leg and the SIP leg, with
SRTP <-> RTP translation, latching, payload-type remapping and per-stream counters."""

from gateway.media import native

# Before any module of the video translator is imported: compiled, or its sources.
TRANSLATOR_BUILD = native.settle()
