"""`manage.py bootstrap`: create what a first start needs (see certauth.bootstrap)."""

from django.core.management.base import BaseCommand

from certauth.bootstrap import bootstrap


class Command(BaseCommand):
    help = "Create hosted domains, a development CA, a server certificate and an admin user if missing."

    def handle(self, *args, **options) -> None:
        report = bootstrap()
        for line in report.done or ["nothing to do: domains, CA, server certificate and admin user exist"]:
            self.stdout.write(line)
        if report.admin_password:
            # Printed once on the operator's terminal, never logged.
            self.stdout.write(
                self.style.WARNING(
                    "admin password (shown once; set XMPPAUTH_ADMIN_PASSWORD to choose it): "
                    + report.admin_password
                )
            )
