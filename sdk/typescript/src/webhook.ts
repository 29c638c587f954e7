// Standard Webhooks verification of the edge's deliveries (webhook jobs, callbacks), with
// WebCrypto only, so a receiver on Workers, Node, Deno, Bun or a browser checks them alike.

/** Why a delivery was refused. */
export class WebhookVerificationError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "WebhookVerificationError";
  }
}

/** The secret itself is unusable (not `whsec_` and base64, or empty): the receiver's fault. */
export class WebhookSecretError extends WebhookVerificationError {
  constructor(message: string) {
    super(message);
    this.name = "WebhookSecretError";
  }
}

export interface VerifyOptions {
  /** Largest distance in seconds between the delivery's timestamp and this clock. Default 300. */
  toleranceS?: number;
  /** This clock, ms since the epoch (tests). Default `Date.now()`. */
  now?: number;
}

/** Headers as a `Headers`, or a plain object such as Node's `IncomingHttpHeaders`. */
export type HeadersLike = Headers | Record<string, string | string[] | undefined>;

const encoder = new TextEncoder();
// Importing a key costs more than one HMAC: a receiver verifies many deliveries per secret.
const keys = new Map<string, Promise<CryptoKey>>();

/**
 * Verifies one delivery and returns its JSON body parsed. `secret` is the receiver's
 * `whsec_...` secret (`POST /v1/admin/webhook-secret`), or several while one is rotated.
 * `body` must be the raw bytes or text received, not a re-serialized object. Throws a
 * `WebhookVerificationError` when no `v1` signature matches the HMAC-SHA256 of
 * `${webhook-id}.${webhook-timestamp}.${body}`, or the timestamp is stale (a
 * `WebhookSecretError` when the secret itself is unusable).
 */
export async function verifyWebhook(
  secret: string | readonly string[],
  headers: HeadersLike,
  body: string | Uint8Array | ArrayBuffer,
  options: VerifyOptions = {},
): Promise<unknown> {
  const text = new TextDecoder().decode(await verifySignature(secret, headers, body, options));
  if (text === "") return null;
  try {
    return JSON.parse(text);
  } catch {
    // A verified body that is not JSON is still the sender's: hand it back as text.
    return text;
  }
}

/**
 * The check of [`verifyWebhook`] without reading the body: returns the verified bytes or
 * throws. The workflow handler (`serve`) uses it before parsing a call.
 */
export async function verifySignature(
  secret: string | readonly string[],
  headers: HeadersLike,
  body: string | Uint8Array | ArrayBuffer,
  options: VerifyOptions = {},
): Promise<Uint8Array> {
  const secrets = typeof secret === "string" ? [secret] : secret;
  // An unusable secret is found before the request is judged: it is not the sender's fault.
  const macKeys = await Promise.all(secrets.map(hmacKey));
  const id = header(headers, "webhook-id");
  const timestamp = header(headers, "webhook-timestamp");
  const signatures = header(headers, "webhook-signature");
  if (!id || !timestamp || !signatures) {
    throw new WebhookVerificationError("missing webhook-id, webhook-timestamp or webhook-signature");
  }
  if (!/^\d{1,15}$/.test(timestamp)) {
    throw new WebhookVerificationError("webhook-timestamp is not unix seconds");
  }
  const tolerance = options.toleranceS ?? 300;
  const now = (options.now ?? Date.now()) / 1000;
  // The timestamp is signed, so a captured delivery replayed later is refused here.
  if (Math.abs(now - Number(timestamp)) > tolerance) {
    throw new WebhookVerificationError(`webhook-timestamp is more than ${tolerance} s from this clock`);
  }
  const bytes = typeof body === "string" ? encoder.encode(body) : body instanceof Uint8Array ? body : new Uint8Array(body);
  // The raw bytes are signed, so a body that is not valid UTF-8 cannot verify under
  // another reading of it.
  const prefix = encoder.encode(`${id}.${timestamp}.`);
  const signed = new Uint8Array(prefix.length + bytes.length);
  signed.set(prefix);
  signed.set(bytes, prefix.length);
  // Several signatures while a secret is rotated; entries of other versions never match.
  const given = signatures.split(" ").filter((s) => s.startsWith("v1,")).map((s) => s.slice(3));
  for (const key of macKeys) {
    const expected = base64(new Uint8Array(await crypto.subtle.sign("HMAC", key, signed)));
    if (given.some((g) => sameText(g, expected))) return bytes;
  }
  throw new WebhookVerificationError("no webhook-signature matches");
}

function header(headers: HeadersLike, name: string): string | null {
  if (typeof (headers as Headers).get === "function") return (headers as Headers).get(name);
  const h = headers as Record<string, string | string[] | undefined>;
  const v = h[name] ?? Object.entries(h).find(([k]) => k.toLowerCase() === name)?.[1];
  return Array.isArray(v) ? v.join(" ") : (v ?? null);
}

function hmacKey(secret: string): Promise<CryptoKey> {
  let key = keys.get(secret);
  if (key === undefined) {
    key = (async () => {
      let bytes: Uint8Array<ArrayBuffer>;
      try {
        bytes = Uint8Array.from(atob(secret.startsWith("whsec_") ? secret.slice(6) : secret), (c) => c.charCodeAt(0));
      } catch {
        throw new WebhookSecretError("the secret is not whsec_ and base64");
      }
      if (bytes.length === 0) throw new WebhookSecretError("the secret is empty");
      return crypto.subtle.importKey("raw", bytes, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
    })();
    key.catch(() => keys.delete(secret));
    keys.set(secret, key);
  }
  return key;
}

function base64(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s);
}

/** Compares in time that does not depend on where the texts differ. */
function sameText(a: string, b: string): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a.charCodeAt(i) ^ b.charCodeAt(i);
  return diff === 0;
}
