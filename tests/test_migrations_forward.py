"""Issue 13 point 4: a database created before the reorganisation migrates forward with its rows intact.

The database is put at the migrations of the base commit of issue 13 (755dd3c, "move: transport split ..."),
rows are written with the models as they were there (an account with a password, a CA, its certificate, a
live session, a termination command, an auth event), then every migration up to today's is applied with
Django's ``MigrationExecutor``. Every row reads back the same through today's models, and the ORM works on
them: revoking the old certificate ends the old session (a termination command for its fingerprint).
Runs on both legs (SQLite and PostgreSQL).
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from io import StringIO

import pytest
from django.apps import apps as current_apps
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from tests.certs import make_ca, make_client

PROJECT = ("accounts", "certauth", "transport", "xmppauth")
# The leaf migration of each project app at the base commit (`git show 755dd3c:<app>/migrations/`).
BASE_LEAVES = {
    "accounts": "0004_password_credentials",
    "certauth": "0004_selfsigned_pins",
    "transport": "0001_initial",
}
# Rows compared field by field before and after: (app label, model name) as they were at the base.
COMPARED = [
    ("accounts", "Domain"),
    ("accounts", "Account"),
    ("accounts", "PasswordCredential"),
    ("certauth", "CertificateAuthority"),
    ("certauth", "Certificate"),
    ("certauth", "AuthEvent"),
    ("transport", "LiveSession"),
    ("transport", "SessionTermination"),
]


def _project_labels() -> set[str]:
    """The labels of the apps whose code (and migrations) is ours."""
    configs = current_apps.get_app_configs()
    return {config.label for config in configs if config.name.partition(".")[0] in PROJECT}


def _base_targets(executor: MigrationExecutor) -> list[tuple[str, str | None]]:
    """Today's leaves for Django's and third-party apps; the base leaves for ours; an app of ours that did
    not exist at the base goes back to zero."""
    ours = _project_labels()
    targets: list[tuple[str, str | None]] = [
        (app, name) for app, name in executor.loader.graph.leaf_nodes() if app not in ours
    ]
    targets += [
        (app, None) for app in sorted(ours - set(BASE_LEAVES)) if app in executor.loader.migrated_apps
    ]
    return targets + list(BASE_LEAVES.items())


def _write_rows(old) -> dict:
    """Rows as the base commit's code would have written them (historical models, no model methods)."""
    now = timezone.now()
    ca = make_ca("Migration test CA")
    client = make_client(ca, jids=("alice@localhost",))
    host = old.get_model("accounts", "Domain").objects.create(name="localhost")
    alice = old.get_model("accounts", "Account").objects.create(localpart="alice", domain=host)
    old.get_model("accounts", "PasswordCredential").objects.create(
        account=alice,
        hash="sha256",
        salt=b"s" * 16,
        iterations=4096,
        stored_key=b"k" * 32,
        server_key=b"v" * 32,
    )
    ca_row = old.get_model("certauth", "CertificateAuthority").objects.create(
        name="Migration test CA",
        origin="imported",
        certificate_pem=ca.pem.decode(),
        subject=ca.cert.subject.rfc4514_string(),
        fingerprint_sha256=ca.facts.fingerprint_sha256,
        not_before=ca.cert.not_valid_before_utc,
        not_after=ca.cert.not_valid_after_utc,
    )
    certificate = old.get_model("certauth", "Certificate").objects.create(
        serial=client.facts.serial,
        issuer=ca_row,
        issuer_name=ca.cert.subject.rfc4514_string(),
        fingerprint_sha256=client.facts.fingerprint_sha256,
        subject=client.cert.subject.rfc4514_string(),
        xmpp_addrs=["alice@localhost"],
        not_before=client.cert.not_valid_before_utc,
        not_after=client.cert.not_valid_after_utc,
        account=alice,
        source="imported",
        pem=client.pem.decode(),
    )
    session_id = uuid.uuid4()
    old.get_model("transport", "LiveSession").objects.create(
        id=session_id,
        full_jid="alice@localhost/phone",
        bare_jid="alice@localhost",
        resource="phone",
        transport="tls",
        peer="127.0.0.1:50000",
        cert_fingerprint=client.facts.fingerprint_sha256,
        cert_serial=certificate.serial,
        issuer_ca_id=ca_row.pk,
        cert_not_after=certificate.not_after,
        process_id="testhost:4242:1",
        started_at=now,
        lease_expires_at=now + timedelta(minutes=5),
    )
    old.get_model("transport", "SessionTermination").objects.create(
        created_at=now, target="bare_jid", bare_jid="bob@localhost", text="account disabled"
    )
    old.get_model("certauth", "AuthEvent").objects.create(
        transport="tls",
        peer="127.0.0.1:50000",
        cert_fingerprint=client.facts.fingerprint_sha256,
        outcome="success",
        jid_granted="alice@localhost",
    )
    return {"fingerprint": client.facts.fingerprint_sha256, "session_id": session_id}


def _snapshot(models: dict[tuple[str, str], type]) -> dict[tuple[str, str], list[dict]]:
    """Every row of each model, ordered by key, all its fields (binary ones as bytes on every driver)."""
    shot = {}
    for (label, name), model in models.items():
        fields = [field.attname for field in model._meta.concrete_fields]
        shot[(label, name)] = [
            {key: bytes(value) if isinstance(value, memoryview) else value for key, value in row.items()}
            for row in model.objects.order_by("pk").values(*fields)
        ]
    return shot


def _migrate(targets) -> MigrationExecutor:
    executor = MigrationExecutor(connection)
    executor.migrate(targets)
    return executor


@pytest.mark.django_db(transaction=True)
def test_a_database_of_the_base_commit_migrates_forward_with_its_rows():
    executor = MigrationExecutor(connection)
    latest = executor.loader.graph.leaf_nodes()
    base = _base_targets(executor)
    try:
        executor = _migrate(base)
        old = executor.loader.project_state(base).apps
        facts = _write_rows(old)
        base_models = {key: old.get_model(*key) for key in COMPARED}
        before = _snapshot(base_models)
        assert all(before[key] for key in COMPARED)  # one row at least in each table

        _migrate(latest)
        assert MigrationExecutor(connection).migration_plan(latest) == []
        # Today's model of each table (one moved to another app by SeparateDatabaseAndState keeps it).
        tables = {model._meta.db_table: model for model in current_apps.get_models()}
        after = _snapshot({key: tables[model._meta.db_table] for key, model in base_models.items()})
        for key in COMPARED:
            fields = before[key][0].keys() & after[key][0].keys()
            assert [{f: row[f] for f in fields} for row in after[key]] == [
                {f: row[f] for f in fields} for row in before[key]
            ], key

        from accounts.models import Account
        from accounts.passwords import has_password
        from certauth import services
        from certauth.models import Certificate
        from transport.sessions.models import LiveSession, SessionTermination

        alice = Account.objects.by_jid("alice@localhost")
        assert has_password(alice)
        certificate = alice.certificates.select_related("issuer").get()
        assert certificate.issuer.name == "Migration test CA" and not certificate.issuer.is_ours
        assert LiveSession.objects.get(bare_jid=alice.jid).id == facts["session_id"]
        services.revoke(certificate, "key_compromise")
        assert Certificate.objects.get(pk=certificate.pk).status == Certificate.Status.REVOKED
        ended = SessionTermination.objects.get(fingerprint=facts["fingerprint"])
        assert ended.text == "certificate revoked (keyCompromise)"
    finally:
        _migrate(latest)  # whatever happened, the test database is left at today's schema


@pytest.mark.django_db
def test_the_models_need_no_new_migration():
    out = StringIO()
    try:
        call_command("makemigrations", "--check", "--dry-run", stdout=out, stderr=out)
    except SystemExit:
        pytest.fail("makemigrations --check: the models differ from their migrations:\n" + out.getvalue())
