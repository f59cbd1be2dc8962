"""The one entry point, `lyncgate`. Each subcommand lives in the module that owns its subject;
this file only names them, so `lyncgate --help` works without importing the heavy ones.

Exit codes, the same for every command (README.md, "Exit codes"): 0 done, nothing wrong; 1 the
command ran and something failed (a check, a refused certificate, a listener that could not
open); 2 the command line or the config file is wrong, and nothing was done."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import NoReturn, Protocol, cast

from gateway import __version__

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

DESCRIPTION = ("lyncgate: a SIP / MS-SIP gateway between Microsoft Lync / Skype for Business "
               "and standards-based SIP video endpoints. Exit status: 0 ok, 1 a check or the "
               "work failed, 2 a wrong command line or config file.")


class Command(Protocol):
    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


class Parser(argparse.ArgumentParser):
    """argparse with a one-line refusal: the usage block it prints above the error buries the
    one line that says what is wrong, and `--help` shows the usage anyway."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see `{self.prog} --help`)\n")


def usage_error(prog: str, message: str) -> int:
    """What a command says about an argument argparse could not check itself."""
    print(f"{prog}: {message} (see `{prog} --help`)", file=sys.stderr)
    return EXIT_USAGE


# name -> (module implementing add_arguments/run, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("gateway.daemon.command", "run the gateway daemon (embedded default without --config)"),
    "check-config": ("gateway.config.command", "validate a config file, print every problem"),
    "dialplan": ("gateway.dialplan", "explain the routing decision for an alias"),
    "csr": ("gateway.certs.command_csr", "create a private key and certificate signing request"),
    "cert": ("gateway.certs.command_cert", "import or check the node certificate"),
    "doctor": ("gateway.doctor.command", "check DNS, certificates and reachability of peers"),
    "config": ("gateway.cluster.push", "config push: store a cluster's shared config"),
    "cluster": ("gateway.cluster.command", "cluster status: the nodes of a cluster"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="lyncgate", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"lyncgate {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    top = build_parser()
    if not argv or argv[0] not in COMMANDS:
        # Unknown command, --help or --version: argparse prints and exits with status 2 or 0.
        top.parse_args(argv)
        return EXIT_USAGE
    name = argv[0]
    module_name, help_text = COMMANDS[name]
    command = cast(Command, importlib.import_module(module_name))
    parser = Parser(prog=f"lyncgate {name}", description=help_text)
    command.add_arguments(parser)
    args = parser.parse_args(argv[1:])
    return command.run(args)


if __name__ == "__main__":
    sys.exit(main())
