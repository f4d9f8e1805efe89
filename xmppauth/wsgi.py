"""WSGI entry point (the admin alone, for deployments that serve it apart)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "xmppauth.settings")
application = get_wsgi_application()
