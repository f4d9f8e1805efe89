"""SCRAM and PLAIN, server side, as pure code: messages in, challenges and verdicts out. No Django, no I/O.

Specs: RFC 5802 (SCRAM; §3 the keys, §5 the messages, §6 channel binding, §7 the grammar), RFC 7677
(SCRAM-SHA-256), RFC 4616 (PLAIN), RFC 5929 §4 and RFC 9266 (channel-binding types ``tls-server-end-point``
and ``tls-exporter``), RFC 8265 §4.2 (passwords prepared as PRECIS OpaqueString), RFC 6120 §6.5 (the
conditions). The crypto is the standard library's (PBKDF2, HMAC, SHA-2); this file only parses and compares.

Why not ``scramp``: it cannot bind to ``tls-exporter`` (1.5 lists it as unsupported, and RFC 9266 makes it
the binding for TLS 1.3, the only TLS we negotiate by default), a server object takes one binding type while
XEP-0440 lets the client choose among those we advertise, and it fails an unknown user at the first message,
which tells an attacker which accounts exist. Those three are the hard parts; the rest is 150 lines.

Unknown and disabled users: the caller's ``lookup`` returns credentials for every name (made-up ones for a
user that does not exist, RFC 5802 §9 hint), so the exchange runs to the proof whatever the name, and every
wrong guess is ``not-authorized``. A disabled account is ``account-disabled`` only after its correct password
(the condition then tells the owner, and nobody else, why).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from precis_i18n import get_profile

logger = logging.getLogger(__name__)

# RFC 6120 §6.5 conditions used here (the core's errors module has the full list; this file stays pure).
NOT_AUTHORIZED = "not-authorized"
MALFORMED_REQUEST = "malformed-request"
ACCOUNT_DISABLED = "account-disabled"
INVALID_AUTHZID = "invalid-authzid"
TEMPORARY_AUTH_FAILURE = "temporary-auth-failure"  # RFC 6120 §6.5.12

# SASL mechanism name (RFC 5802 §4, IANA) -> MongooseIM hash name -> hashlib name.
SCRAM_MECHANISMS: dict[str, str] = {
    "SCRAM-SHA-1": "sha",
    "SCRAM-SHA-224": "sha224",
    "SCRAM-SHA-256": "sha256",
    "SCRAM-SHA-384": "sha384",
    "SCRAM-SHA-512": "sha512",
}
HASHLIB_NAMES = {
    "sha": "sha1",
    "sha224": "sha224",
    "sha256": "sha256",
    "sha384": "sha384",
    "sha512": "sha512",
}
# Channel-binding types we can serve (RFC 9266, RFC 5929 §4), in our order of preference (XEP-0440).
CHANNEL_BINDING_TYPES = ("tls-exporter", "tls-server-end-point")
SALT_BYTES = 16
NONCE_BYTES = 18


@dataclass(frozen=True)
class ScramKeys:
    """What is stored for one hash: never the password (RFC 5802 §3)."""

    hash: str  # MongooseIM name: sha, sha256, ...
    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes


@dataclass(frozen=True)
class Credentials:
    """What ``lookup`` answers for a name: keys per hash, whether the account may log in, the bare JID."""

    jid: str
    keys: Mapping[str, ScramKeys]
    active: bool = True
    exists: bool = True  # False: made-up keys for an unknown name; the proof can never match


@dataclass(frozen=True)
class Step:
    """One server turn: a ``challenge``, or success (``jid`` + ``additional`` data), or ``condition``."""

    challenge: bytes | None = None
    jid: str | None = None
    additional: bytes | None = None
    condition: str | None = None
    reason: str = ""


_OPAQUE = get_profile("OpaqueString")


def prepare_password(password: str) -> bytes:
    """RFC 8265 §4.2 (OpaqueString), successor of the SASLprep RFC 5802 §2.2 names; ValueError if none."""
    if not password:
        raise ValueError("the password is empty")
    try:
        return _OPAQUE.enforce(password).encode("utf-8")
    except UnicodeError as exc:
        raise ValueError(f"the password cannot be used ({exc})") from None


def _hmac(hash_name: str, key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, HASHLIB_NAMES[hash_name]).digest()


def _h(hash_name: str, data: bytes) -> bytes:
    return hashlib.new(HASHLIB_NAMES[hash_name], data).digest()


def keys_from_salted(hash_name: str, salted: bytes, salt: bytes, iterations: int) -> ScramKeys:
    client_key = _hmac(hash_name, salted, b"Client Key")  # RFC 5802 §3
    return ScramKeys(
        hash_name, salt, iterations, _h(hash_name, client_key), _hmac(hash_name, salted, b"Server Key")
    )


def derive_keys(hash_name: str, password: str, iterations: int, salt: bytes | None = None) -> ScramKeys:
    """SaltedPassword = Hi(password, salt, i) (RFC 5802 §2.2: PBKDF2 with HMAC), then the two keys."""
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    salted = hashlib.pbkdf2_hmac(HASHLIB_NAMES[hash_name], prepare_password(password), salt, iterations)
    return keys_from_salted(hash_name, salted, salt, iterations)


def check_password(keys: ScramKeys, password: str) -> bool:
    """Whether ``password`` gives ``keys`` (PLAIN against stored SCRAM keys), in constant time."""
    try:
        candidate = derive_keys(keys.hash, password, keys.iterations, keys.salt)
    except ValueError:
        return False
    return hmac.compare_digest(candidate.stored_key, keys.stored_key)


Lookup = Callable[[str], Credentials]  # a SCRAM/PLAIN username (not yet normalised) -> credentials


class CredentialsUnavailable(Exception):
    """The store that would decide (a directory) cannot be reached: ``temporary-auth-failure``."""


# (authcid, password) -> (credentials, whether the password is right); may raise CredentialsUnavailable.
PlainCheck = Callable[[str, str], tuple[Credentials, bool]]


class PlainServer:
    """RFC 4616: one message ``[authzid] NUL authcid NUL passwd``; the authcid is the localpart.

    The password is checked against the stored SCRAM keys (``lookup``), or by ``check`` (a directory bind).
    """

    mechanism = "PLAIN"

    def __init__(self, lookup: Lookup | None = None, *, check: PlainCheck | None = None) -> None:
        self.lookup = lookup
        self.check = check
        self.tried: str | None = None  # the JID the client named, for the auth event

    def step(self, message: bytes) -> Step:
        parts = message.split(b"\0")
        if len(parts) != 3 or not parts[1] or not parts[2]:
            return Step(condition=MALFORMED_REQUEST, reason="PLAIN: not authzid NUL authcid NUL password")
        try:
            authzid, authcid, password = (part.decode("utf-8") for part in parts)
        except UnicodeDecodeError:
            return Step(condition=MALFORMED_REQUEST, reason="PLAIN: not UTF-8")
        if self.check is not None:
            try:
                credentials, matched = self.check(authcid, password)
            except CredentialsUnavailable as exc:
                return Step(condition=TEMPORARY_AUTH_FAILURE, reason=f"PLAIN: {exc}")
            self.tried = credentials.jid
            return _verdict(credentials, matched and credentials.exists, authzid or None, "PLAIN")
        assert self.lookup is not None
        credentials = self.lookup(authcid)
        self.tried = credentials.jid
        keys = preferred_keys(credentials.keys)
        # A made-up key for an unknown name still costs one PBKDF2: the answer takes as long either way.
        matched = keys is not None and check_password(keys, password) and credentials.exists
        return _verdict(credentials, matched, authzid or None, "PLAIN")


def preferred_keys(keys: Mapping[str, ScramKeys]) -> ScramKeys | None:
    for name in ("sha256", "sha512", "sha384", "sha224", "sha"):
        if name in keys:
            return keys[name]
    return None


def _verdict(credentials: Credentials, proven: bool, authzid: str | None, mechanism: str) -> Step:
    if not proven:
        why = "unknown user" if not credentials.exists else "wrong password"
        return Step(condition=NOT_AUTHORIZED, reason=f"{mechanism}: {why} for {credentials.jid}")
    if authzid is not None and authzid != credentials.jid:
        # RFC 6120 §6.3.8: only the authenticated account itself may be the authorization identity.
        reason = f"{mechanism}: authzid {authzid!r} is not {credentials.jid}"
        return Step(condition=INVALID_AUTHZID, reason=reason)
    if not credentials.active:
        return Step(condition=ACCOUNT_DISABLED, reason=f"{mechanism}: account {credentials.jid} is disabled")
    return Step(jid=credentials.jid, reason=f"{mechanism} password")


class ScramServer:
    """One SCRAM exchange (RFC 5802 §5): client-first -> server-first -> client-final -> server-final.

    ``channel_bindings``: type -> data for this connection. ``plus_offered``: whether we advertised a -PLUS
    mechanism, which decides how the client's ``y`` flag reads (RFC 5802 §6: a downgrade when we did).
    """

    def __init__(
        self,
        mechanism: str,
        lookup: Lookup,
        *,
        channel_bindings: Mapping[str, bytes] | None = None,
        plus_offered: bool = False,
        nonce: Callable[[], str] | None = None,
    ) -> None:
        self.plus = mechanism.endswith("-PLUS")
        self.base = mechanism.removesuffix("-PLUS")
        if self.base not in SCRAM_MECHANISMS:
            raise ValueError(f"not a SCRAM mechanism: {mechanism}")
        self.mechanism = mechanism
        self.hash = SCRAM_MECHANISMS[self.base]
        self.lookup = lookup
        self.channel_bindings = dict(channel_bindings or {})
        self.plus_offered = plus_offered
        self._nonce = nonce or (lambda: base64.b64encode(secrets.token_bytes(NONCE_BYTES)).decode("ascii"))
        self.tried: str | None = None  # the JID the client named, for the auth event
        self._turn = 0
        self._credentials: Credentials | None = None
        self._keys: ScramKeys | None = None
        self._no_key = False  # the account exists but has no key for this mechanism's hash

    def step(self, message: bytes) -> Step:
        self._turn += 1
        try:
            text = message.decode("utf-8")
        except UnicodeDecodeError:
            return self._malformed("not UTF-8")
        if self._turn == 1:
            return self._client_first(text)
        if self._turn == 2:
            return self._client_final(text)
        return self._malformed("the exchange is already over")

    def _malformed(self, why: str) -> Step:
        return Step(condition=MALFORMED_REQUEST, reason=f"{self.mechanism}: {why}")

    def _refuse(self, why: str) -> Step:
        return Step(condition=NOT_AUTHORIZED, reason=f"{self.mechanism}: {why}")

    # RFC 5802 §7: client-first-message = gs2-header client-first-message-bare
    def _client_first(self, text: str) -> Step:
        flag, sep1, rest = text.partition(",")
        authzid_field, sep2, bare = rest.partition(",")
        if not sep1 or not sep2:
            return self._malformed("no GS2 header")
        cb_type: str | None = None
        if flag == "n":
            if self.plus:
                return self._refuse("a -PLUS mechanism without channel binding (flag n)")
        elif flag == "y":
            if self.plus:
                return self._refuse("a -PLUS mechanism without channel binding (flag y)")
            if self.plus_offered:
                # RFC 5802 §6: the client could bind but saw no -PLUS from us: someone removed it.
                return self._refuse("client supports channel binding but did not see ours: downgrade refused")
        elif flag.startswith("p="):
            if not self.plus:
                return self._malformed("channel binding (flag p) with a mechanism that is not -PLUS")
            cb_type = flag[2:]
            if cb_type not in self.channel_bindings:
                return self._refuse(f"channel-binding type {cb_type!r} is not available here")
        else:
            return self._malformed(f"GS2 flag {flag!r}")
        authzid: str | None = None
        if authzid_field:
            if not authzid_field.startswith("a="):
                return self._malformed("bad authzid field")
            authzid = _unescape(authzid_field[2:])
            if authzid is None:
                return self._malformed("bad '=' escape in the authzid")
        attrs = _attributes(bare)
        if attrs is None or [key for key, _ in attrs[:2]] != ["n", "r"]:
            # §5.1: "m" (mandatory extension) first, or anything else out of place, is a failure.
            return self._malformed("client-first-message-bare is not n=...,r=...")
        username = _unescape(attrs[0][1])
        client_nonce = attrs[1][1]
        if username is None or not username:
            return self._malformed("bad username")
        if not client_nonce or not _printable(client_nonce):
            return self._malformed("bad client nonce")
        self._gs2_header = text[: len(flag) + 1 + len(authzid_field) + 1]
        self._cb_type = cb_type
        self._authzid = authzid
        self._client_first_bare = bare
        self._credentials = self.lookup(username)
        self.tried = self._credentials.jid
        self._keys = self._credentials.keys.get(self.hash)
        if self._keys is None:
            # The account has no key for this hash (set before the hash was configured): it cannot prove.
            known = self._credentials.keys
            iterations = next(iter(known.values())).iterations if known else 4096
            self._keys = _made_up(self.hash, username, iterations)
            self._no_key = self._credentials.exists
            self._credentials = Credentials(self._credentials.jid, {}, self._credentials.active, exists=False)
        self._combined_nonce = client_nonce + self._nonce()
        salt = base64.b64encode(self._keys.salt).decode("ascii")
        self._server_first = f"r={self._combined_nonce},s={salt},i={self._keys.iterations}"
        return Step(challenge=self._server_first.encode("ascii"))

    # RFC 5802 §7: client-final-message = channel-binding "," nonce ["," extensions] "," proof
    def _client_final(self, text: str) -> Step:
        attrs = _attributes(text)
        if attrs is None or len(attrs) < 3 or attrs[0][0] != "c" or attrs[1][0] != "r" or attrs[-1][0] != "p":
            return self._malformed("client-final-message is not c=...,r=...,p=...")
        assert self._credentials is not None and self._keys is not None
        try:
            cbind_input = base64.b64decode(attrs[0][1], validate=True)
            proof = base64.b64decode(attrs[-1][1], validate=True)
        except (binascii.Error, ValueError):
            return self._malformed("c= or p= is not base64")
        expected_cbind = self._gs2_header.encode("utf-8")
        if self._cb_type is not None:
            expected_cbind += self.channel_bindings[self._cb_type]
        if not hmac.compare_digest(cbind_input, expected_cbind):
            return self._refuse(
                f"channel binding does not match ({self._cb_type or 'GS2 header'})"
                f" for {self._credentials.jid}"
            )
        if attrs[1][1] != self._combined_nonce:
            return self._refuse("the nonce is not ours")
        without_proof = text[: text.rindex(",p=")]
        auth_message = f"{self._client_first_bare},{self._server_first},{without_proof}".encode()
        keys = self._keys
        signature = _hmac(self.hash, keys.stored_key, auth_message)
        proven = False
        if len(proof) == len(signature):
            client_key = bytes(a ^ b for a, b in zip(proof, signature, strict=True))
            proven = hmac.compare_digest(_h(self.hash, client_key), keys.stored_key)
        proven = proven and self._credentials.exists
        if self._no_key:
            jid = self._credentials.jid
            return self._refuse(f"no {self.hash} key stored for {jid} (set the password again)")
        step = _verdict(self._credentials, proven, self._authzid, self.mechanism)
        if step.jid is None:
            return step
        verifier = base64.b64encode(_hmac(self.hash, keys.server_key, auth_message)).decode("ascii")
        return Step(jid=step.jid, additional=f"v={verifier}".encode("ascii"), reason=step.reason)


def _attributes(text: str) -> list[tuple[str, str]] | None:
    """``a=x,b=y`` -> [("a", "x"), ("b", "y")]; None when an item is not ``letter=value``."""
    out: list[tuple[str, str]] = []
    for item in text.split(","):
        if len(item) < 2 or item[1] != "=" or not item[0].isascii() or not item[0].isalpha():
            return None
        out.append((item[0], item[2:]))
    return out


def _unescape(saslname: str) -> str | None:
    """RFC 5802 §5.1: ``=2C`` is ',' and ``=3D`` is '='; any other '=' is malformed (None)."""
    parts = saslname.split("=")
    out = [parts[0]]
    for part in parts[1:]:
        if part.startswith("2C"):
            out.append("," + part[2:])
        elif part.startswith("3D"):
            out.append("=" + part[2:])
        else:
            return None
    return "".join(out)


def _printable(value: str) -> bool:
    """RFC 5802 §7: printable = %x21-2B / %x2D-7E (printable ASCII except ',')."""
    return all(0x21 <= ord(char) <= 0x7E and char != "," for char in value)


# Keys the made-up salts derive from. Random per process until the Django side sets one from the secret key
# (accounts.passwords), so every process of a deployment answers an unknown name with the same salt: a salt
# that changed between two connections would tell an unknown name from a real one.
_fake_secret = [secrets.token_bytes(32)]


def set_fake_secret(secret: bytes) -> None:
    _fake_secret[0] = secret


def _made_up(hash_name: str, name: str = "", iterations: int = 4096) -> ScramKeys:
    key = _fake_secret[0]
    salt = hmac.new(key, f"salt:{hash_name}:{name}".encode(), "sha256").digest()[:SALT_BYTES]
    filler = hmac.new(key, f"key:{hash_name}:{name}".encode(), "sha512").digest()
    size = hashlib.new(HASHLIB_NAMES[hash_name]).digest_size
    return ScramKeys(hash_name, salt, iterations, filler[:size], filler[-size:])


def made_up_credentials(jid: str, name: str, hashes: tuple[str, ...], iterations: int) -> Credentials:
    """Keys for a name that has none: stable per name within a process, never matching any proof."""
    return Credentials(jid, {h: _made_up(h, name, iterations) for h in hashes}, active=True, exists=False)
