"""Which SASL mechanisms a stream offers: the one decision, asked for each features element.

Specs: RFC 6120 §6.4.1 (the server lists the mechanisms it offers now), §13.8 (no password over an
unencrypted stream), RFC 5802 §6 (a -PLUS mechanism needs a channel binding), XEP-0178 §3 and DESIGN §4
(EXTERNAL only with a client certificate that passed verification and revocation).

A mechanism is offered when it is in ``auth.sasl_mechanisms`` (in that order), a configured auth method serves
it (``external_served``, ``passwords_served``: what the registry of ``certauth.authmethods`` says the
configured methods serve, through ``xmppauth.config.AuthConfig.served_mechanisms`` and
``settings_from_config``), and this connection's TLS state allows it. The config loader refuses at start-up a
mechanism no method serves, so the ``served`` flags only remove something for a config built in code; they
are applied here all the same, so no other place decides.
"""

from __future__ import annotations

from collections.abc import Iterable

from .auth import MECHANISM_NAMES


def offered_mechanisms(
    configured: Iterable[str],
    *,
    external_served: bool,
    passwords_served: bool,
    tls_active: bool,
    certificate_verified: bool,
    channel_bound: bool,
) -> list[str]:
    """The SASL names (``EXTERNAL``, ``SCRAM-SHA-256``, ...) to offer, in the configured order.

    ``configured`` uses the config's names (``external``, ``scram_sha256``, ...). ``external_served`` /
    ``passwords_served``: an auth method serves EXTERNAL / the password mechanisms (PLAIN, SCRAM).
    ``certificate_verified``: this listener requests client certificates and the one presented passed.
    ``channel_bound``: the TLS connection gives a channel binding (``tls-exporter``, ...).
    """
    offered: list[str] = []
    for configured_name in configured:
        key = configured_name.lower()
        name = MECHANISM_NAMES.get(key)
        if name is None or not tls_active:
            continue  # RFC 6120 §13.8 for passwords; XEP-0178 §3 for EXTERNAL: TLS first
        if name == "EXTERNAL":
            if external_served and certificate_verified:
                offered.append(name)
        elif passwords_served and (not name.endswith("-PLUS") or channel_bound):
            offered.append(name)
    return offered
