"""Existing domain names and localparts in their normalised form ([RFC7622] §3.2-3.3, issue 12 §4).

A row whose name normalises to one that another row already has is a look-alike of that row: it could never
be reached by a login (logins look up the normalised name) but could be mistaken for it in the admin. It is
kept as written and disabled, so nothing is lost and nobody logs in through it; a name that cannot be
normalised at all (no PRECIS username) is disabled too.
"""

from django.db import migrations

from transport.xmpp.jid import InvalidJid, normalise_domain, normalise_localpart


def normalise(apps, schema_editor):
    domain_model = apps.get_model("accounts", "Domain")
    account_model = apps.get_model("accounts", "Account")
    for domain in domain_model.objects.order_by("pk"):
        try:
            name = normalise_domain(domain.name)
        except InvalidJid:
            domain.enabled = False
            domain.save(update_fields=["enabled"])
            continue
        if name == domain.name:
            continue
        if domain_model.objects.filter(name=name).exists():
            domain.enabled = False
            domain.save(update_fields=["enabled"])
        else:
            domain.name = name
            domain.save(update_fields=["name"])
    for account in account_model.objects.order_by("pk"):
        try:
            localpart = normalise_localpart(account.localpart)
        except InvalidJid:
            account.active = False
            account.save(update_fields=["active"])
            continue
        if localpart == account.localpart:
            continue
        if account_model.objects.filter(localpart=localpart, domain_id=account.domain_id).exists():
            account.active = False
            account.save(update_fields=["active"])
        else:
            account.localpart = localpart
            account.save(update_fields=["localpart"])


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0002_roster_offline"),
    ]

    operations = [
        migrations.RunPython(normalise, migrations.RunPython.noop),
    ]
