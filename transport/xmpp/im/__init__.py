"""Instant messaging and presence (RFC 6121) as pure logic: no Django, no I/O.

``subscription`` holds the roster subscription states and their transitions (RFC 6121 §3, Appendix A) as a
table; ``delivery`` decides where a stanza addressed to a local account goes (RFC 6121 §8.5); ``roster``
parses and builds roster IQ payloads (RFC 6121 §2). The router (``transport.im.router``) applies them to the
database and the live sessions.
"""
