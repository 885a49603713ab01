#!/usr/bin/env python3
"""scripts/scale.sh's driver: (a) the check with three replicas through PgBouncer in
transaction mode, (b) payments/s with 1 replica direct, 1, 2 and 3 replicas through PgBouncer
1.24 (POOLER=transaction-prepared) and 1 through PgBouncer 1.18 (POOLER=transaction), and the
ratio through PgBouncer / direct. See scale.sh for what is checked.
Shares its process, HTTP and shopper helpers with failover.py. Every loop is bounded in
count and time; traffic goes only to 127.0.0.1."""

import argparse
import base64
import collections
import hashlib
import hmac
import http.server
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from drills import PAYMENT, WRK_SCRIPT, until  # noqa: E402
from failover import (Psql, Replica, call, log, payment_body, print_table,  # noqa: E402
                      sandbox_admin, start_sandbox)

P = argparse.ArgumentParser()
P.add_argument("--mode", choices=["quick", "full"], default="quick")
for a in ("bin", "work", "pids", "pg-bindir", "pg-port", "bouncer-port", "pool", "sandbox", "build",
          "ref-bouncer-port", "ref-bouncer-version", "max-prepared"):
    P.add_argument(f"--{a}", required=True)
A = P.parse_args()
QUICK = A.mode == "quick"
REPLICAS = 3
PAYMENTS = 120
SHOPPERS = 40  # three payments each, created on three different replicas
POOL = int(A.pool)
BENCH_RUNS = 1 if QUICK else 3
BENCH_SECS = 3 if QUICK else 10
BENCH_CONNECTIONS = 32
# Through PgBouncer, 1 replica, at least this share of 1 replica straight to PostgreSQL
# (issue 27); the full run fails under it.
MIN_RATIO = 0.85
BEST = f"PgBouncer 1.24.1 transaction mode, max_prepared_statements {A.max_prepared}, POOLER=transaction-prepared"
REF = f"{A.ref_bouncer_version} transaction mode, POOLER=transaction"

MERCHANT = json.load(open(os.path.join(A.work, "merchant.json")))
KEY = MERCHANT["api_key"]
DB = Psql(A.pg_bindir, A.pg_port)
AUTH = {"Authorization": f"Bearer {KEY}"}


# -- pg_stat_activity every 100 ms -------------------------------------------------------------

class Sampler(threading.Thread):
    """Counts client backends of the pisgate database every 100 ms over one kept psql session
    (connected to `postgres`, so it never counts itself)."""

    SQL = ("SELECT count(*), count(*) FILTER (WHERE state = 'active'),"
           " COALESCE(string_agg(DISTINCT application_name, ','), '') FROM pg_stat_activity"
           " WHERE backend_type = 'client backend' AND datname = 'pisgate'"
           " AND application_name IS DISTINCT FROM 'pisgate-scripts';\n")

    def __init__(self):
        super().__init__(daemon=True)
        self.proc = subprocess.Popen(
            [os.path.join(A.pg_bindir, "psql"), "-h", "127.0.0.1", "-p", A.pg_port, "-U", "postgres",
             "-d", "postgres", "-qtAX", "-F", "|"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        with open(A.pids, "a") as f:
            f.write(f"{self.proc.pid}\n")
        self.stop = threading.Event()
        self.samples = []  # (time, backends, active)
        self.names = set()  # application names seen

    def run(self):
        while not self.stop.is_set():
            t = time.time()
            self.proc.stdin.write(self.SQL)
            self.proc.stdin.flush()
            n, active, names = (self.proc.stdout.readline().rstrip("\n").split("|") + [""])[:3]
            self.samples.append((t, int(n), int(active)))
            self.names.update(x for x in names.split(",") if x)
            self.stop.wait(max(0.0, 0.1 - (time.time() - t)))
        self.proc.stdin.close()
        self.proc.wait(timeout=10)

    def finish(self):
        self.stop.set()
        self.join(timeout=10)


# -- the merchant's webhook receiver -------------------------------------------------------------

class Inbox:
    lock = threading.Lock()
    secret = None
    received = []  # (webhook-id, type, payment id, status)
    bad = []


def expected_signature(secret, msg_id, timestamp, body):
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


class Receiver(http.server.BaseHTTPRequestHandler):
    """Verifies every request the way tests/api/webhooks.rs does: the Standard Webhooks
    signature over `id.timestamp.body` with the endpoint's secret, a current timestamp, the
    webhook-id being the payload's id, JSON content."""
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        msg_id = self.headers.get("webhook-id", "")
        ts = self.headers.get("webhook-timestamp", "")
        sigs = self.headers.get("webhook-signature", "").split(" ")
        problems = []
        try:
            payload = json.loads(body)
        except ValueError:
            payload = {}
        with Inbox.lock:
            secret = Inbox.secret
        if secret is None or expected_signature(secret, msg_id, ts, body) not in sigs:
            problems.append("signature does not verify")
        if not ts.isdigit() or abs(time.time() - int(ts)) > 300:
            problems.append("timestamp missing or not current")
        if not msg_id.startswith("evt_") or payload.get("id") != msg_id:
            problems.append("webhook-id missing or not the payload's id")
        if self.headers.get("content-type") != "application/json":
            problems.append("content-type is not application/json")
        data = payload.get("data") or {}
        with Inbox.lock:
            if problems:
                Inbox.bad.append(f"{msg_id}: {problems}")
            else:
                Inbox.received.append((msg_id, payload.get("type"), data.get("id"), data.get("status"),
                                       time.time(), self.headers.get("webhook-timestamp", "")))
        self.send_response(401 if problems else 200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


# -- (a) the check -----------------------------------------------------------------------------

def open_bank_page(p):
    """Consent page, its button, the bank's page: the action URL of the bank's form."""
    url = p["authorization_url"]
    s, _, _ = call(url)
    assert s == 200, f"consent page {s}"
    hop, token = url.split("?t=")
    s, h, _ = call(hop, urllib.parse.urlencode({"t": token}).encode(),
                   {"Content-Type": "application/x-www-form-urlencoded"}, "POST")
    assert s == 303, f"hop {s}"
    s, _, page = call(h["location"])
    m = re.search(r'action="([^"]+)"', page or "")
    assert s == 200 and m, f"bank page {s}"
    return m.group(1).replace("&amp;", "&")


def check(replicas):
    bases = [r.base for r in replicas]
    statuses = collections.Counter()
    lock = threading.Lock()

    def note(s):
        with lock:
            statuses[s] += 1

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    hook_url = f"http://127.0.0.1:{server.server_address[1]}/hooks/pisgate"
    s, _, text = call(f"{bases[0]}/v1/webhook-endpoints", json.dumps({"url": hook_url}).encode(),
                      {**AUTH, "Content-Type": "application/json"})
    assert s == 201, f"webhook endpoint: {s} {text}"
    with Inbox.lock:
        Inbox.secret = json.loads(text)["secret"]

    sampler = Sampler()
    sampler.start()
    t0 = time.time()

    # 1. 120 payments, payment i on replica i % 3 for shopper i % 40 (so each shopper has a
    #    payment on every replica), each taken to the bank's signing page.
    made = [None] * PAYMENTS

    def make(k):
        for i in range(k, PAYMENTS, 12):
            body = json.dumps(payment_body(i, f"scale-{i}", f"shopper-{i % SHOPPERS}")).encode()
            s, _, text = call(f"{bases[i % REPLICAS]}/v1/payments", body,
                              {**AUTH, "Idempotency-Key": f"scale-{i}", "Content-Type": "application/json"})
            note(s)
            assert s == 201, f"create {i}: {s} {text}"
            p = json.loads(text)
            made[i] = (p, open_bank_page(p))
    run_threads(make, 12)
    created = time.time()

    # 2. Every shopper approves their three payments at once: three code exchanges for one
    #    bank shopper on three replicas side by side.
    def approve(k):
        for shopper in range(k, SHOPPERS, 8):
            mine = [i for i in range(PAYMENTS) if i % SHOPPERS == shopper]
            out = []

            def press(i):
                form = urllib.parse.urlencode({"decision": "approve", "psu_id": f"psu-{shopper}"}).encode()
                s, h, _ = call(made[i][1], form, {"Content-Type": "application/x-www-form-urlencoded"})
                assert s == 303, f"bank decision {i}: {s}"
                s, _, _ = call(h["location"])  # back to pisgate's callback on its replica
                note(s)
                out.append(s)
            ts = [threading.Thread(target=press, args=(i,)) for i in mine]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
    run_threads(approve, 8)
    signed = time.time()

    # 3. All paid, every paid payment announced by a verified webhook.
    ids = [p["id"] for p, _ in made]
    paid = until(lambda: int(DB.value(
        "SELECT count(*) FROM payments WHERE status = 'paid'")) == PAYMENTS, 180, every=0.5)
    paid_at = time.time()
    hooks = until(lambda: {r[2] for r in Inbox.received if r[1] == "payment.paid"} >= set(ids), 60, every=0.5)
    hooks_at = time.time()
    by_status = collections.Counter(r[0] for r in DB.rows("SELECT status FROM payments"))

    # 4. Tokens: one live token per bank shopper, the one with the newest issue time any
    #    exchange for that shopper recorded, and it still works at the bank (which revokes a
    #    shopper's older tokens when it issues a new one).
    rows = DB.rows("""
        WITH s AS (
            SELECT p.psu_key, count(DISTINCT p.id) AS payments,
                   max((e.detail->>'issued_at')::timestamptz) AS newest
            FROM payments p
            LEFT JOIN payment_events e ON e.payment_id = p.id AND e.kind = 'token_exchanged'
            GROUP BY p.psu_key)
        SELECT COALESCE(s.psu_key, ''), s.payments, COALESCE(s.newest::text, '-'),
               COALESCE(t.issued_at::text, '-'), t.status IS NOT DISTINCT FROM 'live',
               t.issued_at IS NOT NULL AND s.newest IS NOT NULL AND t.issued_at >= s.newest
        FROM s LEFT JOIN psu_tokens t ON t.psu_key = s.psu_key""")
    token_problems = [f"{k or '(no shopper key)'}: {n} payments, live {live}, kept issued_at {kept},"
                      f" newest exchanged {newest}"
                      for k, n, newest, kept, live, ok in rows if not k or live != "t" or ok != "t"]
    sql_bad = 0
    funds = collections.Counter()
    for i, (p, _) in enumerate(made):
        s, _, text = call(f"{bases[(i + 1) % REPLICAS]}/v1/payments/{p['id']}/funds", headers=AUTH)
        note(s)
        funds[s if s == 200 else f"{s} {json.loads(text).get('code') if text.startswith('{') else ''}"] += 1
    exchanges = len(DB.rows("SELECT 1 FROM payment_events WHERE kind = 'token_exchanged'"))
    stored = len(DB.rows("SELECT 1 FROM payment_events WHERE kind = 'token_exchanged'"
                         " AND (detail->>'stored')::boolean"))
    _, bank_tokens = sandbox_admin(A.sandbox, "requests?operation=token")

    sampler.finish()
    server.shutdown()
    max_backends = max(n for _, n, _ in sampler.samples)
    max_active = max(a for _, _, a in sampler.samples)
    bound = POOL + REPLICAS
    with Inbox.lock:
        received, bad = list(Inbox.received), list(Inbox.bad)
    types = collections.Counter(r[1] for r in received)
    dup = len(received) - len({r[0] for r in received})
    first_seen, gaps = {}, []
    for r in received:
        if r[0] in first_seen:
            gaps.append(f"{(r[4] - first_seen[r[0]][4]) * 1000:.0f} ms"
                        + (" same timestamp" if r[5] == first_seen[r[0]][5] else " new timestamp"))
        else:
            first_seen[r[0]] = r
    five_xx = sum(v for k, v in statuses.items() if isinstance(k, int) and (k == 0 or k >= 500))

    table = [
        ("replicas", f"{REPLICAS} serve through {BEST}, default_pool_size {POOL}"),
        ("payments created / approved", f"{PAYMENTS} / {PAYMENTS} ({SHOPPERS} bank shoppers, 3 payments each, one per replica)"),
        ("created, signed, all paid (s from start)", f"{created - t0:.1f}, {signed - t0:.1f}, "
         + (f"{paid_at - t0:.1f}" if paid else "NOT within 180 s")),
        ("final statuses", ", ".join(f"{k} {v}" for k, v in sorted(by_status.items()))),
        ("webhooks received / verified / failed verification", f"{len(received) + len(bad)} / {len(received)} / {len(bad)}"),
        ("webhooks by type", ", ".join(f"{k} {v}" for k, v in sorted(types.items()))),
        ("paid payments with a verified payment.paid webhook",
         f"{len({r[2] for r in received if r[1] == 'payment.paid'} & set(ids))} / {PAYMENTS}"
         + (f" ({hooks_at - t0:.1f} s)" if hooks else "")),
        ("webhook redeliveries (same webhook-id, all answered 200)", f"{dup}" + (f" (after {', '.join(gaps[:6])})" if gaps else "")),
        ("code exchanges recorded / stored / bank token calls", f"{exchanges} / {stored} / {len(bank_tokens or [])}"),
        ("shoppers whose kept token is not the newest", f"{len(token_problems) + sql_bad}"
         f" (of {len(rows)}; one live token each, issued_at = newest exchanged)"),
        ("funds calls with the kept token", ", ".join(f"{k}: {v}" for k, v in sorted(funds.items(), key=str))),
        ("pisgate answers by status", ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items()))),
        ("pg_stat_activity samples (every 100 ms)", f"{len(sampler.samples)} over {sampler.samples[-1][0] - sampler.samples[0][0]:.0f} s"
         + (f"; application names seen: {', '.join(sorted(sampler.names))}" if sampler.names else "")),
        ("max client backends of pisgate (bound)", f"{max_backends} (bound {bound} = pool {POOL} + {REPLICAS} direct;"
                                                  f" max active {max_active})"),
    ]
    failures = []
    if not paid or by_status.get("paid") != PAYMENTS:
        failures.append("not every payment paid")
    if bad:
        failures.append(f"{len(bad)} webhooks failed verification")
    if not hooks:
        failures.append("a paid payment had no verified payment.paid webhook")
    if token_problems or sql_bad:
        failures.append("a kept token is not the newest")
    if funds.get(200) != PAYMENTS:
        failures.append("a funds call with the kept token failed")
    if max_backends > bound:
        failures.append(f"PostgreSQL saw {max_backends} client backends > {bound}")
    if five_xx:
        failures.append(f"{five_xx} answers 5xx or none")
    return table, failures, token_problems, bad


def run_threads(target, n):
    errors = []

    def wrap(k):
        try:
            target(k)
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))
    ts = [threading.Thread(target=wrap, args=(k,)) for k in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=600)
    if errors:
        raise SystemExit("check failed: " + "; ".join(errors[:5]))


# -- (b) the benchmark ---------------------------------------------------------------------------




FIRST_ERRORS = collections.Counter()  # the first answer other than 201 of each wrk process


def wrk_round(bases, seconds, tag):
    """One wrk per replica at the same time, the connections split evenly; payments/s is the
    sum of their 201s over the run."""
    script = os.path.join(A.work, "post.lua")
    with open(script, "w") as f:
        f.write(WRK_SCRIPT)
    per = BENCH_CONNECTIONS // len(bases)
    procs = []
    for n, base in enumerate(bases):
        cmd = ["wrk", "-t", "1", "-c", str(per), "-d", f"{seconds}s", "--timeout", "10s", "-s", script,
               f"{base}/v1/payments", "--", f"{tag}-{n}", json.dumps(PAYMENT), KEY]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True))
    results = []
    for p in procs:
        out, _ = p.communicate(timeout=seconds + 60)
        m = re.search(r"^RESULT (\{.*\})$", out, re.M)
        if not m:
            raise SystemExit("wrk printed no result:\n" + out)
        results.append(json.loads(m.group(1)))
        for line in re.findall(r"^FIRST_ERROR (.*)$", out, re.M):
            FIRST_ERRORS[re.sub(r'"(instance|trace_id|request_id)":"[^"]*"', "", line)[:120]] += 1
    secs = max(r["seconds"] for r in results)
    return {
        "rps": sum(r["created"] for r in results) / secs,
        "seconds": secs,
        "errors": sum(r["other"] + r["socket_errors"] for r in results),
        "p50": statistics.median(r["p50_ms"] for r in results),
        "p99": max(r["p99_ms"] for r in results),
    }


def bouncer_totals(port):
    """PgBouncer's running totals for database pisgate: exchanges with a client that it
    forwarded (`total_query_count`: one per request that ends in ReadyForQuery) and
    transactions (`total_xact_count`; an autocommit statement is one). Read by column name:
    1.24 has a column 1.18 has not."""
    out = subprocess.run([os.path.join(A.pg_bindir, "psql"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres",
                          "-d", "pgbouncer", "-qAX", "-F", "\t", "-c", "SHOW STATS"],
                         check=True, capture_output=True, text=True, timeout=30).stdout.splitlines()
    header = out[0].split("\t")
    for line in out[1:]:
        row = dict(zip(header, line.split("\t")))
        if row.get("database") == "pisgate":
            return int(row["total_query_count"]), int(row["total_xact_count"])
    return 0, 0


def backend_states():
    """pisgate's backends by state, and PgBouncer's pool (clients waiting, servers in use)."""
    states = DB.rows("SELECT state, count(*) FROM pg_stat_activity WHERE datname = 'pisgate'"
                     " AND backend_type = 'client backend' AND application_name IS DISTINCT FROM 'pisgate-scripts'"
                     " GROUP BY 1 ORDER BY 1")
    stuck = DB.rows("SELECT left(regexp_replace(query, '\\s+', ' ', 'g'), 60), count(*) FROM pg_stat_activity"
                    " WHERE datname = 'pisgate' AND state = 'idle in transaction' GROUP BY 1 ORDER BY 2 DESC LIMIT 3")
    pools = Psql(A.pg_bindir, A.bouncer_port, "pgbouncer").rows("SHOW POOLS")
    pool = next((r for r in pools if r[0] == "pisgate"), None)
    # SHOW POOLS on 1.18: database, user, cl_active, cl_waiting, cl_active_cancel_req,
    # cl_waiting_cancel_req, sv_active, sv_active_cancel, sv_being_canceled, sv_idle, ...
    return (", ".join(f"{st or '?'} {n}" for st, n in states)
            + (f"; PgBouncer: cl_active {pool[2]} cl_waiting {pool[3]} sv_active {pool[6]} sv_idle {pool[9]}"
               if pool and len(pool) > 9 else "")
            + (f"; idle in transaction after: {'; '.join(f'{n}x {q!r}' for q, n in stuck)}" if stuck else ""))


DIRECT = "1 direct to PostgreSQL"
BEST_1 = "1 through PgBouncer 1.24 (transaction-prepared)"


def bench(replicas, direct, ref):
    rows = []
    # (name, replicas, PgBouncer port or None)
    configs = [(DIRECT, [direct], None)]
    configs += [(BEST_1 if k == 1 else f"{k} through PgBouncer 1.24 (transaction-prepared)", replicas[:k],
                 A.bouncer_port) for k in (1, 2, 3)]
    configs.append(("1 through PgBouncer 1.18 (transaction, reference)", [ref], A.ref_bouncer_port))
    for n, (name, rs, _) in enumerate(configs):
        wrk_round([r.base for r in rs], 2, f"warm-{n}")
    # Rounds interleave the configurations, so a change in the machine's other load (two
    # cores, shared) spreads over all of them rather than landing on one.
    results = collections.defaultdict(list)
    per_payment = collections.defaultdict(lambda: [0, 0, 0])  # exchanges, transactions, payments
    for i in range(BENCH_RUNS):
        for n, (name, rs, port) in enumerate(configs):
            before = bouncer_totals(port) if port else None
            results[name].append(wrk_round([r.base for r in rs], BENCH_SECS, f"b{n}r{i}"))
            if port:
                after = bouncer_totals(port)
                acc = per_payment[name]
                acc[0] += after[0] - before[0]
                acc[1] += after[1] - before[1]
                acc[2] += round(results[name][-1]["rps"] * results[name][-1]["seconds"])
            log(f"  round {i + 1} {name}: {results[name][-1]['rps']:.0f}/s, {results[name][-1]['errors']} errors;"
                f" after it: {backend_states()}")
    for name, _, _ in configs:
        log(f"bench {name}, runs in order: "
            + ", ".join(f"{r['rps']:.0f}/s ({r['errors']} errors, p99 {r['p99']:.0f} ms)" for r in results[name]))
        runs = sorted(results[name], key=lambda r: r["rps"])
        r = runs[len(runs) // 2]
        log(f"bench {name}: {r['rps']:.0f} payments/s ({[round(x['rps']) for x in runs]})")
        ex, xa, made = per_payment[name]
        counts = (f"{ex / made:.1f} / {xa / made:.1f}" if made else "-")
        rows.append((name, dict(r, errors=sum(x["errors"] for x in runs)), [x["rps"] for x in results[name]], counts))
    return rows


def main():
    load = open("/proc/loadavg").read().split()[:3]
    sandbox = start_sandbox(A.bin, A.work, A.pids, A.sandbox)
    hooks_env = {
        "PISGATE__POLLER__SIGNING_INTERVAL": "1s",
        "PISGATE__POLLER__AUTHORIZED_INTERVAL": "1s",
        "PISGATE__POLLER__IDLE_WAIT": "1s",
        "PISGATE__POLLER__MAX_BACKOFF": "2s",
        "PISGATE__WEBHOOKS__RETRY_SCHEDULE": "1s,2s,5s",
    }
    replicas = [Replica(A.bin, A.work, A.pids, n, hooks_env).start() for n in range(REPLICAS)]
    log(f"mode {A.mode}: sandbox and {REPLICAS} replicas up; the check")
    table, failures, token_problems, bad = check(replicas)
    for r in replicas:
        r.stop()
    print_table(f"scale check ({A.mode}): {REPLICAS} replicas, {BEST}, DIRECT_URL to PostgreSQL", table)
    for item in token_problems[:10]:
        print(f"  token: {item}")
    for item in bad[:10]:
        print(f"  webhook: {item}")
    print(f"RESULT scale check {'PASS' if not failures else 'FAIL: ' + '; '.join(failures)}")

    # The benchmark: creation only (no shoppers, poller and webhooks off), so the figure is
    # the API's, comparable across replica counts.
    log("the benchmark")
    bench_env = {"PISGATE__POLLER__ENABLED": "false", "PISGATE__WEBHOOKS__ENABLED": "false",
                 "PISGATE__PAYMENTS__SIGNING_WINDOW_SECS": "3600"}
    replicas = [Replica(A.bin, A.work, A.pids, f"bench-{n}", bench_env).start() for n in range(REPLICAS)]
    direct_env = dict(bench_env)
    direct_env["PISGATE__DATABASE__URL"] = f"postgres://postgres@127.0.0.1:{A.pg_port}/pisgate"
    direct_env["PISGATE__DATABASE__POOLER"] = None
    direct_env["PISGATE__DATABASE__DIRECT_URL"] = None
    direct = Replica(A.bin, A.work, A.pids, "bench-direct", direct_env).start()
    ref_env = dict(bench_env)
    ref_env["PISGATE__DATABASE__URL"] = f"postgres://postgres@127.0.0.1:{A.ref_bouncer_port}/pisgate"
    ref_env["PISGATE__DATABASE__POOLER"] = "transaction"
    ref = Replica(A.bin, A.work, A.pids, "bench-ref", ref_env).start()
    rows = bench(replicas, direct, ref)
    # Every request is over (wrk closed its connections mid-request at the end of each run):
    # nothing may still hold a transaction open. Behind a transaction pooler such a backend
    # also pins one of PgBouncer's server connections until its client uses it again.
    time.sleep(5)
    leaked = int(DB.value("SELECT count(*) FROM pg_stat_activity WHERE datname = 'pisgate'"
                          " AND state LIKE 'idle in transaction%'"))
    after = backend_states()
    for r in replicas + [direct, ref]:
        r.stop()
    sandbox.stop()
    build = f"{A.build} build" if A.build in ("debug", "release") else A.build
    runs = f"1 run of {BENCH_SECS} s" if QUICK else f"median of {BENCH_RUNS} runs of {BENCH_SECS} s"
    print()
    print(f"payments/s straight to PostgreSQL and through PgBouncer (default_pool_size {POOL}: {BEST};"
          f" reference {REF}) on {os.cpu_count()} cores,"
          f" {build}, {runs} after a 2 s warm-up; wrk, one process per replica, {BENCH_CONNECTIONS} connections"
          f" in all, POST /v1/payments with unique keys; poller and webhooks off; PostgreSQL fsync=on;"
          f" load average at start {' '.join(load)}, at the end {' '.join(open('/proc/loadavg').read().split()[:3])}")
    print("| replicas | payments/s (median) | runs in order | p50 ms | p99 ms | errors (all runs) |"
          " exchanges / transactions per payment (PgBouncer's count) |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for name, r, all_runs, counts in rows:
        print(f"| {name} | {r['rps']:.0f} | {' / '.join(f'{x:.0f}' for x in all_runs)} | {r['p50']:.1f} |"
              f" {r['p99']:.1f} | {r['errors']} | {counts} |")
    by_name = {name: r["rps"] for name, r, _, _ in rows}
    ratio = by_name[BEST_1] / by_name[DIRECT] if by_name[DIRECT] else 0.0
    verdict = "PASS" if ratio >= MIN_RATIO else ("FAIL" if not QUICK else "below (quick run: not judged)")
    print(f"RESULT ratio through PgBouncer / direct, 1 replica: {by_name[BEST_1]:.0f} / {by_name[DIRECT]:.0f} ="
          f" {ratio:.2f} (at least {MIN_RATIO}): {verdict}")
    if not QUICK and ratio < MIN_RATIO:
        failures.append(f"through PgBouncer only {ratio:.2f} of direct (< {MIN_RATIO})")
    for e, n in FIRST_ERRORS.most_common(3):
        print(f"first answer other than 201 (in {n} wrk runs): {e}")
    print(f"transactions left open 5 s after the benchmark (idle in transaction): {leaked}; {after}")
    if leaked:
        failures.append(f"{leaked} transactions left open after the benchmark's cancelled requests")
    errors = sum(r["errors"] for _, r, _, _ in rows)
    if errors:
        failures.append(f"{errors} benchmark requests not answered 201")
    print(f"RESULT scale {'PASS' if not failures else 'FAIL'}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
