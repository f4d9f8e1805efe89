"""The fault tests' own servers: a PostgreSQL cluster and a Redis per test, on the PostgreSQL leg only."""

from __future__ import annotations

import pytest

from tests.faults.servers import PostgresServer, RedisServer, need_postgres_leg


@pytest.fixture
def postgres():
    need_postgres_leg()
    server = PostgresServer().start()
    yield server
    server.close()


@pytest.fixture
def redis_server():
    need_postgres_leg()
    server = RedisServer().start()
    yield server
    server.close()
