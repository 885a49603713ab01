#!/usr/bin/env python3
"""scripts/roundtrips.sh's driver: how many protocol exchanges with the database (round
trips: a client request answered by ReadyForQuery) and server transactions one payment
creation costs, in each pooler mode. A counting TCP proxy sits between one `serve` and its
database URL (PostgreSQL itself, PgBouncer 1.24 or PgBouncer 1.18); after a warm-up, N
payments are created one after the other and the proxy's counts divided by N."""

import argparse
import collections
import json
import os
import socket
import struct
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from drills import PAYMENT  # noqa: E402
from failover import Replica, call, start_sandbox  # noqa: E402

P = argparse.ArgumentParser()
for a in ("bin", "work", "pids", "pg-port", "best-port", "ref-port", "sandbox"):
    P.add_argument(f"--{a}", required=True)
P.add_argument("--payments", type=int, default=50)
A = P.parse_args()
KEY = json.load(open(os.path.join(A.work, "merchant.json")))["api_key"]


class Counter:
    def __init__(self):
        self.lock = threading.Lock()
        self.ready = 0          # ReadyForQuery from the server side: exchanges
        self.idle_ready = 0     # ... ending outside a transaction: transactions ended
        self.messages = collections.Counter()  # (C|S) + message type


def pump(src, dst, counter, from_server):
    """Copies bytes, parsing the message framing of the direction (after the start-up)."""
    buf = b""
    started = from_server  # the client's first message (start-up) has no type byte
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
            buf += data
            while True:
                if not started:
                    if len(buf) < 4:
                        break
                    n = struct.unpack("!I", buf[:4])[0]
                    if len(buf) < n:
                        break
                    code = struct.unpack("!I", buf[4:8])[0] if n >= 8 else 0
                    buf = buf[n:]
                    if code != 80877103:  # SSLRequest is answered with one byte, then start-up again
                        started = True
                    continue
                if len(buf) < 5:
                    break
                t = buf[:1]
                n = struct.unpack("!I", buf[1:5])[0]
                if len(buf) < 1 + n:
                    break
                body = buf[5:1 + n]
                buf = buf[1 + n:]
                with counter.lock:
                    counter.messages[("S" if from_server else "C") + t.decode()] += 1
                    if from_server and t == b"Z":
                        counter.ready += 1
                        if body == b"I":
                            counter.idle_ready += 1
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def proxy(target_port, counter):
    lsock = socket.socket()
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(64)

    def serve():
        while True:
            c, _ = lsock.accept()
            s = socket.create_connection(("127.0.0.1", int(target_port)))
            for sock in (c, s):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=pump, args=(c, s, counter, False), daemon=True).start()
            threading.Thread(target=pump, args=(s, c, counter, True), daemon=True).start()
    threading.Thread(target=serve, daemon=True).start()
    return lsock.getsockname()[1]


def measure(name, target_port, pooler):
    counter = Counter()
    port = proxy(target_port, counter)
    env = {"PISGATE__DATABASE__URL": f"postgres://postgres@127.0.0.1:{port}/pisgate?sslmode=disable",
           "PISGATE__DATABASE__POOLER": pooler,
           "PISGATE__DATABASE__DIRECT_URL": f"postgres://postgres@127.0.0.1:{A.pg_port}/pisgate",
           "PISGATE__POLLER__ENABLED": "false", "PISGATE__WEBHOOKS__ENABLED": "false",
           "PISGATE__REFRESHER__ENABLED": "false"}
    r = Replica(A.bin, A.work, A.pids, f"rt-{pooler}", env).start()

    def create(i, tag):
        body = json.dumps(PAYMENT).encode()
        s, _, text = call(f"{r.base}/v1/payments", body,
                          {"Authorization": f"Bearer {KEY}", "Idempotency-Key": f"rt-{tag}-{pooler}-{i}",
                           "Content-Type": "application/json"})
        assert s == 201, f"{s} {text}"
    for i in range(10):  # warm-up: statements prepared, pool filled
        create(i, "warm")
    time.sleep(0.5)
    with counter.lock:
        before = (counter.ready, counter.idle_ready, dict(counter.messages))
    for i in range(A.payments):
        create(i, "count")
    time.sleep(0.5)
    with counter.lock:
        after = (counter.ready, counter.idle_ready, dict(counter.messages))
    r.stop()
    n = A.payments
    msgs = {k: (after[2].get(k, 0) - before[2].get(k, 0)) / n for k in after[2]}
    print(f"| {name} | {(after[0] - before[0]) / n:.1f} | {(after[1] - before[1]) / n:.1f} |"
          f" {msgs.get('CP', 0):.1f} | {msgs.get('CQ', 0):.1f} |")
    if os.environ.get("ROUNDTRIPS_ALL"):
        print("  all messages per payment: " + ", ".join(f"{k} {v:.1f}" for k, v in sorted(msgs.items()) if v))


def main():
    sandbox = start_sandbox(A.bin, A.work, A.pids, A.sandbox)
    print(f"per payment created (POST /v1/payments, {A.payments} one after the other after 10 to warm up),"
          " counted between pisgate and its database URL")
    print("| mode | exchanges (ReadyForQuery) | of them ending a transaction | Parse messages | simple queries |")
    print("|---|---:|---:|---:|---:|")
    measure("direct to PostgreSQL, POOLER=none", A.pg_port, "none")
    measure("PgBouncer 1.24, POOLER=transaction-prepared", A.best_port, "transaction-prepared")
    measure("PgBouncer 1.18, POOLER=transaction", A.ref_port, "transaction")
    sandbox.stop()


if __name__ == "__main__":
    main()
