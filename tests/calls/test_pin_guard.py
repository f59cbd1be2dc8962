"""PIN brute-force counting: failures within the window lock a source out, and failures
reported by a cluster's other nodes count toward the same lock-out without being reported
back."""

from __future__ import annotations

from gateway.calls.pin_guard import PinGuard, PinPolicy

POLICY = PinPolicy(attempts=3, window=60.0, lockout=120.0)


def test_failures_here_and_elsewhere_share_one_count() -> None:
    told: list[str] = []
    guard = PinGuard(on_failed=told.append)
    assert not guard.failed("192.0.2.7", 10.0, POLICY)
    assert not guard.counted("192.0.2.7", 11.0, POLICY)  # a wrong PIN at another node
    assert guard.failed("192.0.2.7", 12.0, POLICY)
    assert told == ["192.0.2.7", "192.0.2.7"]  # only this node's own failures go out
    assert guard.locked_for("192.0.2.7", 13.0) == 119.0
    assert guard.locked_for("192.0.2.8", 13.0) is None


def test_failures_older_than_the_window_do_not_count() -> None:
    guard = PinGuard()
    guard.counted("192.0.2.7", 0.0, POLICY)
    guard.counted("192.0.2.7", 1.0, POLICY)
    assert not guard.counted("192.0.2.7", 100.0, POLICY)
