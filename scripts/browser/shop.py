"""The merchant's side for the browser tests: the return page (any GET) and a webhook
receiver (POST /hooks) that answers 500 to the first FAIL_FIRST deliveries, so one dies,
and 200 afterwards. GET /hooks/count tells how many it accepted."""
import http.server
import os
import sys
import threading

FAIL_FIRST = int(os.environ.get("FAIL_FIRST", "3"))
lock = threading.Lock()
seen = {"posts": 0, "accepted": 0}


class Shop(http.server.BaseHTTPRequestHandler):
    def _answer(self, code, body, kind="text/html; charset=utf-8"):
        data = body.encode()
        self.send_response(code)
        self.send_header("content-type", kind)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path.startswith("/hooks/count"):
            with lock:
                return self._answer(200, str(seen["accepted"]), "text/plain")
        self._answer(200, '<!doctype html><html lang="en"><title>Shop</title><h1>Back at the shop</h1></html>')

    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", "0")))
        with lock:
            seen["posts"] += 1
            ok = seen["posts"] > FAIL_FIRST
            seen["accepted"] += ok
        self._answer(200 if ok else 500, "ok" if ok else "not now", "text/plain")

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Shop).serve_forever()
