// The client's errors: one class per family of the API's stable error codes, so callers
// catch what they can act on (`RateLimitedError`, `NotFoundError`...) and read `code`.

import type { components } from "./openapi.ts";

/** Every `code` the API documents (openapi.json's `ErrorBody.code`). */
export type ErrorCode = components["schemas"]["ErrorBody"]["code"];

/** What the constructor of an error class takes. */
export interface ErrorInit {
  status: number;
  /** The API's code, or `network` / `timeout` / `unknown` for what the API did not answer. */
  code: ErrorCode | "network" | "timeout" | "unknown";
  message: string;
  /** The offending field of an `invalid_field`. */
  field?: string;
  /** The request id the answer carried (`x-request-id` or `cf-ray`), if any. */
  requestId?: string;
  /** Seconds the server asked to wait (`Retry-After`), if any. */
  retryAfter?: number;
  cause?: unknown;
}

/** An error from the edgejobs API (or from reaching it). Match on `code`: it never changes. */
export class EdgejobsError extends Error {
  readonly status: number;
  readonly code: ErrorInit["code"];
  readonly field: string | undefined;
  readonly requestId: string | undefined;

  constructor(init: ErrorInit) {
    super(init.message, init.cause === undefined ? undefined : { cause: init.cause });
    this.name = new.target.name;
    this.status = init.status;
    this.code = init.code;
    this.field = init.field;
    this.requestId = init.requestId;
  }
}

/** 401 `unauthorized` (no key, an unknown key, a bad read token) or 403 `forbidden`. */
export class AuthError extends EdgejobsError {}

/** 404: `not_found`, `job_not_found`, `schedule_not_found`. */
export class NotFoundError extends EdgejobsError {}

/**
 * The request itself was refused: 400 (`invalid_json`, `invalid_field` with `field`,
 * `unknown_type`), 405, 413 (`payload_too_large`, `step_limit`, `live_limit`), 415.
 * Sending it again changes nothing.
 */
export class ValidationError extends EdgejobsError {}

/** 409: the resource's state forbids it (`invalid_transition`, `schedule_exists`...). */
export class ConflictError extends EdgejobsError {}

/** 429: `rate_limited`, `tenant_pending_limit`, `throttled`. `retryAfter` is in seconds. */
export class RateLimitedError extends EdgejobsError {
  readonly retryAfter: number | undefined;

  constructor(init: ErrorInit) {
    super(init);
    this.retryAfter = init.retryAfter;
  }
}

/** 5xx: `internal`, or 503 `unavailable` (a dependency is down; retry later). */
export class ServerError extends EdgejobsError {}

/** The API could not be reached (DNS, connection refused, reset): `code` is `network`. */
export class ConnectionError extends EdgejobsError {}

type ErrorClass = new (init: ErrorInit) => EdgejobsError;

/** The class each documented code is thrown as. */
export const ERROR_CLASSES: { readonly [C in ErrorCode]: ErrorClass } = {
  invalid_json: ValidationError,
  invalid_field: ValidationError,
  unknown_type: ValidationError,
  payload_too_large: ValidationError,
  unsupported_media_type: ValidationError,
  method_not_allowed: ValidationError,
  step_limit: ValidationError,
  live_limit: ValidationError,
  not_found: NotFoundError,
  job_not_found: NotFoundError,
  schedule_not_found: NotFoundError,
  invalid_transition: ConflictError,
  schedule_exists: ConflictError,
  stale_attempt: ConflictError,
  lease_lost: ConflictError,
  lease_held: ConflictError,
  lease_mismatch: ConflictError,
  not_leased: ConflictError,
  job_cancelled: ConflictError,
  nondeterministic_step: ConflictError,
  unauthorized: AuthError,
  forbidden: AuthError,
  rate_limited: RateLimitedError,
  tenant_pending_limit: RateLimitedError,
  throttled: RateLimitedError,
  unavailable: ServerError,
  internal: ServerError,
};

/** The class for a status whose body named no known code (a proxy's page, a newer code). */
function classOfStatus(status: number): ErrorClass {
  if (status === 401 || status === 403) return AuthError;
  if (status === 404) return NotFoundError;
  if (status === 409) return ConflictError;
  if (status === 429) return RateLimitedError;
  if (status >= 500) return ServerError;
  if (status >= 400) return ValidationError;
  return EdgejobsError;
}

/**
 * Seconds to wait from a `Retry-After` value: delta-seconds or an HTTP date (RFC 9110);
 * undefined when absent or unreadable. `now` is ms since the epoch.
 */
export function parseRetryAfter(value: string | null, now: number): number | undefined {
  if (value === null) return undefined;
  const v = value.trim();
  if (/^\d+$/.test(v)) return Number(v);
  const at = Date.parse(v);
  if (Number.isNaN(at)) return undefined;
  return Math.max(0, Math.ceil((at - now) / 1000));
}

/** The typed error of a non-2xx answer, from its `{"error":{"code","message","field"}}` body. */
export function errorFromResponse(status: number, headers: Headers, bodyText: string, now: number): EdgejobsError {
  let code: ErrorInit["code"] = "unknown";
  let message = `HTTP ${status}`;
  let field: string | undefined;
  try {
    const parsed: unknown = JSON.parse(bodyText);
    const e = typeof parsed === "object" && parsed !== null ? (parsed as { error?: unknown }).error : undefined;
    if (typeof e === "object" && e !== null) {
      const b = e as { code?: unknown; message?: unknown; field?: unknown };
      if (typeof b.code === "string") code = b.code as ErrorCode;
      if (typeof b.message === "string") message = b.message;
      if (typeof b.field === "string") field = b.field;
    }
  } catch {
    // Not JSON (a proxy's page): the status alone classifies it.
    if (bodyText.length > 0) message = `HTTP ${status}: ${bodyText.slice(0, 200)}`;
  }
  const known = Object.hasOwn(ERROR_CLASSES, code) ? ERROR_CLASSES[code as ErrorCode] : undefined;
  const Cls = known ?? classOfStatus(status);
  return new Cls({
    status,
    code,
    message,
    field,
    requestId: headers.get("x-request-id") ?? headers.get("cf-ray") ?? undefined,
    retryAfter: parseRetryAfter(headers.get("retry-after"), now),
  });
}
