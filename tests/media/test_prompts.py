"""The shipped prompts, judged by ffmpeg's decoders: each decodes, as the codec it is
named for, to speech as long as its words (not silence, not a tone); themes override
by file name; scripts/make-prompts makes a theme."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from gateway.media import prompts
from gateway.media.prompts import CODECS, PROMPTS, TEXTS, load
from tests.kit.audio import assert_speech, decode, rms
from tests.peers import need

ROOT = Path(__file__).resolve().parents[2]
@pytest.mark.parametrize("codec", sorted(CODECS))
@pytest.mark.parametrize("name", PROMPTS)
def test_prompt_decodes_to_speech_of_its_length(name: str, codec: str) -> None:
    payload = load(name, codec)
    frame = CODECS[codec].frame_bytes
    assert payload and len(payload) % frame == 0  # whole 20 ms packets
    assert len(payload) <= 40_000
    samples, rate = decode(payload, codec)
    seconds = assert_speech(samples, rate, TEXTS[name])
    # 20 ms of payload is one frame whatever the codec: the length in bytes says the time.
    assert seconds == pytest.approx(len(payload) / frame * 0.02, abs=0.021)


@pytest.mark.parametrize("name", PROMPTS)
def test_both_laws_carry_the_same_audio(name: str) -> None:
    mu, _ = decode(load(name, "PCMU"), "PCMU")
    a, _ = decode(load(name, "PCMA"), "PCMA")
    assert len(mu) == len(a)
    difference = [x - y for x, y in zip(mu, a, strict=True)]
    assert rms(difference) < 0.1 * rms(mu)  # quantising differs, the words do not


def test_the_prompts_are_the_issues() -> None:
    assert PROMPTS == ("welcome", "enter_number", "not_found", "enter_pin", "wrong_pin",
                       "goodbye", "meeting_not_found", "connecting", "lobby_wait",
                       "not_admitted")
    assert {c: (v.clock_rate, v.frame_bytes) for c, v in CODECS.items()} == {
        "PCMU": (8000, 160), "PCMA": (8000, 160), "G722": (8000, 160)}


def test_codec_names_any_case_and_read_once() -> None:
    assert load("goodbye", "pcmu") is load("goodbye", "PCMU")


def test_unknown_prompt_or_codec_says_which(tmp_path: Path) -> None:
    with pytest.raises(KeyError, match=r"no prompt named 'hello'.*welcome"):
        load("hello", "PCMU")
    with pytest.raises(KeyError, match=r"no prompts for codec 'OPUS'.*PCMU, PCMA, G722"):
        load("welcome", "OPUS")
    with pytest.raises(KeyError, match="no prompt named"):
        load("../default/welcome", "PCMU", tmp_path)


def test_theme_overrides_by_file_name_and_falls_back(tmp_path: Path) -> None:
    theme = tmp_path / "theme"
    theme.mkdir()
    (theme / "welcome.pcma").write_bytes(b"\xd5" * 320)
    assert load("welcome", "PCMA", theme) == b"\xd5" * 320
    assert load("welcome", "PCMU", theme) == load("welcome", "PCMU")
    assert load("goodbye", "PCMA", theme) == load("goodbye", "PCMA")
    # Read once: a changed file is seen after forget(), as on the daemon's reload.
    (theme / "welcome.pcma").write_bytes(b"\x55" * 160)
    assert load("welcome", "PCMA", theme) == b"\xd5" * 320
    prompts.forget()
    assert load("welcome", "PCMA", theme) == b"\x55" * 160


def test_prompts_are_package_data() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    assert '"media/prompts/default/*"' in text
    assert {p.name for p in prompts.DEFAULT.iterdir()} == {
        f"{n}.{c.suffix}" for n in PROMPTS for c in CODECS.values()}


def test_make_prompts_makes_a_theme(tmp_path: Path) -> None:
    need("espeak-ng")
    texts = tmp_path / "texts.toml"
    texts.write_text('goodbye = "Thank you for calling. Goodbye."\n')
    out = tmp_path / "theme"
    subprocess.run([str(ROOT / "scripts/make-prompts"), "--texts", str(texts),
                    "--out", str(out)], check=True, capture_output=True)
    assert sorted(p.name for p in out.iterdir()) == ["goodbye.g722", "goodbye.pcma",
                                                    "goodbye.pcmu"]
    for codec in CODECS:
        payload = load("goodbye", codec, out)
        assert len(payload) % 160 == 0
        seconds = assert_speech(*decode(payload, codec), "Thank you for calling. Goodbye.")
        assert seconds > len(load("goodbye", codec)) / 8000 + 0.5  # more words, longer


def test_make_prompts_refuses_unknown_names(tmp_path: Path) -> None:
    need("espeak-ng")
    texts = tmp_path / "texts.toml"
    texts.write_text('hello = "Hello."\n')
    result = subprocess.run([str(ROOT / "scripts/make-prompts"), "--texts", str(texts),
                             "--out", str(tmp_path / "out")], capture_output=True, text=True)
    assert result.returncode == 1
    assert "no prompts named hello" in result.stderr
    assert not (tmp_path / "out").exists()
