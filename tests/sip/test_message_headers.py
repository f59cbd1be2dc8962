"""Headers keep their look-up index in step with their lines: any sequence of adds, sets,
top insertions and removals reads back as a plain list of lines would."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway.sip.message import Headers, canonical

# Long and compact forms of the same headers, in any case: the index must join them.
NAMES = ["Via", "v", "VIA", "Contact", "m", "Supported", "k", "X-Extra"]
Op = tuple[str, str, str]
ops = st.lists(st.tuples(st.sampled_from(["add", "first", "set", "remove", "read"]),
                         st.sampled_from(NAMES), st.sampled_from(["a", "b, c", "d"])),
               max_size=30)


def model_apply(lines: list[tuple[str, str]], op: Op) -> list[tuple[str, str]]:
    kind, name, value = op
    key = canonical(name)
    same = [i for i, (n, _) in enumerate(lines) if canonical(n) == key]
    if kind == "add":
        return [*lines, (name, value)]
    if kind == "first":
        at = same[0] if same else len(lines)
        return [*lines[:at], (name, value), *lines[at:]]
    if kind == "set":
        if not same:
            return [*lines, (name, value)]
        kept = [line for i, line in enumerate(lines) if i not in same[1:]]
        kept[same[0]] = (name, value)
        return kept
    if kind == "remove":
        return [line for line in lines if canonical(line[0]) != key]
    return lines


@given(ops, st.booleans())
def test_every_change_reads_back_as_the_plain_list_would(sequence: list[Op],
                                                         parsed: bool) -> None:
    """`parsed`: the index exists from the start (as the parser hands it over) rather than
    being built on the first read; reads in between make later changes update a built one."""
    start = [("Via", "x"), ("Contact", "<sip:a@b>")]
    index = {"via": [0], "contact": [1]} if parsed else None
    headers = Headers(start, index)
    lines = list(start)
    for op in sequence:
        kind, name, value = op
        if kind == "add":
            headers.add(name, value)
        elif kind == "first":
            headers.add(name, value, first=True)
        elif kind == "set":
            headers.set(name, value)
        elif kind == "remove":
            headers.remove(name)
        else:
            assert headers.get(name) == next(
                (v for n, v in lines if canonical(n) == canonical(name)), None)
        lines = model_apply(lines, op)
        assert list(headers) == lines
    for name in NAMES:
        assert headers.lines(name) == [v for n, v in lines if canonical(n) == canonical(name)]
        assert (name in headers) == any(canonical(n) == canonical(name) for n, _ in lines)
