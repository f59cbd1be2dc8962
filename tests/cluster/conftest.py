"""One real PostgreSQL per test module (tests/kit/postgres.py); each test takes a fresh
database on it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.kit.postgres import Postgres, running_postgres


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    with running_postgres() as server:
        yield server


@pytest.fixture
def database(postgres: Postgres) -> str:
    return postgres.database()
