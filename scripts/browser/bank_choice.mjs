// Deferred initiation in a real browser (Debian's chromium, headless), against the real
// `pisgate serve` + `pisgate sandbox` of scripts/browser-test.sh, which configures two more
// Nordea-protocol banks for DK on the same sandbox: `andels` ("Andelsbanken") and `konto`
// ("Kontobanken", which needs the shopper's account):
//   1. a Danish shopper chooses Andelsbanken by keyboard only (Tab, Enter), continues from the
//      consent page by keyboard, signs at the bank and lands on the shop;
//   2. with JavaScript disabled, an English shopper chooses Kontobanken, types an IBAN with
//      wrong check digits: the form comes back with the error at the field (and a summary
//      linking to it) and the value kept; the right IBAN leads to the consent page and on to
//      the bank;
//   3. in each of the five languages the choice page, the IBAN page and its error page read in
//      that language, name the provider, and pass axe-core with no violation at all.
// Screenshots go to $SCREENSHOTS.
import { chromium } from "playwright-core";
import assert from "node:assert/strict";
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

/** A DK payment with no bank: three banks serve DK, so the shopper chooses. */
async function payment(extra) {
  const p = await api("POST", "/v1/payments", {
    amount: "250.00",
    currency: "DKK",
    country: "DK",
    creditor: { account: { type: "BBAN_DK", value: "30004010021337" }, name: "Kahvila Aalto ApS" },
    return_url: `${shop}/done.html`,
    psu_id: "browser-chooser",
    ...extra,
  });
  assert.equal(p.initiation, extra?.bank ? "awaiting_debtor_account" : "awaiting_bank_choice", JSON.stringify(p));
  return p;
}

async function waitInitiated(id, ms = 10000) {
  const end = Date.now() + ms;
  let p;
  while (Date.now() < end) {
    p = await api("GET", `/v1/payments/${id}`);
    if (p.initiation === "initiated") return p;
    await new Promise((r) => setTimeout(r, 200));
  }
  assert.fail(`payment ${id} is ${p?.initiation}, not initiated`);
}

const text = async (page) => (await page.locator("body").innerText()).replaceAll(NBSP, " ");

/** Runs axe-core on the page as it is (the context must bypass the page's CSP). */
async function axe(page, what) {
  await page.addScriptTag({ content: axeSource });
  const result = await page.evaluate(() => window.axe.run(document, { resultTypes: ["violations"] }));
  assert.deepEqual(result.violations.map((v) => `${v.id} (${v.impact}): ${v.help}`), [], `axe on ${what}`);
}

/** Tab until the focused element satisfies `want` (its text), at most 15 presses. */
async function tabTo(page, want) {
  let focused = "";
  for (let i = 0; i < 15 && !want(focused); i++) {
    await page.keyboard.press("Tab");
    focused = (await page.evaluate(() => document.activeElement?.textContent ?? "")).trim();
  }
  assert.ok(want(focused), `keyboard focus never reached the control (last: ${focused})`);
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
  // 1. Danish, keyboard only, through to the shop.
  {
    const p = await payment({ language: "da" });
    const ctx = await browser.newContext({ locale: "en-GB" });
    const page = await ctx.newPage();
    const errors = [];
    // Policy violations only (the shop's missing favicon is the shop's business).
    page.on("console", (m) => m.type() === "error" && /Content Security Policy|Refused/.test(m.text()) && errors.push(m.text()));
    const r = await page.goto(p.authorization_url);
    assert.equal(r.status(), 200);
    assert.match((await r.allHeaders())["content-security-policy"], /^default-src 'none'; style-src 'sha256-/);
    assert.equal(await page.getAttribute("html", "lang"), "da");
    const body = await text(page);
    for (const shown of ["Vælg din bank", "Kahvila Aalto", "Andelsbanken", "Kontobanken", "Nordea"]) {
      assert.ok(body.includes(shown), `${shown} missing in: ${body}`);
    }
    assert.equal(await page.locator("script").count(), 0, "no JavaScript on the page");
    await page.screenshot({ path: `${shots}/bank-choice-da.png`, fullPage: true });
    await tabTo(page, (f) => f === "Andelsbanken");
    await Promise.all([page.waitForURL((u) => u.href === p.authorization_url), page.keyboard.press("Enter")]);
    const consent = await text(page);
    assert.ok(consent.includes("Andelsbanken"), `the consent page names the chosen bank: ${consent}`);
    const view = await waitInitiated(p.id);
    assert.equal(view.bank, "andels");
    await tabTo(page, (f) => f.endsWith("Andelsbanken"));
    await Promise.all([page.waitForURL((u) => !u.href.startsWith(base)), page.keyboard.press("Enter")]);
    await page.getByLabel("PSU identity").fill("browser-da");
    await Promise.all([page.waitForURL((u) => u.href.startsWith(shop)), page.getByRole("button", { name: "Approve" }).click()]);
    const back = new URL(page.url());
    assert.equal(back.searchParams.get("payment_id"), p.id);
    assert.deepEqual(errors, [], "no policy violation");
    await ctx.close();
    console.log("browser: da shopper chose Andelsbanken by keyboard, continued by keyboard, signed, landed on the shop");
  }

  // 2. JavaScript disabled: the IBAN page refuses wrong check digits, keeps the form.
  {
    const p = await payment({ language: "en" });
    const ctx = await browser.newContext({ locale: "en-GB", javaScriptEnabled: false });
    const page = await ctx.newPage();
    await page.goto(p.authorization_url);
    await page.getByRole("button", { name: "Kontobanken" }).click();
    await page.waitForSelector("#iban");
    assert.ok((await text(page)).includes("Your account"), await text(page));
    await page.getByLabel("IBAN").fill("DK50 0040 0440 1162 44");
    const [answer] = await Promise.all([
      page.waitForResponse((r) => r.url().endsWith("/account")),
      page.getByRole("button", { name: "Continue" }).click(),
    ]);
    assert.equal(answer.status(), 422);
    const refused = await text(page);
    assert.ok(refused.includes("check digits"), refused);
    assert.equal(await page.getByLabel("IBAN").inputValue(), "DK50 0040 0440 1162 44", "the form keeps what was typed");
    assert.equal(await page.getAttribute("#iban", "aria-invalid"), "true");
    assert.match(await page.getAttribute("#iban", "aria-describedby"), /iban-error/);
    await page.screenshot({ path: `${shots}/iban-error-en.png`, fullPage: true });
    assert.equal((await api("GET", `/v1/payments/${p.id}`)).initiation, "awaiting_debtor_account", "no bank call");
    await page.getByLabel("IBAN").fill("DK50 0040 0440 1162 43");
    await page.getByRole("button", { name: "Continue" }).click();
    await page.waitForURL((u) => u.href === p.authorization_url);
    assert.ok((await text(page)).includes("Continue to Kontobanken"), await text(page));
    await Promise.all([page.waitForURL((u) => !u.href.startsWith(base)),
      page.getByRole("button", { name: "Continue to Kontobanken" }).click()]);
    const view = await api("GET", `/v1/payments/${p.id}`);
    assert.equal(view.bank, "konto");
    assert.equal(view.initiation, "initiated");
    await ctx.close();
    console.log("browser: without JavaScript, a wrong IBAN came back with the error at the field and the value kept; the right one led to the bank");
  }

  // 3. Five languages, axe on every page.
  {
    const cases = [
      { lang: "en", locale: "en-GB", choose: "Choose your bank", iban: "Your account", error: "check digits", provider: "This page is provided by" },
      { lang: "fi", locale: "fi-FI", choose: "Valitse pankkisi", iban: "Tilisi", error: "tarkistenumerot", provider: "Tämän sivun tarjoaa" },
      { lang: "sv", locale: "sv-SE", choose: "Välj din bank", iban: "Ditt konto", error: "kontrollsiffror", provider: "" },
      { lang: "da", locale: "da-DK", choose: "Vælg din bank", iban: "Din konto", error: "kontrolcifre", provider: "" },
      { lang: "nb", locale: "nb-NO", choose: "Velg banken din", iban: "Kontoen din", error: "Kontrollsifrene", provider: "" },
    ];
    for (const c of cases) {
      const p = await payment({ language: c.lang === "nb" ? "no" : c.lang });
      const ctx = await browser.newContext({ locale: c.locale, bypassCSP: true });
      const page = await ctx.newPage();
      await page.goto(p.authorization_url);
      assert.equal(await page.getAttribute("html", "lang"), c.lang);
      assert.ok((await text(page)).includes(c.choose), `${c.lang}: ${await text(page)}`);
      assert.ok((await page.locator("footer").innerText()).length > 20, `${c.lang}: the provider line`);
      if (c.provider) assert.ok((await page.locator("footer").innerText()).startsWith(c.provider));
      await axe(page, `the ${c.lang} choice page`);
      await page.screenshot({ path: `${shots}/bank-choice-${c.lang}.png`, fullPage: true });
      await page.getByRole("button", { name: "Kontobanken" }).click();
      await page.waitForSelector("#iban");
      assert.ok((await text(page)).includes(c.iban), `${c.lang}: ${await text(page)}`);
      await axe(page, `the ${c.lang} IBAN page`);
      await page.locator("#iban").fill("DK50 0040 0440 1162 44");
      await Promise.all([page.waitForResponse((r) => r.url().endsWith("/account")), page.locator("form button.go").click()]);
      assert.ok((await text(page)).includes(c.error), `${c.lang}: ${await text(page)}`);
      await axe(page, `the ${c.lang} IBAN error page`);
      await page.screenshot({ path: `${shots}/iban-error-${c.lang}.png`, fullPage: true });
      await ctx.close();
    }
    console.log("browser: in en, fi, sv, da and nb the bank choice, IBAN and IBAN error pages read in their language; axe clean");
  }
  console.log(`browser: all bank-choice checks passed in ${((Date.now() - started) / 1000).toFixed(1)} s`);
} finally {
  await browser.close();
}
