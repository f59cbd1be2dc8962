"""The routing decision: local services first, then Call Routing Rules by priority.

A `Router` is immutable and built once per configuration; the daemon swaps the whole object on
reload, so a call keeps the decision it was given. `decide` is the hot path: when the Router is
built, the rules that can apply in each kind of context (direction, protocol, location,
registration) are worked out and their alternations compiled, so no call pays for that;
literal patterns are dictionary look-ups, and the remaining regexes of a plan are tried as
alternations, which the `re` engine scans in C in rule order. `explain` is the slow path for
the dial-plan explainer and says why each earlier rule missed; both give the same decision
(the tests hold them to a brute-force reference).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

from routing.alias import parse_alias, split_service_address
from routing.model import PROTOCOLS, Protocol, RoutingRule, Service

Outcome = Literal["service", "rule", "reject"]
# Patterns whose meaning depends on their own group numbering or on global flags cannot be
# joined into one alternation; they are matched on their own.
_UNJOINABLE = re.compile(r"\\[1-9]|\(\?P=|\(\?\(|\(\?[aiLmsux]+\)")
_LITERAL_SPECIALS = frozenset(".^$*+?{}[]\\|()")
# Contexts a Router remembers the plan of: callers choose the location, so this is bounded.
_MAX_CONTEXTS = 4096


@dataclass(frozen=True, slots=True)
class CallContext:
    """What the routing decision depends on besides the alias."""

    protocol: Protocol = "sip"
    location: str = ""  # the ingress node's location; "" when the node has none
    registered: bool = False  # the caller is registered to this node
    outgoing: bool = False  # a call placed from a conference, not an incoming gateway call


@dataclass(frozen=True, slots=True)
class Miss:
    rule: str
    why: str


class Decision(NamedTuple):
    """Immutable, and a named tuple rather than a frozen dataclass: one is made per call,
    and a frozen dataclass's __init__ costs over a microsecond more."""

    alias: str  # as dialled
    outcome: Outcome
    service: Service | None = None
    rule: RoutingRule | None = None
    destination: str | None = None  # the rewritten alias a rule routes to
    pin: str | None = None  # from `<alias>*<pin>@<domain>`
    conference_id: str | None = None  # from `<reception>**<id>@<domain>`
    outgoing_location: str = ""  # rule's outgoing location; automatic = the ingress location
    misses: tuple[Miss, ...] = ()

    @property
    def routed(self) -> bool:
        return self.outcome != "reject"

    @property
    def reason(self) -> str:
        """The decision in words, made when read: formatting them costs over a microsecond,
        which a decision whose words nobody reads need not pay."""
        if self.rule is not None:
            return f"matched rule {self.rule.name!r} (priority {self.rule.priority})"
        if self.service is not None:
            what = (" with Conference ID" if self.conference_id is not None
                    else " with PIN" if self.pin is not None else "")
            return f"alias of {self.service.type} {self.service.name!r}{what}"
        return f"no service alias and no routing rule matches {parse_alias(self.alias)!r}"

    def to_json(self) -> dict[str, object]:
        """The dial-plan explainer's JSON (a contract: see docs/config.md)."""
        rule = self.rule
        return {
            "alias": self.alias,
            "outcome": self.outcome,
            "service": self.service.name if self.service else None,
            "rule": rule.name if rule else None,
            "destination": self.destination,
            "target": rule.target if rule else None,
            "reason": self.reason,
            "misses": [{"rule": m.rule, "why": m.why} for m in self.misses],
            "service_type": self.service.type if self.service else None,
            "service_target": self.service.target or None if self.service else None,
            "pin": self.pin,
            "conference_id": self.conference_id,
            "priority": rule.priority if rule else None,
            "outgoing_location": self.outgoing_location if rule else None,
            "outgoing_protocol": rule.outgoing_protocol if rule else None,
            "call_via": rule.call_via if rule else None,
        }


# (pattern, indexes of its rules in the Router's order, matches the full URI)
_Group = tuple[re.Pattern[str], tuple[int, ...], bool]


@dataclass(frozen=True, slots=True)
class _Plan:
    """The rules that can apply in one context, ready for matching.

    The indexes are keyed on ASCII text, lower-cased, and consulted for ASCII aliases only:
    between ASCII strings that is exactly how re.IGNORECASE compares, but beyond ASCII it
    follows neither str.lower nor str.casefold (dotless i, U+0131, matches `i`, yet sharp
    s, U+00DF, does not match `ss`). An alias with other characters is tried against each
    rule of the plan in turn instead (`everything`): slower, and rare, since a SIP URI
    escapes what is not ASCII (RFC 3261 19.1.2)."""

    # literal -> index of the first rule whose whole pattern is that literal, one table for
    # each subject (parsed alias, full URI)
    literals: tuple[dict[str, int], dict[str, int]]
    # Regex rules whose pattern ends in a literal `@domain...` can only match a subject with
    # that domain: they are looked at only for it. `free` holds the other regex rules.
    by_domain: tuple[dict[str, tuple[_Group, ...]], dict[str, tuple[_Group, ...]]]
    free: tuple[_Group, ...]
    everything: tuple[_Group, ...]


@dataclass(frozen=True)
class Router:
    services: tuple[Service, ...]
    rules: tuple[RoutingRule, ...]
    _by_alias: dict[str, Service] = field(init=False, repr=False, compare=False)
    # Test Call Services' aliases without a domain: they answer that user at any domain, so
    # `test-call@` whatever the caller's domain reaches the node's own test call.
    _by_user: dict[str, Service] = field(init=False, repr=False, compare=False)
    _ordered: tuple[RoutingRule, ...] = field(init=False, repr=False, compare=False)
    _locations: frozenset[str] = field(init=False, repr=False, compare=False)
    _plans: dict[CallContext, _Plan] = field(init=False, repr=False, compare=False)
    _known: _Plan = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "_by_alias",
             {a.casefold(): s for s in self.services for a in s.parsed_aliases})
        set_(self, "_by_user", {a.casefold(): s for s in self.services if s.type == "test_call"
                                for a in s.parsed_aliases if "@" not in a})
        ordered = tuple(sorted(self.rules, key=RoutingRule.sort_key))
        set_(self, "_ordered", ordered)
        locations = frozenset(r.location for r in ordered if r.location)
        set_(self, "_locations", locations)
        joined: dict[tuple[int, ...], tuple[_Group, ...]] = {}
        by_rules: dict[tuple[int, ...], _Plan] = {}
        plans: dict[CallContext, _Plan] = {}
        for context in _contexts(locations):
            chosen = tuple(i for i, r in enumerate(ordered) if _why_not(r, context) is None)
            plan = by_rules.get(chosen)
            if plan is None:
                plan = by_rules[chosen] = _plan(ordered, chosen, joined)
            plans[context] = plan
        set_(self, "_plans", plans)
        enabled = tuple(i for i, r in enumerate(ordered) if r.enabled)
        set_(self, "_known", _plan(ordered, enabled, joined))

    # -- decisions -------------------------------------------------------------------------
    def decide(self, alias: str, context: CallContext) -> Decision:
        parsed = parse_alias(alias)
        if not context.outgoing:
            found = self._service(alias, parsed)
            if found is not None:
                return found
        plan = self._plans.get(context)
        if plan is None:
            plan = self._plans[_like(context, self._locations)]
            if len(self._plans) < _MAX_CONTEXTS:
                self._plans[context] = plan
        hit = _first_match(plan, len(self._ordered), alias, parsed)
        if hit is None:
            return Decision(alias, "reject")
        index, match = hit
        return _routed(alias, parsed, self._ordered[index], match, context)

    def explain(self, alias: str, context: CallContext) -> Decision:
        """The same decision as `decide`, with the reason every earlier rule missed."""
        parsed = parse_alias(alias)
        if not context.outgoing:
            found = self._service(alias, parsed)
            if found is not None:
                return found
        misses: list[Miss] = []
        for rule in self._ordered:
            why = _why_not(rule, context)
            if why is None:
                what, subject = ("full alias URI", alias) if rule.match_full_uri else (
                    "alias", parsed)
                match = rule.pattern.fullmatch(subject)
                if match is not None:
                    decision = _routed(alias, parsed, rule, match, context)
                    return decision._replace(misses=tuple(misses))
                why = f"{what} '{subject}' does not match regex '{rule.match}'"
            misses.append(Miss(rule.name, why))
        return Decision(alias, "reject", misses=tuple(misses))

    def is_known_alias(self, alias: str) -> bool:
        """Whether a call to `alias` would go somewhere: a service alias (with or without a
        PIN or Conference ID) or an alias some enabled rule matches in any context. Presence
        publishes 'Available' for these."""
        parsed = parse_alias(alias)
        return self._service(alias, parsed) is not None or (
            _first_match(self._known, len(self._ordered), alias, parsed) is not None
        )

    def known(self, alias: str) -> Service | RoutingRule | None:
        """What makes `alias` known (see `is_known_alias`): its service, else the first
        enabled rule in priority order that matches it in some context. Presence shows
        that one's name and description."""
        parsed = parse_alias(alias)
        found = self._service(alias, parsed)
        if found is not None:
            return found.service
        hit = _first_match(self._known, len(self._ordered), alias, parsed)
        return None if hit is None else self._ordered[hit[0]]

    def _service(self, alias: str, parsed: str) -> Decision | None:
        service = self._by_alias.get(parsed.casefold())
        if service is None and self._by_user and "@" in parsed:
            service = self._by_user.get(parsed.partition("@")[0].casefold())
        if service is not None:
            return Decision(alias, "service", service=service)
        if "*" not in parsed:
            return None  # neither a PIN nor a Conference ID appended
        address = split_service_address(parsed)
        if address.alias == parsed:
            return None
        service = self._by_alias.get(address.alias.casefold())
        if service is None:
            return None
        if address.conference_id is not None and service.type != "virtual_reception":
            return None
        if address.pin is not None and not service.pin:
            return None
        return Decision(alias, "service", service=service, pin=address.pin,
                        conference_id=address.conference_id)


def _contexts(locations: frozenset[str]) -> Iterator[CallContext]:
    """A context for each way rules can tell contexts apart (see `_like`)."""
    for location in ("", *sorted(locations)):
        for registered in (False, True):
            yield CallContext("sip", location, registered, outgoing=True)
            for protocol in PROTOCOLS:
                yield CallContext(protocol, location, registered)


def _like(context: CallContext, locations: frozenset[str]) -> CallContext:
    """The context of `_contexts` the same rules apply in: no rule tells a location it does
    not name from none, and outgoing calls have no arriving protocol."""
    return CallContext("sip" if context.outgoing else context.protocol,
                       context.location if context.location in locations else "",
                       context.registered, context.outgoing)


def _why_not(rule: RoutingRule, context: CallContext) -> str | None:
    """Why `rule` cannot apply in `context`, or None when it can."""
    if not rule.enabled:
        return "disabled"
    if context.outgoing and not rule.outgoing:
        return "does not apply to outgoing calls from a conference"
    if not context.outgoing and not rule.incoming:
        return "does not apply to incoming gateway calls"
    if rule.location and rule.location != context.location:
        where = context.location or "no location"
        return f"wrong location: rule is for {rule.location!r}, call is in {where!r}"
    if rule.registered_only and not context.registered:
        return "registered devices only: the caller is not registered"
    if not context.outgoing and context.protocol not in rule.protocols:
        wanted = ", ".join(sorted(rule.protocols)) or "none"
        return f"wrong protocol: rule matches {wanted}, call is {context.protocol}"
    return None


def _routed(alias: str, parsed: str, rule: RoutingRule, match: re.Match[str] | None,
            ctx: CallContext) -> Decision:
    """`match` is the rule's own match when the caller has it; a replace string needs its
    group numbers."""
    destination = alias
    if rule.replace:
        if match is None:
            match = rule.pattern.fullmatch(alias if rule.match_full_uri else parsed)
            # the plan found this rule matching: a literal by its exact ASCII text, a joined
            # alternation by this rule's own alternative, under the same flags
            assert match is not None
        destination = rule.rewrite(match, alias)
    return Decision(alias, "rule", rule=rule, destination=destination,
                    outgoing_location=rule.outgoing_location or ctx.location)


def _literal(pattern: str) -> str | None:
    """The text a pattern matches when it is a plain literal (escapes of punctuation
    allowed), else None."""
    out: list[str] = []
    chars = iter(pattern)
    for ch in chars:
        if ch == "\\":
            nxt = next(chars, "")
            if not nxt or nxt.isalnum():
                return None  # \d, \w, \1 ... are not literal
            out.append(nxt)
        elif ch in _LITERAL_SPECIALS:
            return None
        else:
            out.append(ch)
    return "".join(out)


def _literal_suffix(pattern: str) -> str:
    """Text every full match of `pattern` must end with ('' when unsure). Conservative: any
    construct it does not follow resets the run, which only costs speed."""
    if re.search(r"\(\?[aiLmsu]*x", pattern):
        return ""  # verbose mode gives whitespace and '#' other meanings
    run: list[str] = []
    depth, i, n = 0, 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "\\":
            nxt = pattern[i + 1 : i + 2]
            run = [*run, nxt] if nxt and not nxt.isalnum() else []
            i += 2
            continue
        if ch == "[":  # skip the class, whose ']' may come first or be escaped
            i += 1
            if pattern[i : i + 1] == "^":
                i += 1
            if pattern[i : i + 1] == "]":
                i += 1
            while i < n and pattern[i] != "]":
                i += 2 if pattern[i] == "\\" else 1
            run = []
        elif ch == "|" and depth == 0:
            return ""
        elif ch in "()":
            depth += 1 if ch == "(" else -1
            run = []
        elif ch == "{":  # a {m,n} quantifier: skip it whole
            close = pattern.find("}", i)
            i = close if close > 0 else i
            run = []
        elif ch in "*+?|.^$":
            run = []
        else:
            run.append(ch)
        i += 1
    return "".join(run)


def _domain(subject: str) -> str:
    """What follows the last '@', lower-cased ('' without one)."""
    at = subject.rfind("@")
    return subject[at + 1 :].lower() if at >= 0 else ""


def _domain_of(rule: RoutingRule) -> str | None:
    """The domain every match of `rule` ends with, when it is ASCII (see _Plan)."""
    _, at, domain = _literal_suffix(rule.match).rpartition("@")
    return domain.lower() if at and domain.isascii() else None


def _join(rules: tuple[RoutingRule, ...], indexes: tuple[int, ...],
          joined: dict[tuple[int, ...], tuple[_Group, ...]]) -> tuple[_Group, ...]:
    """Consecutive regex rules on one subject as one alternation each (`joined` keeps those
    compiled for other plans); a rule whose meaning depends on its own group numbers or
    global flags, or that is alone, as its own pattern."""
    groups: list[_Group] = []
    run: list[int] = []

    def flush() -> None:
        if len(run) == 1:
            groups.append((rules[run[0]].pattern, (run[0],), rules[run[0]].match_full_uri))
        elif run:
            key = tuple(run)
            if key not in joined:
                joined[key] = _alternation(rules, key)
            groups.extend(joined[key])
        run.clear()

    for i in indexes:
        rule = rules[i]
        if _UNJOINABLE.search(rule.match):
            flush()
            groups.append((rule.pattern, (i,), rule.match_full_uri))
            continue
        if run and rules[run[0]].match_full_uri != rule.match_full_uri:
            flush()
        run.append(i)
    flush()
    return tuple(groups)


def _alternation(rules: tuple[RoutingRule, ...], run: tuple[int, ...]) -> tuple[_Group, ...]:
    """One alternative per rule, named by an empty group at its end: the last group to close
    in it, so `lastgroup` names the rule whose alternative matched. An alternative that
    starts with the rule's own text rather than a group lets re pass over it at once when
    that text starts with a caseless character (a digit, '+') the alias does not."""
    full = rules[run[0]].match_full_uri
    try:
        pattern = re.compile("|".join(f"(?:{rules[i].match})(?P<_{i}>)" for i in run),
                             re.IGNORECASE)
    except re.error:  # e.g. the same group name in two rules
        return tuple((rules[i].pattern, (i,), full) for i in run)
    return ((pattern, run, full),)


def _plan(rules: tuple[RoutingRule, ...], chosen: tuple[int, ...],
          joined: dict[tuple[int, ...], tuple[_Group, ...]]) -> _Plan:
    literals: tuple[dict[str, int], dict[str, int]] = ({}, {})
    by_domain: tuple[dict[str, list[int]], dict[str, list[int]]] = ({}, {})
    free: list[int] = []
    for i in chosen:
        rule = rules[i]
        text = _literal(rule.match)
        if text is not None and text.isascii():
            literals[rule.match_full_uri].setdefault(text.lower(), i)
            continue
        domain = _domain_of(rule)
        if domain is None:
            free.append(i)
        else:
            by_domain[rule.match_full_uri].setdefault(domain, []).append(i)
    return _Plan(
        literals,
        ({d: _join(rules, tuple(v), joined) for d, v in by_domain[0].items()},
         {d: _join(rules, tuple(v), joined) for d, v in by_domain[1].items()}),
        _join(rules, tuple(free), joined),
        tuple((rules[i].pattern, (i,), rules[i].match_full_uri) for i in chosen),
    )


def _first_match(
    plan: _Plan, count: int, alias: str, parsed: str
) -> tuple[int, re.Match[str] | None] | None:
    """The index of the first rule of `plan` that matches (`count` when none), and that
    rule's own match when the pattern that found it was the rule's own."""
    subjects = (parsed, alias)
    lists: tuple[tuple[_Group, ...], ...]
    if alias.isascii():  # and so is the parsed alias
        # most plans have no full-URI rule: skip folding the URI for them
        full_literals, full_domains = plan.literals[1], plan.by_domain[1]
        best = min(plan.literals[0].get(parsed.lower(), count),
                   full_literals.get(alias.lower(), count) if full_literals else count)
        lists = (plan.free, plan.by_domain[0].get(_domain(parsed), ()),
                 full_domains.get(_domain(alias), ()) if full_domains else ())
    else:
        best, lists = count, (plan.everything,)
    found: re.Match[str] | None = None
    # Each list is in rule order and they are disjoint: the first match overall is the
    # earliest of each list's first.
    for groups in lists:
        for pattern, indexes, full in groups:
            if indexes[0] >= best:
                break
            match = pattern.fullmatch(subjects[full])
            if match is None:
                continue
            if len(indexes) == 1:
                best, found = indexes[0], match
            else:  # alternatives are tried in rule order: this is the first that matches
                i = int(str(match.lastgroup)[1:])
                if i < best:
                    best, found = i, None
            break
    return None if best == count else (best, found)
