from django.apps import AppConfig


class CertauthConfig(AppConfig):
    name = "certauth"
    verbose_name = "Certificates"

    def ready(self) -> None:
        from certauth import crlsources  # models are ready only now

        crlsources.connect_signals()
