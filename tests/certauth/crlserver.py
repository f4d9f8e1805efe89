"""A CRL distribution point on 127.0.0.1 (free port, thread) whose answers the test controls.

Usage::

    with CrlServer() as server:
        server.serve("/ca.crl", der_bytes)                       # 200 with Content-Length
        server.serve("/cut.crl", der_bytes, announce=len(der_bytes) + 100)   # truncated: closes early
        server.serve("/big.crl", b"", announce=11 * 1024 * 1024)  # announces a size, sends nothing more
        server.stream("/endless.crl", total=64 * 1024 * 1024)      # no Content-Length, chunks of zeros
        server.hang("/slow.crl")                                    # answers only when the test ends
        server.redirect("/moved.crl", "file:///etc/passwd")         # 302 elsewhere
        server.url("/ca.crl")
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Answer:
    body: bytes = b""
    status: int = 200
    announce: int | None = None  # Content-Length to send (None: the body's length)
    stream_total: int | None = None  # stream this many bytes without Content-Length
    hang: bool = False
    headers: dict[str, str] = field(default_factory=dict)
    written: int = 0
    finished: threading.Event = field(default_factory=threading.Event)


class CrlServer:
    def __init__(self) -> None:
        self.answers: dict[str, Answer] = {}
        self.requests: list[str] = []
        self.release = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                server.requests.append(self.path)
                answer = server.answers.get(self.path)
                if answer is None:
                    self.send_error(404, "Not Found")
                    return
                try:
                    server._answer(self, answer)
                except OSError:  # the client hung up (size cap, timeout): what some tests expect
                    pass
                finally:
                    answer.finished.set()

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.block_on_close = False
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def _answer(self, handler: BaseHTTPRequestHandler, answer: Answer) -> None:
        if answer.hang:
            self.release.wait(30)
            return
        handler.send_response(answer.status)
        handler.send_header("Content-Type", "application/pkix-crl")
        for name, value in answer.headers.items():
            handler.send_header(name, value)
        if answer.stream_total is None:
            length = answer.announce if answer.announce is not None else len(answer.body)
            handler.send_header("Content-Length", str(length))
        handler.send_header("Connection", "close")
        handler.end_headers()
        if answer.stream_total is None:
            handler.wfile.write(answer.body)
            answer.written = len(answer.body)
            handler.wfile.flush()
            return
        chunk = bytes(64 * 1024)
        while answer.written < answer.stream_total:
            handler.wfile.write(chunk)
            answer.written += len(chunk)

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def serve(self, path: str, body: bytes, *, status: int = 200, announce: int | None = None) -> str:
        self.answers[path] = Answer(body=body, status=status, announce=announce)
        return self.url(path)

    def redirect(self, path: str, location: str) -> str:
        self.answers[path] = Answer(status=302, headers={"Location": location})
        return self.url(path)

    def stream(self, path: str, *, total: int) -> Answer:
        self.answers[path] = answer = Answer(stream_total=total)
        return answer

    def hang(self, path: str) -> str:
        self.answers[path] = Answer(hang=True)
        return self.url(path)

    def __enter__(self) -> CrlServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(10)
