"""certauth.trust: anchors are CA rows (config CAs where their cacertfile lists them), cached per listener."""

from __future__ import annotations

import pytest

from accounts import changefeed
from certauth import trust
from certauth.configcas import sync_config_cas
from tests.certauth.crlhelpers import add_ca_row
from tests.certs import make_ca
from xmppauth.config import C2SListener, Config, TlsOptions

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_cache():
    trust.invalidate()
    yield
    trust.invalidate()


def _config(*cacertfiles: str) -> Config:
    listeners = tuple(
        C2SListener(port=5222 + i, tls=TlsOptions(cacertfile=f)) for i, f in enumerate(cacertfiles)
    )
    return Config(hosts=("localhost",), listen_c2s=listeners, source="test.toml")


def test_anchors_are_the_cacertfile_rows_plus_trusted_rows_without_duplicates(tmp_path):
    file_ca, row_ca, both_ca, untrusted_ca = (make_ca(n) for n in ("file", "row", "both", "untrusted"))
    path = tmp_path / "ca.pem"
    path.write_bytes(file_ca.pem + both_ca.pem)
    add_ca_row(row_ca, "row")
    add_ca_row(both_ca, "both")
    add_ca_row(untrusted_ca, "untrusted", trusted=False)
    sync_config_cas(_config(str(path)))
    anchors = trust.trust_anchors(str(path))
    assert set(anchors.certificates) == {file_ca.cert, row_ca.cert, both_ca.cert}
    assert len(anchors.certificates) == 3
    assert anchors.store is not None


def test_a_config_ca_is_an_anchor_only_on_the_listeners_whose_cacertfile_lists_it(tmp_path):
    first_ca, second_ca, row_ca = make_ca("first"), make_ca("second"), make_ca("row")
    first, second = tmp_path / "first.pem", tmp_path / "second.pem"
    first.write_bytes(first_ca.pem)
    second.write_bytes(second_ca.pem)
    add_ca_row(row_ca, "row")
    sync_config_cas(_config(str(first), str(second)))
    assert set(trust.trust_anchors(str(first)).certificates) == {first_ca.cert, row_ca.cert}
    assert set(trust.trust_anchors(str(second)).certificates) == {second_ca.cert, row_ca.cert}
    assert trust.trust_anchors(None).certificates == (row_ca.cert,)


def test_the_login_path_reads_no_file(tmp_path):
    file_ca = make_ca("file")
    path = tmp_path / "ca.pem"
    path.write_bytes(file_ca.pem)
    sync_config_cas(_config(str(path)))
    path.unlink()  # the rows made at start-up are the anchors; the file is not read again
    assert trust.trust_anchors(str(path)).certificates == (file_ca.cert,)


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


def test_a_rebuild_that_changes_no_anchor_keeps_the_store_and_a_new_anchor_set_makes_a_new_one():
    """The verified paths (``certauth.verify.verified_paths``) are kept under the Store object: a rebuild for
    a change that leaves the anchors as they were must not throw them away, and any change of the anchors
    must (issue 17: returning clients were verified again after every change feed bump or ``MAX_AGE``)."""
    row = add_ca_row(make_ca("kept"), "kept")
    first = trust.trust_anchors(None)
    row.name, row.allowed_domains = "renamed", ["localhost"]
    row.save()  # rebuilds: the name and the domain limit are new, the anchor is not
    renamed = trust.trust_anchors(None)
    assert renamed is not first and renamed.domain_limits and not first.domain_limits
    assert renamed.store is first.store
    changefeed.forget()  # what a feed bump for another row, or the feed's MAX_AGE, does
    assert trust.trust_anchors(None).store is first.store
    other = add_ca_row(make_ca("other"), "other")
    two = trust.trust_anchors(None)
    assert two.store is not None and two.store is not first.store
    other.delete()
    one_again = trust.trust_anchors(None)
    assert one_again.store is not None and one_again.store is not two.store
    row.trusted_for_client_auth = False
    row.save()
    assert trust.trust_anchors(None).store is None


def test_a_store_is_kept_per_listener(tmp_path):
    shared, own = make_ca("shared"), make_ca("own")
    path = tmp_path / "ca.pem"
    path.write_bytes(own.pem)
    add_ca_row(shared, "shared")
    sync_config_cas(_config(str(path)))
    with_file, without = trust.trust_anchors(str(path)), trust.trust_anchors(None)
    assert with_file.store is not without.store
    changefeed.forget()
    assert trust.trust_anchors(str(path)).store is with_file.store
    assert trust.trust_anchors(None).store is without.store
