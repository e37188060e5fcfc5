"""A real HTTP server on 127.0.0.1 for download tests; each path maps to a function that answers.

    with LocalServer({"/book.txt": send_body(b"text")}) as server:
        server.url("/book.txt")
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable
from types import TracebackType

Route = Callable[[http.server.BaseHTTPRequestHandler], None]


def send_body(body: bytes, *, length: int | None = -1, piece: int = 256) -> Route:
    """200 with `body` in pieces; Content-Length is len(body) by default, `length` when given
    (a wrong one makes a truncated download), none when None. The connection then closes."""

    def route(handler: http.server.BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "text/plain; charset=utf-8")
        if length is not None:
            handler.send_header("Content-Length", str(len(body) if length == -1 else length))
        handler.end_headers()
        for i in range(0, len(body), piece):
            handler.wfile.write(body[i:i + piece])

    return route


def redirect(location: str, code: int = 302) -> Route:
    def route(handler: http.server.BaseHTTPRequestHandler) -> None:
        handler.send_response(code)
        handler.send_header("Location", location)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    return route


class LocalServer:
    """ThreadingHTTPServer on an ephemeral port of 127.0.0.1; unknown paths answer 404.
    `requests` lists the paths asked for, in order."""

    def __init__(self, routes: dict[str, Route]) -> None:
        self.routes = dict(routes)
        self.requests: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # one request per connection, closed after it

            def do_GET(self) -> None:
                server.requests.append(self.path)
                route = server.routes.get(self.path)
                if route is None:
                    self.send_error(404, "Not Found")
                else:
                    route(self)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,),
                                       daemon=True)

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def __enter__(self) -> LocalServer:
        self.thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()
