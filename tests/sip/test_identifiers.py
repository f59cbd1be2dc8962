"""Branches, tags and Call-IDs: unguessable hex from the OS's random source, drawn from a
buffer refilled as it runs out, so no two drawn across a refill are the same."""

from __future__ import annotations

import os
import re

from gateway.sip.message import MAGIC_COOKIE, new_branch, new_call_id, new_tag


def test_identifiers_are_hex_of_their_length_and_never_repeat_across_refills() -> None:
    tags = [new_tag() for _ in range(5000)]  # 30 KB of random bytes: several 4 KiB refills
    assert all(re.fullmatch(r"[0-9a-f]{12}", t) for t in tags)
    assert len(set(tags)) == len(tags)
    branch = new_branch()
    assert branch.startswith(MAGIC_COOKIE) and re.fullmatch(r"[0-9a-f]{16}",
                                                            branch[len(MAGIC_COOKIE):])
    assert re.fullmatch(r"[0-9a-f]{24}@gw\.example\.com", new_call_id("gw.example.com"))


def test_a_forked_child_does_not_repeat_the_parents_next_tag() -> None:
    new_tag()  # the buffer is filled in the parent
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child reports its next tag and leaves at once
        os.write(write, new_tag().encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 64).decode()
    os.close(read)
    assert child and child != new_tag()
