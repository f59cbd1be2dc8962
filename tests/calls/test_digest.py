"""Digest authentication: RFC 7616's worked examples for both algorithms, challenge order
(SHA-256 first, RFC 8760), stateless nonces that go stale, and header parsing."""

from __future__ import annotations

import dataclasses

import pytest

from gateway.calls import digest

RFC7616 = dict(username="Mufasa", realm="http-auth@example.org", uri="/dir/index.html",
               nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
               cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ", nc="00000001",
               qop="auth")


@pytest.mark.parametrize(("algorithm", "expected"), [
    ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
    ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
])
def test_rfc7616_examples(algorithm: str, expected: str) -> None:
    creds = digest.Credentials(response=expected, algorithm=algorithm, **RFC7616)
    assert digest.response(creds, "GET", "Circle of Life") == expected
    assert digest.verify(creds, "GET", "Circle of Life")
    assert not digest.verify(creds, "GET", "circle of life")


def test_challenges_offer_sha256_before_md5() -> None:
    assert [c.split("algorithm=")[1].split(",")[0] for c in digest.challenges("r", "n")] == [
        "SHA-256", "MD5"]
    assert "stale=true" in digest.challenges("r", "n", stale=True)[0]


def test_nonces_are_ours_and_expire() -> None:
    nonces = digest.Nonces(b"k" * 32)
    nonce = nonces.issue(1000.0)
    assert nonces.check(nonce, 1100.0) is None
    assert nonces.check(nonce, 1000.0 + digest.NONCE_LIFETIME + 1) == "stale"
    assert digest.Nonces(b"x" * 32).check(nonce, 1100.0) == "invalid"
    assert nonces.check("garbage!", 1100.0) == "invalid"


def test_authorization_header_parsing() -> None:
    creds = digest.parse_authorization(
        'Digest username="room12", realm="vc.example.com", nonce="abc", '
        'uri="sip:vc.example.com", response="0123", algorithm=SHA-256, qop=auth, '
        'nc=00000001, cnonce="x\\"y"')
    assert creds is not None and creds.algorithm == "SHA-256" and creds.cnonce == 'x"y'
    assert digest.parse_authorization("Basic dXNlcjpwYXNz") is None
    assert digest.parse_authorization('Digest username="a"') is None  # fields missing


@pytest.mark.parametrize("answer", ["é" * 32, "ﬀ" + "0" * 31, "\udcff" * 32, ""])
def test_a_response_beyond_ascii_is_a_wrong_answer_not_a_crash(answer: str) -> None:
    """Issue 22 (fuzzing): a REGISTER with a valid nonce and `response="é..."` made
    hmac.compare_digest raise TypeError and went unanswered. It is a wrong answer: the
    registrar challenges again (401)."""
    nonces = digest.Nonces(b"k" * 32)
    nonce = nonces.issue(1000.0)
    header = (f'Digest username="dev", realm="r", nonce="{nonce}", uri="sip:r", '
              f'response="{answer}", algorithm=SHA-256, qop=auth, nc=00000001, cnonce="c"')
    creds = digest.parse_authorization(header)
    assert creds is not None and creds.response == answer
    assert nonces.check(creds.nonce, 1100.0) is None
    assert digest.verify(creds, "REGISTER", "secret") is False
    right = digest.response(creds, "REGISTER", "secret")
    assert digest.verify(dataclasses.replace(creds, response=right), "REGISTER", "secret")
