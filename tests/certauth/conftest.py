"""Fixtures of the certificate tests: a fresh trust-anchor cache for each test, a CRL HTTP server on
127.0.0.1, and an external CA with its trusted row."""

from __future__ import annotations

import pytest

from certauth import trust
from tests.certauth.crlhelpers import add_ca_row
from tests.certauth.crlserver import CrlServer
from tests.certs import make_ca


@pytest.fixture(autouse=True)
def _fresh_trust_cache():
    # The trust anchors are cached per process; rolled-back test transactions send no post_delete, so every
    # certificate test starts and ends with an empty cache.
    trust.invalidate()
    yield
    trust.invalidate()


@pytest.fixture
def server():
    with CrlServer() as crl_server:
        yield crl_server


@pytest.fixture
def ext_ca():
    return make_ca("External CA")


@pytest.fixture
def ext_row(ext_ca):
    return add_ca_row(ext_ca, "External CA")
