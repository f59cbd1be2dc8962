"""The routing decision: local services first, then Call Routing Rules by priority.

A `Router` is immutable and built once per configuration; the daemon swaps the whole object on
reload, so a call keeps the decision it was given. `decide` is the hot path: the rules that
can apply to a context (direction, protocol, location, registration) are worked out once per
context and cached, literal patterns are dictionary look-ups, and the remaining regexes of a
plan are tried as one alternation, which the `re` engine scans in C in rule order. `explain`
is the slow path for the dial-plan explainer and says why each earlier rule missed; both give
the same decision (the tests hold them to a brute-force reference).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from routing.alias import parse_alias, split_service_address
from routing.model import Protocol, RoutingRule, Service

Outcome = Literal["service", "rule", "reject"]
# Patterns whose meaning depends on their own group numbering or on global flags cannot be
# joined into one alternation; they are matched on their own.
_UNJOINABLE = re.compile(r"\\[1-9]|\(\?P=|\(\?\(|\(\?[aiLmsux]+\)")
_LITERAL_SPECIALS = frozenset(".^$*+?{}[]\\|()")


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


@dataclass(frozen=True, slots=True)
class Decision:
    alias: str  # as dialled
    outcome: Outcome
    reason: str
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


@dataclass(frozen=True, slots=True)
class _Plan:
    """The rules that can apply in one context, ready for matching."""

    rules: tuple[RoutingRule, ...]
    # lower-cased literal -> index of the first rule whose whole pattern is that literal,
    # one table for each subject (parsed alias, full URI)
    literals: tuple[dict[str, int], dict[str, int]]
    # Regex rules whose pattern ends in a literal `@domain...` can only match a subject with
    # that domain: they are looked at only for it. `free` holds the other regex rules.
    by_domain: tuple[dict[str, tuple[int, ...]], dict[str, tuple[int, ...]]]
    free: tuple[int, ...]
    # regex groups for each (parsed alias domain, full URI domain) seen, built on first use;
    # callers choose the domains, so that table is bounded, while the groups themselves are
    # shared per set of chosen rules, which the configuration bounds.
    groups: dict[tuple[str, str], tuple[_Group, ...]] = field(default_factory=dict)
    joined: dict[tuple[int, ...], tuple[_Group, ...]] = field(default_factory=dict)

    def groups_for(self, parsed: str, full: str) -> tuple[_Group, ...]:
        key = (_domain(parsed), _domain(full))
        groups = self.groups.get(key)
        if groups is None:
            chosen = tuple(sorted({*self.free, *self.by_domain[0].get(key[0], ()),
                                   *self.by_domain[1].get(key[1], ())}))
            groups = self.joined.get(chosen)
            if groups is None:
                groups = self.joined[chosen] = _join(self.rules, chosen)
            if len(self.groups) < _MAX_DOMAIN_PLANS:
                self.groups[key] = groups
        return groups


# (joined pattern, rule indexes in order, matches the full URI)
_Group = tuple[re.Pattern[str], tuple[int, ...], bool]
_MAX_DOMAIN_PLANS = 4096


@dataclass(frozen=True)
class Router:
    services: tuple[Service, ...]
    rules: tuple[RoutingRule, ...]
    _by_alias: dict[str, Service] = field(init=False, repr=False, compare=False)
    _ordered: tuple[RoutingRule, ...] = field(init=False, repr=False, compare=False)
    _plans: dict[CallContext, _Plan] = field(init=False, repr=False, compare=False)
    _known: _Plan = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "_by_alias", {a.lower(): s for s in self.services for a in s.aliases})
        ordered = tuple(sorted(self.rules, key=RoutingRule.sort_key))
        set_(self, "_ordered", ordered)
        set_(self, "_plans", {})
        set_(self, "_known", _plan(tuple(r for r in ordered if r.enabled)))

    # -- decisions -------------------------------------------------------------------------
    def decide(self, alias: str, context: CallContext) -> Decision:
        parsed = parse_alias(alias)
        if not context.outgoing:
            found = self._service(alias, parsed)
            if found is not None:
                return found
        plan = self._plans.get(context)
        if plan is None:
            plan = _plan(tuple(r for r in self._ordered if _why_not(r, context) is None))
            self._plans[context] = plan
        hit = _first_match(plan, alias, parsed)
        if hit is None:
            return _reject(alias, parsed, ())
        rule, match = hit
        return _routed(alias, rule, match, context)

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
            subject = alias if rule.match_full_uri else parsed
            if why is None:
                match = rule.pattern.fullmatch(subject)
                if match is not None:
                    decision = _routed(alias, rule, match, context)
                    return _with_misses(decision, tuple(misses))
                what = "full alias URI" if rule.match_full_uri else "alias"
                why = f"{what} {subject!r} does not match {rule.match!r}"
            misses.append(Miss(rule.name, why))
        return _reject(alias, parsed, tuple(misses))

    def is_known_alias(self, alias: str) -> bool:
        """Whether a call to `alias` would go somewhere: a service alias (with or without a
        PIN or Conference ID) or an alias some enabled rule matches in any context. Presence
        publishes 'Available' for these."""
        parsed = parse_alias(alias)
        return self._service(alias, parsed) is not None or (
            _first_match(self._known, alias, parsed) is not None
        )

    def _service(self, alias: str, parsed: str) -> Decision | None:
        service = self._by_alias.get(parsed.lower())
        if service is not None:
            return Decision(alias, "service", f"alias of {service.type} {service.name!r}",
                            service=service)
        address = split_service_address(parsed)
        if address.alias == parsed:
            return None
        service = self._by_alias.get(address.alias.lower())
        if service is None:
            return None
        if address.conference_id is not None and service.type != "virtual_reception":
            return None
        if address.pin is not None and not service.pin:
            return None
        what = "Conference ID" if address.conference_id else "PIN"
        return Decision(alias, "service",
                        f"alias of {service.type} {service.name!r} with {what}",
                        service=service, pin=address.pin, conference_id=address.conference_id)


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


def _routed(alias: str, rule: RoutingRule, match: re.Match[str], ctx: CallContext) -> Decision:
    return Decision(
        alias,
        "rule",
        f"matched rule {rule.name!r} (priority {rule.priority})",
        rule=rule,
        destination=rule.rewrite(match),
        outgoing_location=rule.outgoing_location or ctx.location,
    )


def _reject(alias: str, parsed: str, misses: tuple[Miss, ...]) -> Decision:
    return Decision(alias, "reject",
                    f"no service alias and no routing rule matches {parsed!r}", misses=misses)


def _with_misses(decision: Decision, misses: tuple[Miss, ...]) -> Decision:
    return Decision(decision.alias, decision.outcome, decision.reason, decision.service,
                    decision.rule, decision.destination, decision.pin, decision.conference_id,
                    decision.outgoing_location, misses)


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
    """What follows the last '@', case-folded ('' without one)."""
    at = subject.rfind("@")
    return subject[at + 1 :].casefold() if at >= 0 else ""


def _domain_of(rule: RoutingRule) -> str | None:
    suffix = _literal_suffix(rule.match)
    if "@" not in suffix or not suffix.isascii():
        return None
    return suffix.rpartition("@")[2].casefold()


def _join(rules: tuple[RoutingRule, ...], indexes: tuple[int, ...]) -> tuple[_Group, ...]:
    """Consecutive regex rules on one subject as one alternation each; rules whose meaning
    depends on their own group numbers or global flags on their own."""
    groups: list[_Group] = []
    run: list[int] = []

    def flush() -> None:
        if run:
            full = rules[run[0]].match_full_uri
            joined = "|".join(f"(?P<_{i}>{rules[i].match})" for i in run)
            try:
                pattern = re.compile(joined, re.IGNORECASE)
            except re.error:  # e.g. the same group name in two rules
                groups.extend((rules[i].pattern, (i,), full) for i in run)
            else:
                groups.append((pattern, tuple(run), full))
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


def _plan(rules: tuple[RoutingRule, ...]) -> _Plan:
    literals: tuple[dict[str, int], dict[str, int]] = ({}, {})
    by_domain: tuple[dict[str, list[int]], dict[str, list[int]]] = ({}, {})
    free: list[int] = []
    for i, rule in enumerate(rules):
        text = _literal(rule.match)
        if text is not None:
            literals[rule.match_full_uri].setdefault(text.casefold(), i)
            continue
        domain = _domain_of(rule)
        if domain is None:
            free.append(i)
        else:
            by_domain[rule.match_full_uri].setdefault(domain, []).append(i)
    return _Plan(
        rules,
        literals,
        ({d: tuple(v) for d, v in by_domain[0].items()},
         {d: tuple(v) for d, v in by_domain[1].items()}),
        tuple(free),
    )


def _first_match(
    plan: _Plan, alias: str, parsed: str
) -> tuple[RoutingRule, re.Match[str]] | None:
    subjects = (parsed, alias)
    best = min(
        (i for i in (plan.literals[0].get(parsed.casefold()),
                     plan.literals[1].get(alias.casefold())) if i is not None),
        default=len(plan.rules),
    )
    for pattern, indexes, full in plan.groups_for(parsed, alias):
        if indexes[0] >= best:
            break
        joined = pattern.fullmatch(subjects[full])
        if joined is None:
            continue
        # Alternatives are tried in rule order, and each rule's wrapper group is the last
        # to close inside its alternative, so `lastgroup` names the first rule that matches.
        # Its own pattern then gives the groups the replace string numbers.
        i = indexes[0] if len(indexes) == 1 else int(str(joined.lastgroup)[1:])
        if i >= best:
            break
        match = plan.rules[i].pattern.fullmatch(subjects[full])
        assert match is not None
        return plan.rules[i], match
    if best == len(plan.rules):
        return None
    rule = plan.rules[best]
    match = rule.pattern.fullmatch(subjects[rule.match_full_uri])
    assert match is not None  # a literal pattern matches its own text
    return rule, match

