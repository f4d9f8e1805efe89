"""Public URLs of certauth: our CAs' CRLs (the distribution points our certificates name)."""

from django.urls import path

from certauth import views

app_name = "certauth"
urlpatterns = [path("<int:ca_id>.crl", views.crl, name="crl")]
