// An OP payment in a real browser (Debian's chromium, headless), against a real `pisgate
// serve` with the bank `op` (`protocol = "op"`, id `$OP_BANK`, default `op`) on OP's strict
// simulator (`pisgate sandbox --protocol op`), started by scripts/browser-test.sh:
//   1. with JavaScript: a Finnish shopper's OP payment (EUR) goes from the hop through
//      pisgate's consent page to the simulator's authorization page (which checked pisgate's
//      signed request object), Approve sends the browser back to pisgate's
//      `/v1/callbacks/oidc` with the code and the ID token in the URL fragment; pisgate's
//      page moves the fragment into the query (its only script, allowed by its CSP hash: no
//      policy violation), pisgate checks the ID token, exchanges the code, submits the
//      payment and lands the shopper on the merchant's return URL with the payment's id and
//      nothing else; the payment ends `paid` and OP performed one submission;
//   2. Reject at OP: back on the shop; the payment ends `authorization_failed` (the shopper
//      refused) and was never submitted;
//   3. without JavaScript, the return page says how to continue (its <noscript> text) and
//      nothing is exchanged; axe-core finds no serious or critical violation on the page.
// Environment: PISGATE_URL, SHOP_URL, MERCHANT_FILE, SCREENSHOTS (as the other browser
// tests), OP_BANK (optional, default `op`), OP_APP_URL (the simulator's plain HTTP app/admin).
import { chromium } from "playwright-core";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";

const base = process.env.PISGATE_URL;
const shop = process.env.SHOP_URL;
const shots = process.env.SCREENSHOTS;
const bank = process.env.OP_BANK ?? "op";
const simulator = process.env.OP_APP_URL;
const { api_key: key } = JSON.parse(readFileSync(process.env.MERCHANT_FILE, "utf8"));
const axeSource = readFileSync(createRequire(import.meta.url).resolve("axe-core/axe.min.js"), "utf8");

async function api(method, path, body) {
  const r = await fetch(base + path, {
    method,
    headers: {
      authorization: `Bearer ${key}`,
      "content-type": "application/json",
      "idempotency-key": crypto.randomUUID(),
    },
    body: body && JSON.stringify(body),
  });
  const json = await r.json();
  assert.ok(r.ok, `${method} ${path}: ${r.status} ${JSON.stringify(json)}`);
  return json;
}

function payment(amount) {
  return api("POST", "/v1/payments", {
    amount,
    currency: "EUR",
    country: "FI",
    bank,
    creditor: {
      account: { type: "IBAN", value: "FI2112345600000785" },
      name: "Kahvila Aalto Oy",
      message: "Tilaus 4711",
    },
    return_url: `${shop}/done.html`,
    language: "fi",
  });
}

async function waitStatus(id, want, ms = 60000) {
  const end = Date.now() + ms;
  let p;
  while (Date.now() < end) {
    p = await api("GET", `/v1/payments/${id}`);
    if (p.status === want) return p;
    await new Promise((r) => setTimeout(r, 300));
  }
  assert.fail(`payment ${id} is ${p?.status}, not ${want}`);
}

/** OP's record of a payment at the simulator (its status and the submissions it performed). */
async function atOp(bankPaymentId) {
  const r = await fetch(`${simulator}/admin/payments/${encodeURIComponent(bankPaymentId)}`);
  assert.equal(r.status, 200, `the simulator knows ${bankPaymentId}`);
  return r.json();
}

/** From the hop, through pisgate's consent page, to OP's authorization page. */
async function toOp(page, url) {
  const r = await page.goto(url);
  assert.equal(r.status(), 200, `the hop answers at ${url}`);
  if (!page.url().startsWith(simulator)) {
    const onward = page.getByRole("button", { name: /OP/ });
    assert.equal(await onward.count(), 1, `pisgate's consent page offers to continue to OP: ${page.url()}`);
    await Promise.all([page.waitForURL((u) => u.href.startsWith(simulator)), onward.click()]);
  }
  assert.ok(page.url().startsWith(`${simulator}/oauth/authorize?`), page.url());
  const request = new URL(page.url()).searchParams.get("request") ?? "";
  assert.match(request, /^[\w-]+\.[\w-]+\.[\w-]+$/, "a signed request object, not an unsigned one");
}

async function accessible(browser, url, js) {
  const ctx = await browser.newContext({ bypassCSP: true, javaScriptEnabled: js });
  const page = await ctx.newPage();
  await page.goto(url);
  await page.addScriptTag({ content: axeSource });
  const result = await page.evaluate(() => window.axe.run(document, { resultTypes: ["violations"] }));
  const bad = result.violations.filter((v) => v.impact === "serious" || v.impact === "critical");
  assert.deepEqual(bad.map((v) => `${v.id}: ${v.help}`), [], `axe on ${url}`);
  await ctx.close();
}

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
  ],
});
const started = Date.now();
try {
  const banks = await api("GET", "/v1/banks");
  assert.ok(banks.data.some((b) => b.id === bank && b.protocol === "op"),
    `no OP bank "${bank}" is configured: ${JSON.stringify(banks.data.map((b) => b.id))}`);

  // 1. Approve at OP: back through the fragment page to the shop; paid, submitted once.
  {
    const p = await payment("12.30");
    const ctx = await browser.newContext({ locale: "fi-FI" });
    const page = await ctx.newPage();
    const violations = [];
    const seen = [];
    // pisgate's pages only (the shop's and the simulator's pages may lack a favicon).
    page.on("console", (m) => m.type() === "error" && (m.location()?.url ?? "").startsWith(base)
      && violations.push(`${m.text()} at ${m.location()?.url}`));
    const asked = [];
    page.on("framenavigated", (f) => f === page.mainFrame() && seen.push(f.url()));
    page.on("request", (q) => q.isNavigationRequest() && asked.push(q.url()));
    await toOp(page, p.authorization_url);
    await page.screenshot({ path: `${shots}/op-authorize.png`, fullPage: true });
    await Promise.all([
      page.waitForURL((u) => u.href.startsWith(shop), { timeout: 30000 }),
      page.getByRole("button", { name: "Approve" }).click(),
    ]);
    const oidc = seen.filter((u) => u.includes("/v1/callbacks/oidc"));
    assert.ok(oidc.some((u) => u.includes("#") && u.includes("code=")), `the code came in the fragment: ${oidc}`);
    assert.ok(asked.some((u) => /\/v1\/callbacks\/oidc\?[^#]*code=/.test(u)), `the page moved it into the query: ${asked}`);
    const back = new URL(page.url());
    assert.equal(back.origin + back.pathname, `${shop}/done.html`, "the merchant's return URL");
    assert.equal(back.searchParams.get("payment_id"), p.id);
    assert.equal(back.searchParams.get("status"), null, `no status on the return: ${page.url()}`);
    assert.equal(back.hash, "", "nothing of OP's answer reaches the shop");
    assert.deepEqual(violations, [], "no console error (no policy violation)");
    const paid = await waitStatus(p.id, "paid");
    const op = await atOp(paid.bank_payment_id);
    assert.equal(op.status, "Debited");
    assert.equal(op.submissions, 1, "submitted exactly once");
    await ctx.close();
    console.log("browser: an OP payment approved at OP came back through the fragment page, was submitted once and is paid");
  }

  // 2. Reject at OP: the shopper refused; never submitted.
  {
    const p = await payment("12.31");
    const ctx = await browser.newContext({ locale: "fi-FI" });
    const page = await ctx.newPage();
    await toOp(page, p.authorization_url);
    await Promise.all([
      page.waitForURL((u) => u.href.startsWith(shop), { timeout: 30000 }),
      page.getByRole("button", { name: "Reject" }).click(),
    ]);
    assert.equal(new URL(page.url()).searchParams.get("payment_id"), p.id);
    const failed = await waitStatus(p.id, "authorization_failed");
    const op = await atOp(failed.bank_payment_id);
    assert.equal(op.status, "Rejected");
    assert.equal(op.submissions, 0, "a refused payment is never submitted");
    await ctx.close();
    console.log("browser: an OP payment rejected at OP ends authorization_failed, never submitted");
  }

  // 3. Without JavaScript the return page explains itself; accessible either way.
  {
    const url = `${base}/v1/callbacks/oidc#code=x&state=y`;
    const ctx = await browser.newContext({ javaScriptEnabled: false });
    const page = await ctx.newPage();
    const r = await page.goto(url);
    assert.equal(r.status(), 200);
    assert.equal((await r.allHeaders())["cache-control"], "no-store");
    const body = await page.locator("body").innerText();
    assert.ok(/JavaScript/i.test(body), `the page says JavaScript is needed: ${body}`);
    assert.ok(page.url().includes("#code=x"), "nothing moved without JavaScript");
    await page.screenshot({ path: `${shots}/op-return-nojs.png`, fullPage: true });
    await ctx.close();
    // axe runs as a script: on the page without an answer (it says so), JavaScript on.
    await accessible(browser, `${base}/v1/callbacks/oidc`, true);
    console.log("browser: without JavaScript the OP return page says how to continue");
  }
  console.log(`browser: op.mjs passed in ${((Date.now() - started) / 1000).toFixed(1)} s`);
} finally {
  await browser.close();
}
