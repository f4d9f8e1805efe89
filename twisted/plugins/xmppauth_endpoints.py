"""Twisted plugin dropin: registers the ``xmpptls:`` server endpoint (``transport.http.tls_endpoint``).

This directory has no ``__init__.py`` on purpose: ``twisted.plugins`` extends its ``__path__`` with every
``twisted/plugins`` directory on ``sys.path`` that is not a package (``twisted.plugin.pluginPackagePaths``),
so
``serverFromString`` (daphne's ``-e``) finds ``xmpptls`` while the real ``twisted`` package stays importable.
Keep this module light: Twisted imports every dropin whenever it looks for any plugin.
"""

from transport.http.tls_endpoint import XmppTlsEndpointParser

xmpptls = XmppTlsEndpointParser()
