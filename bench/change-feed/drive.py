#!/usr/bin/env python3
"""The client side of bench/change-feed/run, in the venv of
infra/dev/smtp-sink-env.sh (httpx, standardwebhooks). Each subcommand
prints one JSON object on stdout.

  kihon4   --api URL --admin TOKEN --receiver URL --received FILE --events N
           Registers an endpoint for the receiver (POST /v1/webhook-endpoints),
           gives the receiver its secret, replays the feed from its start to
           it (the events were written before), and waits until the receiver
           has N more records: the seconds from the endpoint's creation to the
           last receipt, and to the first.
  bodies   --api URL --token TOKEN --events N --out FILE
           The first N events from GET /v1/changes, one webhook body a line.
  httpx    --receiver URL --secret S --bodies FILE [--concurrency C]
           POSTs every body to the receiver, signed with standardwebhooks,
           over keep-alive connections: one at a time, or C at once (C
           threads, a client each).
  cursor   --api URL --token TOKEN
           Pages through every event with GET /v1/changes?limit=1000.
"""

import argparse
import json
import os
import sys
import threading
import time
import uuid
from datetime import datetime, timezone

import httpx
from standardwebhooks.webhooks import Webhook

CURSOR_ZERO = "c1_AAAAAAAAAAA"


def lines(path):
    try:
        with open(path, "rb") as f:
            return f.read().count(b"\n")
    except FileNotFoundError:
        return 0


def kihon4(args):
    before = lines(args.received)
    api = httpx.Client(base_url=args.api, headers={"authorization": "Bearer " + args.admin}, timeout=60)
    t0 = time.time()
    r = api.post("/v1/webhook-endpoints", json={"url": args.receiver + "/hook"})
    r.raise_for_status()
    endpoint = r.json()
    httpx.post(args.receiver + "/_control", json={"secrets": [endpoint["secret"]]}).raise_for_status()
    r = api.post("/v1/webhook-endpoints/%s/replay" % endpoint["id"], json={"after": CURSOR_ZERO})
    r.raise_for_status()
    queued = r.json()["deliveries"]
    if queued != args.events:
        sys.exit("replay queued %d deliveries, not %d" % (queued, args.events))
    # Follow the receiver's file as it grows: no load on the receiver or the database.
    deadline = time.monotonic() + 900
    with open(args.received, "rb") as f:
        seen = f.read().count(b"\n")
        while seen < before + args.events:
            if time.monotonic() > deadline:
                sys.exit("only %d of %d events arrived" % (seen - before, args.events))
            time.sleep(0.05)
            seen += f.read().count(b"\n")
    with open(args.received, encoding="utf-8") as f:
        records = [json.loads(line) for line in f if line.strip()][before:]
    at = sorted(datetime.fromisoformat(r["received_at"]).timestamp() for r in records)
    ids = {r["event_id"] for r in records}
    state = httpx.get(args.receiver + "/_received", timeout=60).json()
    print(json.dumps({
        "seconds": at[-1] - t0,
        "first": at[0] - t0,
        "receipts": len(records),
        "events": len(ids),
        "rejected": state["rejected"],
        "failed": state["failed"],
        "secret": endpoint["secret"],
    }))


def bodies(args):
    api = httpx.Client(base_url=args.api, headers={"authorization": "Bearer " + args.token}, timeout=60)
    after, n = None, 0
    with open(args.out, "w", encoding="utf-8") as out:
        while n < args.events:
            params = {"limit": min(1000, args.events - n)}
            if after:
                params["after"] = after
            page = api.get("/v1/changes", params=params).raise_for_status().json()
            if not page["events"]:
                break
            for e in page["events"]:
                out.write(json.dumps(e, ensure_ascii=False, separators=(",", ":")) + "\n")
            n += len(page["events"])
            after = page["next_cursor"]
    print(json.dumps({"bodies": n}))


def signed(wh, body):
    msg_id = "msg_" + uuid.uuid4().hex
    now = datetime.now(timezone.utc)
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": wh.sign(msg_id, now, body),
    }


def httpx_loop(args):
    with open(args.bodies, encoding="utf-8") as f:
        payloads = [line.rstrip("\n") for line in f if line.strip()]
    wh = Webhook(args.secret)
    url = args.receiver + "/hook"
    bad = 0
    if args.concurrency <= 1:
        client = httpx.Client(timeout=30)
        started = time.perf_counter()
        for body in payloads:
            r = client.post(url, content=body.encode(), headers=signed(wh, body))
            bad += r.status_code != 204
        elapsed = time.perf_counter() - started
    else:
        # Threads, each with its own keep-alive client: faster here than
        # httpx's asyncio client, whose own overhead more than halves the rate.
        todo, lock = iter(payloads), threading.Lock()

        def worker():
            nonlocal bad
            client = httpx.Client(timeout=30)
            while True:
                with lock:
                    body = next(todo, None)
                if body is None:
                    return
                r = client.post(url, content=body.encode(), headers=signed(wh, body))
                with lock:
                    bad += r.status_code != 204

        threads = [threading.Thread(target=worker) for _ in range(args.concurrency)]
        started = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - started
    print(json.dumps({"seconds": elapsed, "sent": len(payloads), "not_204": bad}))


def cursor(args):
    api = httpx.Client(base_url=args.api, headers={"authorization": "Bearer " + args.token}, timeout=60)
    after, n, pages = None, 0, 0
    started = time.perf_counter()
    while True:
        params = {"limit": 1000}
        if after:
            params["after"] = after
        page = api.get("/v1/changes", params=params).raise_for_status().json()
        pages += 1
        n += len(page["events"])
        after = page["next_cursor"]
        if len(page["events"]) < 1000:
            break
    elapsed = time.perf_counter() - started
    print(json.dumps({"seconds": elapsed, "events": n, "pages": pages}))


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    k = sub.add_parser("kihon4")
    k.add_argument("--api", required=True)
    k.add_argument("--admin", required=True)
    k.add_argument("--receiver", required=True)
    k.add_argument("--received", required=True)
    k.add_argument("--events", type=int, required=True)
    b = sub.add_parser("bodies")
    b.add_argument("--api", required=True)
    b.add_argument("--token", required=True)
    b.add_argument("--events", type=int, required=True)
    b.add_argument("--out", required=True)
    h = sub.add_parser("httpx")
    h.add_argument("--receiver", required=True)
    h.add_argument("--secret", required=True)
    h.add_argument("--bodies", required=True)
    h.add_argument("--concurrency", type=int, default=1)
    c = sub.add_parser("cursor")
    c.add_argument("--api", required=True)
    c.add_argument("--token", required=True)
    args = p.parse_args()
    {"kihon4": kihon4, "bodies": bodies, "httpx": httpx_loop, "cursor": cursor}[args.cmd](args)


if __name__ == "__main__":
    os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
    main()
