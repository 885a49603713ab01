// The newcomer's first payment, as the README tells it: scripts/run.sh is running (started by
// scripts/smoke-run.sh), a shopper opens the demo shop, pays, continues on pisgate's consent
// page, approves at the sandbox and lands on the shop's return page, which shows the status
// read from pisgate's API until it says "paid", with the webhook shown as verified.
// Also: the return page does not believe a status in its query string, and the shop's
// receiver refuses a forged delivery.
//   SHOP_URL=http://localhost:3000 SCREENSHOTS=/tmp node scripts/browser/demo_shop.mjs
import { chromium } from "playwright-core";
import assert from "node:assert/strict";

const shop = process.env.SHOP_URL;
const shots = process.env.SCREENSHOTS;

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
  ],
});
try {
  const page = await (await browser.newContext({ locale: "en-GB" })).newPage();
  await page.goto(shop);
  await page.getByLabel("Your bank's country").selectOption("FI");
  if (shots) await page.screenshot({ path: `${shots}/demo-shop-checkout.png`, fullPage: true });
  // The shop creates the payment and sends the shopper to pisgate's consent page.
  await Promise.all([page.waitForURL((u) => u.pathname.startsWith("/authorize/")),
    page.getByRole("button", { name: "Pay from your bank" }).click()]);
  const consent = await page.locator("body").innerText();
  assert.ok(consent.includes("Demo shop"), consent);
  await Promise.all([page.waitForURL((u) => !u.pathname.startsWith("/authorize/")),
    page.getByRole("button", { name: /Nordea/ }).click()]);
  await page.getByLabel("PSU identity").fill("demo-shopper");
  await Promise.all([page.waitForURL((u) => u.href.startsWith(`${shop}/return`)),
    page.getByRole("button", { name: "Approve" }).click()]);
  const paymentId = new URL(page.url()).searchParams.get("payment_id");
  assert.ok(paymentId, page.url());

  // The page refreshes itself until the payment is final and its webhook has arrived.
  const end = Date.now() + 60000;
  let body = "";
  while (Date.now() < end) {
    body = await page.locator("body").innerText();
    if (/\bpaid\b/.test(await page.locator("#status").innerText()) && /payment\.paid\s+verified/.test(body)) break;
    await page.waitForTimeout(500);
    await page.reload();
  }
  assert.equal(await page.locator("#status").innerText(), "paid", body);
  assert.match(body, /payment\.paid\s+verified/, body);
  assert.doesNotMatch(body, /NOT verified/, body);
  if (shots) await page.screenshot({ path: `${shots}/demo-shop-paid.png`, fullPage: true });

  // The status in a link proves nothing: the page shows what the API says.
  const other = await (await fetch(`${shop}/`)).text();
  assert.ok(other.includes("Pay from your bank"));
  const forgedLink = await fetch(`${shop}/return?payment_id=${paymentId}&status=cancelled`);
  assert.match(await forgedLink.text(), /<strong id="status">paid</);

  // A delivery without pisgate's signature is refused and shown as not verified.
  const forged = await fetch(`${shop}/webhooks`, {
    method: "POST",
    headers: {
      "content-type": "application/json",
      "webhook-id": "evt_forged",
      "webhook-timestamp": String(Math.floor(Date.now() / 1000)),
      "webhook-signature": "v1,AAAA",
    },
    body: JSON.stringify({ type: "payment.paid", data: { id: paymentId } }),
  });
  assert.equal(forged.status, 400);
  const order = await (await fetch(`${shop}/api/orders/${paymentId}`)).json();
  assert.equal(order.payment.status, "paid");
  const verdicts = order.webhooks.map((d) => `${d.id === "evt_forged" ? "forged" : "real"}:${d.verified}`);
  assert.ok(verdicts.includes("forged:false") && verdicts.includes("real:true"), verdicts.join(" "));
  console.log(`browser: demo shop payment ${paymentId} paid, return page read it from the API, webhook verified; forged link and delivery refused`);
} finally {
  await browser.close();
}
