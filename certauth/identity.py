"""Which JID a client certificate (plus an optional SASL authzid) authenticates: the XEP-0178 rules.

Specs, cited below by label:
  [XEP-0178]  Best Practices for Use of SASL EXTERNAL with Certificates, §3 (client-to-server).
  [RFC6120]   XMPP Core: §6.3.8 (authzid is a bare JID), §6.5 (SASL failure conditions),
              §13.7.1.4 (xmppAddr).
  [RFC7622]   XMPP Address Format, §3: the JID grammar, which is the core's (``transport.xmpp.jid``).
  [DESIGN4]   the design notes (DESIGN), §4 (the verifiers `standard`, `common_name`, `auth_id`, dotted path).

Pure: no Django, no I/O, no cryptography objects. The caller passes *certificate facts*: anything with
the attributes of :class:`CertificateFacts` (``certauth.pki.facts.CertFacts`` fits), so tests build them
directly. Every refusal carries a SASL condition and a human reason, and is logged, so an operator can answer
"why did this certificate not work?" from the log alone.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from transport.xmpp.decisions import IdentityDecision
from transport.xmpp.jid import InvalidJid, Jid, normalise_domain, normalise_localpart, parse_bare_jid

logger = logging.getLogger(__name__)

# [RFC6120] §6.5: the SASL failure conditions these rules produce.
NOT_AUTHORIZED = "not-authorized"
INVALID_AUTHZID = "invalid-authzid"


class CertificateFacts(Protocol):
    """What the identity rules read from a verified client certificate (see ``certauth.pki.facts``)."""

    @property
    def xmpp_addrs(self) -> tuple[str, ...]: ...

    @property
    def common_name(self) -> str | None: ...

    @property
    def fingerprint_sha256(self) -> str: ...

    @property
    def subject(self) -> str: ...


@dataclass(frozen=True)
class IdentityFailure:
    """A refusal: the SASL condition ([RFC6120] §6.5) and a reason an operator can read.

    ``applies`` False: the verifier does not apply to this certificate at all (``common_name`` on a
    certificate with an xmppAddr); an earlier verifier's refusal then stands as the outcome.
    """

    condition: str
    reason: str
    applies: bool = True


Verifier = Callable[[CertificateFacts, "str | None", str], "str | IdentityFailure"]


def _describe(facts: CertificateFacts) -> str:
    return f"certificate {facts.subject!r} (sha256 {facts.fingerprint_sha256})"


def carries_xmppaddr(facts: CertificateFacts) -> bool:
    """Whether the certificate claims any xmppAddr, usable or not ([RFC6120] §13.7.1.4)."""
    return bool(facts.xmpp_addrs) or getattr(facts, "xmpp_addr_entries", 0) > 0


def certificate_jids(facts: CertificateFacts) -> list[Jid]:
    """The certificate's xmppAddrs as bare JIDs ([XEP-0178] §3); unusable ones are ignored and logged."""
    jids: list[Jid] = []
    for addr in facts.xmpp_addrs:
        try:
            jid = parse_bare_jid(addr)
        except InvalidJid as exc:
            logger.warning("ignoring xmppAddr %r of %s: %s", addr, _describe(facts), exc)
            continue
        if jid not in jids:
            jids.append(jid)
    return jids


def verify_standard(facts: CertificateFacts, authzid: Jid | None, domain: str) -> Jid | IdentityFailure:
    """[XEP-0178] §3 / [DESIGN4] `standard`: the JID comes from the certificate's xmppAddrs."""
    jids = certificate_jids(facts)
    if not jids:
        return IdentityFailure(NOT_AUTHORIZED, "certificate has no usable xmppAddr")
    if authzid is None:
        if len(jids) == 1:
            return jids[0]
        return IdentityFailure(
            INVALID_AUTHZID, f"certificate has {len(jids)} xmppAddrs and no authzid was given"
        )
    if authzid in jids:
        return authzid
    return IdentityFailure(
        INVALID_AUTHZID,
        f"authzid {authzid.bare!r} is none of the certificate's xmppAddrs "
        f"({', '.join(jid.bare for jid in jids)})",
    )


def verify_common_name(
    facts: CertificateFacts, authzid: Jid | None, domain: str, prefix: str = "", suffix: str = ""
) -> Jid | IdentityFailure:
    """[DESIGN4] `common_name`: prefix + CN + suffix is the localpart at the stream's domain.

    Only for a certificate without any xmppAddr (the seed: "when no xmppAddr is specified"), wherever
    `common_name` stands in `sasl_external`: a certificate that names JIDs never falls back to its CN.
    """
    if carries_xmppaddr(facts):
        return IdentityFailure(
            NOT_AUTHORIZED,
            "certificate carries an xmppAddr, so its common name is not used (common_name applies only "
            "to certificates without one)",
            applies=False,
        )
    if not facts.common_name:
        return IdentityFailure(INVALID_AUTHZID, "certificate has no common name")
    try:
        jid = Jid(normalise_localpart(f"{prefix}{facts.common_name}{suffix}"), normalise_domain(domain))
    except InvalidJid as exc:
        return IdentityFailure(
            INVALID_AUTHZID, f"common name {facts.common_name!r} does not make a valid localpart: {exc}"
        )
    if authzid is not None and authzid != jid:
        return IdentityFailure(
            INVALID_AUTHZID,
            f"authzid {authzid.bare!r} differs from {jid.bare!r} derived from the common name",
        )
    return jid


def verify_auth_id(facts: CertificateFacts, authzid: Jid | None, domain: str) -> Jid | IdentityFailure:
    """[DESIGN4] `auth_id`: the authzid is trusted as is (development only)."""
    if authzid is None:
        return IdentityFailure(NOT_AUTHORIZED, "verifier auth_id needs an authzid and none was given")
    return authzid


@dataclass(frozen=True)
class VerifierSpec:
    """One ``auth.sasl_external`` verifier: ``verify(facts, authzid, domain, cn_prefix, cn_suffix)`` returns
    the JID or a refusal; ``development_only``: the config loader warns when it is configured."""

    name: str
    verify: Callable[[CertificateFacts, Jid | None, str, str, str], Jid | IdentityFailure]
    development_only: bool = False


# auth.sasl_external name -> verifier, in registration order; anything else configured is a dotted path to a
# callable (load_verifier), import-checked at process start (check_verifiers). xmppauth.config validates
# against this registry, so this module imports nothing of Django.
VERIFIERS: dict[str, VerifierSpec] = {}


def register_verifier(spec: VerifierSpec) -> VerifierSpec:
    """Add a verifier under ``spec.name``; ValueError when that name is taken or could be a dotted path."""
    if spec.name in VERIFIERS or not spec.name.isidentifier():
        raise ValueError(f"sasl_external verifier {spec.name!r}: name taken or not a plain name")
    VERIFIERS[spec.name] = spec
    return spec


register_verifier(
    VerifierSpec("standard", lambda facts, authzid, domain, *_: verify_standard(facts, authzid, domain))
)
register_verifier(VerifierSpec("common_name", verify_common_name))
register_verifier(
    VerifierSpec("auth_id", lambda facts, authzid, domain, *_: verify_auth_id(facts, authzid, domain), True)
)


def load_verifier(path: str) -> Verifier:
    """Import the callable named by a dotted path (``package.module.function``); ValueError if impossible."""
    module_name, _, attr = path.rpartition(".")
    if not module_name:
        raise ValueError(f"sasl_external verifier {path!r} is neither built in nor a dotted path")
    try:
        module = importlib.import_module(module_name)
        func = getattr(module, attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"sasl_external verifier {path!r} cannot be imported: {exc}") from exc
    if not callable(func):
        raise ValueError(f"sasl_external verifier {path!r} is not callable")
    return func


def check_verifiers(names: Iterable[str]) -> None:
    """Start-up check of ``auth.sasl_external`` (``certauth.configcas.prepare``): a registered name, or a
    dotted path that imports to a callable; ValueError naming the first unusable entry. The warning for a
    development-only verifier is the config loader's."""
    for name in names:
        if name not in VERIFIERS:
            load_verifier(name)


def _run_custom(
    path: str, facts: CertificateFacts, authzid: str | None, domain: str
) -> Jid | IdentityFailure:
    """A dotted-path verifier: (facts, authzid, domain) -> JID string or IdentityFailure."""
    try:
        result = load_verifier(path)(facts, authzid, domain)
    except Exception as exc:  # a plug-in must not crash the login; the refusal names the error
        logger.exception("sasl_external verifier %s failed", path)
        return IdentityFailure(NOT_AUTHORIZED, f"verifier {path} failed: {exc.__class__.__name__}: {exc}")
    if isinstance(result, IdentityFailure):
        return result
    if not isinstance(result, str):
        return IdentityFailure(NOT_AUTHORIZED, f"verifier {path} returned {type(result).__name__}, not a JID")
    try:
        return parse_bare_jid(result)
    except InvalidJid as exc:
        return IdentityFailure(NOT_AUTHORIZED, f"verifier {path} returned {result!r}, not a bare JID: {exc}")


def _refuse(facts: CertificateFacts, failure: IdentityFailure, verifier: str | None) -> IdentityDecision:
    logger.info("SASL EXTERNAL refused for %s: %s (%s)", _describe(facts), failure.reason, failure.condition)
    return IdentityDecision(condition=failure.condition, reason=failure.reason, verifier=verifier)


def resolve_identity(
    facts: CertificateFacts,
    authzid: str | None,
    stream_domain: str,
    hosted_domains: Iterable[str],
    verifiers: Sequence[str],
    cn_prefix: str = "",
    cn_suffix: str = "",
) -> IdentityDecision:
    """Apply the configured verifiers in order; the first success wins, else the last refusal of a
    verifier that applies to the certificate (``IdentityFailure.applies``).

    ``authzid`` is the decoded SASL authorization identity, ``None`` when the client sent none. An authzid
    that is not a bare JID is ``invalid-authzid`` whatever the verifiers ([RFC6120] §6.3.8). The chosen JID's
    domain must be hosted and equal to the stream's ``to`` domain, else ``not-authorized`` ([DESIGN4]).
    """
    parsed_authzid: Jid | None = None
    if authzid is not None:
        try:
            parsed_authzid = parse_bare_jid(authzid)
        except InvalidJid as exc:
            failure = IdentityFailure(INVALID_AUTHZID, f"authzid {authzid!r} is not a JID: {exc}")
            return _refuse(facts, failure, None)
    try:
        domain = normalise_domain(stream_domain)
    except InvalidJid as exc:
        failure = IdentityFailure(NOT_AUTHORIZED, f"stream domain {stream_domain!r}: {exc}")
        return _refuse(facts, failure, None)
    hosted: set[str] = set()
    for name in hosted_domains:
        try:
            hosted.add(normalise_domain(name))
        except InvalidJid:
            logger.warning("hosted domain %r is not a valid domain; ignored", name)
    if not verifiers:
        failure = IdentityFailure(NOT_AUTHORIZED, "no sasl_external verifier is configured")
        return _refuse(facts, failure, None)

    failure = IdentityFailure(NOT_AUTHORIZED, "no verifier accepted the certificate")
    last: str | None = None
    for name in verifiers:
        spec = VERIFIERS.get(name)
        if spec is not None:
            result = spec.verify(facts, parsed_authzid, domain, cn_prefix, cn_suffix)
        else:
            result = _run_custom(name, facts, authzid, domain)
        if isinstance(result, Jid):
            if result.domain not in hosted:
                result = IdentityFailure(NOT_AUTHORIZED, f"{result.bare!r} is not in a domain we host")
            elif result.domain != domain:
                result = IdentityFailure(
                    NOT_AUTHORIZED, f"{result.bare!r} is not in the stream's domain {domain!r}"
                )
            else:
                # DEBUG: the caller's INFO line of the login names the JID and the verifier (issue 17 §6)
                if logger.isEnabledFor(logging.DEBUG):  # _describe builds a string: only when it is logged
                    logger.debug("SASL EXTERNAL: %s is %s (verifier %s)", _describe(facts), result.bare, name)
                return IdentityDecision(jid=result.bare, verifier=name)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("verifier %s refused %s: %s", name, _describe(facts), result.reason)
        if result.applies or last is None:
            failure, last = result, name
    return _refuse(facts, failure, last)
