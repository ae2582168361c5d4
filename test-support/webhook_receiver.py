#!/usr/bin/env python3
"""A real webhook receiver for kihon4's tests and benchmarks.

Every POST (to any path but the control ones) is verified with the official
Standard Webhooks library (`standardwebhooks` from PyPI, not kihon4's own
code), trying each configured secret in turn: one that none verifies is
answered 401 and counted as rejected. A verified one is answered as the
current mode says: `up` 204; `flaky` 500 with probability `fail_rate` (from
a `random.Random(seed)`), else 204; `down` 503, with `Retry-After` when
`retry_after` is set. Every verified request answered 2xx is appended as a
JSON line to --out:

    {"webhook_id", "timestamp", "webhook_timestamp", "type", "cursor",
     "customer_id", "customer_seq", "event_id", "received_at", "secret_index"}

`webhook_id` and `webhook_timestamp` (Unix seconds) are the headers,
`type` and `timestamp` the body's, the rest from its `data` (null where
missing); `secret_index` is the position of the secret that verified it.
The records already in --out are loaded at start, so a receiver stopped and
started again on the same file still reports all it received (the rejected
and failed counts start again at 0).

    POST /_control   {"mode": "up"|"down"|"flaky", "fail_rate": 0.3,
                      "retry_after": 2, "seed": 1, "secrets": ["whsec_…"]}
                     (each key optional; retry_after null removes it):
                     changes the state, answers 200 with it (secrets counted,
                     never shown)
    GET /_received   {"received": [records], "rejected": N, "failed": N}

Prints "ready PORT" once listening; stops on SIGTERM or SIGINT. Logs nothing
per request unless --verbose.
"""

import argparse
import json
import random
import signal
import sys
import threading
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook

MODES = ("up", "down", "flaky")


class State:
    """What every request handler shares, behind one lock."""

    def __init__(self, out, secrets, mode, fail_rate, seed):
        self.lock = threading.Lock()
        self.mode = mode
        self.fail_rate = fail_rate
        self.retry_after = None
        self.rng = random.Random(seed)
        self.webhooks = [Webhook(s) for s in secrets]
        self.received = []
        self.rejected = 0
        self.failed = 0
        try:
            with open(out, encoding="utf-8") as f:
                self.received = [json.loads(line) for line in f if line.strip()]
        except FileNotFoundError:
            pass
        self.out = open(out, "a", encoding="utf-8")

    def view(self):
        return {
            "mode": self.mode,
            "fail_rate": self.fail_rate,
            "retry_after": self.retry_after,
            "secrets": len(self.webhooks),
        }

    def control(self, change):
        """Applies a /_control body; raises ValueError on a bad one."""
        if not isinstance(change, dict):
            raise ValueError("the body must be a JSON object")
        mode = change.get("mode", self.mode)
        if mode not in MODES:
            raise ValueError("mode must be one of %s" % ", ".join(MODES))
        fail_rate = float(change.get("fail_rate", self.fail_rate))
        if not 0.0 <= fail_rate <= 1.0:
            raise ValueError("fail_rate must be within 0 and 1")
        retry_after = change.get("retry_after", self.retry_after)
        if retry_after is not None:
            retry_after = int(retry_after)
        webhooks = None
        if "secrets" in change:
            webhooks = [Webhook(s) for s in change["secrets"]]
        with self.lock:
            self.mode = mode
            self.fail_rate = fail_rate
            self.retry_after = retry_after
            if "seed" in change:
                self.rng = random.Random(change["seed"])
            if webhooks is not None:
                self.webhooks = webhooks
            return self.view()

    def verify(self, body, headers):
        """The index of the first secret that verifies the request, or None."""
        for i, wh in enumerate(self.webhooks):
            try:
                wh.verify(body, headers, json_parse=False)
                return i
            except Exception:  # a wrong signature, or headers the library cannot read
                continue
        return None

    def answer(self):
        """The status (and Retry-After) the current mode gives a verified request."""
        with self.lock:
            if self.mode == "down":
                self.failed += 1
                return 503, self.retry_after
            if self.mode == "flaky" and self.rng.random() < self.fail_rate:
                self.failed += 1
                return 500, None
            return 204, None

    def record(self, record):
        line = json.dumps(record, ensure_ascii=False, separators=(",", ":"))
        with self.lock:
            self.received.append(record)
            self.out.write(line + "\n")
            self.out.flush()


def record_of(headers, secret_index, payload):
    data = payload.get("data") if isinstance(payload.get("data"), dict) else {}
    try:
        webhook_timestamp = int(headers["webhook-timestamp"])
    except ValueError:
        webhook_timestamp = None
    return {
        "webhook_id": headers["webhook-id"],
        "timestamp": payload.get("timestamp"),
        "webhook_timestamp": webhook_timestamp,
        "type": payload.get("type"),
        "cursor": data.get("cursor"),
        "customer_id": data.get("customer_id"),
        "customer_seq": data.get("customer_seq"),
        "event_id": data.get("event_id"),
        "received_at": datetime.now(timezone.utc).isoformat(timespec="microseconds"),
        "secret_index": secret_index,
    }


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: without this, Nagle's
    # algorithm and delayed ACKs stall every keep-alive request by ~40 ms.
    disable_nagle_algorithm = True
    server_version = "kihon4-webhook-receiver"
    sys_version = ""
    state = None  # set in main
    verbose = False

    def log_message(self, format, *args):
        if self.verbose:
            sys.stderr.write("%s\n" % (format % args))

    def send(self, status, body=None, extra=()):
        self.send_response(status)
        for name, value in extra:
            self.send_header(name, value)
        if status == 204:
            self.end_headers()
            return
        data = b"" if body is None else json.dumps(body).encode()
        if body is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def read_body(self):
        """Exactly Content-Length bytes, or None (answered 411) without it."""
        length = self.headers.get("Content-Length", "")
        if not length.isdigit() or self.headers.get("Transfer-Encoding"):
            self.send(411, {"error": "Content-Length is required"})
            self.close_connection = True
            return None
        return self.rfile.read(int(length))

    def do_GET(self):
        if self.path.split("?", 1)[0] != "/_received":
            self.send(404, {"error": "not found"})
            return
        state = self.state
        with state.lock:
            body = {
                "received": list(state.received),
                "rejected": state.rejected,
                "failed": state.failed,
            }
        self.send(200, body)

    def do_POST(self):
        body = self.read_body()
        if body is None:
            return
        path = self.path.split("?", 1)[0]
        if path == "/_control":
            self.control(body)
        elif path == "/_received":
            self.send(405, {"error": "GET /_received"}, [("Allow", "GET")])
        else:
            self.hook(body)

    def control(self, body):
        try:
            view = self.state.control(json.loads(body or b"{}"))
        except Exception as e:  # bad JSON, a bad value, a secret the library refuses
            self.send(400, {"error": "%s: %s" % (type(e).__name__, e)})
            return
        self.send(200, view)

    def hook(self, body):
        state = self.state
        headers = {
            name: self.headers.get(name, "")
            for name in ("webhook-id", "webhook-timestamp", "webhook-signature")
        }
        secret_index = state.verify(body, headers)
        if secret_index is None:
            with state.lock:
                state.rejected += 1
            self.send(401, {"error": "no secret verifies this request"})
            return
        status, retry_after = state.answer()
        if status != 204:
            extra = [] if retry_after is None else [("Retry-After", str(retry_after))]
            self.send(status, None, extra)
            return
        try:
            payload = json.loads(body)
            if not isinstance(payload, dict):
                raise ValueError("not an object")
        except ValueError:
            with state.lock:
                state.failed += 1
            self.send(400, {"error": "the body is not a JSON object"})
            return
        state.record(record_of(headers, secret_index, payload))
        self.send(204)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--out", required=True, help="the JSON lines file of what it received")
    parser.add_argument("--secret", action="append", default=[], help="repeatable; whsec_…")
    parser.add_argument("--mode", choices=MODES, default="up")
    parser.add_argument("--fail-rate", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true", help="log no requests (the default)")
    parser.add_argument("--verbose", action="store_true", help="log each request to stderr")
    args = parser.parse_args()
    Handler.state = State(args.out, args.secret, args.mode, args.fail_rate, args.seed)
    Handler.verbose = args.verbose and not args.quiet
    server = Server(("127.0.0.1", args.port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    print("ready %d" % server.server_address[1], flush=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.shutdown()
    server.server_close()
    Handler.state.out.close()


if __name__ == "__main__":
    main()
