// The endpoint side of edgejobs workflows: a fetch handler that the edge calls for each
// execution of a run (the edgejobs workflow protocol over HTTP). The handler is
// re-run from the start on every call; steps the run already recorded return their outcome
// without running again, and the first step not recorded is run (or requested) and becomes
// the answer. Nothing here imports a Node built-in or a package (the signature check is
// `webhook.ts`'s), so it runs unchanged in Cloudflare Workers and in Node 22 (both have
// WebCrypto, Request and Response).
//
// Layout:
// - `serve`: method, secret, signature, body, then the handler named by `run.type`.
// - `Execution`: one pass of a handler; hands out positions (seq) and holds the answer.
// - helpers: durations, JSON pointers, retry policies.
//
// Only erasable TypeScript syntax is used (no enums, namespaces or parameter properties),
// so Node's type stripping runs this file as it is.

import { verifySignature, WebhookSecretError } from "./webhook.ts";

/** A JSON value, as step results and the run's payload travel. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** A duration: whole milliseconds, or an integer with a unit: "250ms", "90s", "5m", "2h", "1d". */
export type Duration = number | string;

/** The run the edge is executing (the job behind it). */
export interface Run {
  id: string;
  type: string;
  tenant: string;
  /** The execution number: every call of the endpoint for this run is a new attempt. */
  attempt: number;
  // `any` so handlers read their own payload shape without a cast at every field.
  payload: any;
  metadata: Record<string, unknown>;
}

/** Delays between a failed step's attempts (the edge applies full jitter below them). */
export interface Backoff {
  /** Delay scale of the first retry, in ms. Default 1000. */
  base_ms?: number;
  /** Growth per attempt. Default 2. */
  factor?: number;
  /** Upper bound of any delay, in ms. Default 3,600,000 (1 h). */
  cap_ms?: number;
}

export interface RunOptions {
  /** Extra attempts after the first failure, 0 to 99. Default 0: a failure is final. */
  retries?: number;
  backoff?: Backoff;
  /**
   * Longest one execution of the step may take (ms or "30s"); past it the step fails
   * ("timed out after N ms") and is retried by `retries`. The function keeps running in
   * the background (JavaScript cannot stop it), but its result is not used.
   */
  timeout?: number | string;
}

export interface WaitOptions {
  /** The event's name, as sent to `POST /v1/events`. */
  event: string;
  /**
   * Up to 4 conditions: a JSON pointer into the event (`{"name", "data", "id"}`) mapped to
   * a JSON pointer into this run (`{"payload", "metadata", "id", "type"}`), e.g.
   * `{"/data/order_id": "/payload/order_id"}`. The run's side is resolved here; a pointer
   * that names nothing in the run is a NonRetryableError.
   */
  match?: Record<string, string>;
  /** How long to wait before the wait returns null. Default: no timeout. */
  timeout?: Duration;
  /** How old an event may be and still match (at most one day). Default 0. */
  lookback?: Duration;
}

/**
 * A child job, as the enqueue API (`POST /v1/jobs`) takes it: `type` is required, the other
 * fields (`payload`, `metadata`, `max_attempts`, `delay`, ...) are that API's and are sent
 * as they are.
 */
export interface JobSpec {
  type: string;
  payload?: unknown;
  [field: string]: unknown;
}

/** How one child of a fan-out ended, in the order the children were given. */
export interface ChildOutcome {
  /** The child's job id. */
  id: string;
  state: "completed" | "dead" | "cancelled";
  /** The child's result, when it completed. */
  result?: any;
  /** Why it did not complete. */
  error?: string;
}

/** What a handler calls its steps through. Every method must be awaited (see README). */
export interface Step {
  /** Runs `fn` once per run and returns its (JSON) result on every later execution. */
  run<T>(name: string, fn: () => Promise<T> | T, opts?: RunOptions): Promise<T>;
  sleep(name: string, duration: Duration): Promise<void>;
  sleepUntil(name: string, time: Date | string): Promise<void>;
  /** The matching event's data, or null when the timeout passed first. */
  waitForEvent<T = unknown>(name: string, opts: WaitOptions): Promise<T | null>;
  /**
   * Starts a child job and returns its result once it completed; a child that did not
   * complete is thrown as a StepError.
   */
  invoke<T = unknown>(name: string, job: JobSpec): Promise<T>;
  /**
   * Starts 1 to 1000 child jobs and returns, once all of them are final, how each ended
   * (in the order given). A child that failed does not throw: look at its `state`.
   */
  fanOut(name: string, jobs: JobSpec[]): Promise<ChildOutcome[]>;
  /**
   * Live output (#30), sent with this execution's answer: the run's progress (0 to 100 and
   * a message), keys merged into its metadata (null removes one), and chunks of a named
   * stream (an LLM's tokens). Subscribers of the run (`GET /v1/jobs/{id}/events`) see them.
   * Only what a call past the recorded steps emits is sent: a later execution replays the
   * code before its recorded steps, and what that code emitted was sent the first time.
   */
  progress(percent: number, message?: string): void;
  metadata(key: string, value: unknown): void;
  stream(name: string, data: string): void;
}

/** The live output an answer carries (`live`), as the edge reads it. */
interface Live {
  progress?: { percent: number; message?: string };
  metadata?: Record<string, unknown>;
  chunks?: { stream: string; data: string }[];
}

export type Handler = (run: Run, step: Step) => Promise<unknown>;

export interface ServeOptions {
  /**
   * The endpoint's `whsec_...` secret, or a function reading it from the Worker's env. The
   * edge signs each workflow type with a key of its own (POST /v1/admin/webhook-secret with
   * the URL and the type), so an endpoint serving several types picks the secret by `type`
   * (read from the body before it is verified, only to choose the key).
   */
  secret: string | ((env: any, type: string | undefined) => string | undefined);
  /** Handlers by job type. */
  workflows: Record<string, Handler>;
  /** Largest accepted distance between `webhook-timestamp` and this clock. Default 300 s. */
  tolerance_s?: number;
}

/**
 * A handler error that retrying the run cannot fix: the run goes to the dead-letter set
 * instead of being retried by the job's backoff.
 */
export class NonRetryableError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "NonRetryableError";
  }
}

/**
 * A step that failed for good (its attempts are spent). It is non-retryable: the failure
 * is recorded, so a retried run would replay it and fail the same way; a handler that
 * catches it can still go on.
 */
export class StepError extends NonRetryableError {
  /** The step's name. */
  step: string;
  /** The error the step recorded. */
  error: string;
  constructor(step: string, error: string) {
    super(`step ${JSON.stringify(step)} failed: ${error}`);
    this.name = "StepError";
    this.step = step;
    this.error = error;
  }
}

/**
 * Thrown through the handler to abandon this execution once its answer is known. It is an
 * Error (so it logs well) whose message says not to catch it; a handler that catches it
 * anyway changes nothing, because the answer is kept aside and preferred to whatever the
 * handler does next.
 */
class Suspension extends Error {
  constructor() {
    super("edgejobs: this execution of the workflow ends here and its answer is ready; let this error propagate");
    this.name = "Suspension";
  }
}

/** A recorded step, as the request carries it. */
interface Recorded {
  seq: number;
  name: string;
  kind: "run" | "sleep" | "wait" | "invoke" | "fan_out";
  state: string;
  result?: unknown;
  error?: string;
  attempts?: number;
}

type Answer = (
  | { op: "step"; step: Record<string, unknown> }
  | { op: "complete"; result: unknown }
  | { op: "fail"; error: string; retryable: boolean }
) & { live?: Live };

const STREAM_NAME = /^[A-Za-z0-9_.:-]{1,64}$/;

/** States whose outcome a later execution returns without running the step again. */
const RECORDED_STATES = new Set(["completed", "failed", "timed_out"]);

const DEFAULT_BACKOFF = { base_ms: 1000, factor: 2, cap_ms: 3_600_000 };
/** The edge's limits, checked here too so a mistake fails where it is written. */
const MAX_STEP_ATTEMPTS = 100;
const MAX_STEP_NAME_BYTES = 128;
const MAX_MATCHES = 4;
const MAX_FAN_OUT = 1000;

/**
 * A fetch handler (`export default { fetch: serve({...}) }` in a Worker) answering the
 * edge's calls: 405 for a method other than POST, 500 when the secret is missing or not a
 * Standard Webhooks secret, 401 for a bad or missing signature, 400 for a body that is not
 * the protocol's, 404 for a `run.type` without a handler, else 200 with the answer.
 */
export function serve(opts: ServeOptions): (req: Request, env?: unknown) => Promise<Response> {
  const tolerance = opts.tolerance_s ?? 300;

  return async (req, env) => {
    if (req.method !== "POST") {
      return reply(405, { error: "workflow calls are POSTs" }, { allow: "POST" });
    }
    const body = new Uint8Array(await req.arrayBuffer());
    const secret = typeof opts.secret === "function" ? opts.secret(env, peekType(body)) : opts.secret;
    if (typeof secret !== "string" || secret === "") {
      return reply(500, { error: "no workflow secret is configured" });
    }
    try {
      await verifySignature(secret, req.headers, body, { toleranceS: tolerance });
    } catch (e) {
      if (e instanceof WebhookSecretError) {
        // 5xx: the edge retries, so the run survives until the secret is fixed.
        return reply(500, { error: "the workflow secret is not a Standard Webhooks secret (whsec_ and base64)" });
      }
      return reply(401, { error: e instanceof Error ? e.message : "the signature was not verified" });
    }

    let parsed: { run: Run; recorded: (Recorded | undefined)[] };
    try {
      parsed = parseCall(JSON.parse(new TextDecoder().decode(body)));
    } catch (e) {
      return reply(400, { error: `not a workflow call: ${text(e)}` });
    }
    const { run, recorded } = parsed;
    // `hasOwn`: a type named like an Object.prototype member ("constructor") is not a handler.
    const handler = Object.hasOwn(opts.workflows, run.type) ? opts.workflows[run.type] : undefined;
    if (typeof handler !== "function") {
      return reply(404, { error: `no workflow handles type ${JSON.stringify(run.type)}` });
    }
    return reply(200, await execute(handler, run, recorded));
  };
}

/** `run.type` of a body not yet verified, to choose its secret; undefined when unreadable. */
function peekType(body: Uint8Array): string | undefined {
  try {
    const t = JSON.parse(new TextDecoder().decode(body))?.run?.type;
    return typeof t === "string" ? t : undefined;
  } catch {
    return undefined;
  }
}

function reply(status: number, body: unknown, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/json", ...headers },
  });
}

/** One pass of `handler` over the recorded steps; always resolves to an answer. */
async function execute(handler: Handler, run: Run, recorded: (Recorded | undefined)[]): Promise<Answer> {
  const exec = new Execution(run, recorded);
  let outcome: { ok: true; value: unknown } | { ok: false; error: unknown };
  try {
    outcome = { ok: true, value: await handler(run, exec.step) };
  } catch (error) {
    outcome = { ok: false, error };
  }
  // A step's function may still run when the handler has already settled: a concurrent
  // sibling's suspension rejected a Promise.all, or a step was not awaited.
  await exec.settled();
  const answer = decide(exec, outcome);
  const live = exec.live();
  return live === undefined ? answer : { ...answer, live };
}

function decide(exec: Execution, outcome: { ok: true; value: unknown } | { ok: false; error: unknown }): Answer {
  // The answer wins over how the handler ended: a handler that swallowed the suspension
  // and returned (or threw something else) is still suspended at that step.
  if (exec.answer !== null) {
    return exec.answer;
  }
  if (outcome.ok) {
    const result = asJson(outcome.value);
    if (!result.ok) {
      return fail(`the workflow's result is not JSON: ${result.error}`, false);
    }
    return { op: "complete", result: result.value };
  }
  if (outcome.error instanceof Suspension) {
    // Only reachable if a suspension escaped without its answer: a bug here, not in the run.
    return fail("edgejobs sdk: the handler was suspended without an answer", true);
  }
  return fail(text(outcome.error), !(outcome.error instanceof NonRetryableError));
}

function fail(error: string, retryable: boolean): Answer {
  return { op: "fail", error, retryable };
}

/**
 * The steps of one execution. Positions are handed out in call order, so the handler must
 * call its steps in the same order on every execution (which is what the edge checks).
 */
class Execution {
  answer: Answer | null = null;
  step: Step;
  #run: Run;
  #recorded: (Recorded | undefined)[];
  #next = 0;
  #names = new Map<string, number>();
  // Whether a not-yet-recorded step was taken up: only the first one is answered, so any
  // later unrecorded step (a concurrent sibling) suspends at once.
  #claimed = false;
  #inflight: Promise<unknown> | null = null;
  #live: Live = {};

  constructor(run: Run, recorded: (Recorded | undefined)[]) {
    this.#run = run;
    this.#recorded = recorded;
    // Plain closures, so `const { run, sleep } = step` works too; async, so a bad argument
    // is a rejected promise like every other outcome of a step.
    this.step = {
      run: async (name, fn, opts) => this.#runStep(name, fn, opts),
      sleep: async (name, duration) => this.#sleep(name, { ms: parseDuration(duration) }),
      sleepUntil: async (name, time) => this.#sleep(name, { until: parseTime(time) }),
      waitForEvent: async (name, opts) => this.#wait(name, opts),
      invoke: async <T>(name: string, job: JobSpec) => {
        checkName(name);
        return (await this.#children("invoke", name, jobSpecs(name, [job]))) as T;
      },
      progress: (percent, message) => {
        if (typeof percent !== "number" || !(percent >= 0 && percent <= 100)) {
          throw new Error(`progress: a number from 0 to 100, got ${JSON.stringify(percent)}`);
        }
        if (this.#fresh()) {
          this.#live.progress = message === undefined ? { percent } : { percent, message: String(message) };
        }
      },
      metadata: (key, value) => {
        const v = asJson(value);
        if (!v.ok) {
          throw new Error(`metadata ${JSON.stringify(key)}: not JSON: ${v.error}`);
        }
        if (this.#fresh()) {
          (this.#live.metadata ??= {})[String(key)] = v.value ?? null;
        }
      },
      stream: (name, data) => {
        if (typeof name !== "string" || !STREAM_NAME.test(name)) {
          throw new Error(`stream: a name is 1 to 64 characters of A-Z a-z 0-9 _ . : -, got ${JSON.stringify(name)}`);
        }
        if (this.#fresh()) {
          (this.#live.chunks ??= []).push({ stream: name, data: String(data) });
        }
      },
      fanOut: async (name, jobs) => {
        checkName(name);
        if (!Array.isArray(jobs) || jobs.length < 1 || jobs.length > MAX_FAN_OUT) {
          throw new Error(`fan-out ${JSON.stringify(name)}: an array of 1 to ${MAX_FAN_OUT} job specs, got ${Array.isArray(jobs) ? jobs.length : "no array"}`);
        }
        return (await this.#children("fan_out", name, jobSpecs(name, jobs))) as ChildOutcome[];
      },
    };
  }

  async settled(): Promise<void> {
    await this.#inflight;
  }

  /** Whether the handler is past its recorded steps (what it emits now was never sent). */
  #fresh(): boolean {
    return this.#next >= this.#recorded.length;
  }

  /** The live output gathered, if any. */
  live(): Live | undefined {
    const l = this.#live;
    return l.progress === undefined && l.metadata === undefined && l.chunks === undefined ? undefined : l;
  }

  /** Keeps the first answer and unwinds the handler. */
  #end(answer: Answer): never {
    this.answer ??= answer;
    throw new Suspension();
  }

  /**
   * Gives the call its position and checks it against the recording. Arguments are checked
   * by the callers before this, so a bad one throws without taking a position.
   */
  #begin(kind: Recorded["kind"], name: string): { seq: number; rec: Recorded | undefined } {
    if (this.answer !== null) {
      throw new Suspension();
    }
    const seq = this.#next++;
    const earlier = this.#names.get(name);
    if (earlier !== undefined) {
      this.#end(fail(`nondeterministic step: the name ${JSON.stringify(name)} is used at positions ${earlier} and ${seq}; step names are unique within a run`, false));
    }
    this.#names.set(name, seq);
    const rec = this.#recorded[seq];
    if (rec !== undefined && (rec.name !== name || rec.kind !== kind)) {
      this.#end(fail(`nondeterministic step at position ${seq}: the run recorded ${rec.kind} ${JSON.stringify(rec.name)}, the handler now calls ${kind} ${JSON.stringify(name)}`, false));
    }
    return { seq, rec: rec !== undefined && RECORDED_STATES.has(rec.state) ? rec : undefined };
  }

  /** Takes up the first step not recorded; a later one waits for the next execution. */
  #claim(): void {
    if (this.#claimed) {
      throw new Suspension();
    }
    this.#claimed = true;
  }

  async #runStep<T>(name: string, fn: () => Promise<T> | T, opts?: RunOptions): Promise<T> {
    checkName(name);
    if (typeof fn !== "function") {
      throw new Error(`step ${JSON.stringify(name)}: the second argument is the step's function`);
    }
    const retry = retryPolicy(opts);
    const timeout = opts?.timeout === undefined ? undefined : parseDuration(opts.timeout);
    const { seq, rec } = this.#begin("run", name);
    if (rec !== undefined) {
      return replay(rec) as T;
    }
    // A `retrying` step at this position is simply run again: the edge counts attempts.
    this.#claim();
    const outcome = this.#attempt(seq, name, timeout === undefined ? fn : () => within(fn, timeout), retry);
    this.#inflight = outcome;
    this.#end(await outcome);
  }

  /** Runs a step's function; resolves to the answer, never rejects. */
  async #attempt(seq: number, name: string, fn: () => unknown, retry: ReturnType<typeof retryPolicy>): Promise<Answer> {
    let value: unknown;
    try {
      value = await fn();
    } catch (e) {
      if (this.answer !== null) {
        return this.answer;
      }
      if (e instanceof Suspension) {
        // The only step that may be taken up is this one, so a suspension from inside its
        // function is a step called within a step.
        return fail(`step ${JSON.stringify(name)} called another step inside its function; steps cannot nest`, false);
      }
      return { op: "step", step: { kind: "fail", seq, name, error: text(e), retry } };
    }
    const result = asJson(value);
    if (!result.ok) {
      return fail(`step ${JSON.stringify(name)} returned a value that is not JSON: ${result.error}`, false);
    }
    return { op: "step", step: { kind: "run", seq, name, result: result.value } };
  }

  async #sleep(name: string, end: { ms: number } | { until: string }): Promise<void> {
    checkName(name);
    const { seq, rec } = this.#begin("sleep", name);
    if (rec !== undefined) {
      replay(rec);
      return;
    }
    this.#claim();
    this.#end({ op: "step", step: { kind: "sleep", seq, name, ...end } });
  }

  async #wait<T>(name: string, opts: WaitOptions): Promise<T | null> {
    checkName(name);
    if (typeof opts?.event !== "string" || opts.event === "") {
      throw new Error(`wait ${JSON.stringify(name)}: opts.event names the event to wait for`);
    }
    const matches = this.#matches(name, opts.match ?? {});
    const timeout_ms = opts.timeout === undefined ? undefined : parseDuration(opts.timeout);
    const lookback_ms = opts.lookback === undefined ? 0 : parseDuration(opts.lookback);
    const { seq, rec } = this.#begin("wait", name);
    if (rec !== undefined) {
      return replay(rec) as T | null;
    }
    this.#claim();
    this.#end({ op: "step", step: { kind: "wait", seq, name, event: opts.event, matches, timeout_ms, lookback_ms } });
  }

  /**
   * A step that starts child jobs (checked specs): its recorded outcome, else the answer.
   * The edge records the outcome once the children are final, so until then the run waits
   * and holds nothing here.
   */
  async #children(kind: "invoke" | "fan_out", name: string, jobs: unknown[]): Promise<unknown> {
    const { seq, rec } = this.#begin(kind, name);
    if (rec !== undefined) {
      return replay(rec);
    }
    this.#claim();
    this.#end({ op: "step", step: { kind, seq, name, jobs } });
  }

  /** The wait's conditions with the run's side resolved to values. */
  #matches(name: string, match: Record<string, string>): { event: string; value: unknown }[] {
    const entries = Object.entries(match);
    if (entries.length > MAX_MATCHES) {
      throw new Error(`wait ${JSON.stringify(name)}: at most ${MAX_MATCHES} match conditions`);
    }
    const subject = { payload: this.#run.payload, metadata: this.#run.metadata, id: this.#run.id, type: this.#run.type };
    return entries.map(([event, pointer]) => {
      if (!isPointer(event)) {
        throw new Error(`wait ${JSON.stringify(name)}: ${JSON.stringify(event)} is not a JSON pointer into the event`);
      }
      if (typeof pointer !== "string") {
        throw new Error(`wait ${JSON.stringify(name)}: the condition on ${event} must name a JSON pointer into the run`);
      }
      const found = resolvePointer(subject, pointer);
      if (!found.ok) {
        // Every execution of this run would find the same nothing: retrying cannot help.
        throw new NonRetryableError(`wait ${JSON.stringify(name)}: ${JSON.stringify(pointer)} names nothing in the run (pointers start at /payload, /metadata, /id or /type)`);
      }
      return { event, value: found.value };
    });
  }
}

/** What a recorded step gives the handler. */
function replay(rec: Recorded): unknown {
  switch (rec.state) {
    case "failed":
      throw new StepError(rec.name, rec.error ?? "failed");
    case "timed_out":
      return null;
    default:
      return rec.result ?? null;
  }
}

/**
 * The job specs as the edge will receive them, or a throw: each is an object with a
 * non-empty `type`, and JSON (checked now, so a BigInt is the handler's error and not a
 * broken answer). The enqueue API checks the rest when the edge starts the children.
 */
function jobSpecs(step: string, jobs: unknown[]): unknown[] {
  return jobs.map((job, i) => {
    const which = jobs.length === 1 ? "the job spec" : `job spec ${i}`;
    if (!isObject(job) || typeof job.type !== "string" || job.type === "") {
      throw new Error(`step ${JSON.stringify(step)}: ${which} is an object with a non-empty string type`);
    }
    const json = asJson(job);
    if (!json.ok) {
      throw new Error(`step ${JSON.stringify(step)}: ${which} is not JSON: ${json.error}`);
    }
    return json.value;
  });
}

function checkName(name: unknown): void {
  if (
    typeof name !== "string" ||
    name === "" ||
    new TextEncoder().encode(name).length > MAX_STEP_NAME_BYTES ||
    /\p{Cc}/u.test(name)
  ) {
    throw new Error(`a step name is a string of 1 to ${MAX_STEP_NAME_BYTES} bytes without control characters, not ${JSON.stringify(name)}`);
  }
}

/** `fn`'s value, or a rejection once `ms` passed first. */
function within<T>(fn: () => Promise<T> | T, ms: number): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`the step timed out after ${ms} ms`)), ms);
  });
  return Promise.race([Promise.resolve().then(fn), late]).finally(() => clearTimeout(timer));
}

function retryPolicy(opts?: RunOptions): { attempts: number; backoff: Required<Backoff> } {
  const retries = opts?.retries ?? 0;
  if (!Number.isInteger(retries) || retries < 0 || retries >= MAX_STEP_ATTEMPTS) {
    throw new Error(`retries: an integer from 0 to ${MAX_STEP_ATTEMPTS - 1}, not ${retries}`);
  }
  // The edge wants every backoff field once the object is there, so defaults are filled in.
  const backoff = { ...DEFAULT_BACKOFF, ...opts?.backoff };
  for (const field of ["base_ms", "cap_ms"] as const) {
    if (!Number.isSafeInteger(backoff[field]) || backoff[field] < 0) {
      throw new Error(`backoff.${field}: whole milliseconds, not ${backoff[field]}`);
    }
  }
  if (!Number.isFinite(backoff.factor) || backoff.factor <= 0) {
    throw new Error(`backoff.factor: a positive number, not ${backoff.factor}`);
  }
  return { attempts: retries + 1, backoff };
}

const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/**
 * Milliseconds of a duration: a whole number of ms, or an integer with a unit ms, s, m, h
 * or d. Anything else (fractions, spaces, other units, negative) throws, since a guessed
 * reading of a typo would sleep for the wrong time.
 */
export function parseDuration(duration: Duration): number {
  if (typeof duration === "number" && Number.isSafeInteger(duration) && duration >= 0) {
    return duration;
  }
  if (typeof duration === "string") {
    const m = /^(\d+)(ms|s|m|h|d)$/.exec(duration);
    const ms = m === null ? NaN : Number(m[1]) * (UNIT_MS[m[2] ?? ""] ?? NaN);
    if (Number.isSafeInteger(ms)) {
      return ms;
    }
  }
  throw new Error(`invalid duration ${JSON.stringify(duration)}: whole milliseconds, or an integer with a unit ms, s, m, h or d ("90s", "5m")`);
}

function parseTime(time: Date | string): string {
  const date = time instanceof Date ? time : typeof time === "string" ? new Date(time) : null;
  if (date === null || Number.isNaN(date.getTime())) {
    throw new Error(`invalid time ${JSON.stringify(time)}: a Date or an RFC 3339 timestamp`);
  }
  return date.toISOString();
}

function isPointer(p: string): boolean {
  return typeof p === "string" && (p === "" || p.startsWith("/"));
}

/** RFC 6901: the value `pointer` names in `doc`, if any. */
function resolvePointer(doc: unknown, pointer: string): { ok: true; value: unknown } | { ok: false } {
  if (!isPointer(pointer) || /~[^01]|~$/.test(pointer)) {
    return { ok: false };
  }
  let cur = doc;
  for (const raw of pointer === "" ? [] : pointer.slice(1).split("/")) {
    // ~1 before ~0, so "~01" reads as "~1" and not "/".
    const token = raw.replaceAll("~1", "/").replaceAll("~0", "~");
    if (Array.isArray(cur)) {
      if (!/^(0|[1-9]\d*)$/.test(token) || Number(token) >= cur.length) {
        return { ok: false };
      }
      cur = cur[Number(token)];
    } else if (cur !== null && typeof cur === "object" && Object.hasOwn(cur, token)) {
      cur = (cur as Record<string, unknown>)[token];
    } else {
      return { ok: false };
    }
  }
  return cur === undefined ? { ok: false } : { ok: true, value: cur };
}

/**
 * The value as the edge will record it (and a later execution return it): `undefined`
 * becomes null, and what JSON cannot carry (a BigInt, a cycle) is an error now rather than
 * a broken answer later.
 */
function asJson(value: unknown): { ok: true; value: unknown } | { ok: false; error: string } {
  try {
    const json = JSON.stringify(value);
    return { ok: true, value: json === undefined ? null : JSON.parse(json) };
  } catch (e) {
    return { ok: false, error: text(e) };
  }
}

function text(e: unknown): string {
  try {
    return String(e);
  } catch {
    // An object without a usable toString (Object.create(null)).
    return "an error that cannot be shown as text";
  }
}

const KINDS = new Set<string>(["run", "sleep", "wait", "invoke", "fan_out"]);

/** The run and its recorded steps by position, or a throw saying what is wrong. */
function parseCall(body: unknown): { run: Run; recorded: (Recorded | undefined)[] } {
  if (!isObject(body) || !isObject(body.run)) {
    throw new Error("the body is an object with a run object");
  }
  const r = body.run;
  for (const field of ["id", "type", "tenant"]) {
    if (typeof r[field] !== "string") {
      throw new Error(`run.${field} is a string`);
    }
  }
  if (!Number.isSafeInteger(r.attempt)) {
    throw new Error("run.attempt is an integer");
  }
  if (r.metadata !== undefined && !isObject(r.metadata)) {
    throw new Error("run.metadata is an object");
  }
  const run: Run = {
    id: r.id as string,
    type: r.type as string,
    tenant: r.tenant as string,
    attempt: r.attempt as number,
    payload: r.payload ?? null,
    metadata: (r.metadata ?? {}) as Record<string, unknown>,
  };
  if (!Array.isArray(body.steps)) {
    throw new Error("steps is an array");
  }
  const recorded: (Recorded | undefined)[] = [];
  for (const s of body.steps) {
    if (
      !isObject(s) ||
      !Number.isSafeInteger(s.seq) ||
      (s.seq as number) < 0 ||
      typeof s.name !== "string" ||
      typeof s.state !== "string" ||
      !(typeof s.kind === "string" && KINDS.has(s.kind))
    ) {
      throw new Error("each step has a seq (integer), a name, a kind (run, sleep, wait, invoke or fan_out) and a state");
    }
    if (s.error !== undefined && typeof s.error !== "string") {
      throw new Error(`step ${s.seq}: error is a string`);
    }
    const seq = s.seq as number;
    if (recorded[seq] !== undefined) {
      throw new Error(`step ${seq} is listed twice`);
    }
    recorded[seq] = s as unknown as Recorded;
  }
  return { run, recorded };
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

