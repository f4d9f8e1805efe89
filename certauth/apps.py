from django.apps import AppConfig


class CertauthConfig(AppConfig):
    name = "certauth"
    verbose_name = "Certificates"
