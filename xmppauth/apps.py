"""Django's admin app with xmppauth's admin site as the default site (``xmppauth.adminsite``)."""

from django.contrib.admin.apps import AdminConfig


class XmppauthAdminConfig(AdminConfig):
    default_site = "xmppauth.adminsite.XmppauthAdminSite"
