"""certauth.trust: anchors from tls.cacertfile plus trusted CA rows, cached and invalidated on CA changes."""

from __future__ import annotations

import logging

import pytest

from certauth import trust
from tests.certauth.crlhelpers import add_ca_row
from tests.certs import make_ca

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_cache():
    trust.invalidate()
    yield
    trust.invalidate()


def test_anchors_are_the_cacertfile_plus_trusted_rows_without_duplicates(tmp_path):
    file_ca, row_ca, both_ca, untrusted_ca = (make_ca(n) for n in ("file", "row", "both", "untrusted"))
    path = tmp_path / "ca.pem"
    path.write_bytes(file_ca.pem + both_ca.pem)
    add_ca_row(row_ca, "row")
    add_ca_row(both_ca, "both")
    add_ca_row(untrusted_ca, "untrusted", trusted=False)
    anchors = trust.trust_anchors(str(path))
    assert set(anchors.certificates) == {file_ca.cert, row_ca.cert, both_ca.cert}
    assert len(anchors.certificates) == 3
    assert anchors.store is not None


def test_every_ca_row_maps_to_its_primary_key_trusted_or_not():
    trusted_ca, untrusted_ca = make_ca("t"), make_ca("u")
    trusted_row = add_ca_row(trusted_ca, "t")
    untrusted_row = add_ca_row(untrusted_ca, "u", trusted=False)
    anchors = trust.trust_anchors(None)
    assert anchors.ca_row_id(trusted_ca.cert) == trusted_row.pk
    assert anchors.ca_row_id(untrusted_ca.cert) == untrusted_row.pk
    assert anchors.ca_row_id(make_ca("stranger").cert) is None
    assert anchors.ca_row_id(None) is None


def test_no_anchor_at_all_gives_no_store():
    anchors = trust.trust_anchors(None)
    assert anchors.certificates == ()
    assert anchors.store is None


def test_unreadable_cacertfile_is_logged_and_database_anchors_remain(tmp_path, caplog):
    row_ca = make_ca("row")
    add_ca_row(row_ca, "row")
    with caplog.at_level(logging.ERROR, logger="certauth.trust"):
        anchors = trust.trust_anchors(str(tmp_path / "missing.pem"))
    assert anchors.certificates == (row_ca.cert,)
    assert "missing.pem" in caplog.text


def test_anchors_are_cached_until_a_ca_row_changes():
    first = trust.trust_anchors(None)
    assert trust.trust_anchors(None) is first
    before = trust.generation()
    row = add_ca_row(make_ca("new"), "new")
    assert trust.generation() > before
    added = trust.trust_anchors(None)
    assert len(added.certificates) == 1
    row.delete()
    assert trust.trust_anchors(None).certificates == ()


def test_revoking_trust_in_a_row_takes_effect_at_once_in_this_process():
    row = add_ca_row(make_ca("ca"), "ca")
    assert len(trust.trust_anchors(None).certificates) == 1
    row.trusted_for_client_auth = False
    row.save()
    assert trust.trust_anchors(None).certificates == ()
