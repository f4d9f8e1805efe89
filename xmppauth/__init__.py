"""xmppauth: an XMPP server whose clients log in with TLS client certificates (XEP-0178)."""
