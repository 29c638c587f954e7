// SUBSCRIBE over REST through the official @upstash/redis client (its Server-Sent Events
// subscriber) against UPSTASH_REDIS_REST_URL: subscribes to COMPAT_CHANNEL, publishes one
// message once subscribed, prints what the subscriber saw as JSON and exits. The e2e test
// `wake_the_official_client_subscribes_through_the_gateway` runs it against upstash-local.
import { Redis } from "@upstash/redis";

const channel = process.env.COMPAT_CHANNEL;
const redis = new Redis({
  url: process.env.UPSTASH_REDIS_REST_URL,
  token: process.env.UPSTASH_REDIS_REST_TOKEN,
  enableTelemetry: false,
});

const seen = { subscribed: null, messages: [], errors: [] };
const done = (code) => {
  console.log(JSON.stringify(seen));
  process.exit(code);
};
setTimeout(() => done(1), 10000);
const sub = redis.subscribe([channel]);
sub.on("error", (e) => seen.errors.push(String(e.message ?? e)));
sub.on("subscribe", async (count) => {
  seen.subscribed = count;
  await redis.publish(channel, { n: 1 });
});
sub.on("message", ({ channel: on, message }) => {
  seen.messages.push({ channel: on, message });
  done(0);
});
