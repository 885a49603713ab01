// A merchant's TypeScript backend, written against types generated from the committed
// openapi.json (openapi-typescript) with openapi-fetch: creates a payment with metadata, has
// the shopper approve it at the sandbox, finds it by its metadata and lists its events.
// Type-checked with `tsc --strict` first (scripts/sdk-check.sh), so a spec that types a
// field wrongly fails here before anything runs.
import createClient from "openapi-fetch";
import { randomUUID } from "node:crypto";
import type { components, paths } from "./schema.js";

type Payment = components["schemas"]["Payment"];

const [port, key] = process.argv.slice(2);
if (!port || !key) throw new Error("usage: node check.mjs PORT API_KEY");
const base = `http://127.0.0.1:${port}`;
const client = createClient<paths>({
  baseUrl: base,
  headers: { Authorization: `Bearer ${key}` },
});

function check(ok: boolean, what: string): asserts ok {
  if (!ok) throw new Error(`sdk-ts: ${what}`);
}

const order = `sdk-ts-${randomUUID()}`;
const created = await client.POST("/v1/payments", {
  params: { header: { "Idempotency-Key": randomUUID() } },
  body: {
    amount: "10.50",
    currency: "EUR",
    country: "FI",
    bank: "nordea",
    creditor: {
      account: { type: "IBAN", value: "FI1410093000123458" },
      name: "Demo shop",
    },
    return_url: "http://localhost:3000/checkout/done",
    psu_id: "shopper-ts",
    metadata: { order, attempt: 1 },
  },
});
check(
  created.response.status === 201 && created.data !== undefined,
  `create answered ${created.response.status}: ${JSON.stringify(created.error)}`,
);
const payment: Payment = created.data;
check(payment.amount_minor === 1050 && payment.currency === "EUR", `amount ${payment.amount_minor} ${payment.currency}`);
check(payment.metadata["order"] === order, `metadata ${JSON.stringify(payment.metadata)}`);
check(created.response.headers.get("X-Request-Id") !== null, "no X-Request-Id");
console.log(`sdk-ts: created ${payment.id} (${payment.status})`);

// The shopper: the consent page, its "Continue" (a POST of the hop's token), the bank's page,
// "approve", and back through pisgate's callback.
const manual = (url: string, init: RequestInit = {}) => fetch(url, { ...init, redirect: "manual" });
const form = (fields: Record<string, string>): RequestInit => ({
  method: "POST",
  headers: { "Content-Type": "application/x-www-form-urlencoded" },
  body: new URLSearchParams(fields).toString(),
});
const authorizationUrl = payment.authorization_url;
check(authorizationUrl !== null, "no authorization_url");
check((await manual(authorizationUrl)).status === 200, "consent page");
const [hop, token] = authorizationUrl.split("?t=");
check(hop !== undefined && token !== undefined, `authorization_url ${authorizationUrl}`);
const toBank = await manual(hop, form({ t: token }));
check(toBank.status === 303, `hop answered ${toBank.status}`);
const bankPage = await (await manual(toBank.headers.get("location")!)).text();
const action = /action="([^"]+)"/.exec(bankPage)?.[1]?.replaceAll("&amp;", "&");
check(action !== undefined, "no form on the bank's page");
const approved = await manual(action, form({ decision: "approve", psu_id: "sdk-ts-shopper" }));
const back = await manual(approved.headers.get("location")!);
check(back.status === 303, `callback answered ${back.status}`);

// Search by metadata (deepObject: metadata[order]=…).
const found = await client.GET("/v1/payments", { params: { query: { metadata: { order } } } });
check(found.data !== undefined, `search answered ${found.response.status}`);
check(found.data.data.length === 1 && found.data.data[0]?.id === payment.id, `search found ${JSON.stringify(found.data.data.map((p) => p.id))}`);

// Its events, as the webhooks carry them.
const deadline = Date.now() + 30_000;
for (;;) {
  const events = await client.GET("/v1/events", { params: { query: { payment_id: payment.id } } });
  check(events.data !== undefined, `events answered ${events.response.status}`);
  const authorized = events.data.data.find((e) => e.type === "payment.authorized");
  if (authorized) {
    check(authorized.id.startsWith("evt_"), `event id ${authorized.id}`);
    check(authorized.data.id === payment.id, `event about ${authorized.data.id}`);
    console.log(`sdk-ts: listEvents found ${authorized.id} (${authorized.type}) for ${payment.id}`);
    break;
  }
  check(Date.now() < deadline, `no payment.authorized: ${events.data.data.map((e) => e.type).join(", ")}`);
  await new Promise((r) => setTimeout(r, 500));
}
