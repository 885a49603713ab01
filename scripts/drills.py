"""What the drills and benchmarks (resilience.py, failover.py, scale.py, bench_e2e.py) share:
whether pisgate's final status of a payment agrees with the sandbox bank's records of it,
the wrk script and body that load payment creation, and waiting for a condition."""

import time

# The bank's final statuses, and the pisgate status each must end as.
BANK_FINAL = {
    "Paid": "paid", "Rejected": "rejected", "InsufficientFunds": "rejected", "LimitExceeded": "rejected",
    "UserApprovalFailed": "authorization_failed", "UserApprovalCancelled": "authorization_failed",
    "UserApprovalTimeout": "expired", "Cancelled": "cancelled", "Stopped": "cancelled",
}


def bank_disagreement(status, cancel_requested, at_bank, bank_id):
    """How a final pisgate status contradicts the bank's records of that payment (the bank
    payments whose external id is the payment's), or None when the bank agrees.
    cancel_requested is psql's "t"/"f". `expired` beside the bank's Cancelled is the bank's
    deletion at pisgate's request at the late-signing horizon."""
    opened = [b for b in at_bank if b.get("exists_at_bank")]
    if status == "failed":
        return "failed but its bank payment was opened" if opened else None
    rec = next((b for b in at_bank if b["payment_id"] == bank_id), None)
    if rec is None:
        return None if status in ("expired", "cancelled") else f"{status} without a bank payment"
    want = BANK_FINAL.get(rec["status"])
    ok = (want == status) or (want == "expired" and status == "cancelled" and cancel_requested == "t") \
        or (want == "cancelled" and status == "expired" and cancel_requested != "t") \
        or (want is None and status in ("expired", "cancelled") and not rec.get("exists_at_bank"))
    return None if ok else f"pisgate {status}, bank {rec['status']}"


def bg_disagreement(status, cancel_requested, rec, sca_failed):
    """How a final pisgate status contradicts a Berlin Group bank's record of the payment
    (the simulator's /admin/payments entry), or None when the bank agrees. `expired` beside
    CANC is the bank's deletion at pisgate's request at the late-signing horizon; RJCT is
    authorization_failed where the shopper's SCA failed, else rejected."""
    if rec is None:
        return None if status in ("expired", "cancelled", "failed") else f"{status} without a bank payment"
    if status == "failed":
        return "failed but its bank payment was opened" if rec.get("opened") else None
    code = rec.get("transactionStatus")
    want = {"ACSC": "paid", "ACCC": "paid", "CANC": "cancelled",
            "RJCT": "authorization_failed" if sca_failed else "rejected"}.get(code)
    ok = (want == status) or (want == "cancelled" and status == "expired" and cancel_requested != "t") \
        or (want is None and status in ("expired", "cancelled") and not rec.get("opened"))
    if status == "paid" and code not in ("ACSC", "ACCC"):
        ok = False
    return None if ok else f"pisgate {status}, bank {code} (sca failed: {sca_failed})"


def op_disagreement(status, rec, plan):
    """How a final pisgate status contradicts OP's record of the payment (the simulator's
    /admin/payments/{id}), or None when OP agrees: paid only on Debited, a refused payment
    authorization_failed and never submitted, Revoked/Cancelled as cancelled or expired, and
    Authorized (signed, never submitted) as authorization_failed or cancelled."""
    if rec is None:
        return f"{status}, and OP has no record of it"
    op = rec.get("status")
    subs = rec.get("submissions", 0)
    if plan == "rejected" and subs:
        return f"refused by the shopper but submitted {subs} times"
    want = {"Debited": ("paid",), "Rejected": ("authorization_failed",) if subs == 0 else ("rejected",),
            "Revoked": ("expired", "cancelled"), "Cancelled": ("cancelled",),
            # Signed but never submitted: only pisgate's submission could debit it (a
            # failed code exchange, a shopper who never came back, a withheld submission).
            "Authorized": ("authorization_failed", "cancelled") if subs == 0 else ()}.get(op)
    if want is None:
        return f"pisgate {status}, OP still {op}"
    return None if status in want else f"pisgate {status}, OP {op} after {subs} submissions"


def seb_disagreement(status, rec, plan):
    """How a final pisgate status contradicts SEB's record of the payment pisgate recorded
    (the simulator's /admin/payments entry; None when pisgate recorded none), or None when
    SEB agrees: paid only on ACSC, a refusal in the app or the shopper's cancel as cancelled
    (CANC), a payment left unsigned deleted at the horizon as expired (CANC), RJCT after
    acceptance as rejected. Without a recorded SEB payment (every answer lost and never tried
    again) it must not be paid."""
    if status in ("awaiting_authorization", "authorized"):
        return f"still {status}"
    if rec is None:
        return f"{status} without a payment at SEB" if status == "paid" else None
    code = rec.get("transactionStatus")
    want = {"ACSC": ("paid",), "CANC": ("cancelled", "expired"), "RJCT": ("rejected", "authorization_failed", "expired")}.get(code)
    if want is None:
        return f"pisgate {status}, SEB still {code}"
    if plan == "approve" and status != "paid" and code == "ACSC":
        return f"signed at SEB but pisgate {status}"
    return None if status in want else f"pisgate {status}, SEB {code}"


# wrk -s: POST /v1/payments with a fresh Idempotency-Key per request (ARG1-<thread>-<n>),
# body ARG2, API key ARG3; prints one RESULT JSON line (and each thread's first answer
# other than 201 as FIRST_ERROR).
WRK_SCRIPT = r"""
local counter = 0
local next_tid = 0
local threads = {}
function setup(thread)
  next_tid = next_tid + 1
  thread:set("tid", next_tid)
  table.insert(threads, thread)
end
function init(args)
  prefix = args[1] .. "-" .. tid .. "-"
  body = args[2]
  auth = "Bearer " .. args[3]
  created = 0
  other = 0
end
function request()
  counter = counter + 1
  return wrk.format("POST", "/v1/payments", {
    ["Content-Type"] = "application/json",
    ["Authorization"] = auth,
    ["Idempotency-Key"] = prefix .. counter,
  }, body)
end
function response(status, headers, body)
  if status == 201 then
    created = created + 1
  else
    other = other + 1
    if first_error == nil then first_error = status .. " " .. string.sub(body, 1, 300) end
  end
end
function done(summary, latency, requests)
  local c, o = 0, 0
  for _, t in ipairs(threads) do
    c = c + t:get("created")
    o = o + t:get("other")
    local e = t:get("first_error")
    if e ~= nil then io.write("FIRST_ERROR " .. e .. "\n") end
  end
  io.write(string.format("RESULT {\"requests\":%d,\"seconds\":%f,\"created\":%d,\"other\":%d," ..
    "\"socket_errors\":%d,\"p50_ms\":%f,\"p99_ms\":%f,\"max_ms\":%f}\n",
    summary.requests, summary.duration / 1e6, c, o,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000))
end
"""

# A payment wrk and the benchmarks create.
PAYMENT = {
    "amount": "10.50", "currency": "EUR", "country": "FI",
    "creditor": {"account": {"type": "IBAN", "value": "FI1410093000123458"}, "name": "Kauppa Oy"},
    "return_url": "https://shop.example/done",
}


def until(check, within, every=0.2):
    """check()'s first truthy value within `within` seconds (asked every `every` s), or None."""
    deadline = time.time() + within
    while time.time() < deadline:
        v = check()
        if v:
            return v
        time.sleep(every)
    return None
