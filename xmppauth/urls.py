"""URL routes served over HTTP(S): the admin, our CAs' CRLs and the Prometheus metrics."""

from django.conf import settings
from django.contrib import admin
from django.urls import include, path

from xmppauth.metricsview import metrics_view

urlpatterns = [
    path("admin/", admin.site.urls),
    path("crl/", include("certauth.urls")),
]
if settings.XMPP.options.metrics_path:  # [xmppauth] metrics_path
    urlpatterns.append(path(settings.XMPP.options.metrics_path.lstrip("/"), metrics_view, name="metrics"))
