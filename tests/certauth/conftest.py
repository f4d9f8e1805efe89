"""Fixtures of the CRL tests: a CRL HTTP server on 127.0.0.1, and an external CA with its trusted row."""

from __future__ import annotations

import pytest

from tests.certauth.crlhelpers import add_ca_row
from tests.certauth.crlserver import CrlServer
from tests.certs import make_ca


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
