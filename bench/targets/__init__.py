"""Other XMPP servers the comparison benchmark (``bench.compare``) starts as its own processes.

Each module writes that server's config into a scratch directory (127.0.0.1, free ports, its own spool and
logs), starts it as a child process in its own process group, and stops it; none touches the system's own
instance or its config.
"""
