"""A real PostgreSQL for the cluster tests: Debian's server binaries, `initdb` into a
temporary directory, `pg_ctl` on a free loopback port, stopped and removed afterwards
(bench/cluster.py starts its server here too).

PostgreSQL refuses to run as root: as root (CI), the server runs as the `postgres` system
user Debian's package creates, its directory handed to that user."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from tests.peers import free_port


def _binary(name: str) -> str:
    found = shutil.which(name) or next(
        iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    if found is None:
        raise RuntimeError(f"{name} is not installed: run scripts/install --test "
                           "(Debian postgresql)")
    return found


class Postgres:
    """One server; `database()` makes a fresh database on it for each test."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "data"
        self.port = free_port()
        self.user = "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
        self.log = root / "server.log"

    def _as_server(self, *argv: str) -> subprocess.CompletedProcess[str]:
        command = list(argv)
        if os.geteuid() == 0:
            command = ["runuser", "-u", self.user, "--", *command]
        return subprocess.run(command, capture_output=True, text=True, timeout=60,
                              check=False)

    def _checked(self, *argv: str) -> None:
        done = self._as_server(*argv)
        if done.returncode != 0:
            log = self.log.read_text(errors="replace") if self.log.exists() else ""
            raise RuntimeError(f"{argv[0]} exited {done.returncode}: {done.stdout}"
                               f"{done.stderr}{log[-2000:]}")

    def init(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.root, self.user)
        self._checked(_binary("initdb"), "-D", str(self.data), "-U", "postgres",
                      "--auth=trust", "--no-sync", "-E", "UTF8")

    def start(self) -> None:
        options = (f"-c listen_addresses=127.0.0.1 -c port={self.port} "
                   f"-c unix_socket_directories={self.root} -c fsync=off "
                   "-c max_connections=60")
        self._checked(_binary("pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w",
                      "-t", "30", "-o", options, "start")

    def stop(self, mode: str = "fast") -> None:
        self._as_server(_binary("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def pid(self) -> int:
        """The postmaster's: its CPU with its backends' (bench/cluster.py)."""
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        done = subprocess.run([_binary("psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                               "-d", self.url(database), "-c", sql],
                              capture_output=True, text=True, timeout=30, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"psql: {done.stderr}")
        return done.stdout.strip()

    def database(self) -> str:
        """A new, empty database; its URL."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        self.psql(f"CREATE DATABASE {name}")
        return self.url(name)


@contextlib.contextmanager
def running_postgres() -> Iterator[Postgres]:
    root = Path(tempfile.mkdtemp(prefix="lyncgate-pg-"))
    server = Postgres(root)
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)
