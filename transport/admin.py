"""Django's admin autodiscovery imports this module; the session registry's admin lives with it."""

from transport.sessions import admin as sessions_admin

__all__ = ["sessions_admin"]
