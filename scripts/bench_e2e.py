#!/usr/bin/env python3
"""End-to-end benchmark: PostgreSQL (durable), the sandbox bank and `pisgate serve` as separate
processes on this machine, load from wrk, and pgbench with the same durable write set as the
floor, in one run. Run it with `scripts/bench.sh e2e [--quick]`, which builds and starts
PostgreSQL; this script expects:

  PISGATE_BIN        the pisgate binary
  PG_PORT            a running cluster with fsync and synchronous_commit on
  PGBENCH            the pgbench binary

Prints one table: payments/s, p50, p99, errors, CPU per process and RSS at 8, 32 and 128
connections (median of 3 runs of 10 s; --quick: one run of 3 s at 8 and 32), the pgbench
floor beside them and the ratio; a second table with the CPU milliseconds per payment of each
role (serve, PostgreSQL = every process of the cluster, the sandbox, wrk), the WAL bytes per
payment, and two floors measured in the same run: the own-schema floor (pgbench writing
pisgate's tables, with all of their indexes and triggers) and the minimal-schema floor (pgbench
on a database with only the writes a payment inherently needs, primary keys only), each with
its ratio, PostgreSQL's CPU and WAL per floor transaction, and PostgreSQL's CPU per payment over
the minimal floor's per transaction; the machine's RSA-2048 signature time (`openssl speed`,
before and after the runs) and serve's CPU per payment in those signatures, which moves less
with the host's speed than milliseconds do; status polls/s of one replica with the sandbox in its own
process; the delay from pisgate recording a status change to the merchant's receiver; the
time from start to /readyz; RSS idle and under load; at 32 connections, the share of the
updates of `payments`, `idempotency_keys` and `payment_polls` that were HOT (the new row version
on its page, no index entries) and where PostgreSQL's time goes by statement.

BENCH_SQL="ALTER TABLE ..." runs that SQL once serve has migrated the database, before any
load: a schema experiment measured without a migration (docs/perf/postgres.md).
"""

import base64
import http.server
import json
import os
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from datetime import datetime

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from drills import PAYMENT, WRK_SCRIPT  # noqa: E402

QUICK = "--quick" in sys.argv
RUNS = 1 if QUICK else 3
SECONDS = 3 if QUICK else 10
CONNECTIONS = [8, 32] if QUICK else [8, 32, 128]
# BENCH_CONNECTIONS=32 BENCH_CREATE_ONLY=1: one connection count, creation only (profiling).
if os.environ.get("BENCH_CONNECTIONS"):
    CONNECTIONS = [int(c) for c in os.environ["BENCH_CONNECTIONS"].split(",")]
CREATE_ONLY = bool(os.environ.get("BENCH_CREATE_ONLY"))
POLL_PAYMENTS = 300 if QUICK else 2000
POLL_WINDOW = 3 if QUICK else 10
WEBHOOK_PAYMENTS = 100 if QUICK else 400
WEBHOOK_RATE = 50  # status changes per second

BIN = os.environ["PISGATE_BIN"]
PG_PORT = os.environ["PG_PORT"]
PGBENCH = os.environ.get("PGBENCH", "pgbench")
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CLK = os.sysconf("SC_CLK_TCK")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def psql(sql, db="pisgate"):
    return subprocess.run(
        ["psql", "-h", "127.0.0.1", "-p", PG_PORT, "-U", "postgres", "-d", db, "-qtAX", "-c", sql],
        check=True, capture_output=True, text=True,
    ).stdout.strip()


def checkpoint_first():
    """No checkpoint lands inside a measured run: one here, before the warm-up, and
    scripts/bench.sh e2e sets max_wal_size and checkpoint_timeout so that no other starts
    while the benchmark runs (a few GB of WAL). Before, one landed in one run or another: the
    run it landed in (pisgate's or a floor's) wrote full-page images the others did not and
    came out 20-40% lower, and the minimal floor moved between 2,400 and 3,300 TPS."""
    psql("CHECKPOINT", db="postgres")


def cpu_ticks(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total


def rsa_sign_ms():
    """How long one RSA-2048 signature takes on this machine now (`openssl speed`), or None.
    serve signs every bank request with one, so it is the unit serve's CPU per payment is
    compared in: the machine's speed moves from run to run on shared hosts (0.24-0.37 ms
    here), that unit much less."""
    try:
        out = subprocess.run(["openssl", "speed", "-seconds", "1" if QUICK else "2", "rsa2048"],
                             capture_output=True, text=True, timeout=120).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"^rsa\s*2048 bits\s+([0-9.]+)s", out, re.MULTILINE)
    return float(m.group(1)) * 1000 if m else None


def rss_mb(pid, field="VmRSS"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


_postmaster = None


def postmaster_pid():
    """The benchmark cluster's postmaster (other clusters may run on this machine)."""
    global _postmaster
    if _postmaster is None:
        # The checkpointer lives as long as the cluster; its parent is the postmaster.
        backend = int(psql("SELECT pid FROM pg_stat_activity WHERE backend_type = 'checkpointer'"))
        with open(f"/proc/{backend}/status") as f:
            _postmaster = int(next(l.split()[1] for l in f if l.startswith("PPid:")))
    return _postmaster


def postgres_ticks():
    """CPU of the whole cluster: the postmaster, its live children, and the children that
    exited (backends of connections that closed), which the kernel adds to the postmaster's
    cutime/cstime. Racy while connections close (a backend reaped between the two reads is
    in neither): for a measured window use ClusterCpu."""
    pm = postmaster_pid()
    with open(f"/proc/{pm}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    total = sum(int(x) for x in fields[11:15])
    return total + cpu_ticks(postgres_children())


def postgres_children():
    pm = postmaster_pid()
    try:
        with open(f"/proc/{pm}/task/{pm}/children") as f:
            return [int(p) for p in f.read().split()]
    except FileNotFoundError:
        out = subprocess.run(["pgrep", "-P", str(pm)], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]


def pid_ticks(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (FileNotFoundError, ProcessLookupError):
        return None


class ClusterCpu:
    """The cluster's CPU over a window, every process of it: the postmaster and each child
    (background processes, backends), sampled every 50 ms, each counted from its value at the
    start (0 for a backend born in the window) to the last value seen. Connections that open
    and close in the window (pgbench's, psql's) are counted without the race of reading the
    postmaster's cutime beside its live children; what a backend spends after its last sample
    (at most 50 ms of it) is missed."""

    def __init__(self):
        self.start = {}
        self.last = {}
        self.stop_flag = threading.Event()
        pm = postmaster_pid()
        for pid in [pm] + postgres_children():
            t = pid_ticks(pid)
            if t is not None:
                self.start[pid] = self.last[pid] = t
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _sample(self):
        pm = postmaster_pid()
        for pid in [pm] + postgres_children():
            t = pid_ticks(pid)
            if t is not None:
                self.start.setdefault(pid, 0)
                self.last[pid] = t

    def _run(self):
        while not self.stop_flag.wait(0.05):
            self._sample()

    def stop(self):
        """Ticks used in the window."""
        self.stop_flag.set()
        self.thread.join()
        self._sample()
        return sum(self.last[p] - self.start[p] for p in self.last)


def http_get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read()


def http_post_form(url, fields, timeout=5):
    data = urllib.parse.urlencode(fields).encode()
    with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=timeout) as r:
        return r.status, r.read()


def http_json(method, url, body=None, headers=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        req.add_header("content-type", "application/json")
    with urllib.request.urlopen(req, timeout=10) as r:
        text = r.read()
        return r.status, (json.loads(text) if text else None)


class Stack:
    """The three processes and their settings."""

    def __init__(self, work):
        self.work = work
        self.port = free_port()
        self.admin_port = free_port()
        self.sandbox_port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.sandbox = f"http://127.0.0.1:{self.sandbox_port}"
        keys = os.path.join(work, "keys")
        subprocess.run([BIN, "keys", "generate", "--out", keys], check=True, capture_output=True)
        secrets = {}
        for name in ("token-key", "ledger-key"):
            path = os.path.join(work, name)
            with open(path, "w") as f:
                f.write(base64.b64encode(os.urandom(32)).decode())
            secrets[name] = path
        self.env = dict(os.environ)
        self.env.update({
            "PISGATE_ENV": "sandbox",
            "RUST_LOG": "warn",
            "PISGATE__DATABASE__URL": f"postgres://postgres@127.0.0.1:{PG_PORT}/pisgate",
            "PISGATE__DATABASE__MAX_CONNECTIONS": "20",
            "PISGATE__SERVER__LISTEN": f"127.0.0.1:{self.port}",
            "PISGATE__ADMIN__LISTEN": f"127.0.0.1:{self.admin_port}",
            "PISGATE__SERVER__PUBLIC_URL": self.base,
            "PISGATE__SANDBOX__LISTEN": f"127.0.0.1:{self.sandbox_port}",
            "PISGATE__SANDBOX__CLIENT_ID": "bench-client",
            "PISGATE__SANDBOX__CLIENT_SECRET": "bench-secret",
            "PISGATE__SANDBOX__PUBLIC_KEY_FILE": os.path.join(keys, "public.pem"),
            "PISGATE__NORDEA__BASE_URL": f"{self.sandbox}/personal",
            "PISGATE__NORDEA__CLIENT_ID": "bench-client",
            "PISGATE__NORDEA__CLIENT_SECRET": "bench-secret",
            "PISGATE__NORDEA__PRIVATE_KEY_FILE": os.path.join(keys, "private.pem"),
            "PISGATE__TOKENS__ENCRYPTION_KEY_FILE": secrets["token-key"],
            "PISGATE__LEDGER__KEY_FILE": secrets["ledger-key"],
            # Measure pisgate, not its per-merchant limiter.
            "PISGATE__RATE_LIMIT__REQUESTS_PER_WINDOW": "100000000",
            "PISGATE__WEBHOOKS__ALLOW_INSECURE_URLS": "true",
            "PISGATE__PAYMENTS__SIGNING_WINDOW_SECS": "3600",
        })
        subprocess.run([BIN, "migrate"], env=self.env, check=True, capture_output=True)
        out = subprocess.run(
            [BIN, "merchant", "create", "--name", "Bench shop", "--return-origin", "https://shop.example"],
            env=self.env, check=True, capture_output=True, text=True,
        ).stdout
        merchant = json.loads(out)
        self.api_key = merchant["api_key"]
        self.merchant_id = merchant["id"]
        self.sandbox_proc = None
        self.serve_proc = None

    def start_sandbox(self):
        self.sandbox_proc = subprocess.Popen(
            [BIN, "sandbox"], env=self.env, stdout=subprocess.DEVNULL,
            stderr=open(os.path.join(self.work, "sandbox.log"), "ab"))
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                if http_get(f"{self.sandbox}/sandbox/admin/health")[0] == 200:
                    return
            except OSError:
                time.sleep(0.02)
        raise SystemExit("the sandbox did not start; see sandbox.log")

    def restart_sandbox(self):
        self.sandbox_proc.kill()
        self.sandbox_proc.wait()
        self.start_sandbox()

    def metrics_url(self):
        return f"http://127.0.0.1:{self.admin_port}/metrics"

    def ready_url(self):
        return f"http://127.0.0.1:{self.admin_port}/readyz"

    def start_serve(self, extra=None):
        env = dict(self.env)
        env.update(extra or {})
        started = time.perf_counter()
        self.serve_proc = subprocess.Popen(
            [BIN, "serve"], env=env, stdout=open(os.path.join(self.work, "serve.log"), "ab"),
            stderr=open(os.path.join(self.work, "serve.log"), "ab"))
        urls = [self.ready_url(), f"{self.base}/readyz"]
        deadline = time.time() + 30
        while time.time() < deadline:
            for url in urls:
                try:
                    if http_get(url, timeout=1)[0] == 200:
                        self.ready_url = lambda u=url: u
                        return (time.perf_counter() - started) * 1000
                except OSError:
                    pass
            if self.serve_proc.poll() is not None:
                raise SystemExit("serve exited; see serve.log")
            time.sleep(0.002)
        raise SystemExit("serve did not become ready; see serve.log")

    def stop_serve(self):
        if self.serve_proc:
            self.serve_proc.send_signal(signal.SIGTERM)
            self.serve_proc.wait(timeout=30)
            self.serve_proc = None

    def stop(self):
        self.stop_serve()
        if self.sandbox_proc:
            self.sandbox_proc.kill()
            self.sandbox_proc.wait()





def run_wrk(stack, script, connections, seconds, tag):
    threads = min(2, connections)
    cmd = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s", "--timeout", "10s",
           "-s", script, stack.base + "/v1/payments", "--", tag, json.dumps(PAYMENT), stack.api_key]
    pids = {"serve": [stack.serve_proc.pid], "sandbox": [stack.sandbox_proc.pid]}
    before = {k: cpu_ticks(v) for k, v in pids.items()}
    wal_before = wal_lsn()
    cluster = ClusterCpu()
    before["postgres"] = 0
    wall = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    pids["wrk"] = [proc.pid]
    before["wrk"] = cpu_ticks(pids["wrk"])
    # wrk's own CPU, read before it exits.
    wrk_ticks = [before["wrk"]]
    def sample():
        while proc.poll() is None:
            t = cpu_ticks(pids["wrk"])
            if t:
                wrk_ticks.append(t)
            time.sleep(0.2)
    sampler = threading.Thread(target=sample)
    sampler.start()
    out, _ = proc.communicate()
    sampler.join()
    wall = time.perf_counter() - wall
    after = {k: cpu_ticks(v) for k, v in pids.items() if k != "wrk"}
    after["postgres"] = cluster.stop()
    wal = wal_bytes_since(wal_before)
    m = re.search(r"^RESULT (\{.*\})$", out, re.M)
    if not m:
        raise SystemExit("wrk printed no result:\n" + out)
    r = json.loads(m.group(1))
    for line in re.findall(r"^FIRST_ERROR (.*)$", out, re.M):
        print(f"  {tag}: first answer that was not 201: {line}", file=sys.stderr)
    r["rps"] = r["created"] / r["seconds"]
    r["errors"] = r["other"] + r["socket_errors"]
    r["cpu"] = {k: (after[k] - before[k]) / CLK / wall * 100 for k in after}
    r["cpu"]["wrk"] = (max(wrk_ticks) - before["wrk"]) / CLK / wall * 100
    # CPU milliseconds per payment created, per role (postgres: every process of the cluster).
    created = max(r["created"], 1)
    r["cpu_ms"] = {k: (after[k] - before[k]) / CLK * 1000 / created for k in after}
    r["cpu_ms"]["wrk"] = (max(wrk_ticks) - before["wrk"]) / CLK * 1000 / created
    r["wal_per_payment"] = wal / created
    r["rss_serve"] = rss_mb(stack.serve_proc.pid)
    return r


def wal_lsn():
    return psql("SELECT pg_current_wal_insert_lsn()", db="postgres")


def wal_bytes_since(lsn):
    """WAL bytes the cluster wrote since `lsn` (the same quantity as pg_stat_wal.wal_bytes,
    read from the insert position, which has no stats-flush delay)."""
    return int(psql(f"SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '{lsn}')", db="postgres"))


PGBENCH_SCRIPT = """
\\set n random(1, 9000000000000000000)
\\set id random(1, 9000000000000000000)
BEGIN;
INSERT INTO idempotency_keys (merchant_id, key, request_hash, expires_at, locked_until, payment_id)
  VALUES ('{merchant}', 'floor-' || :n, decode(md5(:n::text), 'hex'), now() + interval '1 day', now() + interval '15 seconds', NULL);
INSERT INTO payments (id, merchant_id, status, amount_minor, currency, country, request, merchant_reference,
                      return_url, metadata, state_hash, state_expires_at, expires_at, sign_horizon_at,
                      authorize_token, authorize_url, initiation, initiation_attempts, ledger_seq, ledger_head)
  VALUES (md5(:id::text)::uuid, '{merchant}', 'awaiting_authorization', 1050, 'EUR', 'FI', '{request}', NULL,
          'https://shop.example/done', '{{}}', decode(md5(:n::text), 'hex'), now() + interval '1 hour',
          now() + interval '15 minutes', now() + interval '1 hour', md5(:n::text), 'https://x/authorize',
          'pending', 1, 1, sha256(:id::text::bytea));
INSERT INTO payment_events (payment_id, seq, kind, new_status, detail, created_at, prev_hash, hash, hash_version, key_id)
  VALUES (md5(:id::text)::uuid, 1, 'created', 'awaiting_authorization', '{{"amount_minor":1050,"currency":"EUR","country":"FI","attempt":1}}',
          now(), NULL, sha256(:id::text::bytea), 2, 'k');
UPDATE idempotency_keys SET payment_id = md5(:id::text)::uuid WHERE merchant_id = '{merchant}' AND key = 'floor-' || :n;
COMMIT;
BEGIN;
UPDATE payments SET bank_payment_id = md5(:n::text), authorization_url = 'https://bank/sign', bank_status = 'PendingUserApproval',
       initiation = 'initiated', ledger_seq = 2, ledger_head = sha256(:n::text::bytea)
  WHERE id = md5(:id::text)::uuid;
INSERT INTO payment_events (payment_id, seq, kind, bank_status, detail, created_at, prev_hash, hash, hash_version, key_id)
  VALUES (md5(:id::text)::uuid, 2, 'initiated', 'PendingUserApproval', '{{"attempt":1}}', now(),
          sha256(:id::text::bytea), sha256(:n::text::bytea), 2, 'k');
UPDATE idempotency_keys SET response_status = 201, response_body = '{{"id":"x"}}', completed_at = now()
  WHERE merchant_id = '{merchant}' AND key = 'floor-' || :n;
COMMIT;
"""


# The minimal-schema floor: only the writes a payment inherently needs, on tables with their
# primary keys and the one unique index (the idempotency key, here its primary key) and
# nothing else: no secondary index, trigger, foreign key or JSON column. It lives in a database
# of its own so that it shares nothing with pisgate's tables but the cluster.
MINIMAL_DB = "floor_minimal"
MINIMAL_SCHEMA = """
CREATE TABLE idempotency_keys (
    merchant_id uuid NOT NULL,
    key text NOT NULL,
    request_hash bytea NOT NULL,
    payment_id uuid NOT NULL,
    response_status smallint,
    response_body text,
    PRIMARY KEY (merchant_id, key)
);
CREATE TABLE payments (
    id uuid PRIMARY KEY,
    merchant_id uuid NOT NULL,
    status text NOT NULL,
    amount_minor bigint NOT NULL,
    currency text NOT NULL,
    creditor_account text NOT NULL,
    return_url text NOT NULL,
    bank_payment_id text,
    authorization_url text,
    created_at timestamptz NOT NULL
);
CREATE TABLE payment_events (
    payment_id uuid NOT NULL,
    seq integer NOT NULL,
    kind text NOT NULL,
    status text NOT NULL,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (payment_id, seq)
);
"""

MINIMAL_SCRIPT = """
\\set n random(1, 9000000000000000000)
BEGIN;
INSERT INTO idempotency_keys (merchant_id, key, request_hash, payment_id)
  VALUES ('{merchant}', 'floor-' || :n, decode(md5(:n::text), 'hex'), md5(:n::text)::uuid);
INSERT INTO payments (id, merchant_id, status, amount_minor, currency, creditor_account, return_url, created_at)
  VALUES (md5(:n::text)::uuid, '{merchant}', 'awaiting_authorization', 1050, 'EUR', 'FI1410093000123458',
          'https://shop.example/done', now());
INSERT INTO payment_events (payment_id, seq, kind, status, created_at)
  VALUES (md5(:n::text)::uuid, 1, 'created', 'awaiting_authorization', now());
COMMIT;
BEGIN;
UPDATE payments SET bank_payment_id = md5(:n::text), authorization_url = 'https://bank/sign'
  WHERE id = md5(:n::text)::uuid;
INSERT INTO payment_events (payment_id, seq, kind, status, created_at)
  VALUES (md5(:n::text)::uuid, 2, 'initiated', 'awaiting_authorization', now());
UPDATE idempotency_keys SET response_status = 201, response_body = '{{"id":"x"}}'
  WHERE merchant_id = '{merchant}' AND key = 'floor-' || :n;
COMMIT;
"""


def create_minimal_floor_db():
    psql(f"DROP DATABASE IF EXISTS {MINIMAL_DB}", db="postgres")
    psql(f"CREATE DATABASE {MINIMAL_DB}", db="postgres")
    psql(MINIMAL_SCHEMA, db=MINIMAL_DB)


def run_pgbench(stack, connections, seconds, work, minimal=False):
    """One pgbench run of the floor (a transaction = one payment's two durable commits);
    returns TPS and PostgreSQL's CPU ms and WAL bytes per transaction."""
    script = os.path.join(work, "floor-minimal.sql" if minimal else "floor.sql")
    request = json.dumps(PAYMENT).replace("'", "''")
    with open(script, "w") as f:
        f.write((MINIMAL_SCRIPT if minimal else PGBENCH_SCRIPT).format(merchant=stack.merchant_id, request=request))
    wal_before = wal_lsn()
    cluster = ClusterCpu()
    out = subprocess.run(
        [PGBENCH, "-h", "127.0.0.1", "-p", PG_PORT, "-U", "postgres", "-n", "-M", "prepared",
         "-c", str(connections), "-j", str(min(2, connections)), "-T", str(seconds), "-f", script,
         MINIMAL_DB if minimal else "pisgate"],
        capture_output=True, text=True)
    ticks = cluster.stop()
    wal = wal_bytes_since(wal_before)
    if out.returncode != 0:
        raise SystemExit("pgbench failed:\n" + out.stdout + out.stderr)
    tps = float(re.search(r"tps = ([0-9.]+)", out.stdout).group(1))
    done = max(int(re.search(r"number of transactions actually processed: ([0-9]+)", out.stdout).group(1)), 1)
    return {"tps": tps, "pg_cpu_ms": ticks / CLK * 1000 / done, "wal": wal / done}


def median_floor(runs):
    return sorted(runs, key=lambda r: r["tps"])[len(runs) // 2]


def statement_profile(payments):
    """What serve's statements cost per payment created, from pg_stat_statements."""
    rows = psql("""
        SELECT calls, total_exec_time, mean_exec_time, plans, mean_plan_time,
               regexp_replace(left(query, 90), '\s+', ' ', 'g')
        FROM pg_stat_statements
        WHERE dbid = (SELECT oid FROM pg_database WHERE datname = 'pisgate')
          AND query NOT LIKE '%pg_stat_statements%'
        ORDER BY total_exec_time DESC""").splitlines()
    parsed = []
    for line in rows:
        calls, total, mean, plans, plan_mean, query = line.split("|", 5)
        parsed.append((int(calls), float(total), float(mean), int(plans), float(plan_mean), query))
    if not parsed or not payments:
        return None
    total_time = sum(r[1] for r in parsed) or 1.0
    statements = sum(r[0] for r in parsed)
    top = [(t / total_time * 100, c / payments, m, p / max(c, 1), pm, q.replace("|", "\\|"))
           for c, t, m, p, pm, q in parsed[:8]]
    return statements, statements / payments, top


def hot_updates():
    """Updates of the tables a payment rewrites, and how many were HOT (the new version on
    the old one's page, no index entry): a wide row's update that finds no room on its page
    writes an entry into every index of the table."""
    time.sleep(1.5)  # backends report their table counters at most once a second
    out = []
    for line in psql("""
        SELECT relname, n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables
        WHERE relname IN ('payments', 'idempotency_keys', 'payment_polls') ORDER BY relname""").splitlines():
        name, upd, hot = line.split("|")
        out.append((name, int(upd), int(hot)))
    return out


def median_run(runs):
    runs = sorted(runs, key=lambda r: r["rps"])
    return runs[len(runs) // 2]


def metric_sum(text, name):
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


def create_payments(stack, n, tag):
    """n payments, created from a few threads, each with its signing link opened (through the
    authorization hop to the sandbox's signing page), as a shopper would; returns (id, bank id)."""
    out = []
    lock = threading.Lock()
    def worker(k):
        for i in range(k, n, 8):
            status, p = http_json("POST", stack.base + "/v1/payments", PAYMENT, {
                "authorization": "Bearer " + stack.api_key, "idempotency-key": f"{tag}-{i}"})
            assert status == 201, p
            # The consent page, then its button: through the hop to the bank's page.
            assert http_get(p["authorization_url"])[0] == 200
            hop, token = p["authorization_url"].split("?t=")
            assert http_post_form(hop, {"t": token})[0] == 200
            with lock:
                out.append((p["id"], p["bank_payment_id"]))
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def polls_per_second(stack):
    """One replica polling POLL_PAYMENTS payments that are always due, with no rate limit.
    A fresh sandbox: the creation runs left it holding every payment and request they made,
    which would measure the simulator's memory rather than pisgate."""
    stack.stop_serve()
    stack.restart_sandbox()
    psql("UPDATE payment_polls SET next_poll_at = 'infinity' WHERE next_poll_at IS NOT NULL"
         if has_poll_table() else
         "UPDATE payments SET next_poll_at = 'infinity' WHERE next_poll_at IS NOT NULL")
    stack.start_serve({"PISGATE__POLLER__ENABLED": "false", "PISGATE__WEBHOOKS__ENABLED": "false"})
    created = create_payments(stack, POLL_PAYMENTS, "poll")
    stack.stop_serve()
    stack.start_serve({
        "PISGATE__POLLER__SIGNING_INTERVAL": "1ms",
        "PISGATE__POLLER__LATE_SIGNING_INTERVAL": "1ms",
        "PISGATE__POLLER__RATE_PER_SEC": "1000000",
        "PISGATE__POLLER__CONCURRENCY": "32",
        "PISGATE__POLLER__BATCH_SIZE": "100",
        "PISGATE__WEBHOOKS__ENABLED": "false",
        "PISGATE__REFRESHER__ENABLED": "false",
    })
    ids = ",".join(f"'{i}'" for i, _ in created)
    if has_poll_table():
        psql(f"UPDATE payment_polls SET next_poll_at = now() WHERE payment_id IN ({ids})")
    else:
        psql(f"UPDATE payments SET next_poll_at = now() WHERE id IN ({ids})")
    def count():
        _, body = http_json("GET", stack.sandbox + "/sandbox/admin/counters")
        return sum(v.get("received", 0) for k, v in body.items() if k.lower() == "status")
    time.sleep(1.5)
    pids = {"serve": [stack.serve_proc.pid], "sandbox": [stack.sandbox_proc.pid]}
    before_cpu = {k: cpu_ticks(v) for k, v in pids.items()}
    cluster = ClusterCpu()
    before, t0 = count(), time.perf_counter()
    time.sleep(POLL_WINDOW)
    polls, secs = count() - before, time.perf_counter() - t0
    cpu = {k: (cpu_ticks(v) - before_cpu[k]) / CLK / secs * 100 for k, v in pids.items()}
    cpu["postgres"] = cluster.stop() / CLK / secs * 100
    return polls / secs, cpu


_poll_table = None


def has_poll_table():
    global _poll_table
    if _poll_table is None:
        _poll_table = psql("SELECT to_regclass('payment_polls') IS NOT NULL") == "t"
    return _poll_table


class Receiver(http.server.BaseHTTPRequestHandler):
    # Keep-alive, as a merchant's endpoint behind a load balancer would.
    protocol_version = "HTTP/1.1"
    arrivals = {}

    def do_POST(self):
        now = time.time()
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        if body.get("type") == "payment.authorized":
            recorded = datetime.fromisoformat(body["timestamp"].replace("Z", "+00:00")).timestamp()
            Receiver.arrivals.setdefault(body["data"]["id"], now - recorded)
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def webhook_delay(stack):
    """From pisgate recording a status change (the webhook event's timestamp, written in the
    same transaction) to the receiver, with the default dispatcher settings."""
    stack.stop_serve()
    # The default schedule (a poll every 2 s while the shopper signs) and dispatcher; no
    # bank-call limit, so the poller is not what is measured.
    stack.start_serve({
        "PISGATE__POLLER__RATE_PER_SEC": "100000",
        "PISGATE__REFRESHER__ENABLED": "false",
    })
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hooks"
    status, _ = http_json("POST", stack.base + "/v1/webhook-endpoints",
                          {"url": url, "events": ["payment.authorized"]},
                          {"authorization": "Bearer " + stack.api_key})
    assert status == 201
    payments = create_payments(stack, WEBHOOK_PAYMENTS, "hook")
    # Created in one burst, these payments would all be polled in step; real ones arrive at
    # random moments, so spread their polls over the interval. Their first polls start after
    # the poller's idle wait (5 s: creation sends no NOTIFY), by when it sleeps until the
    # earliest due time and so keeps them spread; the changes begin once every payment has
    # been polled.
    psql("UPDATE payment_polls SET next_poll_at = now() + interval '6 seconds' + random() * interval '2 seconds'")
    time.sleep(9)
    # Status changes at WEBHOOK_RATE per second, at random moments (not in step with polls).
    forced_at = []
    for _, bank_id in payments:
        status, _ = http_json("PUT", f"{stack.sandbox}/sandbox/admin/payments/{bank_id}/status",
                              {"status": "Confirmed"})
        forced_at.append(time.time())
        time.sleep(random.expovariate(WEBHOOK_RATE))
    if os.environ.get("BENCH_DEBUG"):
        print(f"forced {len(forced_at)} changes over {forced_at[-1] - forced_at[0]:.1f} s", file=sys.stderr)
    deadline = time.time() + 60
    while len(Receiver.arrivals) < len(payments) and time.time() < deadline:
        time.sleep(0.1)
    server.shutdown()
    delays = sorted(Receiver.arrivals.values())
    if len(delays) < len(payments):
        raise SystemExit(f"only {len(delays)} of {len(payments)} webhooks arrived")
    pct = lambda p: delays[max(0, int(len(delays) * p + 0.999999) - 1)] * 1000
    return pct(0.5), pct(0.99), delays[-1] * 1000


def main():
    work = tempfile.mkdtemp(prefix="pisgate-bench-")
    stack = Stack(work)
    stack.start_sandbox()
    try:
        ready_ms = stack.start_serve()
        if os.environ.get("BENCH_SQL"):
            # An experiment's change to the schema serve migrated (BENCH_SQL="ALTER TABLE ...").
            psql(os.environ["BENCH_SQL"])
        time.sleep(0.5)
        rss_idle = rss_mb(stack.serve_proc.pid)
        script = os.path.join(work, "post.lua")
        with open(script, "w") as f:
            f.write(WRK_SCRIPT)
        rsa_before = rsa_sign_ms()
        checkpoint_first()
        # Warm up connections, caches and the sandbox's token.
        run_wrk(stack, script, 32, 2, "warm")
        create_minimal_floor_db()
        rows = []
        profile = None
        hot = None
        for c in CONNECTIONS:
            if c == 32:
                psql("SELECT pg_stat_statements_reset()")
                psql("SELECT pg_stat_reset()")
            runs = [run_wrk(stack, script, c, SECONDS, f"c{c}r{i}") for i in range(RUNS)]
            if c == 32:
                profile = statement_profile(sum(r["created"] for r in runs))
                hot = hot_updates()
            floors = [run_pgbench(stack, c, SECONDS, work) for _ in range(RUNS)]
            minimal = [run_pgbench(stack, c, SECONDS, work, minimal=True) for _ in range(RUNS)]
            rows.append((c, median_run(runs), median_floor(floors), median_floor(minimal)))
        rss_peak = rss_mb(stack.serve_proc.pid, "VmHWM")
        rsa_after = rsa_sign_ms()
        polls, poll_cpu, hook = None, None, None
        if not CREATE_ONLY:
            polls, poll_cpu = polls_per_second(stack)
            hook = webhook_delay(stack)
    finally:
        stack.stop()

    mode = "quick (1 run of 3 s)" if QUICK else f"median of {RUNS} runs of {SECONDS} s"
    print()
    print(f"pisgate e2e benchmark: {os.cpu_count()} cores, {mode}, PostgreSQL fsync=on synchronous_commit=on,")
    print("serve, sandbox, PostgreSQL and wrk as separate processes; floor = pgbench, same durable writes")
    print()
    print("| connections | payments/s | p50 ms | p99 ms | errors | floor TPS | ratio | CPU % serve / postgres / sandbox / wrk | serve RSS MB |")
    print("|---:|---:|---:|---:|---:|---:|---:|---|---:|")
    for c, r, floor, _ in rows:
        cpu = r["cpu"]
        print(f"| {c} | {r['rps']:.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['errors']} | {floor['tps']:.0f} | "
              f"{r['rps'] / floor['tps']:.2f} | {cpu['serve']:.0f} / {cpu['postgres']:.0f} / {cpu['sandbox']:.0f} / {cpu['wrk']:.0f} | "
              f"{r['rss_serve']:.0f} |")
    print()
    print("CPU per payment by role (ms; postgres = every process of the cluster) and WAL per payment; floors: "
          "own = pgbench on pisgate's tables, minimal = pgbench on the minimal schema (key, payment, event; "
          "update, event, key answer; primary keys only); ratio = payments/s / floor TPS; "
          "PG × minimal = PostgreSQL CPU per payment / the minimal floor's per transaction")
    print()
    print("| connections | serve ms | postgres ms | sandbox ms | wrk ms | WAL B/payment | own floor TPS | ratio own "
          "| minimal floor TPS | ratio minimal | floor PG ms/txn own / minimal | floor WAL B/txn own / minimal | PG × minimal |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---:|")
    for c, r, floor, minimal in rows:
        ms = r["cpu_ms"]
        print(f"| {c} | {ms['serve']:.3f} | {ms['postgres']:.3f} | {ms['sandbox']:.3f} | {ms['wrk']:.3f} | "
              f"{r['wal_per_payment']:.0f} | {floor['tps']:.0f} | {r['rps'] / floor['tps']:.2f} | "
              f"{minimal['tps']:.0f} | {r['rps'] / minimal['tps']:.2f} | "
              f"{floor['pg_cpu_ms']:.3f} / {minimal['pg_cpu_ms']:.3f} | {floor['wal']:.0f} / {minimal['wal']:.0f} | "
              f"{ms['postgres'] / minimal['pg_cpu_ms']:.2f} |")
    print()
    if rsa_before and rsa_after:
        unit = (rsa_before + rsa_after) / 2
        per = ", ".join(f"{c}: {r['cpu_ms']['serve'] / unit:.2f}" for c, r, _, _ in rows)
        print(f"RSA-2048 signature on this machine (openssl speed, before / after the runs): "
              f"{rsa_before:.3f} / {rsa_after:.3f} ms; serve's CPU per payment in signatures "
              f"(connections: signatures): {per}")
        print()
    if polls is not None:
        print(f"status polls/s, one replica, {POLL_PAYMENTS} payments always due, sandbox in its own process: {polls:.0f} "
              f"(CPU % serve {poll_cpu['serve']:.0f}, postgres {poll_cpu['postgres']:.0f}, sandbox {poll_cpu['sandbox']:.0f})")
        print(f"status change recorded -> merchant's receiver ({WEBHOOK_PAYMENTS} webhooks, ~{WEBHOOK_RATE} changes/s, one endpoint): "
              f"p50 {hook[0]:.1f} ms, p99 {hook[1]:.1f} ms, max {hook[2]:.1f} ms")
    print(f"start to /readyz 200: {ready_ms:.0f} ms; serve RSS idle {rss_idle:.0f} MB, peak under load {rss_peak:.0f} MB")
    if hot:
        print("updates at 32 connections that were HOT (no index entries): " + ", ".join(
            f"{name} {h}/{u} ({h / u * 100:.0f}%)" if u else f"{name} 0/0" for name, u, h in hot))
    if profile:
        statements, per_payment, top = profile
        print()
        print(f"where PostgreSQL's time goes at 32 connections (pg_stat_statements): "
              f"{per_payment:.1f} statements per payment (BEGIN/COMMIT included), top by total time:")
        print("| share | calls per payment | mean ms | plans per call | mean plan ms | statement |")
        print("|---:|---:|---:|---:|---:|---|")
        for share, calls, mean, plans, plan_mean, query in top:
            print(f"| {share:.0f}% | {calls:.2f} | {mean:.3f} | {plans:.2f} | {plan_mean:.3f} | `{query}` |")
    errors = sum(r["errors"] for _, r, _, _ in rows)
    if errors:
        print(f"{errors} requests were not answered 201: see {work}/serve.log", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
