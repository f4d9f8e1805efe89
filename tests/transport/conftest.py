"""A Twisted reactor (asyncio, as in production) running in a background thread for the whole test session.

The reactor can run only once per process, so every listener test shares it; tests talk to it with
``on_reactor(f, ...)`` (``blockingCallFromThread``) and to the listeners with ordinary blocking sockets.
"""

from __future__ import annotations

import sys
import threading

import pytest


def _install_asyncio_reactor() -> None:
    if "twisted.internet.reactor" not in sys.modules:
        from twisted.internet import asyncioreactor

        asyncioreactor.install()


@pytest.fixture(scope="session")
def reactor():
    _install_asyncio_reactor()
    from twisted.internet import reactor as the_reactor

    thread = threading.Thread(
        target=the_reactor.run, kwargs={"installSignalHandlers": False}, name="reactor", daemon=True
    )
    thread.start()
    yield the_reactor
    the_reactor.callFromThread(the_reactor.stop)
    thread.join(10)


@pytest.fixture(scope="session")
def on_reactor(reactor):
    from twisted.internet.threads import blockingCallFromThread

    def call(function, *args, **kwargs):
        return blockingCallFromThread(reactor, function, *args, **kwargs)

    return call
