"""XML namespaces and qualified names of the c2s stream, defined once.

Specs: RFC 6120 (§4.8 streams, §5 TLS, §6 SASL, §7 bind, §4.9 / §8.3 errors), RFC 3921 §3 (legacy session),
RFC 7395 §3.3 (WebSocket framing), XEP-0199 (ping), XEP-0030 (disco#info).
"""

from __future__ import annotations

STREAMS = "http://etherx.jabber.org/streams"  # RFC 6120 §4.8.1
CLIENT = "jabber:client"  # RFC 6120 §4.8.2: the content namespace of c2s streams
FRAMING = "urn:ietf:params:xml:ns:xmpp-framing"  # RFC 7395 §3.3.1
TLS = "urn:ietf:params:xml:ns:xmpp-tls"  # RFC 6120 §5.4
SASL = "urn:ietf:params:xml:ns:xmpp-sasl"  # RFC 6120 §6.4
BIND = "urn:ietf:params:xml:ns:xmpp-bind"  # RFC 6120 §7
SESSION = "urn:ietf:params:xml:ns:xmpp-session"  # RFC 3921 §3 (kept for old clients)
STREAM_ERRORS = "urn:ietf:params:xml:ns:xmpp-streams"  # RFC 6120 §4.9.2
STANZA_ERRORS = "urn:ietf:params:xml:ns:xmpp-stanzas"  # RFC 6120 §8.3.2
PING = "urn:xmpp:ping"  # XEP-0199
DISCO_INFO = "http://jabber.org/protocol/disco#info"  # XEP-0030
ROSTER = "jabber:iq:roster"  # RFC 6121 §2
XML = "http://www.w3.org/XML/1998/namespace"  # the xml: prefix (xml:lang)
SASL_CB = "urn:xmpp:sasl-cb:0"  # XEP-0440: the channel-binding types the server supports
SASLCERT = "urn:xmpp:saslcert:1"  # XEP-0257: users manage their own client certificates
SASLCERT_CSR = "urn:xmppauth:saslcert-csr:0"  # ours: a CSR in a XEP-0257 append, signed by our CA


def qname(namespace: str, local: str) -> str:
    """ElementTree's Clark notation ``{namespace}local``."""
    return f"{{{namespace}}}{local}"


def split_qname(name: str) -> tuple[str, str]:
    """``{ns}local`` -> (ns, local); a name without namespace -> ("", name).

    Split at the last ``}``: a namespace name may contain one (expat does not check URIs), a local name,
    an XML NCName, cannot (Namespaces in XML 1.0 §3).
    """
    if name.startswith("{"):
        namespace, _, local = name[1:].rpartition("}")
        return namespace, local
    return "", name


STREAM = qname(STREAMS, "stream")
FEATURES = qname(STREAMS, "features")
STREAM_ERROR = qname(STREAMS, "error")
WS_OPEN = qname(FRAMING, "open")
WS_CLOSE = qname(FRAMING, "close")
STARTTLS = qname(TLS, "starttls")
AUTH = qname(SASL, "auth")
RESPONSE = qname(SASL, "response")
ABORT = qname(SASL, "abort")
IQ = qname(CLIENT, "iq")
MESSAGE = qname(CLIENT, "message")
PRESENCE = qname(CLIENT, "presence")
STANZAS = frozenset({IQ, MESSAGE, PRESENCE})  # RFC 6120 §8
XML_LANG = qname(XML, "lang")
ROSTER_QUERY = qname(ROSTER, "query")
SASL_CHANNEL_BINDING = qname(SASL_CB, "sasl-channel-binding")
