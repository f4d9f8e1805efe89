from django.apps import AppConfig


class TransportConfig(AppConfig):
    name = "transport"
    verbose_name = "XMPP transport"

    def ready(self) -> None:
        from transport import receivers  # noqa: PLC0415  (models are ready only now)

        receivers.connect_signals()
