from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "XMPP accounts"

    def ready(self) -> None:
        from accounts import domains  # noqa: F401  (connects the hosted-domain cache to Domain changes)
