"""Incremental XML for one XMPP stream: a restricted parser that yields stanzas, and a serializer.

Specs: RFC 6120 §11 (XML usage: no DTD, comments, processing instructions or entity references other than
the five predefined ones; UTF-8 only), §4.9.3 (the stream errors those produce), §13.12 (limits: a
per-stanza byte limit, enforced while the bytes arrive), RFC 7395 §3.3 (WebSocket framing: each message a
complete element).

The parser is expat, fed in small pieces: never more than ``PIECE`` bytes, and a piece always ends right
after a ``>``. So every complete tag is seen at the end of a piece, the caller can stop exactly after an
element (``<starttls/>``: bytes after it are dropped; ``<auth/>``: bytes after it wait for the verdict), and a
stanza that grows past ``max_stanza_size`` is refused before more than one piece beyond the limit is parsed.

Between stanzas the parser holds no expat parser (about 12 KiB each, with the buffers expat keeps): when a
piece ends exactly at the end of a first-level element (or of the stream header), expat has nothing
pending, so it is dropped; the next piece that is not only whitespace gets a new one, primed with the
stream's root start tag (same qualified name, same namespace declarations) and not reported again. Idle
sessions are most sessions; a new parser costs microseconds. While a stream is negotiated
(``keep_between_stanzas(True)``: a handful of elements within milliseconds) the parser is kept, which saves
three parsers a login (issue 17 §6); the connection turns release on when the session is bound, and an
idle parser goes at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from xml.etree.ElementTree import Element
from xml.parsers import expat

from . import errors
from . import namespaces as ns

logger = logging.getLogger(__name__)

PIECE = 4096  # bytes handed to expat at once, at most
# Deeper nesting than any real payload needs; it keeps recursive consumers (serializers, routers) safe.
MAX_DEPTH = 64
_XML_DECL = "<?xml version='1.0'?>"

# expat errors that mean "an entity reference we do not allow" rather than plain bad syntax (RFC 6120 §11.1).
_ENTITY_ERRORS = frozenset(
    expat.errors.codes[message]
    for message in (
        expat.errors.XML_ERROR_UNDEFINED_ENTITY,
        expat.errors.XML_ERROR_RECURSIVE_ENTITY_REF,
        expat.errors.XML_ERROR_BINARY_ENTITY_REF,
        expat.errors.XML_ERROR_ASYNC_ENTITY,
        expat.errors.XML_ERROR_ATTRIBUTE_EXTERNAL_ENTITY_REF,
        expat.errors.XML_ERROR_EXTERNAL_ENTITY_HANDLING,
        expat.errors.XML_ERROR_ENTITY_DECLARED_IN_PE,
    )
)
_ENCODING_ERRORS = frozenset(
    expat.errors.codes[message]
    for message in (expat.errors.XML_ERROR_UNKNOWN_ENCODING, expat.errors.XML_ERROR_INCORRECT_ENCODING)
)


def _refuse(what: str) -> Callable[..., None]:
    def handler(*args: object) -> None:
        raise errors.StreamError(errors.RESTRICTED_XML, f"{what} is not allowed in XMPP (RFC 6120 §11.1)")

    return handler


# RFC 6120 §11.1: what an XMPP stream may not contain, as expat handlers that end the stream.
_RESTRICTED_HANDLERS = (
    ("StartDoctypeDeclHandler", _refuse("a DTD")),
    ("EntityDeclHandler", _refuse("an entity declaration")),
    ("UnparsedEntityDeclHandler", _refuse("an entity declaration")),
    ("NotationDeclHandler", _refuse("a notation declaration")),
    ("ExternalEntityRefHandler", _refuse("an external entity reference")),
    ("SkippedEntityHandler", _refuse("an entity reference")),
    ("CommentHandler", _refuse("a comment")),
    ("ProcessingInstructionHandler", _refuse("a processing instruction")),
)


@dataclass(frozen=True)
class StreamOpen:
    """The stream's root element opened: ``<stream:stream ...>`` (RFC 6120 §4.7)."""

    tag: str  # Clark notation
    attrs: dict[str, str]
    prefix: str | None  # the prefix the root element was written with ("stream"), None for the default
    default_ns: str | None  # the default namespace declared on the root element


@dataclass(frozen=True)
class StanzaParsed:
    """A complete first-level child of the stream (a stanza, or a negotiation element), and the bytes it took
    (what RFC 6120 §13.12's limit counts)."""

    element: Element
    size: int = 0


@dataclass(frozen=True)
class StreamEnd:
    """``</stream:stream>``: the client closed its stream (RFC 6120 §4.4)."""


ParserEvent = StreamOpen | StanzaParsed | StreamEnd


def stanza_too_large(limit: int) -> errors.StreamError:
    """RFC 6120 §13.12: a stanza larger than the server accepts ends the stream."""
    return errors.StreamError(errors.POLICY_VIOLATION, f"stanza larger than the limit of {limit} bytes")


def next_piece(data: bytes, start: int) -> int:
    """The end of the next piece of ``data`` from ``start``: just after a ``>``, at most PIECE bytes on."""
    limit = min(len(data), start + PIECE)
    end = data.find(b">", start, limit)
    return limit if end < 0 else end + 1


def _clark(name: str) -> str:
    """expat's ``uri local`` (namespace_separator=' ') -> ``{uri}local``."""
    uri, sep, local = name.rpartition(" ")
    return f"{{{uri}}}{local}" if sep else name


class StreamParser:
    """One XML stream, from its header to ``</stream:stream>``; make a new one at each stream restart.

    ``feed(piece)`` returns the events the piece completed, or raises :class:`errors.StreamError` with
    ``not-well-formed``, ``restricted-xml``, ``unsupported-encoding`` or ``policy-violation``. After an error
    the parser is dead: feed nothing more. Framed input (RFC 7395 messages, BOSH bodies) is not a stream:
    :func:`parse_document` reads each one whole.
    """

    def __init__(self, max_stanza_size: int = 65536) -> None:
        self.max_stanza_size = max_stanza_size
        self.dead = False
        self._events: list[ParserEvent] = []
        self._depth = 0
        self._stack: list[Element] = []
        self._pending_ns: dict[str, str] = {}
        self._fed = 0  # bytes given to expat so far
        self._unit_start = 0  # where the current stanza (or the gap before it) began
        self._parser: expat.XMLParserType | None = self._new_expat()
        self._offset = 0
        self._root: bytes = b""  # the stream's root start tag, to prime a new expat parser with
        self._boundary = False  # this piece ended a first-level element or the stream header
        self._document = False  # parse_document: one complete document, read at once
        self._xml_decl = False  # the input carried an XML declaration
        self._priming = False  # _reprime is feeding the root start tag again: nothing to report or check
        # Whether expat is dropped between stanzas. Off while a stream is negotiated (a few stanzas within
        # milliseconds: a parser for each would cost more than it saves); on once the session is idle.
        self._release = True
        self._idle = False  # the last piece ended exactly at a first-level boundary: expat holds nothing

    # -- set-up -------------------------------------------------------------------------------------

    def _new_expat(self) -> expat.XMLParserType:
        parser = expat.ParserCreate(encoding="UTF-8", namespace_separator=" ")
        parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)  # RFC 6120 §11.1
        parser.buffer_text = False
        parser.XmlDeclHandler = self._on_xml_decl
        for handler_name, refuse in _RESTRICTED_HANDLERS:  # made once: a parser is made per stanza
            setattr(parser, handler_name, refuse)
        parser.StartNamespaceDeclHandler = self._on_ns_decl
        parser.StartElementHandler = self._on_start
        parser.EndElementHandler = self._on_end
        parser.CharacterDataHandler = self._on_text
        return parser

    # -- input --------------------------------------------------------------------------------------

    @property
    def buffered(self) -> int:
        """Bytes of the stanza being received so far (what the size limit counts)."""
        return self._fed - self._unit_start

    def feed(self, piece: bytes) -> list[ParserEvent]:
        if self.dead:
            raise RuntimeError("this StreamParser failed or finished; make a new one")
        if self._parser is None:
            if not piece.strip():
                self._fed += len(piece)
                self._unit_start = self._fed  # as _on_text: whitespace is no part of the next stanza
                return []  # whitespace between stanzas (RFC 6120 §4.6.1): nothing to parse
            self._reprime()
        self._fed += len(piece)
        self._boundary = False
        self._parse(piece, final=False)
        events, self._events = self._events, []
        self._idle = self._boundary and self._can_release(piece)
        if self._idle and self._release:
            self._parser = None
        return events

    def keep_between_stanzas(self, keep: bool) -> None:
        """Whether expat stays between stanzas (True while a stream is negotiated, issue 17 §6). Turned off,
        a parser that holds nothing pending is dropped at once, as at the end of a stanza."""
        self._release = not keep
        if not keep and self._idle and not self.dead:
            self._parser = None

    def _parse(self, data: bytes, final: bool) -> None:
        """Hand ``data`` to expat; any error kills the parser and becomes the stream error that names it."""
        try:
            self._parser.Parse(data, final)
            self._check_size(self._fed)
        except errors.StreamError:
            self._die()
            raise
        except expat.ExpatError as exc:
            self._die()
            if exc.code in _ENTITY_ERRORS:
                raise errors.StreamError(errors.RESTRICTED_XML, f"entity reference refused: {exc}") from None
            if exc.code in _ENCODING_ERRORS:
                raise errors.StreamError(errors.UNSUPPORTED_ENCODING, str(exc)) from None
            raise errors.StreamError(errors.NOT_WELL_FORMED, str(exc)) from None

    def _can_release(self, piece: bytes) -> bool:
        """Whether expat holds nothing: the piece's only ``>`` is its last byte, which ended the element."""
        return (
            not self.dead
            and self._depth == 1
            and not self._stack
            and bool(self._root)
            and piece.endswith(b">")
            and piece.find(b">") == len(piece) - 1
        )

    def _reprime(self) -> None:
        """A new expat parser inside the stream's root; positions go on from the bytes fed so far."""
        parser = self._new_expat()
        self._parser = parser
        self._depth = 0
        self._priming = True  # the root's start tag was read and reported once: it only opens the element
        try:
            parser.Parse(self._root, False)
        finally:
            self._priming = False
        self._offset = len(self._root) - self._fed

    def _die(self) -> None:
        """Drop everything held: after an error nothing more is parsed (and nothing big stays in memory)."""
        self.dead = True
        self._stack = []
        self._events = []
        self._parser = None  # type: ignore[assignment]

    # -- limits -------------------------------------------------------------------------------------

    def _position(self) -> int:
        return self._parser.CurrentByteIndex - self._offset

    def _check_size(self, position: int) -> None:
        size = position - self._unit_start
        if size > self.max_stanza_size:
            raise stanza_too_large(self.max_stanza_size)

    # -- expat handlers -----------------------------------------------------------------------------

    def _on_xml_decl(self, version: str | None, encoding: str | None, standalone: int) -> None:
        # In a document (parse_document) the declaration is refused at the root's start tag, so that a DTD
        # after it is still restricted-xml (RFC 6120 §11.1).
        self._xml_decl = True
        if encoding is not None and encoding.lower().replace("_", "-") not in ("utf-8", "utf8"):
            raise errors.StreamError(
                errors.UNSUPPORTED_ENCODING, f"encoding {encoding!r}: only UTF-8"
            )  # §11.6

    def _on_ns_decl(self, prefix: str | None, uri: str | None) -> None:
        if uri and ("{" in uri or "}" in uri):  # None: xmlns="" undeclares the default namespace
            # Names are kept as '{namespace}local' (ElementTree's form, as clients' parsers do): a brace,
            # which no URI holds (RFC 3986 §2), would make them ambiguous and break the recipient's parser.
            raise errors.StreamError(errors.BAD_FORMAT, f"namespace name {uri[:100]!r} is not a URI")
        self._pending_ns[prefix or ""] = uri

    def _on_start(self, name: str, attrs: dict[str, str]) -> None:
        if self._document and self._xml_decl:
            # Unchanged from when messages were read as children of one invisible root, where expat refused
            # it: no XML declaration in a WebSocket message or a BOSH body (no client sends one).
            raise errors.StreamError(errors.NOT_WELL_FORMED, "an XML declaration inside the stream")
        declared, self._pending_ns = self._pending_ns, {}
        if self._priming:
            self._depth = 1
            return
        tag = _clark(name)
        attributes = {_clark(key): value for key, value in attrs.items()}
        if self._depth == 0:
            self._depth = 1
            prefix = self._prefix_of(tag, declared)
            self._events.append(StreamOpen(tag, attributes, prefix, declared.get("")))
            if not self._document:
                self._root = _root_start_tag(name, declared)
                self._boundary = True
            return
        if self._depth == 1:
            self._unit_start = self._position()
            element = Element(tag, attributes)
        else:
            self._check_size(self._position())
            if self._depth >= MAX_DEPTH:
                raise errors.StreamError(errors.POLICY_VIOLATION, f"elements nested deeper than {MAX_DEPTH}")
            element = Element(tag, attributes)
            self._stack[-1].append(element)
        self._stack.append(element)
        self._depth += 1

    @staticmethod
    def _prefix_of(tag: str, declared: dict[str, str]) -> str | None:
        namespace, _ = ns.split_qname(tag)
        for prefix, uri in declared.items():
            if uri == namespace:
                return prefix or None
        return None

    def _on_end(self, name: str) -> None:
        self._depth -= 1
        if self._depth == 0:
            self._events.append(StreamEnd())
            return
        element = self._stack.pop()
        if self._depth == 1:
            position = self._position()
            self._check_size(position)
            self._events.append(StanzaParsed(element, position - self._unit_start))
            self._unit_start = position
            self._boundary = True

    def _on_text(self, data: str) -> None:
        if self._depth <= 1:
            if data.strip():
                raise errors.StreamError(errors.BAD_FORMAT, "text outside any stanza")
            self._unit_start = self._position()  # whitespace keepalives between stanzas (RFC 6120 §4.6.1)
            return
        self._check_size(self._position())
        current = self._stack[-1]
        if len(current):
            last = current[-1]
            last.tail = (last.tail or "") + data
        else:
            current.text = (current.text or "") + data


def parse_document(document: bytes, max_stanza_size: int, *, container: bool = False) -> list[ParserEvent]:
    """``document`` read as one complete XML document, with the stream's restrictions (RFC 6120 §11).

    Without ``container`` (RFC 7395 §3.3.3: a WebSocket message is one element, a document of its own): the
    document's root as one :class:`StanzaParsed`, so two elements, text beside it or an unfinished element
    are ``not-well-formed`` (XML 1.0 §2.1: a document has exactly one root), and a DTD in its prolog is
    ``restricted-xml``. With ``container`` (XEP-0124 §7: a BOSH ``<body/>``): the root as a
    :class:`StreamOpen`, each child as a :class:`StanzaParsed` with its size, then :class:`StreamEnd`.
    Larger than ``max_stanza_size`` (the document, or one child of a container): ``policy-violation``.
    """
    if not container and len(document) > max_stanza_size:
        raise errors.StreamError(errors.POLICY_VIOLATION, f"message larger than {max_stanza_size} bytes")
    parser = StreamParser(max_stanza_size)
    parser._document = True
    if not container:
        parser._depth = 1  # as if inside a stream: the document's root is a first-level element
    parser._fed = len(document)
    parser._parse(document, final=True)
    events = parser._events
    parser._die()
    return events


def _root_start_tag(name: str, declared: dict[str, str]) -> bytes:
    """The start tag that reopens the root ``name`` (expat's ``uri local``) with ``declared`` namespaces."""
    uri, _, local = name.rpartition(" ")
    prefix = next((p for p, u in declared.items() if p and u == uri), None) if uri else None
    if uri and prefix is None and declared.get("") != uri:
        prefix = "root"  # a namespace not declared on the root itself cannot happen at depth 0; be safe
        declared = {**declared, prefix: uri}
    qname = f"{prefix}:{local}" if prefix else local
    declarations = "".join(  # u is None for xmlns="" (no default namespace)
        f' xmlns{":" + p if p else ""}="{_escape_attr(u or "")}"' for p, u in declared.items()
    )
    return f"<{qname}{declarations}>".encode()


# -- output -----------------------------------------------------------------------------------------


def _escape_text(text: str) -> str:
    # XML 1.0 §2.11: a literal CR would be read back as LF, so it is written as a character reference.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\r", "&#13;")


def _escape_attr(text: str) -> str:
    # XML 1.0 §3.3.3: literal tab, LF and CR in an attribute value are read back as spaces.
    escaped = _escape_text(text).replace('"', "&quot;").replace("'", "&apos;")
    return escaped.replace("\t", "&#9;").replace("\n", "&#10;")


def _write(element: Element, parent_ns: str | None, declare_stream: bool, out: list[str]) -> None:
    namespace, local = ns.split_qname(element.tag)
    attrs: list[str] = []
    child_ns = parent_ns
    if namespace == ns.STREAMS:
        name = f"stream:{local}"
        if declare_stream:
            attrs.append(f' xmlns:stream="{ns.STREAMS}"')
    else:
        name = local
        if namespace != (parent_ns or ""):
            attrs.append(f' xmlns="{_escape_attr(namespace)}"')
            child_ns = namespace
    extra = 0
    for key, value in element.attrib.items():
        attr_ns, attr_local = ns.split_qname(key)
        if not attr_ns:
            attrs.append(f' {attr_local}="{_escape_attr(value)}"')
        elif attr_ns == ns.XML:
            attrs.append(f' xml:{attr_local}="{_escape_attr(value)}"')
        else:
            extra += 1
            attrs.append(
                f' xmlns:a{extra}="{_escape_attr(attr_ns)}" a{extra}:{attr_local}="{_escape_attr(value)}"'
            )
    out.append(f"<{name}{''.join(attrs)}")
    if element.text is None and not len(element):
        out.append("/>")
    else:
        out.append(">")
        if element.text:
            out.append(_escape_text(element.text))
        for child in element:
            _write(child, child_ns, False, out)
        out.append(f"</{name}>")
    if element.tail:
        out.append(_escape_text(element.tail))


def serialize(element: Element, default_ns: str | None = ns.CLIENT, declare_stream: bool = False) -> bytes:
    """UTF-8 bytes of ``element`` inside a stream whose default namespace is ``default_ns``.

    Elements of the streams namespace use the ``stream:`` prefix, declared here when ``declare_stream``
    (RFC 7395 framing, where no stream header declares it). The tail of ``element`` itself is not written.
    """
    out: list[str] = []
    tail, element.tail = element.tail, None
    try:
        _write(element, default_ns, declare_stream, out)
    finally:
        element.tail = tail
    return "".join(out).encode("utf-8")


def stream_header(attrs: dict[str, str], framed: bool = False) -> bytes:
    """Our stream header (RFC 6120 §4.7) or, with WebSocket framing, ``<open/>`` (RFC 7395 §3.4)."""
    rendered = "".join(f' {key}="{_escape_attr(value)}"' for key, value in attrs.items() if value is not None)
    if framed:
        return f'<open xmlns="{ns.FRAMING}"{rendered}/>'.encode()
    return f'{_XML_DECL}<stream:stream xmlns="{ns.CLIENT}" xmlns:stream="{ns.STREAMS}"{rendered}>'.encode()


def stream_footer(framed: bool = False) -> bytes:
    """``</stream:stream>`` (RFC 6120 §4.4) or ``<close/>`` (RFC 7395 §3.6)."""
    return f'<close xmlns="{ns.FRAMING}"/>'.encode() if framed else b"</stream:stream>"
