// A Server-Sent Events parser over a fetch body (WHATWG "event stream interpretation"), so
// the client reads streams where `EventSource` is missing (Workers, Node) and with headers.

/** One dispatched event, as the server framed it (data not yet decoded). */
export interface ServerSentEvent {
  /** `event:` field; `message` when the server named none. */
  event: string;
  /** The `data:` lines joined with `\n`. */
  data: string;
  /** The last `id:` seen so far in the stream (it carries over events without one). */
  lastEventId: string;
  /** Whether this very event carried an `id:` line. */
  hasId: boolean;
  /** A `retry:` value (ms) the server sent with or before this event, if any. */
  retry?: number;
}

/**
 * Parses an event stream incrementally: feed it decoded text in chunks of any size (a
 * line, a field, even a CRLF may be split between chunks), and it returns the events that
 * each chunk completed.
 */
export class SseParser {
  private buffer = "";
  private data: string[] = [];
  private event = "";
  private lastEventId = "";
  private hasId = false;
  private retry: number | undefined;
  private sawData = false;
  private first = true;
  /** A chunk ended in `\r`: a `\n` starting the next one belongs to the same line end. */
  private pendingCr = false;

  push(text: string): ServerSentEvent[] {
    if (this.first && text.length > 0) {
      this.first = false;
      if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
    }
    if (this.pendingCr && text.startsWith("\n")) text = text.slice(1);
    this.pendingCr = false;
    this.buffer += text;
    const out: ServerSentEvent[] = [];
    let start = 0;
    for (let i = 0; i < this.buffer.length; i++) {
      const c = this.buffer.charCodeAt(i);
      if (c !== 10 && c !== 13) continue;
      this.line(this.buffer.slice(start, i), out);
      if (c === 13) {
        if (i + 1 === this.buffer.length) this.pendingCr = true;
        else if (this.buffer.charCodeAt(i + 1) === 10) i++;
      }
      start = i + 1;
    }
    this.buffer = this.buffer.slice(start);
    return out;
  }

  private line(line: string, out: ServerSentEvent[]): void {
    if (line === "") {
      // A blank line dispatches; an event without data is dropped (but its id stays).
      if (this.sawData) {
        const ev: ServerSentEvent = {
          event: this.event === "" ? "message" : this.event,
          data: this.data.join("\n"),
          lastEventId: this.lastEventId,
          hasId: this.hasId,
        };
        if (this.retry !== undefined) ev.retry = this.retry;
        out.push(ev);
      }
      this.data = [];
      this.event = "";
      this.sawData = false;
      this.hasId = false;
      return;
    }
    if (line.startsWith(":")) return; // A comment (the server's keepalive).
    const colon = line.indexOf(":");
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    switch (field) {
      case "data":
        this.data.push(value);
        this.sawData = true;
        break;
      case "event":
        this.event = value;
        break;
      case "id":
        if (!value.includes("\0")) {
          this.lastEventId = value;
          this.hasId = true;
        }
        break;
      case "retry":
        if (/^\d+$/.test(value)) this.retry = Number(value);
        break;
      default:
        break; // Unknown fields are ignored, as the standard says.
    }
  }
}

/** The events of a byte stream, in order, until it ends (or `signal` aborts it). */
export async function* readEvents(body: ReadableStream<Uint8Array>, signal?: AbortSignal): AsyncGenerator<ServerSentEvent> {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  const parser = new SseParser();
  const onAbort = () => {
    reader.cancel(signal?.reason).catch(() => {});
  };
  signal?.addEventListener("abort", onAbort, { once: true });
  try {
    for (;;) {
      if (signal?.aborted) throw signal.reason ?? new DOMException("aborted", "AbortError");
      const { done, value } = await reader.read();
      if (done) {
        // An event not ended by a blank line is incomplete: the standard drops it.
        parser.push(decoder.decode());
        return;
      }
      for (const ev of parser.push(decoder.decode(value, { stream: true }))) yield ev;
    }
  } finally {
    signal?.removeEventListener("abort", onAbort);
    // Stopping early (a `break`, a final state) releases the connection.
    reader.cancel().catch(() => {});
  }
}
