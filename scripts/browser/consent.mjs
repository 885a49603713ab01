// The shopper's consent page in a real browser (Debian's chromium, headless), against a real
// `pisgate serve` + `pisgate sandbox` started by scripts/browser-test.sh:
//   1. a Finnish shopper sees the page in Finnish with `10,50 €`, tabs to the button by
//      keyboard, continues to the sandbox, signs, lands on the shop; the payment ends `paid`;
//   1b. a Swedish shopper does the same by mouse and lands on the merchant's return URL;
//   2. a Norwegian shopper (browser in nb, no payment language) sees `kr 250,00` and does the
//      same with JavaScript disabled;
//   3. a Swedish shopper (a standing order: `varje månad, 12 betalningar`) cancels: lands on the shop (payment id, no status), the payment is
//      `cancelled`, and the link then offers no way to the bank;
//   4. an expired payment's link shows a page with a way back to the shop and none to the bank;
//   5. the pages pass axe-core with no serious or critical violation;
//   6. in each of the five languages, a standing order's page says how often beside the
//      amount in its large type ("250,00 kr i månaden, 3 betalningar"), shows the merchant's
//      order number and the provider line (who runs the page), and names a shop that is also
//      the recipient once; the callback's plain page names the provider too; axe stays clean.
// Screenshots go to $SCREENSHOTS.
import { chromium } from "playwright-core";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";

const base = process.env.PISGATE_URL;
const shop = process.env.SHOP_URL;
const shots = process.env.SCREENSHOTS;
const { api_key: key } = JSON.parse(readFileSync(process.env.MERCHANT_FILE, "utf8"));
const axeSource = readFileSync(createRequire(import.meta.url).resolve("axe-core/axe.min.js"), "utf8");
const NBSP = "\u00a0";

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

function payment(extra) {
  return api("POST", "/v1/payments", {
    amount: "10.50",
    currency: "EUR",
    country: "FI",
    creditor: {
      account: { type: "IBAN", value: "FI1410093000123458" },
      name: "Kahvila Aalto Oy",
      message: "Tilaus 1234",
    },
    return_url: `${shop}/done.html`,
    psu_id: "browser-shopper",
    // Several banks serve DK in this run (bank_choice.mjs): these pages are Nordea's.
    bank: "nordea",
    ...extra,
  });
}

async function waitStatus(id, want, ms = 30000) {
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

/** axe-core in a CSP-bypassing copy of the page (the real one allows no script at all). */
async function accessible(browser, url, locale) {
  const ctx = await browser.newContext({ bypassCSP: true, locale });
  const page = await ctx.newPage();
  await page.goto(url);
  await page.addScriptTag({ content: axeSource });
  const result = await page.evaluate(() => window.axe.run(document, { resultTypes: ["violations"] }));
  const bad = result.violations.filter((v) => v.impact === "serious" || v.impact === "critical");
  assert.deepEqual(bad.map((v) => `${v.id}: ${v.help}`), [], `axe on ${url}`);
  await ctx.close();
}

/** At the sandbox's signing page: approve as `psu`. */
async function approveAtBank(page, psu) {
  await page.getByLabel("PSU identity").fill(psu);
  await Promise.all([page.waitForURL((u) => u.href.startsWith(shop)), page.getByRole("button", { name: "Approve" }).click()]);
}

// A fresh, empty profile: playwright's launch makes one in a temporary folder and removes it.
const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
  ],
});
const started = Date.now();
try {
  // 1. Finnish, by keyboard.
  {
    const p = await payment({ language: "fi" });
    const ctx = await browser.newContext({ locale: "en-GB" });
    const page = await ctx.newPage();
    const csp = [];
    page.on("console", (m) => m.type() === "error" && csp.push(m.text()));
    const r = await page.goto(p.authorization_url);
    assert.equal(r.status(), 200);
    assert.match((await r.allHeaders())["content-security-policy"] ?? JSON.stringify(await r.allHeaders()), /^default-src 'none'; style-src 'sha256-/);
    assert.equal(await page.getAttribute("html", "lang"), "fi");
    const body = await text(page);
    for (const shown of ["Vahvista maksu", "Kahvila Aalto", "10,50 €", "Kahvila Aalto Oy", "FI…3458",
      "Tilaus 1234", "Mahdollisimman pian", "Nordea"]) {
      assert.ok(body.includes(shown), `${shown} missing in: ${body}`);
    }
    assert.ok(!body.includes("FI1410093000123458"), "never the full account");
    // The stylesheet applied (its hash is in the policy): the button is the dark blue one.
    const button = page.getByRole("button", { name: "Jatka pankkiin Nordea" });
    assert.equal(await button.evaluate((b) => getComputedStyle(b).backgroundColor), "rgb(11, 61, 145)");
    assert.deepEqual(csp, [], "no policy violation");
    await page.screenshot({ path: `${shots}/consent-fi.png`, fullPage: true });
    // Keyboard only: Tab until the button has the focus, then Enter.
    let focused = "";
    for (let i = 0; i < 10 && !focused.startsWith("Jatka pankkiin"); i++) {
      await page.keyboard.press("Tab");
      focused = await page.evaluate(() => document.activeElement?.textContent ?? "");
    }
    assert.equal(focused, "Jatka pankkiin Nordea");
    await Promise.all([page.waitForURL((u) => !u.href.startsWith(base)), page.keyboard.press("Enter")]);
    const bank = (await text(page));
    assert.ok(bank.includes("10,50 €"), `the sandbox shows the amount in Finnish: ${bank}`);
    await approveAtBank(page, "browser-fi");
    const back = new URL(page.url());
    assert.equal(back.origin + back.pathname, `${shop}/done.html`, "the merchant's return URL");
    assert.equal(back.searchParams.get("payment_id"), p.id);
    assert.equal(back.searchParams.get("status"), null, `no status on the return: ${page.url()}`);
    await waitStatus(p.id, "paid");
    await ctx.close();
    console.log("browser: fi shopper saw 10,50 €, continued by keyboard, signed; the payment is paid");
  }

  // 1b. Swedish, by mouse: continues, signs and lands on the shop's return URL.
  {
    const p = await payment({ language: "sv" });
    const ctx = await browser.newContext({ locale: "sv-SE" });
    const page = await ctx.newPage();
    await page.goto(p.authorization_url);
    assert.equal(await page.getAttribute("html", "lang"), "sv");
    const body = await text(page);
    assert.ok(body.includes("10,50 €"), `the amount in Swedish: ${body}`);
    await Promise.all([page.waitForURL((u) => !u.href.startsWith(base)),
      page.getByRole("button", { name: /Nordea/ }).click()]);
    await approveAtBank(page, "browser-sv");
    const back = new URL(page.url());
    assert.equal(back.origin + back.pathname, `${shop}/done.html`, "the merchant's return URL");
    assert.equal(back.searchParams.get("payment_id"), p.id);
    await waitStatus(p.id, "paid");
    await ctx.close();
    console.log("browser: sv shopper saw 10,50 €, continued, signed, landed on the return URL; the payment is paid");
  }

  // 2. Norwegian from the browser's language, with JavaScript disabled.
  {
    const p = await payment({
      amount: "250", currency: "NOK", country: "NO",
      creditor: { account: { type: "BBAN_NO", value: "86011117947" }, name: "Butikk AS",
        reference: { type: "OCR", value: "1234566" } },
    });
    const ctx = await browser.newContext({ locale: "nb-NO", javaScriptEnabled: false });
    const page = await ctx.newPage();
    await page.goto(p.authorization_url);
    assert.equal(await page.getAttribute("html", "lang"), "nb");
    const body = await text(page);
    for (const shown of ["Bekreft betalingen", "kr 250,00", "Butikk AS", "1234566"]) {
      assert.ok(body.includes(shown), `${shown} missing in: ${body}`);
    }
    await page.screenshot({ path: `${shots}/consent-nb.png`, fullPage: true });
    await Promise.all([page.waitForURL((u) => !u.href.startsWith(base)),
      page.getByRole("button", { name: "Fortsett til Nordea" }).click()]);
    await approveAtBank(page, "browser-nb");
    assert.equal(new URL(page.url()).searchParams.get("payment_id"), p.id);
    await waitStatus(p.id, "paid");
    await ctx.close();
    console.log("browser: nb shopper (no JavaScript) saw kr 250,00, signed; the payment is paid");
  }

  // 3. Swedish shopper cancels; 4. accessibility of the consent and the closed page.
  {
    const p = await payment({
      language: "sv",
      recurring: { count: 12, recurrence_type: "MONTHLY_SAME_DAY" },
    });
    await accessible(browser, p.authorization_url, "sv-SE");
    const ctx = await browser.newContext({ locale: "sv-SE" });
    const page = await ctx.newPage();
    await page.goto(p.authorization_url);
    const body = await text(page);
    assert.ok(body.includes("10,50 €") && body.includes("varje månad, 12 betalningar"), body);
    await page.screenshot({ path: `${shots}/consent-sv.png`, fullPage: true });
    await Promise.all([page.waitForURL((u) => u.href.startsWith(shop)),
      page.getByRole("button", { name: "Avbryt och återgå till butiken" }).click()]);
    const back = new URL(page.url());
    assert.equal(back.pathname, "/done.html");
    assert.equal(back.searchParams.get("payment_id"), p.id);
    assert.equal(back.searchParams.get("status"), null, "the status is the API's to tell");
    const cancelled = await api("GET", `/v1/payments/${p.id}`);
    assert.equal(cancelled.status, "cancelled");
    assert.equal(cancelled.failure.code, "cancelled_by_shopper");
    const again = await page.goto(p.authorization_url);
    assert.equal(again.status(), 410);
    assert.equal(await page.locator("form, button").count(), 0, "no way to the bank");
    assert.ok((await text(page)).includes("Betalningen är avbruten"));
    await page.getByRole("link", { name: "Återgå till butiken" }).click();
    await page.waitForURL((u) => u.href.startsWith(shop));
    await accessible(browser, p.authorization_url, "sv-SE");
    await ctx.close();
    console.log("browser: sv shopper cancelled, landed on the shop; the link now leads nowhere near the bank");
  }
  // 4. Expired: pisgate's signing window has passed (set in the database, as time would).
  {
    const p = await payment({ language: "fi" });
    execFileSync("psql", [process.env.DATABASE_URL, "-qc",
      `UPDATE payments SET expires_at = now() - interval '1 second' WHERE id = '${p.id}'`]);
    const ctx = await browser.newContext({ locale: "fi-FI" });
    const page = await ctx.newPage();
    const r = await page.goto(p.authorization_url);
    assert.equal(r.status(), 410);
    assert.ok((await text(page)).includes("Maksulinkki on vanhentunut"));
    assert.equal(await page.locator("form, button").count(), 0, "no way to the bank");
    await page.getByRole("link", { name: "Palaa kauppaan" }).click();
    await page.waitForURL((u) => u.href.startsWith(shop));
    assert.equal(new URL(page.url()).searchParams.get("payment_id"), p.id);
    assert.equal(new URL(page.url()).searchParams.get("status"), null);
    await accessible(browser, p.authorization_url, "fi-FI");
    await ctx.close();
    console.log("browser: an expired link offers only the way back to the shop");
  }
  // 6. The page's lines in all five languages: how often beside the amount, the order
  //    number, the provider line, and a shop that is the recipient named once.
  {
    const provider = "pisgate demo TPP (sandbox)";
    const licence = "sandbox only, not licensed";
    const accounts = {
      FI: ["EUR", { type: "IBAN", value: "FI1410093000123458" }],
      SE: ["SEK", { type: "BGNR", value: "50501055" }],
      DK: ["DKK", { type: "BBAN_DK", value: "30004010021337" }],
      NO: ["NOK", { type: "BBAN_NO", value: "86011117947" }],
    };
    const cases = [
      { lang: "en", locale: "en-GB", country: "FI", amount: "€250.00 a month, 3 payments", order: "Order number",
        shop: "Shop", recipient: "Recipient",
        line: `This page is provided by ${provider}, a payment initiation service provider (licence: ${licence}).` },
      { lang: "fi", locale: "fi-FI", country: "FI", amount: "250,00 € kuukaudessa, 3 maksua", order: "Tilausnumero",
        shop: "Kauppa", recipient: "Saaja",
        line: `Tämän sivun tarjoaa ${provider}, maksutoimeksiantopalvelun tarjoaja (toimilupa: ${licence}).` },
      { lang: "sv", locale: "sv-SE", country: "SE", amount: "250,00 kr i månaden, 3 betalningar", order: "Ordernummer",
        shop: "Butik", recipient: "Mottagare",
        line: `Sidan tillhandahålls av ${provider}, leverantör av betalningsinitieringstjänster (tillstånd: ${licence}).` },
      { lang: "da", locale: "da-DK", country: "DK", amount: "250,00 kr. om måneden, 3 betalinger", order: "Ordrenummer",
        shop: "Butik", recipient: "Modtager",
        line: `Siden leveres af ${provider}, udbyder af betalingsinitieringstjenester (tilladelse: ${licence}).` },
      { lang: "nb", locale: "nb-NO", country: "NO", amount: "kr 250,00 i måneden, 3 betalinger", order: "Ordrenummer",
        shop: "Butikk", recipient: "Mottaker",
        line: `Siden leveres av ${provider}, tilbyder av betalingsfullmaktstjenester (tillatelse: ${licence}).` },
    ];
    for (const c of cases) {
      const [currency, account] = accounts[c.country];
      // The merchant is "Kahvila Aalto": here it is also the recipient.
      const p = await payment({
        language: c.lang === "nb" ? "no" : c.lang, amount: "250.00", currency, country: c.country,
        reference: "ORDER-2026-0042",
        creditor: { account, name: "Kahvila Aalto" },
        recurring: { count: 3, recurrence_type: "MONTHLY_SAME_DAY" },
      });
      const ctx = await browser.newContext({ locale: c.locale });
      const page = await ctx.newPage();
      const errors = [];
      page.on("console", (m) => m.type() === "error" && errors.push(m.text()));
      assert.equal((await page.goto(p.authorization_url)).status(), 200);
      assert.equal(await page.getAttribute("html", "lang"), c.lang);
      const big = page.locator("p.amount");
      assert.equal((await big.innerText()).replaceAll(NBSP, " "), c.amount, `${c.lang}: the large type`);
      assert.equal(await big.evaluate((e) => getComputedStyle(e).fontSize), "32px", "the stylesheet applied");
      const rows = await page.locator("dl").evaluate((dl) => {
        const out = [];
        for (const dt of dl.querySelectorAll("dt")) out.push([dt.textContent, dt.nextElementSibling.textContent]);
        return out;
      });
      const row = (label) => rows.filter(([dt]) => dt === label).map(([, dd]) => dd);
      assert.deepEqual(row(c.order), ["ORDER-2026-0042"], `${c.lang}: the order number in ${JSON.stringify(rows)}`);
      assert.deepEqual(row(c.recipient), ["Kahvila Aalto"], `${c.lang}: ${JSON.stringify(rows)}`);
      assert.deepEqual(row(c.shop), [], `${c.lang}: the shop is the recipient, named once: ${JSON.stringify(rows)}`);
      assert.equal(rows.filter(([, dd]) => dd === "Kahvila Aalto").length, 1, JSON.stringify(rows));
      assert.equal(await page.locator("p.to").innerText(), `${c.shop}: Kahvila Aalto`, `${c.lang}: the header's word for the shop`);
      assert.equal(await page.locator("footer").innerText(), c.line, `${c.lang}: who runs the page`);
      assert.deepEqual(errors, [], "no policy violation");
      await page.screenshot({ path: `${shots}/consent-recurring-${c.lang}.png`, fullPage: true });
      await accessible(browser, p.authorization_url, c.locale);
      await ctx.close();
    }
    // The callback's plain page (a return link without its state) names the provider too.
    const ctx = await browser.newContext({ locale: "en-GB" });
    const page = await ctx.newPage();
    assert.equal((await page.goto(`${base}/v1/callbacks/nordea?code=x`)).status(), 400);
    assert.equal(await page.locator("footer").innerText(), cases[0].line);
    await accessible(browser, `${base}/v1/callbacks/nordea?code=x`, "en-GB");
    await ctx.close();
    console.log("browser: in en, fi, sv, da and nb a standing order reads how often beside the amount, with the order number, the provider line and the shop named once; axe clean");
  }
  console.log(`browser: all consent-page checks passed in ${((Date.now() - started) / 1000).toFixed(1)} s`);
} finally {
  await browser.close();
}
