from django.apps import AppConfig


class TransportConfig(AppConfig):
    name = "transport"
    verbose_name = "XMPP transport"

    def ready(self) -> None:
        from django.core import checks

        from transport.checks import crl_distribution_point_check
        from transport.sessions import receivers  # models are ready only now

        receivers.connect_signals()
        checks.register(crl_distribution_point_check)
