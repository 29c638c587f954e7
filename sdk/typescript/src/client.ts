// The typed client of the edgejobs HTTP API: every public operation of openapi.json, with
// typed errors, retries of 429/503 that honour Retry-After, cursor iteration and SSE streams.

import type { components, operations } from "./openapi.ts";
import { ConnectionError, EdgejobsError, errorFromResponse, parseRetryAfter, RateLimitedError } from "./errors.ts";
import { readEvents } from "./sse.ts";

type Schemas = components["schemas"];
type Ops = operations;
type JsonOf<R> = R extends { content: { "application/json": infer T } } ? T : never;
/** The JSON body an operation answers with the given status. */
type Ok<K extends keyof Ops, S extends keyof Ops[K]["responses"]> = JsonOf<Ops[K]["responses"][S]>;
/** The query parameters of an operation. */
type QueryOf<K extends keyof Ops> = NonNullable<Ops[K]["parameters"]["query"]>;
/** The JSON body an operation takes. */
type BodyOf<K extends keyof Ops> = Ops[K] extends { requestBody?: infer R } ? JsonOf<NonNullable<R>> : never;

// The API's own types, named for callers. They come from the generated `openapi.ts`.
export type Job = Schemas["Job"];
export type JobState = Schemas["JobState"];
export type JobSummary = Schemas["JobSummary"];
export type JobPage = Schemas["JobList"];
/** What `POST /v1/jobs` takes: a built-in type's spec or a declared type's. */
export type NewJob = Schemas["JobSpec"];
export type BatchResult = Schemas["BatchResult"];
export type BatchItemResult = Schemas["BatchItemResult"];
export type BatchRequest = BodyOf<"enqueueBatch">;
export type ReplayRequest = BodyOf<"replayDead">;
export type ReplayResult = Schemas["ReplayResult"];
export type Schedule = Schemas["Schedule"];
export type ScheduleSpec = Schemas["ScheduleSpec"];
export type SchedulePatch = Schemas["SchedulePatch"];
export type SchedulePage = Ok<"listSchedules", 200>;
export type ScheduleTriggered = Ok<"triggerSchedule", 201>;
export type ScheduleDeleted = Ok<"deleteSchedule", 200>;
export type FlowKey = Schemas["FlowKey"];
export type BusyKeys = Schemas["BusyKeys"];
export type FlowPauseRequest = Schemas["FlowPauseRequest"];
export type FlowChanged = Schemas["FlowChanged"];
export type EventRequest = Schemas["EventRequest"];
export type EventSent = Schemas["EventSent"];
export type ReadToken = Schemas["ReadToken"];
export type Stats = Schemas["Stats"];
export type Health = Schemas["Health"];
export type Whoami = Ok<"whoami", 200>;
export type WebhookSecret = Ok<"webhookSecret", 200>;
export type BackupSummary = Schemas["BackupSummary"];
export type BackupList = Ok<"listBackups", 200>;
export type BackupCreated = Ok<"createBackup", 201>;
export type BackupLatest = Ok<"latestBackup", 200>;
export type BackupVerified = Ok<"verifyBackup", 200>;
export type RestoreResult = Ok<"restoreBackup", 200>;
export type ResealRequest = BodyOf<"reseal">;
export type ResealResult = Ok<"reseal", 200>;
export type ListJobsQuery = QueryOf<"listJobs">;
export type ListDeadQuery = QueryOf<"listDead">;
export type ListSchedulesQuery = QueryOf<"listSchedules">;

/**
 * The body of a job stream's `state` event: what changed shows here, the rest is
 * `jobs.get`. (openapi.json describes the stream as text; README "Live results" gives this.)
 */
export interface JobStateData {
  id: string;
  type: string;
  state: JobState;
  attempt: number;
  progress?: unknown;
  metadata: Record<string, unknown>;
  result?: unknown;
  last_error?: string;
  tags: string[];
  updated_at: string;
}

/** The body of a `chunk` event: one piece of a stream (such as an LLM's tokens). */
export interface ChunkData {
  attempt: number;
  stream: string;
  data: string;
}

/** What `jobs.stream` yields: chunks (numbered over the job's life), then states. */
export type JobStreamEvent = { event: "chunk"; id: number; data: ChunkData } | { event: "state"; data: JobStateData };

/** A Cloudflare service binding to the edgejobs Worker (`env.JOBS`). */
export interface ServiceBinding {
  fetch(request: Request): Promise<Response>;
}

export interface ClientOptions {
  /** The edge's base URL, such as `https://jobs.example.com`. Not with `binding`. */
  url?: string;
  /** An API key, or a read token (`ejr_...`) for the read routes. Not sent with `binding`. */
  apiKey?: string;
  /** A service binding: requests go to `binding.fetch` and carry no key. */
  binding?: ServiceBinding;
  /** The fetch to use (default the global one). */
  fetch?: (request: Request) => Promise<Response>;
  /** Retries of a 429, a 503 or a network error, for requests safe to repeat. Default 3. */
  maxRetries?: number;
  /** The first backoff delay; each retry doubles it, with full jitter. Default 500 ms. */
  retryBaseMs?: number;
  /**
   * The longest delay before a retry. A `Retry-After` longer than it is not waited for:
   * the error is thrown. Default 30,000 ms.
   */
  retryCapMs?: number;
  /** Extra headers on every request. */
  headers?: Record<string, string>;
  /** Waits `ms` (tests inject a fake clock). Default `setTimeout`. */
  sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
  /** A number in [0, 1) for jitter. Default `Math.random`. */
  random?: () => number;
  /** ms since the epoch (reads a `Retry-After` date). Default `Date.now`. */
  now?: () => number;
}

/** Options every call takes. */
export interface CallOptions {
  signal?: AbortSignal;
  /** Overrides the client's `maxRetries` for this call. */
  maxRetries?: number;
}

/** An enqueue's options. */
export interface EnqueueOptions extends CallOptions {
  /**
   * `true` generates a key (`crypto.randomUUID()`); a string is used as is. A keyed enqueue
   * is safe to repeat (the API answers the same job within 24 h), so it is retried.
   */
  idempotencyKey?: true | string;
}

export interface BatchOptions extends CallOptions {
  /** `true` gives each item without an `idempotency_key` a generated one (and makes the batch retryable). */
  idempotencyKeys?: true;
  /** Fired once every created job is final. Not with idempotency keys (the API refuses them). */
  onComplete?: BatchRequest["on_complete"];
}

export interface JobWaitOptions extends CallOptions {
  /** How long to wait for the job to be final. Default 5 minutes. */
  timeoutMs?: number;
}

export interface StreamOptions extends CallOptions {
  /** Resume after this chunk number (chunks up to it are not sent again). */
  after?: number;
  /** Reconnects after a dropped stream before giving up. Default `maxRetries`. */
  reconnects?: number;
}

export interface SubscribeOptions extends CallOptions {
  /** Only the jobs with this tag (a key may leave it out: every job it sees). */
  tag?: string;
  /** Reconnects after a dropped stream before giving up. Default `maxRetries`. */
  reconnects?: number;
}

const FINAL = new Set<JobState>(["completed", "dead", "cancelled"]);

/** Whether a job's state is final (completed, dead or cancelled). */
export function isFinal(state: JobState): boolean {
  return FINAL.has(state);
}

interface Call extends CallOptions {
  method: "GET" | "POST" | "PATCH" | "DELETE";
  path: string;
  query?: Record<string, unknown> | undefined;
  body?: unknown;
  /** Safe to send again: a read, or a write whose repeat does nothing new. */
  retry: boolean;
  accept?: string;
}

/** The HTTP layer: one request, its retries, its typed error. */
class Transport {
  readonly maxRetries: number;
  private readonly base: string;
  private readonly auth: string | undefined;
  private readonly doFetch: (request: Request) => Promise<Response>;
  private readonly baseMs: number;
  private readonly capMs: number;
  private readonly extra: Record<string, string>;
  readonly sleep: (ms: number, signal?: AbortSignal) => Promise<void>;
  private readonly random: () => number;
  readonly now: () => number;

  constructor(o: ClientOptions) {
    if (o.binding) {
      if (o.url !== undefined) throw new TypeError("edgejobs: give `url` or `binding`, not both");
      const binding = o.binding;
      // The host is a placeholder: a service binding routes by the binding, not by it.
      this.base = "https://edgejobs";
      this.auth = undefined;
      this.doFetch = (r) => binding.fetch(r);
    } else {
      if (!o.url) throw new TypeError("edgejobs: `url` (or `binding`) is required");
      this.base = o.url.replace(/\/+$/, "");
      this.auth = o.apiKey;
      // Called through a closure: Workers refuse a `fetch` called with another `this`.
      this.doFetch = o.fetch ?? ((r) => fetch(r));
    }
    this.maxRetries = o.maxRetries ?? 3;
    this.baseMs = o.retryBaseMs ?? 500;
    this.capMs = o.retryCapMs ?? 30_000;
    this.extra = o.headers ?? {};
    this.sleep = o.sleep ?? sleep;
    this.random = o.random ?? Math.random;
    this.now = o.now ?? Date.now;
  }

  /** Full jitter: a random delay up to the exponential bound, capped. */
  backoff(attempt: number): number {
    return Math.floor(this.random() * Math.min(this.capMs, this.baseMs * 2 ** attempt));
  }

  private request(c: Call): Request {
    let url = this.base + c.path;
    if (c.query) {
      const q = new URLSearchParams();
      for (const [k, v] of Object.entries(c.query)) {
        if (v !== undefined && v !== null) q.set(k, String(v));
      }
      const s = q.toString();
      if (s) url += `?${s}`;
    }
    const headers = new Headers(this.extra);
    headers.set("accept", c.accept ?? "application/json");
    if (this.auth) headers.set("authorization", `Bearer ${this.auth}`);
    const init: RequestInit = { method: c.method, headers };
    if (c.signal) init.signal = c.signal;
    if (c.body !== undefined) {
      headers.set("content-type", "application/json");
      init.body = JSON.stringify(c.body);
    }
    return new Request(url, init);
  }

  /** Sends a call, retrying what may be retried; a non-2xx answer is thrown typed. */
  async send(c: Call): Promise<Response> {
    const max = c.maxRetries ?? this.maxRetries;
    for (let attempt = 0; ; attempt++) {
      // A fake or a custom fetch may ignore the signal: do not start a call it cancelled.
      if (c.signal?.aborted) throw c.signal.reason;
      let res: Response;
      try {
        res = await this.doFetch(this.request(c));
      } catch (e) {
        if (c.signal?.aborted) throw c.signal.reason ?? e;
        // Whether a failed connection reached the server is unknown: only safe calls are sent again.
        if (!c.retry || attempt >= max) {
          throw new ConnectionError({ status: 0, code: "network", message: `edgejobs could not be reached: ${describe(e)}`, cause: e });
        }
        await this.sleep(this.backoff(attempt), c.signal);
        continue;
      }
      if (res.ok) return res;
      const err = errorFromResponse(res.status, res.headers, await res.text(), this.now());
      if ((res.status === 429 || res.status === 503) && c.retry && attempt < max) {
        const after = err instanceof RateLimitedError ? err.retryAfter : parseRetryAfter(res.headers.get("retry-after"), this.now());
        let delay = this.backoff(attempt);
        if (after !== undefined) {
          // The server knows when the window frees: waiting less would be refused again.
          if (after * 1000 > this.capMs) throw err;
          delay = after * 1000 + Math.floor(this.random() * Math.min(this.baseMs, 1000));
        }
        await this.sleep(delay, c.signal);
        continue;
      }
      throw err;
    }
  }

  async json<T>(c: Call): Promise<T> {
    const res = await this.send(c);
    const text = await res.text();
    return (text === "" ? null : JSON.parse(text)) as T;
  }
}

function describe(e: unknown): string {
  if (e instanceof Error) {
    const cause = (e as { cause?: unknown }).cause;
    return cause instanceof Error ? `${e.message} (${cause.message})` : e.message;
  }
  return String(e);
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const t = setTimeout(done, ms);
    function onAbort() {
      clearTimeout(t);
      reject(signal?.reason);
    }
    function done() {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

const enc = encodeURIComponent;

/** Pages of a cursor-paged list, one request each, until `next_cursor` is null. */
async function* pages<Q extends { cursor?: string }, P extends { next_cursor: string | null }>(
  list: (q: Q, o?: CallOptions) => Promise<P>,
  query: Q,
  opts?: CallOptions,
): AsyncGenerator<P> {
  let q = query;
  for (;;) {
    const page = await list(q, opts);
    yield page;
    if (!page.next_cursor) return;
    q = { ...q, cursor: page.next_cursor };
  }
}

/** Jobs: enqueue, read, wait, list, cancel, retry, stream, read tokens. */
export class JobsApi {
  private readonly t: Transport;
  constructor(t: Transport) {
    this.t = t;
  }

  /** `POST /v1/jobs` (enqueueJob): the created job, or the existing one its key names. */
  enqueue(spec: NewJob, opts: EnqueueOptions = {}): Promise<Job> {
    const body = { ...spec } as NewJob;
    if (opts.idempotencyKey !== undefined) {
      body.idempotency_key = opts.idempotencyKey === true ? crypto.randomUUID() : opts.idempotencyKey;
    }
    // Without a key a repeated create could create twice: it is sent once.
    const retry = typeof body.idempotency_key === "string";
    return this.t.json<Job>({ ...opts, method: "POST", path: "/v1/jobs", body, retry });
  }

  /** `POST /v1/jobs/batch` (enqueueBatch): one result per item, in order (check each `status`). */
  enqueueBatch(jobs: NewJob[], opts: BatchOptions = {}): Promise<BatchResult> {
    const items = jobs.map((j) =>
      opts.idempotencyKeys && typeof j.idempotency_key !== "string" ? ({ ...j, idempotency_key: crypto.randomUUID() } as NewJob) : j,
    );
    const body: BatchRequest = { jobs: items };
    if (opts.onComplete !== undefined) body.on_complete = opts.onComplete;
    const retry = items.length > 0 && items.every((j) => typeof j.idempotency_key === "string");
    return this.t.json<BatchResult>({ ...opts, method: "POST", path: "/v1/jobs/batch", body, retry });
  }

  /** `GET /v1/jobs/{id}` (getJob); with `wait` (`"30s"`, at most 60 s) a long poll. */
  get(id: string, opts: CallOptions & { wait?: string } = {}): Promise<Job> {
    return this.t.json<Job>({ ...opts, method: "GET", path: `/v1/jobs/${enc(id)}`, query: { wait: opts.wait }, retry: true });
  }

  /** Long-polls until the job is final and returns it; throws `code: "timeout"` after `timeoutMs`. */
  async wait(id: string, opts: JobWaitOptions = {}): Promise<Job> {
    const deadline = this.t.now() + (opts.timeoutMs ?? 300_000);
    for (;;) {
      const left = deadline - this.t.now();
      const secs = Math.max(0, Math.min(60, Math.ceil(left / 1000)));
      const job = await this.get(id, { ...opts, wait: `${secs}s` });
      if (FINAL.has(job.state)) return job;
      if (this.t.now() >= deadline) {
        throw new EdgejobsError({ status: 0, code: "timeout", message: `job ${id} is still ${job.state} after the wait` });
      }
    }
  }

  /** `GET /v1/jobs` (listJobs): one page, newest first. */
  list(query: ListJobsQuery = {}, opts: CallOptions = {}): Promise<JobPage> {
    return this.t.json<JobPage>({ ...opts, method: "GET", path: "/v1/jobs", query, retry: true });
  }

  /** Every page of `list`, following `next_cursor`. */
  pages(query: ListJobsQuery = {}, opts: CallOptions = {}): AsyncGenerator<JobPage> {
    return pages((q, o) => this.list(q, o), query, opts);
  }

  /** Every job `list` finds, page after page. */
  async *iterate(query: ListJobsQuery = {}, opts: CallOptions = {}): AsyncGenerator<JobSummary> {
    for await (const page of this.pages(query, opts)) yield* page.jobs;
  }

  /** `POST /v1/jobs/{id}/cancel` (cancelJob). */
  cancel(id: string, opts: CallOptions = {}): Promise<Job> {
    return this.t.json<Job>({ ...opts, method: "POST", path: `/v1/jobs/${enc(id)}/cancel`, retry: true });
  }

  /** `POST /v1/jobs/{id}/retry` (retryJob): a dead job runs again as a new attempt series. */
  retry(id: string, opts: CallOptions = {}): Promise<Job> {
    return this.t.json<Job>({ ...opts, method: "POST", path: `/v1/jobs/${enc(id)}/retry`, retry: false });
  }

  /** `POST /v1/jobs/{id}/token` (jobToken): a read token for this job (`ttl` 1s to 24h, default 15m). */
  token(id: string, body: BodyOf<"jobToken"> = {}, opts: CallOptions = {}): Promise<ReadToken> {
    return this.t.json<ReadToken>({ ...opts, method: "POST", path: `/v1/jobs/${enc(id)}/token`, body, retry: true });
  }

  /**
   * `GET /v1/jobs/{id}/events` (jobEvents): the job's chunks, then its states as they
   * change, until its final state. A dropped connection resumes after the last chunk.
   */
  async *stream(id: string, opts: StreamOptions = {}): AsyncGenerator<JobStreamEvent> {
    let after = opts.after;
    const reconnects = opts.reconnects ?? this.t.maxRetries;
    for (let drops = 0; ; ) {
      const res = await this.t.send({
        ...opts,
        method: "GET",
        path: `/v1/jobs/${enc(id)}/events`,
        query: { after },
        retry: true,
        accept: "text/event-stream",
      });
      if (!res.body) throw new ConnectionError({ status: res.status, code: "network", message: "the stream has no body" });
      try {
        for await (const ev of readEvents(res.body, opts.signal)) {
          if (ev.event === "chunk") {
            const n = Number(ev.lastEventId);
            after = n;
            drops = 0;
            yield { event: "chunk", id: n, data: JSON.parse(ev.data) as ChunkData };
          } else if (ev.event === "state") {
            const data = JSON.parse(ev.data) as JobStateData;
            yield { event: "state", data };
            if (FINAL.has(data.state)) return;
          }
        }
      } catch (e) {
        if (opts.signal?.aborted) throw opts.signal.reason ?? e;
        if (!(e instanceof TypeError) && !(e instanceof Error && e.name === "TypeError")) throw e;
      }
      // The stream ended before the final state (a restart, a proxy's timeout): resume.
      if (++drops > reconnects) {
        throw new ConnectionError({ status: 0, code: "network", message: `the stream of job ${id} ended before the job was final` });
      }
      await this.t.sleep(this.t.backoff(drops - 1), opts.signal);
    }
  }
}

/** The dead-letter set. */
export class DeadApi {
  private readonly t: Transport;
  constructor(t: Transport) {
    this.t = t;
  }

  /** `GET /v1/dead` (listDead): one page, newest first. */
  list(query: ListDeadQuery = {}, opts: CallOptions = {}): Promise<JobPage> {
    return this.t.json<JobPage>({ ...opts, method: "GET", path: "/v1/dead", query, retry: true });
  }

  pages(query: ListDeadQuery = {}, opts: CallOptions = {}): AsyncGenerator<JobPage> {
    return pages((q, o) => this.list(q, o), query, opts);
  }

  async *iterate(query: ListDeadQuery = {}, opts: CallOptions = {}): AsyncGenerator<JobSummary> {
    for await (const page of this.pages(query, opts)) yield* page.jobs;
  }

  /** `POST /v1/dead/replay` (replayDead, admin): replays the dead jobs the filter picks. */
  replay(filter: ReplayRequest = {}, opts: CallOptions = {}): Promise<ReplayResult> {
    return this.t.json<ReplayResult>({ ...opts, method: "POST", path: "/v1/dead/replay", body: filter, retry: false });
  }
}

/** Schedules (changes need an admin key). */
export class SchedulesApi {
  private readonly t: Transport;
  constructor(t: Transport) {
    this.t = t;
  }

  /** `GET /v1/schedules` (listSchedules): one page by name. */
  list(query: ListSchedulesQuery = {}, opts: CallOptions = {}): Promise<SchedulePage> {
    return this.t.json<SchedulePage>({ ...opts, method: "GET", path: "/v1/schedules", query, retry: true });
  }

  pages(query: ListSchedulesQuery = {}, opts: CallOptions = {}): AsyncGenerator<SchedulePage> {
    return pages((q, o) => this.list(q, o), query, opts);
  }

  async *iterate(query: ListSchedulesQuery = {}, opts: CallOptions = {}): AsyncGenerator<Schedule> {
    for await (const page of this.pages(query, opts)) yield* page.schedules;
  }

  /** `POST /v1/schedules` (createSchedule): 409 `schedule_exists` for a taken name. */
  create(spec: ScheduleSpec, opts: CallOptions = {}): Promise<Schedule> {
    return this.t.json<Schedule>({ ...opts, method: "POST", path: "/v1/schedules", body: spec, retry: false });
  }

  /** `GET /v1/schedules/{name}` (getSchedule): with its last runs and next times. */
  get(name: string, opts: CallOptions = {}): Promise<Schedule> {
    return this.t.json<Schedule>({ ...opts, method: "GET", path: `/v1/schedules/${enc(name)}`, retry: true });
  }

  /** `PATCH /v1/schedules/{name}` (patchSchedule). */
  update(name: string, patch: SchedulePatch, opts: CallOptions = {}): Promise<Schedule> {
    return this.t.json<Schedule>({ ...opts, method: "PATCH", path: `/v1/schedules/${enc(name)}`, body: patch, retry: true });
  }

  /** `DELETE /v1/schedules/{name}` (deleteSchedule): its jobs stay. */
  delete(name: string, opts: CallOptions = {}): Promise<ScheduleDeleted> {
    return this.t.json<ScheduleDeleted>({ ...opts, method: "DELETE", path: `/v1/schedules/${enc(name)}`, retry: false });
  }

  /** `POST /v1/schedules/{name}/pause` (pauseSchedule). */
  pause(name: string, opts: CallOptions = {}): Promise<Schedule> {
    return this.t.json<Schedule>({ ...opts, method: "POST", path: `/v1/schedules/${enc(name)}/pause`, retry: true });
  }

  /** `POST /v1/schedules/{name}/resume` (resumeSchedule). */
  resume(name: string, opts: CallOptions = {}): Promise<Schedule> {
    return this.t.json<Schedule>({ ...opts, method: "POST", path: `/v1/schedules/${enc(name)}/resume`, retry: true });
  }

  /** `POST /v1/schedules/{name}/trigger` (triggerSchedule): run now. */
  trigger(name: string, opts: CallOptions = {}): Promise<ScheduleTriggered> {
    return this.t.json<ScheduleTriggered>({ ...opts, method: "POST", path: `/v1/schedules/${enc(name)}/trigger`, retry: false });
  }
}

/** Events: send one (resumes waiting workflow runs), follow many jobs' states. */
export class EventsApi {
  private readonly t: Transport;
  constructor(t: Transport) {
    this.t = t;
  }

  /**
   * `POST /v1/events` (sendEvent). With `idempotencyKey` (or an `id` in the event) a repeat
   * resumes nothing new, so the send is retried.
   */
  send(event: EventRequest, opts: EnqueueOptions = {}): Promise<EventSent> {
    const body = { ...event };
    if (opts.idempotencyKey !== undefined) body.id = opts.idempotencyKey === true ? crypto.randomUUID() : opts.idempotencyKey;
    const retry = typeof body.id === "string";
    return this.t.json<EventSent>({ ...opts, method: "POST", path: "/v1/events", body, retry });
  }

  /**
   * `GET /v1/events` (manyEvents): `state` events of the jobs with `tag` as they change,
   * until `signal` aborts (it never ends by itself; a dropped stream reconnects).
   */
  async *subscribe(opts: SubscribeOptions = {}): AsyncGenerator<JobStateData> {
    const reconnects = opts.reconnects ?? this.t.maxRetries;
    for (let drops = 0; ; ) {
      const res = await this.t.send({ ...opts, method: "GET", path: "/v1/events", query: { tag: opts.tag }, retry: true, accept: "text/event-stream" });
      if (!res.body) throw new ConnectionError({ status: res.status, code: "network", message: "the stream has no body" });
      try {
        for await (const ev of readEvents(res.body, opts.signal)) {
          if (ev.event === "state") {
            drops = 0;
            yield JSON.parse(ev.data) as JobStateData;
          }
        }
      } catch (e) {
        if (opts.signal?.aborted) throw opts.signal.reason ?? e;
        if (!(e instanceof TypeError)) throw e;
      }
      if (++drops > reconnects) throw new ConnectionError({ status: 0, code: "network", message: "the event stream kept ending" });
      await this.t.sleep(this.t.backoff(drops - 1), opts.signal);
    }
  }
}

/** Flow control views, and pausing a key or a type (admin). */
export class FlowApi {
  private readonly t: Transport;
  constructor(t: Transport) {
    this.t = t;
  }

  /** `GET /v1/flow` (getFlowKey): one key's running, waiting, rate, parked, paused. */
  get(key: string, opts: CallOptions & { tenant?: string } = {}): Promise<FlowKey> {
    return this.t.json<FlowKey>({ ...opts, method: "GET", path: "/v1/flow", query: { key, tenant: opts.tenant }, retry: true });
  }

  /** `GET /v1/flow/busiest` (getBusiestFlowKeys): the keys with the most waiting jobs. */
  busiest(n?: number, opts: CallOptions = {}): Promise<BusyKeys> {
    return this.t.json<BusyKeys>({ ...opts, method: "GET", path: "/v1/flow/busiest", query: { n }, retry: true });
  }

  /** `POST /v1/admin/flow/pause` (pauseFlow): nothing new starts for the key or type. */
  pause(target: FlowPauseRequest, opts: CallOptions = {}): Promise<FlowChanged> {
    return this.t.json<FlowChanged>({ ...opts, method: "POST", path: "/v1/admin/flow/pause", body: target, retry: true });
  }

  /** `POST /v1/admin/flow/resume` (resumeFlow). */
  resume(target: FlowPauseRequest, opts: CallOptions = {}): Promise<FlowChanged> {
    return this.t.json<FlowChanged>({ ...opts, method: "POST", path: "/v1/admin/flow/resume", body: target, retry: true });
  }
}

/** Read tokens for browsers (one job's: `jobs.token`). */
export class TokensApi {
  private readonly t: Transport;
  constructor(t: Transport) {
    this.t = t;
  }

  /** `POST /v1/tokens` (tagToken): a read token for the jobs of one tag. */
  forTag(body: BodyOf<"tagToken">, opts: CallOptions = {}): Promise<ReadToken> {
    return this.t.json<ReadToken>({ ...opts, method: "POST", path: "/v1/tokens", body, retry: true });
  }
}

/** Admin routes: receivers' secrets, backups, restore, reseal. */
export class AdminApi {
  private readonly t: Transport;
  constructor(t: Transport) {
    this.t = t;
  }

  /** `POST /v1/admin/webhook-secret` (webhookSecret): the `whsec_` secret a receiver verifies with. */
  webhookSecret(body: BodyOf<"webhookSecret">, opts: CallOptions = {}): Promise<WebhookSecret> {
    return this.t.json<WebhookSecret>({ ...opts, method: "POST", path: "/v1/admin/webhook-secret", body, retry: true });
  }

  /** `GET /v1/admin/backups` (listBackups). */
  listBackups(opts: CallOptions = {}): Promise<BackupList> {
    return this.t.json<BackupList>({ ...opts, method: "GET", path: "/v1/admin/backups", retry: true });
  }

  /** `POST /v1/admin/backups` (createBackup): a backup now. */
  createBackup(opts: CallOptions = {}): Promise<BackupCreated> {
    return this.t.json<BackupCreated>({ ...opts, method: "POST", path: "/v1/admin/backups", retry: false });
  }

  /** `GET /v1/admin/backups/latest` (latestBackup). */
  latestBackup(opts: CallOptions = {}): Promise<BackupLatest> {
    return this.t.json<BackupLatest>({ ...opts, method: "GET", path: "/v1/admin/backups/latest", retry: true });
  }

  /** `POST /v1/admin/backups/{id}/verify` (verifyBackup). */
  verifyBackup(id: string, opts: CallOptions = {}): Promise<BackupVerified> {
    return this.t.json<BackupVerified>({ ...opts, method: "POST", path: `/v1/admin/backups/${enc(id)}/verify`, retry: true });
  }

  /** `POST /v1/admin/restore` (restoreBackup): every shard from a backup. */
  restore(backup: string, opts: CallOptions = {}): Promise<RestoreResult> {
    return this.t.json<RestoreResult>({ ...opts, method: "POST", path: "/v1/admin/restore", body: { backup }, retry: false });
  }

  /** `POST /v1/admin/reseal` (reseal): one page of a shard's sealed values under the newest key. */
  reseal(body: ResealRequest, opts: CallOptions = {}): Promise<ResealResult> {
    return this.t.json<ResealResult>({ ...opts, method: "POST", path: "/v1/admin/reseal", body, retry: true });
  }
}

/**
 * The edgejobs client. `new Client({ url, apiKey })`, or inside a Worker
 * `new Client({ binding: env.JOBS })` (a service binding: no key is sent).
 */
export class Client {
  readonly jobs: JobsApi;
  readonly dead: DeadApi;
  readonly schedules: SchedulesApi;
  readonly events: EventsApi;
  readonly flow: FlowApi;
  readonly tokens: TokensApi;
  readonly admin: AdminApi;
  private readonly t: Transport;

  constructor(options: ClientOptions) {
    this.t = new Transport(options);
    this.jobs = new JobsApi(this.t);
    this.dead = new DeadApi(this.t);
    this.schedules = new SchedulesApi(this.t);
    this.events = new EventsApi(this.t);
    this.flow = new FlowApi(this.t);
    this.tokens = new TokensApi(this.t);
    this.admin = new AdminApi(this.t);
  }

  /** `GET /v1/whoami` (whoami): the key's id, scopes and tenant. */
  whoami(opts: CallOptions = {}): Promise<Whoami> {
    return this.t.json<Whoami>({ ...opts, method: "GET", path: "/v1/whoami", retry: true });
  }

  /** `GET /v1/stats` (stats): jobs by state and type, the last hour, the consumers. */
  stats(opts: CallOptions & { tenant?: string } = {}): Promise<Stats> {
    return this.t.json<Stats>({ ...opts, method: "GET", path: "/v1/stats", query: { tenant: opts.tenant }, retry: true });
  }

  /** `GET /health` (health). A 503 (unhealthy) is thrown as a `ServerError`. */
  health(opts: CallOptions = {}): Promise<Health> {
    return this.t.json<Health>({ ...opts, method: "GET", path: "/health", retry: false });
  }

  /** `GET /health/live` (healthLive). */
  async live(opts: CallOptions = {}): Promise<unknown> {
    return this.t.json<unknown>({ ...opts, method: "GET", path: "/health/live", retry: true });
  }

  /** `GET /metrics` (metrics): Prometheus text. */
  async metrics(opts: CallOptions = {}): Promise<string> {
    const res = await this.t.send({ ...opts, method: "GET", path: "/metrics", retry: true, accept: "text/plain" });
    return res.text();
  }
}
