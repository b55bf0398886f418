"""A local HTTP server on 127.0.0.1 for the tests of code that downloads (no test ever reaches a real remote)."""

from __future__ import annotations

import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Server:
    """Serves `files` (URL path -> bytes) with Range support; `cuts[path]` responses are cut half-way;
    `etags[path]`, when set, is sent as the ETag header (GET and HEAD).

    Hostile modes: `trickle[path] = (nbytes, seconds)` sends the body `nbytes` at a time, `seconds` apart;
    `endless[path] = chunk` answers 200 with no Content-Length and sends `chunk` forever (until the client
    leaves; `endless_pause` seconds apart), or with the Content-Length `endless_length[path]` when set (a lie:
    the body never ends)."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.cuts: dict[str, int] = {}
        self.etags: dict[str, str] = {}
        self.trickle: dict[str, tuple[int, float]] = {}
        self.endless: dict[str, bytes] = {}
        self.endless_length: dict[str, int] = {}
        self.endless_pause = 0.0
        self.log: list[tuple[str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_HEAD(self):
                server.log.append(("HEAD " + self.path, None))
                data = server.files.get(self.path)
                if data is None:
                    self.send_error(404, "Not Found")
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                if self.path in server.etags:
                    self.send_header("ETag", server.etags[self.path])
                self.end_headers()

            def do_GET(self):
                server.log.append((self.path, self.headers.get("Range")))
                if self.path in server.endless:
                    self._endless(server.endless[self.path], server.endless_length.get(self.path))
                    return
                data = server.files.get(self.path)
                if data is None:
                    self.send_error(404, "Not Found")
                    return
                start = 0
                match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
                if match:
                    start = int(match.group(1))
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                if self.path in server.etags:
                    self.send_header("ETag", server.etags[self.path])
                self.end_headers()
                if server.cuts.get(self.path, 0) > 0:
                    server.cuts[self.path] -= 1
                    body = body[: len(body) // 2]  # then the connection closes: an IncompleteRead
                try:
                    if self.path in server.trickle:
                        step, pause = server.trickle[self.path]
                        for at in range(0, len(body), step):
                            self.wfile.write(body[at:at + step])
                            self.wfile.flush()
                            time.sleep(pause)
                    else:
                        self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up: expected in the hostile modes

            def _endless(self, chunk: bytes, length):
                self.send_response(200)
                if length is not None:
                    self.send_header("Content-Length", str(length))
                self.send_header("Connection", "close")
                self.end_headers()
                try:
                    while True:
                        self.wfile.write(chunk)
                        time.sleep(server.endless_pause)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True  # a trickling or endless response never holds up stop()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def stop(self):
        if self.thread.is_alive():
            self.httpd.shutdown()
            self.httpd.server_close()
