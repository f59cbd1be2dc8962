"""Calls: admitting INVITEs under the routing decision (the B2BUA grows here)."""
