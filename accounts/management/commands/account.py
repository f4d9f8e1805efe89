"""`manage.py account ...`: create accounts and set their passwords (method rdbms), as the admin does.

``account create JID`` and ``account passwd JID``. The password is read from standard input when it is not
a terminal (one line), else asked twice at the terminal; never from the command line (``ps`` shows argv).
Django's password validators apply; only SCRAM salted keys are stored (``accounts.passwords``).
"""

from __future__ import annotations

import getpass
import sys

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.models import Account, Domain
from accounts.passwords import set_password
from transport.xmpp.jid import InvalidJid, parse_bare_jid


class Command(BaseCommand):
    help = "Create XMPP accounts and set their passwords."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True, parser_class=type(parser), metavar="ACTION")
        kw = {"called_from_command_line": getattr(parser, "called_from_command_line", None)}
        create = sub.add_parser("create", help="create an account", **kw)
        create.add_argument("jid", help="bare JID user@domain")
        create.add_argument("--password", action="store_true", help="also set a password (as passwd)")
        passwd = sub.add_parser("passwd", help="set an account's password (stdin, or asked twice)", **kw)
        passwd.add_argument("jid", help="bare JID user@domain")

    def handle(self, *args, action: str, jid: str, **options) -> None:
        try:
            parsed = parse_bare_jid(jid)
        except InvalidJid as exc:
            raise CommandError(f"{jid!r} is not a bare JID user@domain: {exc}") from exc
        if action == "create":
            if Account.objects.filter(localpart=parsed.local, domain__name=parsed.domain).exists():
                raise CommandError(f"account {parsed.bare} exists already")
            password = self._password() if options.get("password") else None
            domain, _ = Domain.objects.get_or_create(name=parsed.domain)
            account = Account.objects.create(
                localpart=parsed.local, domain=domain, created_by=Account.Origin.COMMAND
            )
            self.stdout.write(f"created {account.jid}")
            if password is not None:
                self._set(account, password)
            return
        try:
            account = Account.objects.by_jid(parsed.bare)
        except Account.DoesNotExist:
            raise CommandError(f"no account {parsed.bare} (create it with `account create`)") from None
        self._set(account, self._password())

    def _set(self, account: Account, password: str) -> None:
        try:
            set_password(account, password, settings.XMPP.auth.password)
        except ValidationError as exc:
            raise CommandError("password refused: " + " ".join(exc.messages), returncode=2) from None
        except ValueError as exc:
            raise CommandError(f"password refused: {exc}", returncode=2) from None
        self.stdout.write(f"password set for {account.jid}")

    def _password(self) -> str:
        if sys.stdin.isatty():
            password = getpass.getpass("password: ")
            if password != getpass.getpass("again: "):
                raise CommandError("the passwords differ", returncode=2)
            return password
        line = sys.stdin.readline()
        password = line[:-1] if line.endswith("\n") else line
        if not password:
            raise CommandError("no password on standard input", returncode=2)
        return password
