// The operator console in a real browser (Debian's chromium, headless) against the stack
// scripts/browser-test.sh started: an operator signs in on the admin listener, finds a
// payment by its reference, opens it and sees its timeline and the chain's verification;
// replays a dead webhook delivery from the "needs attention" list after confirming, the
// receiver gets it and the audit log shows it; the console is not on the public listener;
// the pages pass axe-core with no serious or critical violation; a form without its CSRF
// token is refused; five wrong passwords lock the account (the right one is then refused).
// The status filters are selects of the status sets (a value outside them is refused naming
// it), every time carries its zone, an empty search says so, and a destructive action's
// confirmation names the merchant and is styled as dangerous (under the strict CSP too).
// Screenshots go to $SCREENSHOTS.
import { chromium } from "playwright-core";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";

const base = process.env.PISGATE_URL;
const admin = process.env.ADMIN_URL;
const shop = process.env.SHOP_URL;
const shots = process.env.SCREENSHOTS;
const email = process.env.OPERATOR_EMAIL;
const password = process.env.OPERATOR_PASSWORD;
const { api_key: key, id: merchantId } = JSON.parse(readFileSync(process.env.MERCHANT_FILE, "utf8"));
const axeSource = readFileSync(createRequire(import.meta.url).resolve("axe-core/axe.min.js"), "utf8");

async function api(method, path, body, expect) {
  const r = await fetch(base + path, {
    method,
    headers: { authorization: `Bearer ${key}`, "content-type": "application/json", "idempotency-key": crypto.randomUUID() },
    body: body && JSON.stringify(body),
  });
  assert.equal(r.status, expect, `${method} ${path}`);
  return r.json();
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const newPayment = (reference) => api("POST", "/v1/payments", {
  amount: "42.00", currency: "EUR", country: "FI", bank: "nordea", reference,
  creditor: { account: { type: "IBAN", value: "FI1410093000123458" }, name: "Kahvila Aalto Oy" },
  return_url: `${shop}/done.html`,
}, 201);

const reference = `console-${Date.now()}`;
const payment = await newPayment(reference);
// A webhook whose receiver fails its first three deliveries: the cancel's event dies.
await api("POST", "/v1/webhook-endpoints", { url: `${shop}/hooks` }, 201);
const hooked = await newPayment(`${reference}-hooked`);
await api("POST", `/v1/payments/${hooked.id}/cancel`, undefined, 200);
const accepted = async () => Number(await (await fetch(`${shop}/hooks/count`)).text());

async function axe(page) {
  await page.addScriptTag({ content: axeSource });
  const result = await page.evaluate(() => window.axe.run(document, { resultTypes: ["violations"] }));
  const bad = result.violations.filter((v) => v.impact === "serious" || v.impact === "critical");
  assert.deepEqual(bad.map((v) => `${v.id}: ${v.help}`), [], `axe on ${page.url()}`);
}

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"],
});
try {
  const ctx = await browser.newContext({ bypassCSP: true });
  const page = await ctx.newPage();
  assert.equal((await page.goto(`${base}/console/login`)).status(), 404, "not on the public listener");
  await page.goto(`${admin}/console`);
  assert.ok(page.url().endsWith("/console/login"), page.url());
  await axe(page);
  await page.getByLabel("Email").fill(email);
  await page.getByLabel("Password").fill(password);
  await Promise.all([page.waitForURL(/\/console\/payments$/), page.getByRole("button", { name: "Sign in" }).click()]);
  await page.getByLabel("Reference").fill(reference);
  await Promise.all([page.waitForURL(/reference=/), page.getByRole("button", { name: "Search" }).click()]);
  const rows = page.locator("tbody tr");
  assert.equal(await rows.count(), 1);
  assert.ok((await rows.first().innerText()).includes("€42.00"));
  assert.match(await rows.first().innerText(), /\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC/, "the time carries its zone");
  // The status filters are selects of the status sets, with "any" first.
  // (A label that wraps a select names it with the chosen option too: "Status any".)
  const statusSelect = page.getByRole("combobox", { name: /^Status/ });
  const bankSelect = page.getByRole("combobox", { name: /^Bank status/ });
  const options = (select) => select.locator("option").evaluateAll((os) => os.map((o) => o.value));
  assert.deepEqual(await options(statusSelect), ["", "awaiting_authorization", "authorized", "paid", "rejected",
    "authorization_failed", "cancelled", "expired", "failed"]);
  const bankOptions = await options(bankSelect);
  assert.ok(bankOptions[0] === "" && bankOptions.includes("PendingUserApproval") && bankOptions.includes("Paid"), `${bankOptions}`);
  assert.equal(await statusSelect.locator("option").first().innerText(), "any");
  await statusSelect.selectOption("awaiting_authorization");
  await bankSelect.selectOption("PendingUserApproval");
  await Promise.all([page.waitForURL(/status=awaiting_authorization/), page.getByRole("button", { name: "Search" }).click()]);
  assert.equal(await rows.count(), 1, "the chosen statuses find the payment");
  assert.equal(await statusSelect.inputValue(), "awaiting_authorization", "the choice stays chosen");
  await axe(page);
  await page.screenshot({ path: `${shots}/console-search.png`, fullPage: true });
  await statusSelect.selectOption("paid");
  await Promise.all([page.waitForURL(/status=paid/), page.getByRole("button", { name: "Search" }).click()]);
  assert.ok((await page.locator("main").innerText()).includes("No payments match"), "an empty search says so");
  assert.equal(await page.locator("table").count(), 0, "no empty table");
  await axe(page);
  // A value outside the set (the bank's "Paid" as a payment status) is refused, naming it.
  const typo = await page.goto(`${admin}/console/payments?status=Paid&reference=${reference}`);
  assert.equal(typo.status(), 400);
  const alert = await page.getByRole("alert").innerText();
  assert.ok(alert.includes('status: "Paid" is not a payment status'), alert);
  assert.equal(await page.locator("table").count(), 0, "no results beside the error");
  await page.goto(`${admin}/console/payments?reference=${reference}`);
  await Promise.all([page.waitForURL(new RegExp(payment.id)), page.getByRole("link", { name: payment.id }).click()]);
  const body = await page.locator("body").innerText();
  for (const shown of ["Ledger chain", "Verified:", "Timeline", "created", "awaiting_authorization", "PendingUserApproval", "Webhook deliveries"]) {
    assert.ok(body.includes(shown), `${shown} missing in: ${body}`);
  }
  await axe(page);
  await page.screenshot({ path: `${shots}/console-payment.png`, fullPage: true });

  // The hooked payment's timeline shows its delivery's attempts: three, dead, the last
  // answered 500.
  const deliveriesOf = async (id) => {
    await page.goto(`${admin}/console/payments/${id}`);
    return page.locator("table").filter({ hasText: "Attempts" }).last().locator("tbody tr").first().innerText();
  };
  let row = "";
  for (let i = 0; i < 50 && !row.includes("dead"); i++) {
    row = await deliveriesOf(hooked.id);
    if (!row.includes("dead")) await sleep(200);
  }
  const cells = row.split("\t").map((c) => c.trim());
  assert.ok(cells.includes("dead") && cells.includes("3") && row.includes("HTTP 500"), `delivery row: ${row}`);

  // Needs attention: the dead delivery, replayed after confirming.
  let dead = 0;
  for (let i = 0; i < 50 && dead === 0; i++) {
    await page.goto(`${admin}/console/attention`);
    dead = await page.getByRole("button", { name: "Replay" }).count();
    if (dead === 0) await sleep(200);
  }
  assert.equal(dead, 1, "one dead delivery listed");
  assert.equal(await accepted(), 0);
  await axe(page);
  await page.screenshot({ path: `${shots}/console-attention.png`, fullPage: true });
  await page.getByRole("button", { name: "Replay" }).click();
  assert.ok((await page.locator("main").innerText()).includes("replay delivery"));
  await Promise.all([page.waitForURL(/\/console\/attention$/), page.getByRole("button", { name: "Confirm" }).click()]);
  for (let i = 0; i < 50 && (await accepted()) === 0; i++) await sleep(200);
  assert.equal(await accepted(), 1, "the receiver got the replayed delivery");
  // The payment's timeline now shows the replayed delivery answered 200.
  const replayed = await deliveriesOf(hooked.id);
  assert.ok(replayed.includes("delivered") && replayed.includes("HTTP 200"), `after the replay: ${replayed}`);
  await page.goto(`${admin}/console/attention`);
  assert.ok((await page.locator("main").innerText()).includes("No dead deliveries."), "the emptied list says so");
  await axe(page);
  await page.getByRole("link", { name: "Audit log" }).click();
  const audit = await page.locator("tbody").innerText();
  assert.ok(audit.includes("replay_delivery") && audit.includes(email), audit);
  assert.match(audit, /\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC/, "audit times carry their zone");

  // Disabling a merchant: the confirmation names it by name and id; both buttons are red.
  await page.getByRole("link", { name: "Merchants" }).click();
  await page.getByRole("button", { name: "Disable" }).click();
  const confirmation = await page.locator("main").innerText();
  assert.ok(confirmation.includes("Kahvila Aalto") && confirmation.includes(merchantId), confirmation);
  assert.equal(await page.getByRole("button", { name: "Confirm" }).getAttribute("class"), "danger");
  await axe(page);
  await page.screenshot({ path: `${shots}/console-confirm.png`, fullPage: true });
  await page.getByRole("link", { name: "Cancel" }).click();
  await Promise.all([page.waitForURL(/\/console\/login$/), page.getByRole("button", { name: "Sign out", exact: true }).click()]);
  await ctx.close();
  console.log("browser: an operator signed in, found the payment by its reference, saw its timeline, saw a dead delivery's three attempts on its payment's timeline, replayed it (received, HTTP 200 on the timeline) and saw it in the audit log");
  console.log("browser: status filters are selects of the status sets (\"Paid\" as a status refused naming it), times carry UTC, an empty search and an emptied list say so, the disable confirmation names the merchant");

  // Under the strict CSP (no bypass): the danger style comes from the hashed stylesheet.
  {
    const ctx = await browser.newContext();
    const page = await ctx.newPage();
    await page.goto(`${admin}/console/login`);
    await page.getByLabel("Email").fill(email);
    await page.getByLabel("Password").fill(password);
    await Promise.all([page.waitForURL(/\/console\/payments$/), page.getByRole("button", { name: "Sign in" }).click()]);
    await page.goto(`${admin}/console/merchants`);
    const background = (name) => page.getByRole("button", { name, exact: true })
      .evaluate((b) => getComputedStyle(b).backgroundColor);
    assert.equal(await background("Revoke all keys now"), "rgb(163, 22, 11)", "destructive: red");
    assert.equal(await background("Disable"), "rgb(163, 22, 11)", "destructive: red");
    assert.equal(await background("Sign out"), "rgb(11, 61, 145)", "not destructive: the usual blue");
    await ctx.close();
    console.log("browser: destructive buttons are red under the strict CSP");
  }

  // A form without its CSRF token is refused: the sign-in form with the hidden field removed.
  {
    const ctx = await browser.newContext();
    const page = await ctx.newPage();
    await page.goto(`${admin}/console/login`);
    await page.evaluate(() => document.querySelectorAll("input[name=csrf]").forEach((e) => e.remove()));
    await page.getByLabel("Email").fill(email);
    await page.getByLabel("Password").fill(password);
    const [r] = await Promise.all([page.waitForResponse((r) => r.request().method() === "POST"),
      page.getByRole("button", { name: "Sign in" }).click()]);
    assert.equal(r.status(), 403, "sign-in without its CSRF token");
    await page.waitForLoadState();
    assert.ok(!page.url().includes("/console/payments"), page.url());
    await ctx.close();
    console.log("browser: a form without its CSRF token was refused (403)");
  }

  // Five wrong passwords lock the account: the right one is then refused too.
  {
    const ctx = await browser.newContext();
    const page = await ctx.newPage();
    const attempt = async (pw) => {
      await page.goto(`${admin}/console/login`);
      await page.getByLabel("Email").fill(email);
      await page.getByLabel("Password").fill(pw);
      const [r] = await Promise.all([page.waitForResponse((r) => r.request().method() === "POST"),
        page.getByRole("button", { name: "Sign in" }).click()]);
      await page.waitForLoadState();
      return r.status();
    };
    for (let i = 0; i < 5; i++) assert.equal(await attempt(`wrong password ${i}!`), 401);
    assert.equal(await attempt(password), 401, "locked for a while, even with the right password");
    assert.ok((await page.locator("body").innerText()).includes("locked for a while"));
    assert.ok(!page.url().includes("/console/payments"), page.url());
    await ctx.close();
    console.log("browser: five wrong passwords locked the account; the right one was then refused");
  }
} finally {
  await browser.close();
}
