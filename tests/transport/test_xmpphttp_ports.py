"""tests.transport.xmpphttp.start_server: a port taken between ``free_port`` and the server's bind (by the
other test leg, which runs at the same time) is not mistaken for the server's: it starts on other ports."""

from __future__ import annotations

import socket

from tests.processes import free_port
from tests.transport import xmpphttp


def test_a_port_another_process_took_makes_the_server_start_again_on_fresh_ports(tmp_path, monkeypatch):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()  # answers connections, as the other leg's server would
    handed = iter([taken.getsockname()[1]])
    monkeypatch.setattr(xmpphttp, "free_port", lambda: next(handed, None) or free_port())
    try:
        starting = xmpphttp.start_server(tmp_path)
        server = next(starting)
        try:
            assert taken.getsockname()[1] not in server.ports.values()
            assert server.process.poll() is None
            log = (tmp_path / "server.log").read_text()
            assert all(f"listening on 127.0.0.1:{port} " in log for port in server.ports.values()), log
        finally:
            starting.close()
    finally:
        taken.close()
