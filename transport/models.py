"""Django loads the ``transport`` app's models from here; they live with the session registry."""

from transport.sessions.models import LiveSession, SessionTermination

__all__ = ["LiveSession", "SessionTermination"]
