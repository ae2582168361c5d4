#!/usr/bin/env python3
"""A real SMTP server for kihon4's tests and benchmarks, built on aiosmtpd.

Every message it accepts is kept as NNN.eml in --dir, with NNN.json beside
it: the headers and parts as Python's own email parser reads them (an
independent judge of what kihon4 sends). A recipient whose address contains
--reject is refused with 550. Prints "ready PORT" once listening; stops on
SIGTERM or SIGINT.
"""

import argparse
import email
import email.policy
import itertools
import json
import os
import signal
import threading

from aiosmtpd.controller import Controller


def summary(data, envelope):
    msg = email.message_from_bytes(data, policy=email.policy.default)
    raw = email.message_from_bytes(data, policy=email.policy.compat32)
    parts = []
    for part in msg.walk():
        if part.is_multipart():
            continue
        parts.append({
            "type": part.get_content_type(),
            "charset": part.get_content_charset(),
            "body": part.get_content(),
        })
    return {
        "mail_from": envelope.mail_from,
        "rcpt_tos": envelope.rcpt_tos,
        "message_id": str(msg["Message-ID"]),
        "subject": str(msg["Subject"]),
        "raw_subject": raw["Subject"],
        "from": str(msg["From"]),
        "to": str(msg["To"]),
        "reply_to": None if msg["Reply-To"] is None else str(msg["Reply-To"]),
        "date": str(msg["Date"]),
        "header_names": [k for k, _ in raw.items()],
        "content_type": msg.get_content_type(),
        "parts": parts,
    }


class Sink:
    def __init__(self, folder, reject, tag):
        self.folder = folder
        self.reject = reject
        self.tag = tag
        self.counter = itertools.count()
        self.lock = threading.Lock()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.reject and self.reject in address:
            return "550 5.1.1 <%s>: Recipient address rejected" % address
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            n = next(self.counter)
        name = "%s-%08d" % (self.tag, n)
        data = envelope.original_content or envelope.content
        for ext, content in (
            ("json", json.dumps(summary(data, envelope), ensure_ascii=False).encode()),
            ("eml", data),
        ):
            tmp = os.path.join(self.folder, ".%s.%s" % (name, ext))
            with open(tmp, "wb") as f:
                f.write(content)
            os.rename(tmp, os.path.join(self.folder, "%s.%s" % (name, ext)))
        return "250 2.0.0 Ok: queued as %s" % name


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", required=True)
    parser.add_argument("--reject", default="")
    parser.add_argument("--no-store", action="store_true", help="keep nothing (benchmarks)")
    args = parser.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    handler = Sink(args.dir, args.reject, "%d" % os.getpid())
    if args.no_store:
        async def accept(server, session, envelope):
            return "250 2.0.0 Ok"
        handler.handle_DATA = accept
    controller = Controller(handler, hostname="127.0.0.1", port=args.port)
    controller.start()
    print("ready %d" % args.port, flush=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    controller.stop()


if __name__ == "__main__":
    main()
