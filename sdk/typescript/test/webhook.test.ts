// Tests of `verifyWebhook` against deliveries signed by the reference implementation (the
// `standardwebhooks` library), and of every reason it refuses one.

import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { Webhook } from "standardwebhooks";

import { verifyWebhook, WebhookVerificationError } from "../src/index.ts";

const SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const OTHER = "whsec_c2ltdWxhdGlvbi1zZWNyZXQtMDEyMzQ1Njc4OQ==";

/** Headers of a delivery as the reference library signs it. */
function signed(secret: string, body: string, at: Date = new Date(), id = "msg_2Lk"): Record<string, string> {
  const ts = Math.floor(at.getTime() / 1000);
  return { "webhook-id": id, "webhook-timestamp": String(ts), "webhook-signature": new Webhook(secret).sign(id, at, body) };
}

describe("verifyWebhook", () => {
  const body = JSON.stringify({ job: "j1", n: [1, 2], text: "héllo ✓" });

  it("accepts what the reference signs and returns the parsed body", async () => {
    const got = await verifyWebhook(SECRET, signed(SECRET, body), body);
    assert.deepEqual(got, JSON.parse(body));
    // The same from a Headers object and from bytes.
    const bytes = new TextEncoder().encode(body);
    assert.deepEqual(await verifyWebhook(SECRET, new Headers(signed(SECRET, body)), bytes), JSON.parse(body));
    assert.deepEqual(await verifyWebhook(SECRET, signed(SECRET, body), bytes.buffer), JSON.parse(body));
  });

  it("agrees with the reference's own verify", async () => {
    const h = signed(SECRET, body);
    assert.deepEqual(new Webhook(SECRET).verify(body, h), await verifyWebhook(SECRET, h, body));
  });

  it("accepts one of several signatures, and any of several secrets (a rotation)", async () => {
    const h = signed(SECRET, body);
    const other = signed(OTHER, body, new Date(Number(h["webhook-timestamp"]) * 1000), h["webhook-id"]);
    const both = { ...h, "webhook-signature": `${other["webhook-signature"]} ${h["webhook-signature"]}` };
    assert.deepEqual(await verifyWebhook(SECRET, both, body), JSON.parse(body));
    assert.deepEqual(await verifyWebhook([OTHER, SECRET], h, body), JSON.parse(body));
  });

  it("refuses another secret, a changed body, id or timestamp", async () => {
    const h = signed(SECRET, body);
    await assert.rejects(verifyWebhook(OTHER, h, body), WebhookVerificationError);
    await assert.rejects(verifyWebhook(SECRET, h, body + " "), /no webhook-signature matches/);
    await assert.rejects(verifyWebhook(SECRET, { ...h, "webhook-id": "msg_other" }, body), /no webhook-signature matches/);
    const later = String(Number(h["webhook-timestamp"]) + 1);
    await assert.rejects(verifyWebhook(SECRET, { ...h, "webhook-timestamp": later }, body), /no webhook-signature matches/);
  });

  it("refuses a stale or future timestamp beyond the tolerance, and honours a wider one", async () => {
    const old = new Date(Date.now() - 301_000);
    await assert.rejects(verifyWebhook(SECRET, signed(SECRET, body, old), body), /more than 300 s/);
    await assert.rejects(verifyWebhook(SECRET, signed(SECRET, body, new Date(Date.now() + 301_000)), body), /more than 300 s/);
    assert.deepEqual(await verifyWebhook(SECRET, signed(SECRET, body, old), body, { toleranceS: 400 }), JSON.parse(body));
    const fixed = new Date("2030-01-01T00:00:00Z");
    assert.ok(await verifyWebhook(SECRET, signed(SECRET, body, fixed), body, { now: fixed.getTime() + 1000 }));
  });

  it("refuses missing headers, a malformed timestamp and another version's signature", async () => {
    const h = signed(SECRET, body);
    for (const name of ["webhook-id", "webhook-timestamp", "webhook-signature"]) {
      const { [name]: _gone, ...rest } = h;
      await assert.rejects(verifyWebhook(SECRET, rest, body), /missing/);
    }
    await assert.rejects(verifyWebhook(SECRET, { ...h, "webhook-timestamp": "12.5" }, body), /unix seconds/);
    const v2 = { ...h, "webhook-signature": h["webhook-signature"]!.replace(/^v1,/, "v2,") };
    await assert.rejects(verifyWebhook(SECRET, v2, body), /no webhook-signature matches/);
  });

  it("refuses with a clear error when the secret is not base64", async () => {
    await assert.rejects(verifyWebhook("whsec_%%%", signed(SECRET, body), body), /not whsec_ and base64/);
  });
});
