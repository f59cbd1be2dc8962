"""What an operator sees for a wrong command line, of any command: one line saying what is
wrong, exit 2, never a traceback; and the help texts say what each thing is."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.console import lyncgate

# Should one of these be taken, DNS goes to loopback, not the system resolver.
LOOPBACK_DNS = ["--dns-server", "127.0.0.1:1"]
BAD = [
    (["doctor", "--dns-server", "nothere:53"], "'nothere:53' is not ADDRESS:PORT"),
    (["doctor", "--dns-server", "127.0.0.1"], "is not ADDRESS:PORT"),
    (["doctor", "--dns-server", "127.0.0.1:99999"], "is not ADDRESS:PORT"),
    (["doctor", "--timeout", "soon", *LOOPBACK_DNS], "'soon' is not a number of seconds"),
    (["doctor", "--timeout", "0", *LOOPBACK_DNS], "'0' is not a number of seconds"),
    (["doctor", "--pool-node", "gw2.example.com", *LOOPBACK_DNS], "is not FQDN=ADDRESS"),
    (["doctor", "--pool", "bad pool!", *LOOPBACK_DNS], "'bad pool!' is not a valid FQDN"),
    (["csr", "--fqdn=bad name!"], "'bad name!' is not a valid DNS name"),
    (["csr", "--country", "Norway"], "must be a two-letter code"),
    (["csr", "--key-type", "dsa"], "invalid choice: 'dsa'"),
    (["cert", "import"], "the following arguments are required: certificate"),
    (["cert", "renew"], "invalid choice: 'renew'"),
    (["run", "--log-level", "loud"], "invalid choice: 'loud'"),
    (["run", "--config"], "expected one argument"),
    (["check-config"], "the following arguments are required: file"),
    (["dialplan", "--protocol", "fax", "x"], "invalid choice: 'fax'"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
]


@pytest.mark.parametrize(("argv", "words"), BAD, ids=[" ".join(a) for a, _ in BAD])
def test_a_wrong_argument_is_one_line_and_exit_2(
    tmp_path: Path, argv: list[str], words: str,
) -> None:
    done = lyncgate(*argv, cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert words in done.stderr
    assert done.stderr.startswith("lyncgate")
    assert not list(tmp_path.iterdir())  # nothing was made


def test_the_top_help_describes_the_tool_whole() -> None:
    """Not the module docstring cut at its first line break (mid-sentence, at a semicolon)."""
    done = lyncgate("--help")
    text = " ".join(done.stdout.split())
    assert done.returncode == 0
    assert "SIP / MS-SIP gateway" in text
    assert "Exit status: 0 ok, 1 a check or the work failed, 2 a wrong command line or " \
        "config file." in text
    assert "its subject;" not in text


def test_log_level_is_explained() -> None:
    done = lyncgate("run", "--help")
    text = " ".join(done.stdout.split())
    assert "--log-level {debug,info,warning,error} lines below this level are not written" \
        in text
