"""URL routes served over HTTP(S): the admin and our CAs' CRLs."""

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("crl/", include("certauth.urls")),
]
