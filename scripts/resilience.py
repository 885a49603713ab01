#!/usr/bin/env python3
"""The resilience suite's driver (started by scripts/resilience.sh, which sets the
environment up): runs `pisgate serve`, drives load and faults, reconciles pisgate's database
with the sandbox bank, prints one table, and exits non-zero unless lost, doubled and
disagreements are all 0.

Every loop here is bounded in count and time, and traffic goes only to 127.0.0.1."""

import argparse
import collections
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from drills import bank_disagreement, bg_disagreement, op_disagreement, seb_disagreement  # noqa: E402

P = argparse.ArgumentParser()
P.add_argument("--mode", choices=["quick", "full"], default="quick")
P.add_argument("--bin", required=True)
P.add_argument("--work", required=True)
P.add_argument("--base", required=True)
P.add_argument("--admin", required=True)
P.add_argument("--sandbox", required=True)
P.add_argument("--bg-sandbox", required=True, help="the Berlin Group simulator (the bank berlin)")
P.add_argument("--op-app", required=True, help="OP's simulator, its plain HTTP side (authorization page, admin)")
P.add_argument("--seb-app", required=True, help="SEB's simulator, its plain HTTP side (test BankID app, admin)")
P.add_argument("--pg-bindir", required=True)
P.add_argument("--pg-data", required=True)
P.add_argument("--pids", required=True)
A = P.parse_args()
QUICK = A.mode == "quick"
KILL_ROUNDS = 3 if QUICK else 12
WORKERS = 4 if QUICK else 8
PHASE_SECS = 12 if QUICK else 40

MERCHANT = json.load(open(os.path.join(A.work, "merchant.json")))
KEY = MERCHANT["api_key"]
LOCK = threading.Lock()
STATS = collections.Counter()
CODES = collections.Counter()
# key -> payment id the client was given with a 201 (the client's own record)
GIVEN = {}
# payment id -> what the "shopper" did
PLANS = {}
# payment id -> when its 201 arrived (the horizon case signs relative to it)
CREATED_AT = {}
# The late-signing horizon resilience.sh sets (drill_fast_clock 30).
HORIZON_SECS = float(os.environ.get("PISGATE__PAYMENTS__LATE_SIGNING_HORIZON_SECS", "30"))
STOP = threading.Event()


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


OPENER = urllib.request.build_opener(NoRedirect, urllib.request.ProxyHandler({}))


def call(url, data=None, headers=None, method=None, timeout=15):
    req = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with OPENER.open(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode()
    except Exception as e:  # connection refused, reset, timeout: the replica is down
        return 0, {}, str(e)


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# -- processes -------------------------------------------------------------------------------

class Serve:
    def __init__(self):
        self.proc = None
        self.log = open(os.path.join(A.work, "serve.log"), "ab")

    def start(self):
        self.proc = subprocess.Popen([A.bin, "serve"], stdout=self.log, stderr=self.log)
        with open(A.pids, "a") as f:
            f.write(f"{self.proc.pid}\n")
        deadline = time.time() + 60
        while time.time() < deadline:
            s, _, _ = call(f"{A.admin}/healthz", timeout=2)
            if s == 200:
                return
            if self.proc.poll() is not None:
                raise SystemExit(f"serve exited with {self.proc.returncode}; see {A.work}/serve.log")
            time.sleep(0.1)
        raise SystemExit("serve did not come up")

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def kill_and_restart(self, recover, what, pause=0.2):
        """SIGKILLs serve, starts it again after `pause` s, and records how long that took."""
        self.kill()
        t0 = time.time()
        time.sleep(pause)
        self.start()
        recover.append((what, time.time() - t0))
        STATS["kill_rounds"] += 1

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


def pg_ctl(*args):
    port = open(os.path.join(A.pg_data, "port")).read().strip()
    run = os.path.join(A.pg_data, "run")
    opts = (f"-p {port} -k {run} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=300 "
            "-c shared_buffers=256MB")
    cmd = [os.path.join(A.pg_bindir, "pg_ctl"), "-D", os.path.join(A.pg_data, "data"),
           "-l", os.path.join(A.pg_data, "server.log"), "-w", "-t", "60", "-o", opts, *args]
    if os.getuid() == 0:
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def sandbox_admin(path, body=None, method="GET"):
    data = json.dumps(body).encode() if body is not None else None
    s, _, text = call(f"{A.sandbox}/sandbox/admin/{path}", data,
                      {"Content-Type": "application/json"}, method)
    return s, (json.loads(text) if text and s == 200 else None)


def faults(rules):
    """The same storm at both banks: Nordea's sandbox and the Berlin Group simulator take the
    same rules (the latter's operations mapped onto the same names)."""
    sandbox_admin("faults", {"rules": rules}, "PUT")
    s, _, text = call(f"{A.bg_sandbox}/admin/faults", json.dumps({"rules": rules}).encode(),
                      {"Content-Type": "application/json"}, "PUT")
    if s != 204:
        raise SystemExit(f"the Berlin Group simulator refused the fault rules: {s} {text[:200]}")


def faulted(url):
    """Calls that faults answered, changed or delayed, at one simulator (all operations)."""
    s, _, text = call(url)
    counters = json.loads(text).get("counters", {}) if s == 200 else {}
    return sum(c.get("faulted", 0) for c in counters.values())


# -- the merchant and the shopper ------------------------------------------------------------

COUNTRIES = [
    ("FI", {"amount": "10.50", "currency": "EUR", "country": "FI", "bank": "nordea",
            "creditor": {"account": {"type": "IBAN", "value": "FI1410093000123458"}, "name": "Shop"}}),
    # The Berlin Group bank `berlin` (the strict simulator): its return carries no code, its
    # DELETE needs no shopper token.
    ("FI-BG", {"amount": "12.00", "currency": "EUR", "country": "FI", "bank": "berlin",
               "creditor": {"account": {"type": "IBAN", "value": "FI1410093000123458"}, "name": "Shop"},
               "debtor": {"account": {"type": "IBAN", "value": "FI2112345600000785"}}}),
    # SEB serves SE too (its own phase below): the load names Nordea, as a merchant would.
    ("SE", {"amount": "99.00", "currency": "SEK", "country": "SE", "bank": "nordea",
            "creditor": {"account": {"type": "BGNR", "value": "50501055"}, "name": "Butik AB",
                         "reference": {"type": "OCR", "value": "1234566"}}}),
    ("DK", {"amount": "250.00", "currency": "DKK", "country": "DK",
            "creditor": {"account": {"type": "BBAN_DK", "value": "30004010021337"}, "name": "Butik ApS"}}),
]


def payment_body(i):
    _, b = COUNTRIES[i % len(COUNTRIES)]
    b = json.loads(json.dumps(b))
    b["return_url"] = "https://shop.example/done"
    # One shopper per payment: pisgate may ask the bank to delete a payment at the late-signing
    # horizon only with that shopper's own token, so most never-signed payments here have none
    # and end on the bank's time to sign running out (its UserApprovalTimeout, or for a link
    # nobody opened at the bank, nordea.approval_timeout_secs).
    b["psu_id"] = f"shopper-{i}"
    b["reference"] = f"order-{i}"
    return b


def create(i, deadline):
    """Creates payment i with one key, retrying with the same key until a final answer."""
    key = f"res-{uuid.uuid4()}"
    body = json.dumps(payment_body(i)).encode()
    headers = {"Authorization": f"Bearer {KEY}", "Idempotency-Key": key,
               "Content-Type": "application/json"}
    first = True
    s, text = None, ""
    while time.time() < deadline:
        s, h, text = call(f"{A.base}/v1/payments", body, headers)
        with LOCK:
            STATS["requests"] += 1
            if not first:
                STATS["same_key_retries"] += 1
            if s >= 500:
                try:
                    CODES[f"{s} {json.loads(text).get('code')}"] += 1
                except Exception:
                    CODES[f"{s} (not a problem document)"] += 1
            elif s == 0:
                CODES["connection failed"] += 1
        first = False
        if s == 201:
            p = json.loads(text)
            with LOCK:
                STATS["201"] += 1
                GIVEN[key] = p["id"]
                CREATED_AT[p["id"]] = time.time()
            return key, p
        if s in (400, 401, 404, 422):
            with LOCK:
                STATS[f"{s}"] += 1
            return key, None
        time.sleep(float(h.get("Retry-After", h.get("retry-after", "0.3")) or 0.3) if s else 0.3)
    with LOCK:
        STATS["gave_up"] += 1
        CODES[f"last answer before giving up: {s} {text[:80]}"] += 1
    return key, None


def shopper(p, plan):
    """Plays the shopper's browser for a payment: through the hop to the bank's page, then
    approve, reject, walk away, or approve late; sometimes a forged error or a replay."""
    url = p.get("authorization_url")
    if not url:
        return
    if plan == "cancel_before":
        call(f"{A.base}/v1/payments/{p['id']}/cancel", b"", {"Authorization": f"Bearer {KEY}"}, "POST")
        return
    s, h, _ = call(url)
    if s == 200:  # the consent page: press its button, which posts the hop's token back
        hop, token = url.split("?t=")
        s, h, _ = call(hop, urllib.parse.urlencode({"t": token}).encode(),
                       {"Content-Type": "application/x-www-form-urlencoded"}, "POST")
    if s != 303:
        return
    if plan == "hop_only":
        # Through pisgate's hop, but the bank's page is never loaded (the browser failed on
        # the redirect, as when the replica that answered the hop dies): the bank answers 404
        # for it before and after its approval timeout. pisgate holds no token of this
        # shopper; it must still end (expired, once the bank's time to sign ran out).
        return
    bank_page = h.get("Location") or h.get("location")
    s, _, page = call(bank_page)
    m = re.search(r'action="([^"]+)"', page or "")
    if s != 200 or not m:
        return
    action = urllib.parse.urljoin(bank_page, m.group(1).replace("&amp;", "&"))
    berlin = bank_page.startswith(A.bg_sandbox)
    if plan == "walk_away":
        return
    if plan == "cancel_at_bank":
        # The merchant cancels while the shopper is on the bank's page; they sign anyway.
        call(f"{A.base}/v1/payments/{p['id']}/cancel", b"", {"Authorization": f"Bearer {KEY}"}, "POST")
    if plan == "late":
        time.sleep(12)  # past pisgate's 10 s window, within the bank's timeout
    if plan == "sign_at_horizon":
        # The horizon case: approve 1.5 s before the late-signing horizon while the bank
        # still shows PendingUserApproval for seconds after (its confirm delay), and never
        # come back. pisgate asks the bank to delete it at the horizon; the bank refuses
        # (being confirmed); it must end as the bank says (paid), never expired.
        created = CREATED_AT.get(p["id"], time.time())
        time.sleep(max(0.0, created + HORIZON_SECS - 1.5 - time.time()))
    decision = ("refuse" if berlin else "reject") if plan == "reject" else "approve"
    form = urllib.parse.urlencode({"decision": decision, "psu_id": f"psu-{p['id'][-8:]}"}).encode()
    s, h, _ = call(action, form, {"Content-Type": "application/x-www-form-urlencoded"})
    back = h.get("Location") or h.get("location")
    if s != 303 or not back:
        return
    if plan == "sign_at_horizon":
        return  # closed tab: the return never comes
    if plan == "forged_error":
        forged = back + "&error=access_denied" if berlin else back.replace("code=", "error=access_denied&was=")
        call(forged)
        return  # the real return never comes: the poller must learn the truth
    for _ in range(3 if plan == "replay" else 1):
        call(back)


def load(phase, seconds, first_index, plans):
    deadline = time.time() + seconds
    made = []

    def worker(w):
        i = first_index + w
        while time.time() < deadline and not STOP.is_set():
            key, p = create(i, deadline + 30)
            if p:
                plan = plans[i % len(plans)]
                with LOCK:
                    PLANS[p["id"]] = plan
                made.append(p)
                threading.Thread(target=shopper, args=(p, plan), daemon=True).start()
            i += WORKERS

    threads = [threading.Thread(target=worker, args=(w,), daemon=True) for w in range(WORKERS)]
    for t in threads:
        t.start()
    return threads, made


PLANS_ALL = ["approve", "approve", "reject", "walk_away", "never", "forged_error", "replay", "late",
             "cancel_before", "cancel_at_bank", "sign_at_horizon", "hop_only"]


def main():
    serve = Serve()
    serve.start()
    log(f"mode {A.mode}: {KILL_ROUNDS} kill rounds, {WORKERS} clients, {PHASE_SECS} s phases")
    recover = []

    # 1. creation under SIGKILLs, then polling under SIGKILLs
    threads, _ = load("kill", PHASE_SECS, 0, PLANS_ALL)
    for r in range(KILL_ROUNDS):
        time.sleep(random.uniform(0.5, 1.5) if QUICK else random.uniform(1, 3))
        serve.kill_and_restart(recover, "serve SIGKILL")
    for t in threads:
        t.join()
    log(f"creation under {KILL_ROUNDS} SIGKILLs done: {STATS['201']} payments")

    # 2. the bank misbehaves
    storms = [
        [{"operation": "all", "kind": "http503", "probability": 0.3}],
        [{"operation": "status", "kind": "http429", "retry_after_secs": 1, "probability": 0.8}],
        [{"operation": "initiate", "kind": "drop_after_processing", "probability": 0.3},
         {"operation": "token", "kind": "drop_connection", "probability": 0.2}],
        [{"operation": "initiate", "kind": "malformed_json", "probability": 0.3},
         {"operation": "status", "kind": "malformed_json", "probability": 0.2}],
        [{"operation": "all", "kind": "latency", "ms": 4000, "probability": 0.2}],
    ]
    for n, rules in enumerate(storms):
        faults(rules)
        threads, _ = load(f"storm-{n}", PHASE_SECS / (3 if QUICK else 2), 10_000 * (n + 1), PLANS_ALL)
        if not QUICK and n == 0:
            time.sleep(3)
            serve.kill_and_restart(recover, "serve SIGKILL while polling", pause=0)
        for t in threads:
            t.join()
        faults([])
    log("bank faults done")

    # 3. the database goes away: a restart, then a 10 s stop, under load
    threads, _ = load("database", 8 if QUICK else 25, 90_000, PLANS_ALL)
    time.sleep(2)
    t0 = time.time()
    pg_ctl("restart", "-m", "fast")
    recover.append(("PostgreSQL restart", first_success_after(t0)))
    time.sleep(1)
    down = 4 if QUICK else 10
    pg_ctl("stop", "-m", "fast")
    time.sleep(down)
    t0 = time.time()
    pg_ctl("start")
    recover.append((f"PostgreSQL stopped {down} s", first_success_after(t0)))
    for t in threads:
        t.join()
    log("database outages done")

    # 4. OP: a crash between the shopper's authorization and the submission
    op_phase(serve, recover)

    # 5. SEB: shoppers on the BankID page while SEB loses answers and answers 503s, and
    # serve is SIGKILLed under them
    seb_phase(serve, recover)

    # 6. everything settles: every payment final (the horizon is 30 s)
    settle_deadline = time.time() + 120
    while time.time() < settle_deadline:
        if open_payments() == 0:
            break
        time.sleep(1)
    serve.stop()
    report(recover)


# -- OP: SIGKILL between the shopper's authorization and the submission ------------------------

OP_BODY = {"currency": "EUR", "country": "FI", "bank": "op",
           "creditor": {"account": {"type": "IBAN", "value": "FI2112345600000785"}, "name": "Kauppa Oy"}}
# payment id -> the phase's own record: "approved" (came back with a code) or "rejected"
OP_PLANS = {}
# payment id -> why the shopper could not finish at OP (must stay empty)
OP_FAILED = {}


def create_once(bank, body):
    """One creation of a phase's payment with a fresh key, a single attempt (nothing on a
    phase's creation path is faulted: SEB's payments reach SEB only from the BankID page):
    the payment, recorded as given to the client, or None (counted by its status)."""
    key = f"res-{bank.lower()}-{uuid.uuid4()}"
    s, _, text = call(f"{A.base}/v1/payments", json.dumps(body).encode(),
                      {"Authorization": f"Bearer {KEY}", "Idempotency-Key": key,
                       "Content-Type": "application/json"})
    if s != 201:
        CODES[f"{bank} create {s}"] += 1
        return None
    p = json.loads(text)
    GIVEN[key] = p["id"]
    return p


def op_admin(path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    s, _, text = call(f"{A.op_app}/admin/{path}", data, {"Content-Type": "application/json"},
                      "POST" if data is not None else "GET")
    return s, (json.loads(text) if text and s == 200 else None)


def op_shopper(p, approve):
    """Through the hop and pisgate's consent page to OP's authorization page, Approve or
    Reject there, then the return as pisgate's fragment page would send it (the fragment
    moved into the query). Returns None once pisgate answered the return, else what failed."""
    url = p.get("authorization_url")
    if not url:
        return f"no authorization_url: {p}"
    s, h, _ = call(url)
    if s == 200:
        hop, token = url.split("?t=")
        s, h, _ = call(hop, urllib.parse.urlencode({"t": token}).encode(),
                       {"Content-Type": "application/x-www-form-urlencoded"}, "POST")
    if s != 303:
        return f"the hop answered {s}"
    op_page = h.get("Location") or h.get("location")
    s, _, page = call(op_page)
    forms = re.findall(r'<form[^>]*action="([^"]+)"(.*?)</form>', page or "", re.S)
    if s != 200 or not forms:
        return f"OP's page answered {s}: {(page or '')[:300]}"
    action, inner = forms[0]
    fields = dict(re.findall(r'<input[^>]*name="([^"]+)"[^>]*value="([^"]*)"', inner))
    fields = {k: v.replace("&amp;", "&") for k, v in fields.items()}
    fields["decision"] = "approve" if approve else "reject"
    s, h, text = call(urllib.parse.urljoin(op_page, action.replace("&amp;", "&")),
                      urllib.parse.urlencode(fields).encode(),
                      {"Content-Type": "application/x-www-form-urlencoded"}, "POST")
    back = h.get("Location") or h.get("location") or ""
    if s != 303 or "#" not in back:
        return f"OP's decision answered {s}: {text[:300]}"
    where, fragment = back.split("#", 1)
    s, _, text = call(f"{where}?{fragment}")
    return None if s == 303 else f"pisgate's return answered {s}: {text[:300]}"


def op_phase(serve, recover):
    """OP payments whose shoppers approve while OP holds every submission: pisgate has the
    token and has sent (or is about to send) the submission when serve is SIGKILLed; OP then
    performs the held submissions (the client is gone). After the restart every payment must
    end as OP says with exactly one submission each; refused ones never submitted."""
    n = 6 if QUICK else 20
    op_admin("hold-submissions", {"hold": True})
    made = []
    for i in range(n):
        p = create_once("OP", dict(OP_BODY, amount=f"{20 + i}.00", return_url="https://shop.example/done",
                                   reference=f"op-order-{i}"))
        if p is None:
            continue
        approve = i % 3 != 2
        OP_PLANS[p["id"]] = "approved" if approve else "rejected"
        made.append((p, approve))
    # The returns answer within pisgate's redirect bound; the submissions wait at OP.
    def shop(p, approve):
        failure = op_shopper(p, approve)
        with LOCK:
            if failure:
                OP_FAILED[p["id"]] = failure
            else:
                STATS["op_returned"] += 1

    threads = [threading.Thread(target=shop, args=(p, a), daemon=True) for p, a in made]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    time.sleep(1.0)
    serve.kill()
    t0 = time.time()
    STATS["kill_rounds"] += 1
    # What the killed process left: submissions sent and never answered (held at OP): still
    # in flight, or already given up on by pisgate's request timeout (an unknown outcome).
    STATS["op_in_flight"] = int(psql(
        "SELECT count(DISTINCT payment_id) FROM payment_submissions s WHERE outcome IN ('in_flight', 'outcome_unknown')"
        " AND NOT EXISTS (SELECT 1 FROM payment_submissions a WHERE a.payment_id = s.payment_id AND a.outcome = 'answered')")[0][0])
    op_admin("hold-submissions", {"hold": False})
    time.sleep(0.5)
    serve.start()
    recover.append(("serve SIGKILL between authorization and submit (OP)", time.time() - t0))
    log(f"OP: {len(made)} payments, serve killed with their submissions held at OP")


# -- SEB: the BankID page under faults at SEB and a SIGKILL ----------------------------------

SEB_BODY = {"currency": "SEK", "country": "SE", "bank": "seb",
            "creditor": {"account": {"type": "BGNR", "value": "5050-1055"}, "name": "Butik AB",
                         "reference": {"type": "OCR", "value": "1234566"}},
            "return_url": "https://shop.example/done"}
# payment id -> "approve" (signs), "cancel" (refuses in the app, then cancels on the page) or
# "walk_away" (identifies, never signs: pisgate deletes it at SEB at the horizon)
SEB_PLANS = {}
# payment id -> why the shopper's page never ended where the plan leads (must stay empty)
SEB_FAILED = {}
SEB_STORM = [
    # SEB makes the payment, the answer is lost: the page offers "try again"
    {"operation": "initiate", "kind": "drop_after_processing", "probability": 0.25},
    {"operation": "status", "kind": "http503", "probability": 0.3},
    {"operation": "details", "kind": "malformed_json", "probability": 0.2},
    # the BankID orders' starts and progress reads (starts are never retried: "try again")
    {"operation": "authorise", "kind": "http503", "probability": 0.15},
    {"operation": "token", "kind": "http503", "probability": 0.2},
]


def seb_admin(path, method="GET"):
    s, _, text = call(f"{A.seb_app}/admin/{path}", b"" if method == "POST" else None, method=method)
    try:
        return s, json.loads(text) if text else None
    except ValueError:
        return s, None


def seb_faults(rules):
    s, _, text = call(f"{A.seb_app}/admin/faults", json.dumps({"rules": rules}).encode(),
                      {"Content-Type": "application/json"}, "PUT")
    if s != 204:
        raise SystemExit(f"PUT {A.seb_app}/admin/faults answered {s}: {text}")


def seb_shopper(p, plan, shopper):
    """The shopper on pisgate's BankID page (loaded as its meta refresh would): each order's
    autostart link is acted on once in the test BankID app (the identification approved as
    `shopper`, the signing order approved or refused per the plan), "try again" is pressed
    when offered (a lost answer, a failed start), "cancel" after a refusal. Returns None once
    the page sends the shopper on (or, walking away, once the signing order is shown), else
    what went wrong."""
    url = p.get("authorization_url")
    s, h, _ = call(url)
    if s != 303:
        return f"the hop answered {s}"
    page = h.get("Location") or h.get("location")
    base, token = page.split("?t=")
    form = urllib.parse.urlencode({"t": token}).encode()
    form_type = {"Content-Type": "application/x-www-form-urlencoded"}
    acted, tries, refused = set(), 0, False
    deadline = time.time() + 60
    while time.time() < deadline:
        s, h, html = call(page)
        if s == 303:
            return None
        if s != 200:  # serve restarting
            time.sleep(0.3)
            continue
        m = re.search(r"autostarttoken=([^&\"]+)", html or "")
        ast = urllib.parse.unquote(m.group(1)) if m else None
        if ast and ast not in acted:
            _, orders = seb_admin("orders")
            order = next((o for o in orders or [] if o.get("autostart_token") == ast), None)
            if order is None:
                time.sleep(0.3)
                continue
            acted.add(ast)
            if order["purpose"] == "identify":
                seb_admin(f"bankid/{ast}/approve?shopper={shopper}", "POST")
            elif plan == "walk_away":
                return None
            elif plan == "cancel":
                seb_admin(f"bankid/{ast}/reject", "POST")
                refused = True
            else:
                seb_admin(f"bankid/{ast}/approve", "POST")
        elif "/bankid/cancel" in (html or "") and refused:
            s, _, _ = call(f"{base}/cancel", form, form_type, "POST")
            if s == 303:
                return None
        elif "/bankid/start" in (html or "") and tries < 8:
            tries += 1
            with LOCK:
                STATS["seb_try_again"] += 1
            call(f"{base}/start", form, form_type, "POST")
        time.sleep(0.4)
    return f"the page never ended (plan {plan}, {tries} tries again)"


def seb_phase(serve, recover):
    """SEB payments whose shoppers identify and sign on pisgate's BankID page while SEB
    loses initiation answers, answers 503 to reads, starts and token calls, and garbles
    reads; serve is SIGKILLed while they are on the page. Afterwards every signed payment
    at SEB must be one pisgate recorded, and each pisgate payment must end as SEB says."""
    n = 8 if QUICK else 24
    seb_faults(SEB_STORM)
    made = []
    for i in range(n):
        p = create_once("SEB", dict(SEB_BODY, amount=f"{120 + i}.00" if i % 5 else "66.05",
                                    reference=f"seb-order-{i}", psu_id=f"seb-shopper-{i}"))
        if p is None:
            continue
        plan = ("approve", "approve", "cancel", "walk_away")[i % 4]
        SEB_PLANS[p["id"]] = plan
        made.append((p, plan, f"seb-shopper-{i}"))

    def shop(p, plan, shopper):
        failure = seb_shopper(p, plan, shopper)
        if failure:
            with LOCK:
                SEB_FAILED[p["id"]] = failure

    threads = [threading.Thread(target=shop, args=a, daemon=True) for a in made]
    for t in threads:
        t.start()
    time.sleep(4)
    serve.kill_and_restart(recover, "serve SIGKILL with shoppers on the BankID page (SEB)")
    for t in threads:
        t.join(70)
    seb_faults([])
    log(f"SEB: {len(made)} payments through the BankID page under SEB faults and a SIGKILL")


def seb_report(db_payments, lost, doubled, disagreements):
    """SEB's side: every signed payment at SEB is one pisgate recorded (else money moved
    that pisgate does not know: lost), at most one per pisgate payment (else doubled), and
    each pisgate payment ends as SEB says."""
    _, at_seb = seb_admin("payments")
    _, orders = seb_admin("orders")
    by_id = {b["id"]: b for b in at_seb or []}
    signed = {b["id"] for b in at_seb or [] if b.get("signed_at")}
    mine = {pid: r for pid, r in db_payments.items() if pid in SEB_PLANS}
    recorded = {r[2]: pid for pid, r in mine.items() if r[2]}
    for bank_id in signed - set(recorded):
        lost.append(f"SEB payment {bank_id} was signed but pisgate recorded no payment for it")
    per_payment = collections.Counter()
    for o in orders or []:
        if o.get("purpose") == "sign":
            for bank_id in o.get("payment_ids", []):
                if bank_id not in recorded:
                    disagreements.append(f"a signing order for SEB payment {bank_id}, which pisgate never recorded")
                else:
                    per_payment[recorded[bank_id]] += 1 if bank_id in signed else 0
    for pid, k in per_payment.items():
        if k > 1:
            doubled.append(f"{pid}: {k} signed payments at SEB")
    for pid, (_, status, bank_id, _cancel) in mine.items():
        if pid in SEB_FAILED:
            disagreements.append(f"{pid}: the shopper's page at SEB: {SEB_FAILED[pid]}")
        wrong = seb_disagreement(status, by_id.get(bank_id) if bank_id else None, SEB_PLANS[pid])
        if wrong:
            disagreements.append(f"{pid}: {wrong} at SEB (plan {SEB_PLANS[pid]})")
    STATS["seb"] = len(mine)
    STATS["seb_statuses"] = ", ".join(f"{k} {v}" for k, v in sorted(collections.Counter(r[1] for r in mine.values()).items()))
    STATS["seb_signed"] = len(signed)
    STATS["seb_made"] = len(by_id)


def first_success_after(t0):
    """Seconds from t0 until the API answers a read with 200 again."""
    while time.time() - t0 < 60:
        s, _, _ = call(f"{A.base}/v1/payments?limit=1", headers={"Authorization": f"Bearer {KEY}"}, timeout=3)
        if s == 200:
            return time.time() - t0
        time.sleep(0.1)
    return float("inf")


def psql(sql):
    out = subprocess.run(
        [os.path.join(A.pg_bindir, "psql"), os.environ["PISGATE__DATABASE__URL"], "-tAX", "-F", "\t", "-c", sql],
        check=True, capture_output=True, text=True).stdout
    return [line.split("\t") for line in out.splitlines() if line]


def open_payments():
    # Not the Berlin Group payments left open by design (their initiation answer was lost:
    # see `report`), which no wait ends.
    return int(psql(
        "SELECT count(*) FROM payments WHERE status IN ('awaiting_authorization','authorized') "
        "AND NOT (bank = 'berlin' AND bank_payment_id IS NULL "
        "AND initiation IN ('outcome_unknown', 'pending'))")[0][0])




def report(recover):
    rows = psql("SELECT id, status, COALESCE(bank_payment_id,''), cancel_requested_at IS NOT NULL FROM payments")
    keys = psql("SELECT key, payment_id FROM idempotency_keys")
    db_payments = {r[0]: r for r in rows}
    key_payment = {k: p for k, p in keys}
    _, bank = sandbox_admin("payments")
    by_external = collections.defaultdict(list)
    for b in bank or []:
        by_external[b.get("external_id") or ""].append(b)

    s, text = call(f"{A.bg_sandbox}/admin/payments")[0::2]
    bg_by_e2e = collections.defaultdict(list)
    for b in (json.loads(text) if s == 200 else []):
        bg_by_e2e[(b.get("body") or {}).get("endToEndIdentification", "")].append(b)
    at_berlin = {r[0] for r in psql("SELECT id FROM payments WHERE bank = 'berlin'")}
    STATS["berlin"] = len(at_berlin)
    # A Berlin Group bank may execute a payment without the shopper (an SCA exemption), so a
    # payment whose initiation answer was lost stays open by design: no second initiation,
    # never expired (a retry answers 409 initiation_not_resumable); an operator reconciles it.
    unresolved = {r[0] for r in psql(
        "SELECT id FROM payments WHERE bank = 'berlin' AND bank_payment_id IS NULL "
        "AND initiation IN ('outcome_unknown', 'pending')")}
    STATS["bg_unresolved"] = 0
    at_op = {r[0] for r in psql("SELECT id FROM payments WHERE bank = 'op'")}
    op_submitted = collections.Counter()

    lost = [k for k, pid in GIVEN.items() if pid not in db_payments or key_payment.get(k) != pid]
    doubled, disagreements = [], []
    for pid, (_, status, bank_id, cancel_requested) in db_payments.items():
        if pid in at_op:
            rec = op_admin(f"payments/{urllib.parse.quote(bank_id)}")[1] if bank_id else None
            subs = (rec or {}).get("submissions", 0)
            op_submitted[subs] += 1
            if subs > 1:
                doubled.append(f"{pid}: submitted {subs} times at OP")
            if pid in OP_FAILED:
                disagreements.append(f"{pid}: the shopper could not finish at OP: {OP_FAILED[pid]}")
            wrong = op_disagreement(status, rec, OP_PLANS.get(pid))
            if wrong:
                disagreements.append(f"{pid}: {wrong} at OP (plan {OP_PLANS.get(pid)})")
            continue
        if pid in SEB_PLANS:
            continue  # seb_report
        if pid in at_berlin:
            at_bg = bg_by_e2e.get(uuid.UUID(pid).hex, [])
            opened = [b for b in at_bg if b.get("opened")]
            if len(opened) > 1 or any(b["id"] != bank_id for b in opened):
                doubled.append(pid)
            if pid in unresolved and status == "awaiting_authorization":
                # Open by design; never a second payment at the bank, never signed there.
                STATS["bg_unresolved"] += 1
                if len(at_bg) > 1:
                    doubled.append(f"{pid}: {len(at_bg)} payments at berlin for an unresolved one")
                if opened:
                    disagreements.append(f"{pid}: unresolved but opened at berlin")
                continue
            if status in ("awaiting_authorization", "authorized"):
                disagreements.append(f"{pid}: still {status} at berlin (plan {PLANS.get(pid)})")
                continue
            rec = next((b for b in at_bg if b["id"] == bank_id), None)
            sca_failed = rec is not None and rec.get("sca_failed")
            wrong = bg_disagreement(status, cancel_requested, rec, sca_failed)
            if wrong:
                disagreements.append(f"{pid}: {wrong} at berlin (plan {PLANS.get(pid)})")
            continue
        at_bank = by_external.get(uuid.UUID(pid).hex, [])
        opened = [b for b in at_bank if b.get("exists_at_bank")]
        if len(opened) > 1 or any(b["payment_id"] != bank_id for b in opened):
            doubled.append(pid)
        final = status not in ("awaiting_authorization", "authorized")
        if not final:
            disagreements.append(f"{pid}: still {status} (plan {PLANS.get(pid)})")
            # What pisgate and the bank know of it, to tell a stuck payment's cause.
            for kind, bank_status, bank_id in psql(
                    f"SELECT kind, COALESCE(bank_status,''), COALESCE(detail->>'bank_payment_id','') "
                    f"FROM payment_events WHERE payment_id = '{pid}' ORDER BY seq"):
                disagreements.append(f"    event {kind} {bank_status} {bank_id}")
            polls = psql(f"SELECT next_poll_at, poll_failures FROM payment_polls WHERE payment_id = '{pid}'")
            disagreements.append(f"    poll row: {polls or 'none'}; row bank id {db_payments[pid][2]}")
            for b in at_bank:
                opened = "opened" if b.get("exists_at_bank") else "never opened (the API answers 404)"
                disagreements.append(f"    at the bank: {b.get('payment_id')} {b.get('status')}, {opened}")
            continue
        wrong = bank_disagreement(status, cancel_requested, at_bank, bank_id)
        if wrong:
            disagreements.append(f"{pid}: {wrong} (plan {PLANS.get(pid)})")

    seb_report(db_payments, lost, doubled, disagreements)
    by_status = collections.Counter(r[1] for r in rows)
    horizon = collections.Counter(db_payments[pid][1] for pid, plan in PLANS.items()
                                  if plan == "sign_at_horizon" and pid in db_payments)
    hop_only = collections.Counter(db_payments[pid][1] for pid, plan in PLANS.items()
                                   if plan == "hop_only" and pid in db_payments)
    recorded = psql("SELECT count(*) FROM bank_disagreements")[0][0]
    print()
    print(f"resilience ({A.mode}): {STATS['kill_rounds']} SIGKILLs of serve, PostgreSQL restarted and stopped,"
          f" 5xx / 429 / drops / malformed / slow at Nordea's sandbox and the Berlin Group simulator,"
          f" lost answers and 503s at SEB's,"
          f" forged and replayed callbacks, late signing")
    table = [
        ("requests", STATS["requests"]),
        ("same-key retries", STATS["same_key_retries"]),
        ("201s", STATS["201"]),
        ("payments", len(rows)),
        ("of them at the Berlin Group bank", STATS["berlin"]),
        ("bank calls faulted (Nordea's sandbox / the Berlin Group simulator / SEB's simulator)",
         f"{faulted(f'{A.sandbox}/sandbox/admin/faults')} / {faulted(f'{A.bg_sandbox}/admin/faults')}"
         f" / {faulted(f'{A.seb_app}/admin/faults')}"),
        ("SEB payments through the BankID page (payments SEB made / signed there; \"try again\" pressed)",
         f"{STATS['seb']} ({STATS['seb_made']} / {STATS['seb_signed']}; {STATS['seb_try_again']}): {STATS['seb_statuses']}"),
        ("OP payments killed between authorization and submit",
         f"{len(at_op)} ({sum(1 for v in OP_PLANS.values() if v == 'approved')} approved, {STATS['op_returned']} came back, {STATS['op_in_flight']} with their submission unanswered at the kill); submissions at OP: "
         + (", ".join(f"{k}x {v}" for k, v in sorted(op_submitted.items())) or "none")),
        ("clients that gave up on a key", STATS["gave_up"]),
        ("Berlin Group payments left open by design (initiation answer lost: 409 initiation_not_resumable, for an operator)", STATS["bg_unresolved"]),
        ("4xx final answers", ", ".join(f"{c}: {STATS[c]}" for c in ("400", "401", "404", "422") if STATS[c]) or "none"),
        ("final statuses", ", ".join(f"{k} {v}" for k, v in sorted(by_status.items()))),
        ("signed 1.5 s before the horizon, never returned",
         ", ".join(f"{k} {v}" for k, v in sorted(horizon.items())) or "none"),
        ("through the hop, the bank's page never loaded",
         ", ".join(f"{k} {v}" for k, v in sorted(hop_only.items())) or "none"),
        ("disagreements pisgate recorded (bank_disagreements)", recorded),
        ("lost", len(lost)),
        ("doubled", len(doubled)),
        ("disagreements", len(disagreements)),
        ("5xx by code", ", ".join(f"{k}: {v}" for k, v in sorted(CODES.items())) or "none"),
        ("seconds to recover", ", ".join(f"{n} {s:.1f}" for n, s in recover)),
    ]
    width = max(len(k) for k, _ in table)
    print("| " + "what".ljust(width) + " | figure |")
    print("|" + "-" * (width + 2) + "|--------|")
    for k, v in table:
        print(f"| {k.ljust(width)} | {v} |")
    for name, items in (("lost", lost), ("doubled", doubled), ("disagreements", disagreements)):
        for item in items[:20]:
            print(f"  {name}: {item}")
    bad = len(lost) + len(doubled) + len(disagreements) + int(recorded)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
