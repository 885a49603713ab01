// pisgate's BankID page in a real browser (Debian's chromium, headless), against a real
// `pisgate serve` with a SEB bank (`protocol = "seb"`, id `$SEB_BANK`, default `seb`) on the
// SEB simulator (`pisgate sandbox --protocol seb`), its `bankid_app_url` pointing at the
// simulator's test BankID app, started by scripts/browser-test.sh:
//   1. with JavaScript on, then off: a Swedish shopper's SEB payment (SEK, 66.01: signed,
//      then ACSC) opens at the hop on pisgate's BankID page in Swedish (lang, heading,
//      message); the QR code (an SVG) changes (in place with JavaScript: no navigation;
//      without it, by the page's own refresh); "Öppna BankID på den här enheten" carries an
//      autostart token (and `redirect=null`); opening that link in the test BankID app (the
//      stand-in for the phone) moves the page's message to "enter your security code";
//      approving there moves the page to the signing phase, with a new token; approving that
//      lands the shopper on the merchant's return URL with the payment's id and no status;
//      the payment ends `paid`;
//   2. a payment refused in the app (66.02): the page says so in Swedish and offers "Försök
//      igen" and "Avbryt"; cancelling lands on the shop;
//   3. the pending page and the failed page pass axe-core with no serious or critical
//      violation; no page reports a Content-Security-Policy violation.
// Environment: PISGATE_URL, SHOP_URL, MERCHANT_FILE, SCREENSHOTS (as the other browser
// tests), SEB_BANK (optional, default `seb`), SEB_APP_URL (optional: the simulator's plain
// HTTP app/admin URL; when given, the autostart token is checked against its orders).
import { chromium } from "playwright-core";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";

const base = process.env.PISGATE_URL;
const shop = process.env.SHOP_URL;
const shots = process.env.SCREENSHOTS;
const bank = process.env.SEB_BANK ?? "seb";
const simulator = process.env.SEB_APP_URL;
const { api_key: key } = JSON.parse(readFileSync(process.env.MERCHANT_FILE, "utf8"));
const axeSource = readFileSync(createRequire(import.meta.url).resolve("axe-core/axe.min.js"), "utf8");
const NBSP = "\u00a0";

// pisgate's Swedish words (src/api/bankid/text.rs, src/api/consent/text.rs).
const SV = {
  identify: "Identifiera dig med BankID",
  sign: "Skriv under betalningen med BankID",
  start: "Starta BankID-appen och läs av QR-koden, eller öppna BankID på den här enheten.",
  enterCodeIdentify: "Skriv in din säkerhetskod i BankID-appen och välj Identifiera.",
  enterCodeSign: "Skriv in din säkerhetskod i BankID-appen och välj Skriv under.",
  refused: "Underskriften avbröts i BankID-appen.",
  openHere: "Öppna BankID på den här enheten",
  tryAgain: "Försök igen",
  cancel: "Avbryt och återgå till butiken",
  continue: "Fortsätt",
};

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

function payment(amount, extra) {
  return api("POST", "/v1/payments", {
    amount,
    currency: "SEK",
    country: "SE",
    creditor: {
      account: { type: "IBAN", value: "SE4550000000058398257466" },
      name: "Kaffebaren i Lund AB",
      message: "Order 4711",
    },
    return_url: `${shop}/done.html`,
    psu_id: `browser-bankid-${crypto.randomUUID()}`,
    language: "sv",
    bank,
    ...extra,
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

const text = async (page) => (await page.locator("body").innerText()).replaceAll(NBSP, " ");
const heading = (page) => page.locator("h1").innerText();
const message = (page) => page.locator("#bankid-message").innerText();
const qr = (page) => page.locator("#bankid-qr svg").evaluate((svg) => svg.outerHTML);

/** Waits (through the page's own refreshes) until `probe(page)` is true. */
async function until(page, what, probe, ms = 30000) {
  const end = Date.now() + ms;
  let last;
  while (Date.now() < end) {
    try {
      last = await probe(page);
      if (last === true) return;
    } catch (e) {
      last = e.message; // the page was between two loads
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  assert.fail(`${what}: still not so after ${ms} ms (last: ${last}) at ${page.url()}`);
}

/** From the hop: through pisgate's consent page if there is one, to the BankID page. */
async function toBankIdPage(page, url) {
  const r = await page.goto(url);
  assert.equal(r.status(), 200, `the hop answers: ${await text(page)}`);
  const onward = page.getByRole("button", { name: /^Fortsätt till / });
  if ((await page.locator("#bankid").count()) === 0 && (await onward.count()) === 1) {
    await onward.click();
  }
  await until(page, "the BankID page", async (p) => (await p.locator("#bankid").count()) === 1);
}

/** The "open BankID on this device" link: the autostart token, checked, and the href. */
async function autostart(page) {
  const link = page.getByRole("link", { name: SV.openHere });
  const href = await link.getAttribute("href");
  const url = new URL(href);
  const token = url.searchParams.get("autostarttoken");
  assert.match(token ?? "", /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i, href);
  assert.equal(url.searchParams.get("redirect"), "null", href);
  if (simulator) {
    const orders = await (await fetch(`${simulator}/admin/orders`)).text();
    assert.ok(orders.includes(token), `the simulator knows the order of ${token}`);
  }
  return { href, token };
}

/** The QR code changes: in place with JavaScript (no navigation), by a reload without. */
async function qrChanges(page, js) {
  const first = await qr(page);
  assert.match(first, /role="img"/);
  assert.match(first, /aria-label="QR-kod för BankID-appen"/);
  if (js) {
    await page.evaluate(() => { window.notReloaded = true; });
  }
  await until(page, "a new QR code", async (p) => (await qr(p)) !== first, 10000);
  if (js) {
    assert.equal(await page.evaluate(() => window.notReloaded), true, "updated in place");
  } else {
    // Without scripting, the <noscript> refresh is a real element: the page reloads itself.
    assert.equal(await page.locator('meta[http-equiv="refresh"]').count(), 1, "the page refreshes itself");
  }
}

/** The stand-in for the phone: the test BankID app at the autostart link. */
async function inTheApp(browser, href, button, shows) {
  const ctx = await browser.newContext({ locale: "sv-SE" });
  const app = await ctx.newPage();
  const r = await app.goto(href);
  assert.equal(r.status(), 200, `the test BankID app at ${href}`);
  const body = await text(app);
  for (const s of shows) assert.ok(body.includes(s), `the app shows ${s}: ${body}`);
  await Promise.all([app.waitForLoadState(), app.getByRole("button", { name: button }).click()]);
  await ctx.close();
}

async function accessible(browser, url) {
  const ctx = await browser.newContext({ bypassCSP: true, locale: "sv-SE" });
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
  assert.ok(banks.data.some((b) => b.id === bank && b.protocol === "seb"),
    `no SEB bank "${bank}" is configured: ${JSON.stringify(banks.data.map((b) => b.id))}`);

  // 1. Identify, sign, land on the shop: with JavaScript, then without.
  for (const js of [true, false]) {
    const mode = js ? "js" : "nojs";
    const p = await payment("66.01");
    const ctx = await browser.newContext({ locale: "sv-SE", javaScriptEnabled: js });
    const page = await ctx.newPage();
    const violations = [];
    // pisgate's pages only (the shop's own page may lack a favicon).
    page.on("console", (m) => m.type() === "error" && !(m.location()?.url ?? "").startsWith(shop)
      && violations.push(`${m.text()} at ${m.location()?.url}`));
    await toBankIdPage(page, p.authorization_url);
    const csp = (await (await page.reload()).allHeaders())["content-security-policy"] ?? "";
    assert.match(csp, /^default-src 'none'; style-src 'sha256-[^;]+; script-src 'sha256-/, csp);

    // Identify: in Swedish, the QR code changes, the link carries the token.
    assert.equal(await page.getAttribute("html", "lang"), "sv");
    await until(page, "the identify phase", async (pg) => (await heading(pg)) === SV.identify);
    assert.equal(await message(page), SV.start);
    await qrChanges(page, js);
    await page.screenshot({ path: `${shots}/bankid-identify-${mode}.png`, fullPage: true });
    const identify = await autostart(page);

    // Approved in the app: the signing phase, on the same page (JavaScript) or by its refresh.
    await inTheApp(browser, identify.href, "Approve", []);
    await until(page, "the identify phase's complete", async (pg) => (await heading(pg)) === SV.sign);
    await until(page, "the signing order's QR code", async (pg) => (await pg.locator("#bankid-qr svg").count()) === 1);
    assert.equal(await page.getAttribute("html", "lang"), "sv");
    const body = await text(page);
    assert.ok(body.includes("66,01 kr"), `the amount in Swedish: ${body}`);
    await qrChanges(page, js);
    const sign = await autostart(page);
    assert.notEqual(sign.token, identify.token, "a new order, a new token");
    await page.screenshot({ path: `${shots}/bankid-sign-${mode}.png`, fullPage: true });

    // Open the app first (the page shows "enter your security code"), then approve.
    const ctxApp = await browser.newContext({ locale: "sv-SE" });
    const app = await ctxApp.newPage();
    await app.goto(sign.href);
    await until(page, "the userSign message", async (pg) => (await message(pg)) === SV.enterCodeSign);
    await Promise.all([app.waitForLoadState(), app.getByRole("button", { name: "Approve" }).click()]);
    await ctxApp.close();

    // Signed: to the merchant's return URL (without JavaScript, maybe through "Fortsätt").
    await until(page, "the merchant's return URL", async (pg) => {
      if (pg.url().startsWith(shop)) return true;
      const next = pg.getByRole("link", { name: SV.continue });
      if ((await next.count()) === 1) await next.click();
      return pg.url();
    }, 60000);
    const back = new URL(page.url());
    assert.equal(back.origin + back.pathname, `${shop}/done.html`, "the merchant's return URL");
    assert.equal(back.searchParams.get("payment_id"), p.id);
    assert.equal(back.searchParams.get("status"), null, `no status on the return: ${page.url()}`);
    assert.deepEqual(violations, [], "no console error (no policy violation)");
    await waitStatus(p.id, "paid");
    await ctx.close();
    console.log(`browser: ${mode}: a Swedish shopper identified and signed with BankID; the payment is paid`);
  }

  // 2. and 3. Refused in the app: the failed page, axe on it and on a pending page.
  {
    const p = await payment("66.02");
    const ctx = await browser.newContext({ locale: "sv-SE" });
    const page = await ctx.newPage();
    await toBankIdPage(page, p.authorization_url);
    await accessible(browser, page.url());
    const identify = await autostart(page);
    await inTheApp(browser, identify.href, "Approve", []);
    await until(page, "the signing phase", async (pg) => (await heading(pg)) === SV.sign);
    const sign = await autostart(page);
    const app = await ctx.newPage();
    await app.goto(sign.href);
    await until(page, "the refusal", async (pg) => (await message(pg)) === SV.refused);
    await app.close();
    assert.equal(await page.locator("#bankid-qr svg").count(), 0, "no QR code on a failed order");
    assert.equal(await page.getByRole("button", { name: SV.tryAgain }).count(), 1);
    await page.screenshot({ path: `${shots}/bankid-refused.png`, fullPage: true });
    await accessible(browser, page.url());
    await Promise.all([
      page.waitForURL((u) => u.href.startsWith(shop)),
      page.getByRole("button", { name: SV.cancel }).click(),
    ]);
    assert.equal(new URL(page.url()).searchParams.get("payment_id"), p.id);
    await ctx.close();
    console.log("browser: a payment refused in the BankID app shows why, offers to try again, and cancels to the shop");
  }
  console.log(`browser: bankid.mjs passed in ${((Date.now() - started) / 1000).toFixed(1)} s`);
} finally {
  await browser.close();
}
