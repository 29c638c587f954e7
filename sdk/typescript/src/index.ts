// The edgejobs TypeScript SDK: the API client, the Standard Webhooks verifier of deliveries,
// and the workflow endpoint handler, with no runtime dependencies.

export * from "./client.ts";
export * from "./errors.ts";
export * from "./webhook.ts";
export { SseParser, readEvents } from "./sse.ts";
export type { ServerSentEvent } from "./sse.ts";
export * from "./workflow.ts";
export type { components, operations, paths } from "./openapi.ts";
