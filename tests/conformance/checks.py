"""What the conformance clients share: a check log that names each deviation as a merchant would
see it, the sandbox manifest, and a local HTTP receiver to use as notify_url."""

import http.server
import json
import sys
import threading
import time
import urllib.request


class Checks:
    def __init__(self, suite):
        self.suite = suite
        self.passed = 0
        self.failed = 0

    def check(self, name, ok, deviation=""):
        """Records one check: `deviation` says what the merchant sees when it fails."""
        if ok:
            self.passed += 1
            print(f"PASS {self.suite}: {name}", flush=True)
        else:
            self.failed += 1
            print(f"FAIL {self.suite}: {name}: {deviation}", flush=True)
        return ok

    def run(self, name, fn):
        """Runs `fn`, a check whose exception is its deviation; returns its value or None."""
        try:
            value = fn()
        except Exception as e:  # the SDK's own refusal is the deviation a merchant sees
            self.check(name, False, f"{type(e).__name__}: {e}")
            return None
        self.check(name, True)
        return value

    def finish(self):
        print(f"{self.suite}: {self.passed} passed, {self.failed} failed", flush=True)
        sys.exit(1 if self.failed else 0)


def manifest(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def post_json(url, body=None):
    req = urllib.request.Request(
        url,
        data=json.dumps(body or {}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=10) as res:
        return res.status


class Receiver:
    """A notify_url on loopback: keeps every request's header names exactly as they came over
    the wire, and answers with `answer` (status, content type, body)."""

    def __init__(self, answer=(204, "text/plain", b"")):
        received = self.received = []
        lock = self.lock = threading.Condition()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                # The raw header lines, names in their case as sent.
                headers = [tuple(line.split(":", 1)) for line in self.headers.as_string().splitlines() if ":" in line]
                headers = [(k, v.strip()) for k, v in headers]
                status, ctype, payload = answer
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                with lock:
                    received.append({"path": self.path, "headers": headers, "body": body})
                    lock.notify_all()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def wait(self, pred, seconds=15):
        """The first request received for which `pred` holds, or None after `seconds`."""
        deadline = time.monotonic() + seconds
        with self.lock:
            while True:
                for r in self.received:
                    if pred(r):
                        return r
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.lock.wait(left)

    def close(self):
        self.server.shutdown()


def header_names_deviation(names, expected):
    """What is missing from `names` (as sent) among `expected` (in the channel's case)."""
    missing = [n for n in expected if n not in names]
    if not missing:
        return ""
    return f"expected header names {missing} exactly as the channel writes them; got {names}"
