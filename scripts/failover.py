#!/usr/bin/env python3
"""The failover drill's driver (started by scripts/failover.sh, which builds the primary, the
synchronous standby and PgBouncer and exports serve's settings): runs the sandbox bank and
two `serve` replicas, drives payments with same-key retries while shoppers sign, SIGKILLs
the primary, promotes the standby, repoints PgBouncer, keeps loading, lets everything
settle, reconciles pisgate's database with the bank and prints a summary. Exits non-zero
unless lost = doubled = initiated twice = HTTP 500s = disagreements = 0 and every payment is
final.

The first half of this file is shared with scripts/scale.py (processes, HTTP, the merchant
and the shopper); every loop is bounded in count and time, and traffic goes only to
127.0.0.1."""

import argparse
import collections
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from drills import bank_disagreement  # noqa: E402


# -- shared helpers ----------------------------------------------------------------------------

class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


OPENER = urllib.request.build_opener(NoRedirect, urllib.request.ProxyHandler({}))


def call(url, data=None, headers=None, method=None, timeout=10):
    """(status, headers, text); status 0 when no HTTP answer came (refused, reset, timeout)."""
    assert url.startswith("http://127.0.0.1:"), url
    req = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with OPENER.open(req, timeout=timeout) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read().decode()
    except Exception as e:  # noqa: BLE001 - refused, reset, timeout
        return 0, {}, str(e)


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def problem_code(text):
    try:
        return json.loads(text).get("code") or "-"
    except Exception:  # noqa: BLE001
        return "(not a problem document)"


class Proc:
    """A pisgate process (`serve` or `sandbox`) whose pid goes to the shell's cleanup list."""

    def __init__(self, bin_, args, work, name, pids, env=None):
        self.bin, self.args, self.work, self.name, self.pids = bin_, args, work, name, pids
        self.env = dict(os.environ)
        for k, v in (env or {}).items():
            if v is None:
                self.env.pop(k, None)  # a setting this process must not inherit
            else:
                self.env[k] = v
        self.proc = None

    def start(self, ready_url, within=60):
        logf = open(os.path.join(self.work, f"{self.name}.log"), "ab")
        self.proc = subprocess.Popen([self.bin, *self.args], env=self.env, stdout=logf, stderr=logf)
        with open(self.pids, "a") as f:
            f.write(f"{self.proc.pid}\n")
        deadline = time.time() + within
        while time.time() < deadline:
            if call(ready_url, timeout=2)[0] == 200:
                return self
            if self.proc.poll() is not None:
                raise SystemExit(f"{self.name} exited with {self.proc.returncode}; see {self.work}/{self.name}.log:\n"
                                 + open(os.path.join(self.work, f"{self.name}.log")).read()[-3000:])
            time.sleep(0.1)
        raise SystemExit(f"{self.name} did not come up; see {self.work}/{self.name}.log")

    def stop(self, within=30):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=within)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_sandbox(bin_, work, pids, sandbox_url, env=None):
    return Proc(bin_, ["sandbox"], work, "sandbox", pids, env).start(f"{sandbox_url}/sandbox/admin/health")


class Replica(Proc):
    def __init__(self, bin_, work, pids, n, env=None):
        self.port, self.admin_port = free_port(), free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.admin = f"http://127.0.0.1:{self.admin_port}"
        e = {
            "PISGATE__SERVER__LISTEN": f"127.0.0.1:{self.port}",
            "PISGATE__SERVER__PUBLIC_URL": self.base,
            "PISGATE__ADMIN__LISTEN": f"127.0.0.1:{self.admin_port}",
        }
        e.update(env or {})
        super().__init__(bin_, ["serve"], work, f"serve-{n}", pids, e)

    def start(self, within=60):
        return super().start(f"{self.admin}/healthz", within)


def sandbox_admin(sandbox, path, body=None, method="GET"):
    data = json.dumps(body).encode() if body is not None else None
    s, _, text = call(f"{sandbox}/sandbox/admin/{path}", data, {"Content-Type": "application/json"}, method,
                      timeout=30)
    return s, (json.loads(text) if text and s == 200 else None)


class Psql:
    """psql against one database: one-off queries, or a kept session for sampling."""

    def __init__(self, bindir, port, db="pisgate"):
        self.cmd = [os.path.join(bindir, "psql"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres",
                    "-d", db, "-qtAX", "-F", "\t"]

    def rows(self, sql, timeout=30):
        # Named, so the scripts' own connections are not counted as pisgate's (scale.py).
        env = dict(os.environ, PGAPPNAME="pisgate-scripts")
        out = subprocess.run([*self.cmd, "-c", sql], check=True, capture_output=True, text=True,
                             timeout=timeout, env=env).stdout
        return [line.split("\t") for line in out.splitlines() if line]

    def value(self, sql):
        r = self.rows(sql)
        return r[0][0] if r else None


COUNTRIES = [
    {"amount": "10.50", "currency": "EUR", "country": "FI",
     "creditor": {"account": {"type": "IBAN", "value": "FI1410093000123458"}, "name": "Shop"}},
    {"amount": "99.00", "currency": "SEK", "country": "SE",
     "creditor": {"account": {"type": "BGNR", "value": "50501055"}, "name": "Butik AB",
                  "reference": {"type": "OCR", "value": "1234566"}}},
    {"amount": "250.00", "currency": "DKK", "country": "DK",
     "creditor": {"account": {"type": "BBAN_DK", "value": "30004010021337"}, "name": "Butik ApS"}},
]


def payment_body(i, reference, psu=None):
    b = json.loads(json.dumps(COUNTRIES[i % len(COUNTRIES)]))
    b["return_url"] = "https://shop.example/done"
    b["reference"] = reference
    if psu:
        b["psu_id"] = psu
    return b


class Tally:
    """Every answer pisgate gave, with its time, for the summary."""

    def __init__(self):
        self.lock = threading.Lock()
        self.stats = collections.Counter()
        self.answers = []  # (sent_at, done_at, kind, status, code, retry_after)

    def record(self, kind, sent, status, headers, text):
        code = problem_code(text) if status >= 400 else ""
        with self.lock:
            self.answers.append((sent, time.time(), kind, status, code, "retry-after" in headers))
        return code


def create(tally, bases, api_key, body, key, deadline, timeout=10):
    """Creates a payment with one Idempotency-Key, retrying with the same key (on any replica)
    after errors and timeouts until a final answer or the deadline. Returns (payment, tries)."""
    data = json.dumps(body).encode()
    headers = {"Authorization": f"Bearer {api_key}", "Idempotency-Key": key, "Content-Type": "application/json"}
    tries = 0
    while time.time() < deadline:
        tries += 1
        sent = time.time()
        s, h, text = call(f"{random.choice(bases)}/v1/payments", data, headers, timeout=timeout)
        code = tally.record("create", sent, s, h, text)
        if s == 201:
            return json.loads(text), tries
        # Final: a request pisgate refused. Everything else (5xx, no answer, 502
        # initiation_outcome_unknown, 409 idempotency_key_in_flight) is retried with the key.
        if s in (400, 401, 403, 404, 422) or (s == 409 and code != "idempotency_key_in_flight"):
            return None, tries
        try:
            wait = float(h.get("retry-after", "0.3"))
        except ValueError:
            wait = 0.3
        time.sleep(min(max(wait, 0.2), 2.0))
    return None, tries


def shopper(tally, p, decision, psu, patience=30):
    """The shopper's browser: the consent page, its button (the hop to the bank), the bank's
    page, the decision, and the redirect back to pisgate's callback. Each step at pisgate is
    retried on 5xx or no answer (a shopper reloading) within `patience` seconds. Returns
    whether the shopper got back to the merchant's return URL."""
    url = p.get("authorization_url")
    if not url:
        return False
    deadline = time.time() + patience

    def at_pisgate(kind, *args, **kw):
        while True:
            sent = time.time()
            s, h, text = call(*args, **kw)
            tally.record(kind, sent, s, h, text)
            if (s == 0 or s >= 500) and time.time() < deadline:
                time.sleep(0.5)
                continue
            return s, h, text

    s, h, _ = at_pisgate("consent", url)
    if s == 200:
        hop, token = url.split("?t=")
        s, h, _ = at_pisgate("hop", hop, urllib.parse.urlencode({"t": token}).encode(),
                             {"Content-Type": "application/x-www-form-urlencoded"}, "POST")
    if s != 303:
        return False
    s, _, page = call(h.get("location"))
    m = re.search(r'action="([^"]+)"', page or "")
    if s != 200 or not m:
        return False
    if decision == "walk_away":
        return False
    action = m.group(1).replace("&amp;", "&")
    form = urllib.parse.urlencode({"decision": decision, "psu_id": psu}).encode()
    s, h, _ = call(action, form, {"Content-Type": "application/x-www-form-urlencoded"})
    back = h.get("location")
    if s != 303 or not back:
        return False
    s, h, _ = at_pisgate("callback", back)
    return s == 303


FINAL_OPEN = ("awaiting_authorization", "authorized")


def reconcile(db, sandbox):
    """pisgate's payments against the bank's: (rows, doubled references, initiated twice,
    disagreements, bank payments pisgate does not know)."""
    rows = db.rows("SELECT id, status, COALESCE(bank_payment_id,''), cancel_requested_at IS NOT NULL,"
                   " COALESCE(merchant_reference,'') FROM payments")
    _, bank = sandbox_admin(sandbox, "payments")
    by_external = collections.defaultdict(list)
    for b in bank or []:
        by_external[b.get("external_id") or ""].append(b)
    refs = collections.Counter(r[4] for r in rows if r[4])
    doubled = [f"reference {ref}: {n} payments" for ref, n in refs.items() if n > 1]
    twice, disagreements = [], []
    known = set()
    for pid, status, bank_id, cancel_requested, _ in rows:
        ext = uuid.UUID(pid).hex
        known.add(ext)
        at_bank = by_external.get(ext, [])
        opened = [b for b in at_bank if b.get("exists_at_bank")]
        if len(opened) > 1 or any(b["payment_id"] != bank_id for b in opened):
            twice.append(f"{pid}: {len(at_bank)} bank payments, {len(opened)} opened")
        if status in FINAL_OPEN:
            continue  # counted as not final by the caller
        wrong = bank_disagreement(status, cancel_requested, at_bank, bank_id)
        if wrong:
            disagreements.append(f"{pid}: {wrong}")
    orphans = [b["payment_id"] for b in bank or [] if (b.get("external_id") or "") not in known]
    return rows, doubled, twice, disagreements, orphans


def print_table(title, table):
    print()
    print(title)
    width = max(len(k) for k, _ in table)
    print("| " + "what".ljust(width) + " | figure |")
    print("|" + "-" * (width + 2) + "|--------|")
    for k, v in table:
        print(f"| {k.ljust(width)} | {v} |")


# -- the drill ---------------------------------------------------------------------------------

def parse():
    P = argparse.ArgumentParser()
    P.add_argument("--mode", choices=["quick", "full"], default="quick")
    for a in ("bin", "work", "pids", "root", "pg-bindir", "sandbox", "primary-dir", "standby-dir",
              "standby-port", "primary-port", "bouncer"):
        P.add_argument(f"--{a}", required=True)
    return P.parse_args()


def as_owner(cmd):
    return ["runuser", "-u", "postgres", "--", *cmd] if os.getuid() == 0 else cmd


def kill_primary(primary_dir):
    """SIGKILL of the postmaster and every backend at once, as if the host died."""
    pid = int(open(os.path.join(primary_dir, "data", "postmaster.pid")).readline())
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    for p in [pid, *map(int, children)]:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return pid, len(children)


def bouncer_view(A):
    """Where PgBouncer's databases point and its server connections by upstream port."""
    admin = Psql(A.pg_bindir, bouncer_port(A), "pgbouncer")
    dbs = {r[0]: r[2] for r in admin.rows("SHOW DATABASES") if r[0] in ("pisgate", "pisgate_session")}
    servers = collections.Counter(f"{r[2]}:{r[5]}" for r in admin.rows("SHOW SERVERS"))  # database:port
    return (f"databases {', '.join(f'{k} -> port {v}' for k, v in sorted(dbs.items())) or '(wildcard only)'};"
            f" server connections {dict(servers) or 'none'}")


def bouncer_port(A):
    return open(os.path.join(os.environ["PG_STATE_DIR"], f"pgbouncer-{A.bouncer}", "port")).read().strip()


def metric(admin, name):
    _, _, text = call(f"{admin}/metrics")
    for line in text.splitlines():
        if line.split(" ")[0].split("{")[0] == name:
            return float(line.rsplit(" ", 1)[1])
    return None


def read_replica_check(replica, api_key, standby, lists=50):
    """Under load, before the kill: the replica's lag as the metrics say, and whether payment
    lists are served by the standby (its committed transactions grow by at least one per list;
    the lag probe adds one a second)."""
    in_use = metric(replica.admin, "pisgate_database_replica_in_use")
    lag_s = metric(replica.admin, "pisgate_database_replica_lag_seconds")
    lag_b = metric(replica.admin, "pisgate_database_replica_lag_bytes")
    commits = "SELECT xact_commit FROM pg_stat_database WHERE datname = 'pisgate'"
    before = int(standby.value(commits))
    ok = 0
    for _ in range(lists):
        s, _, _ = call(f"{replica.base}/v1/payments?limit=10", headers={"Authorization": f"Bearer {api_key}"})
        ok += s == 200
    # Backends flush their statistics at most once a second while busy and, once idle, only
    # after up to 10 s (PostgreSQL 15's PGSTAT_IDLE_INTERVAL): so the count is read until it
    # has caught up, for at most 15 s, not once after a fixed sleep (on a loaded box 2.5 s
    # was once not enough: 33 of 50 seen).
    # Each read is itself a psql session committing one transaction in this database, counted
    # once it ended: the reads made so far (the first included) are taken off, so only the
    # lists (and the lag probe) can make the count.
    deadline = time.time() + 15
    reads = 1
    while True:
        grew = int(standby.value(commits)) - before - reads
        reads += 1
        if grew >= lists or time.time() > deadline:
            break
        time.sleep(0.5)
    return {"in_use": in_use, "lag_s": lag_s, "lag_b": lag_b, "lists": lists, "ok": ok, "grew": grew,
            "pass": in_use == 1.0 and ok == lists and grew >= lists}


def main():
    A = parse()
    quick = A.mode == "quick"
    clients = 4 if quick else 8
    before_kill = 8 if quick else 25
    after_kill = 12 if quick else 40
    detect = 2.0  # how long "the operator" (or a manager) takes to decide the primary is gone
    settle_bound = 90 if quick else 120

    merchant = json.load(open(os.path.join(A.work, "merchant.json")))
    api_key = merchant["api_key"]
    primary = Psql(A.pg_bindir, A.primary_port)
    standby = Psql(A.pg_bindir, A.standby_port)

    start_sandbox(A.bin, A.work, A.pids, A.sandbox)
    replicas = [Replica(A.bin, A.work, A.pids, n) for n in range(2)]
    for r in replicas:
        r.start()
    bases = [r.base for r in replicas]
    log(f"mode {A.mode}: sandbox and 2 replicas up ({', '.join(bases)}); {clients} clients, "
        f"{before_kill} s of load before the kill, {after_kill} s after")

    tally = Tally()
    given = {}  # key -> payment id the client got with a 201
    plans = {}
    shoppers = []
    stop_load = threading.Event()
    decisions = ["approve", "approve", "approve", "reject", "walk_away"]

    def client(w):
        n = 0
        while not stop_load.is_set():
            n += 1
            key = f"fo-{w}-{n}-{uuid.uuid4().hex[:8]}"
            ref = f"order-{w}-{n}"
            p, tries = create(tally, bases, api_key, payment_body(w + n, ref), key, time.time() + 40)
            with tally.lock:
                tally.stats["keys"] += 1
                tally.stats["same_key_retries"] += tries - 1
                if p is None:
                    tally.stats["gave_up"] += 1
            if p:
                decision = decisions[(w + n) % len(decisions)]
                with tally.lock:
                    given[key] = p["id"]
                    plans[p["id"]] = decision
                t = threading.Thread(target=shopper, args=(tally, p, decision, f"psu-{w}-{n}"), daemon=True)
                t.start()
                shoppers.append(t)
            time.sleep(random.uniform(0.05, 0.25))

    threads = [threading.Thread(target=client, args=(w,), daemon=True) for w in range(clients)]
    for t in threads:
        t.start()
    time.sleep(before_kill)

    replica_check = read_replica_check(replicas[0], api_key, standby)

    rep = primary.rows("SELECT application_name, state, sync_state,"
                       " COALESCE(pg_wal_lsn_diff(pg_current_wal_lsn(), flush_lsn), 0) FROM pg_stat_replication")
    before = sum(1 for _ in given)
    t_kill = time.time()
    pm, backends = kill_primary(A.primary_dir)
    t_killed = time.time()
    log(f"SIGKILL of the primary (postmaster {pm} and {backends} children); {before} payments created so far; "
        f"replication then: {rep}")
    time.sleep(detect)
    t0 = time.time()
    subprocess.run(as_owner([os.path.join(A.pg_bindir, "pg_ctl"), "-D", os.path.join(A.standby_dir, "data"),
                             "promote", "-w", "-t", "60"]), check=True, stdout=subprocess.DEVNULL)
    t_promoted = time.time()
    in_recovery = standby.value("SELECT pg_is_in_recovery()")
    env = dict(os.environ)
    subprocess.run(["bash", "-c", 'source "$0/scripts/lib/pg.sh"; source "$0/scripts/lib/pgbouncer.sh";'
                    ' pgbouncer_repoint "$1" "$2"', A.root, A.bouncer, A.standby_port], check=True, env=env)
    t_repointed = time.time()
    log(f"standby promoted in {t_promoted - t0:.1f} s (in recovery: {in_recovery}); PgBouncer repointed "
        f"{t_repointed - t_kill:.1f} s after the kill")
    time.sleep(2)
    log(f"PgBouncer 2 s after the repoint: {bouncer_view(A)}")
    time.sleep(after_kill)
    stop_load.set()
    for t in threads:
        t.join(timeout=60)
    t_load_end = time.time()
    for t in list(shoppers):
        t.join(timeout=max(0.0, t_load_end + 40 - time.time()))
    log(f"load stopped: {len(given)} payments created; waiting for every payment to be final")

    settled_in = None
    open_left = None
    while time.time() - t_load_end < settle_bound:
        open_left = int(standby.value("SELECT count(*) FROM payments WHERE status IN "
                                      "('awaiting_authorization','authorized')"))
        if open_left == 0:
            settled_in = time.time() - t_load_end
            break
        time.sleep(1)

    # -- the summary ----------------------------------------------------------------------------
    rows, doubled, twice, disagreements, orphans = reconcile(standby, A.sandbox)
    db_payments = {r[0]: r for r in rows}
    key_payment = dict((k, p) for k, p in standby.rows("SELECT key, payment_id FROM idempotency_keys"))
    lost = [f"{k} -> {pid}" for k, pid in given.items() if pid not in db_payments or key_payment.get(k) != pid]
    not_final = [f"{r[0]}: {r[1]}" for r in rows if r[1] in FINAL_OPEN]
    idle_in_tx = standby.value("SELECT count(*) FROM pg_stat_activity WHERE datname = 'pisgate'"
                               " AND state LIKE 'idle in transaction%'")
    for r in replicas:
        r.stop()
    # The ledger on the promoted database: no status change recorded twice, and every
    # payment's hash chain verifies (`pisgate ledger verify`, straight to the new primary).
    double_transitions = standby.rows(
        "SELECT payment_id, old_status, new_status, count(*) FROM payment_events"
        " WHERE old_status IS NOT NULL AND new_status IS NOT NULL AND old_status <> new_status"
        " GROUP BY 1, 2, 3 HAVING count(*) > 1")
    venv = {k: v for k, v in os.environ.items() if k not in ("PISGATE__DATABASE__POOLER", "PISGATE__DATABASE__DIRECT_URL")}
    venv["PISGATE__DATABASE__URL"] = f"postgres://postgres@127.0.0.1:{A.standby_port}/pisgate"
    verify = subprocess.run([A.bin, "ledger", "verify"], env=venv, capture_output=True, text=True, timeout=300)
    ledger_ok = verify.returncode == 0
    ledger_line = (verify.stdout.strip() or verify.stderr.strip()).splitlines()[-1:] or ["(no output)"]

    answers = sorted(tally.answers)
    creates = [a for a in answers if a[2] == "create"]
    errors = collections.OrderedDict()
    for sent, done, kind, status, code, retry_after in answers:
        if status in (200, 201, 303):
            continue
        label = f"{kind} {status or 'no answer'} {code}".strip()
        e = errors.setdefault(label, [0, done, done, 0])
        e[0] += 1
        e[1], e[2] = min(e[1], done), max(e[2], done)
        e[3] += 0 if (status != 503 or retry_after or kind != "create") else 1
    http500 = sum(1 for a in answers if a[3] == 500)
    no_retry_after = sum(e[3] for e in errors.values())
    first_ok = next((done for sent, done, kind, status, *_ in creates if status == 201 and sent >= t_killed), None)
    last_err = max((done for sent, done, kind, status, *_ in creates if status not in (201, 400, 422)
                    and done >= t_kill), default=None)
    by_status = collections.Counter(r[1] for r in rows)
    rel = lambda t: f"{t - t_kill:+.1f} s"  # noqa: E731
    # Creations per second around the kill, by when the answer came: 201s / other answers.
    buckets = collections.defaultdict(lambda: [0, 0])
    for sent, done, kind, status, *_ in creates:
        b = int((done - t_kill) // 1)
        if -2 <= b <= int(after_kill + detect):
            buckets[b][0 if status == 201 else 1] += 1
    last_bad = max((b for b, (_, bad) in buckets.items() if bad), default=0)
    shown = [b for b in sorted(buckets) if b <= last_bad + 3]
    steady = [buckets[b][0] for b in sorted(buckets) if last_bad + 3 < b < int(after_kill + detect)]
    timeline = " ".join(f"{b:+d}:{buckets[b][0]}/{buckets[b][1]}" for b in shown)
    if steady:
        timeline += f" .. then a median {statistics.median(steady):.0f}/s and no errors"
    with open(os.path.join(A.work, "answers.json"), "w") as f:
        json.dump([[a[0] - t_kill, a[1] - t_kill, *a[2:]] for a in answers], f)

    table = [
        ("replicas / clients", f"2 serve through PgBouncer (transaction mode) / {clients} with same-key retries"),
        ("requests (creations)", len(creates)),
        ("requests (shoppers at pisgate)", len(answers) - len(creates)),
        ("idempotency keys used", tally.stats["keys"]),
        ("same-key retries", tally.stats["same_key_retries"]),
        ("201s (keys answered)", len(given)),
        ("keys given up (no 201 within 40 s)", tally.stats["gave_up"]),
        ("payments in the database", len(rows)),
        ("errors by kind, status and code (window rel. to the kill)",
         "; ".join(f"{k}: {v[0]} ({rel(v[1])} .. {rel(v[2])})" for k, v in errors.items()) or "none"),
        ("creations per second after the kill (s:201s/errors)", timeline),
        ("API 503s without Retry-After", no_retry_after),
        ("HTTP 500s", http500),
        ("primary killed at", f"+{before_kill} s of load; promoted {rel(t_promoted)}, PgBouncer repointed {rel(t_repointed)}"),
        ("first 201 for a request sent after the kill", rel(first_ok) if first_ok else "never"),
        ("last creation error after the kill", rel(last_err) if last_err else "none"),
        ("lost (201 given, payment missing)", len(lost)),
        ("doubled (one order, two payments)", len(doubled)),
        ("initiated twice at the bank", len(twice)),
        ("bank payments pisgate does not know", len(orphans)),
        ("disagreements with the bank", len(disagreements)),
        ("status changes recorded twice", len(double_transitions)),
        ("ledger on the promoted database", ledger_line[0]),
        ("backends idle in transaction at the end", idle_in_tx),
        ("read replica before the kill (READ_URL = the standby)",
         f"in use {replica_check['in_use']:.0f}, lag {replica_check['lag_s']:.3f} s / {replica_check['lag_b']:.0f} bytes; "
         f"{replica_check['ok']}/{replica_check['lists']} payment lists answered 200 while the standby committed "
         f"{replica_check['grew']} read transactions"),
        ("every payment final", f"yes, {settled_in:.0f} s after the load stopped (bound {settle_bound} s)"
         if settled_in is not None else f"NO: {open_left} still open after {settle_bound} s"),
        ("final statuses", ", ".join(f"{k} {v}" for k, v in sorted(by_status.items()))),
    ]
    print_table(f"failover drill ({A.mode}): PostgreSQL 15 primary + synchronous standby (synchronous_commit=on,"
                f" synchronous_standby_names = standby1), PgBouncer 1.18 transaction mode", table)
    print("note: replication is synchronous, so a commit acknowledged to pisgate (and a 201 to the merchant) is on"
          " the standby before the primary dies; with asynchronous replication the last acknowledged payments"
          " can be missing after promotion (lost > 0).")
    if not ledger_ok:
        print(f"  ledger verify exited {verify.returncode}:")
        for line in (verify.stdout + verify.stderr).strip().splitlines()[-30:]:
            print(f"    {line}")
    for name, items in (("lost", lost), ("doubled", doubled), ("initiated twice", twice),
                        ("disagreement", disagreements), ("not final", not_final), ("unknown to pisgate", orphans),
                        ("recorded twice", double_transitions)):
        for item in items[:15]:
            print(f"  {name}: {item}")
    bad = len(lost) + len(doubled) + len(twice) + http500 + len(disagreements) + len(not_final)
    bad += len(double_transitions) + (0 if ledger_ok else 1)
    bad += 0 if first_ok else 1
    bad += 0 if replica_check["pass"] else 1
    print(f"RESULT failover {'PASS' if not bad else 'FAIL'}")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
