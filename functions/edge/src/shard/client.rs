//! How the rest of the Worker calls a shard: [`call`] sends one typed operation and returns
//! that operation's reply type. Each call is counted here (a billed Durable Object
//! request); some calls carry the isolate's pending counts (see `protocol::Carry`).

use edgejobs_core::protocol::{ShardCall, ShardOp, ShardReply};
use edgejobs_core::stats::Metric;
use edgejobs_core::{ApiError, ErrorCode};
use serde_json::json;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use worker::Env;
use worker::wasm_bindgen_futures::JsFuture;
use worker::web_sys;

use crate::config::SHARD_BINDING;
use crate::counters;
use crate::http::log;

/// The name of the object that keeps stored gauges (last backup, last sweep). It is a
/// `JobShard` holding no jobs; nothing on the request path calls it.
pub const STATS: &str = "stats";

/// Calls operation `op` of shard number `shard`.
pub async fn call<O: ShardOp>(env: &Env, shard: u16, op: O) -> Result<O::Reply, ApiError> {
    call_named(env, &format!("shard-{shard}"), op).await
}

/// Calls operation `op` of the object named `name`. A refusal of the whole call comes back
/// as its [`ApiError`]; an unreachable object as 503 `unavailable`.
pub async fn call_named<O: ShardOp>(env: &Env, name: &str, op: O) -> Result<O::Reply, ApiError> {
    let request: edgejobs_core::protocol::ShardRequest = op.into();
    counters::add(Metric::DoRequestsTotal, &[("op", request.name())], 1.0);
    // Reads never carry the pending counts (a read must not cost a write); writes carry
    // them about once a second.
    let deltas = counters::take(O::CARRY);
    let body = ShardCall { request, deltas };
    let text = match serde_json::to_string(&body) {
        Ok(t) => t,
        Err(e) => {
            counters::restore(body.deltas);
            return Err(ApiError::new(ErrorCode::Internal, format!("could not encode a shard call: {e}")));
        }
    };
    match send(env, name, text).await {
        Ok(reply) => serde_json::from_slice::<ShardReply<O::Reply>>(&reply)
            .map_err(|e| unavailable("shard response", &e.to_string()))?,
        Err(e) => {
            counters::restore(body.deltas);
            Err(e)
        }
    }
}

#[wasm_bindgen]
extern "C" {
    /// A Durable Object stub as JavaScript sees it: `fetch(url, init)`. Calling it directly
    /// skips the `worker` crate's Request, Headers and Response wrappers, which cost more
    /// than the call itself on a hot path.
    type RawStub;
    #[wasm_bindgen(method, catch, js_name = fetch)]
    fn fetch_raw(this: &RawStub, url: &str, init: &web_sys::RequestInit) -> Result<js_sys::Promise, JsValue>;
}

async fn send(env: &Env, name: &str, text: String) -> Result<Vec<u8>, ApiError> {
    let stub: RawStub = env
        .durable_object(SHARD_BINDING)
        .and_then(|ns| ns.get_by_name(name))
        .map_err(|e| unavailable("shard binding", &e.to_string()))?
        .into_rpc();
    let init = web_sys::RequestInit::new();
    init.set_method("POST");
    init.set_body(&JsValue::from_str(&text));
    let js = |e: JsValue| format!("{e:?}");
    let pending = stub.fetch_raw("https://shard/call", &init).map_err(|e| unavailable("shard call", &js(e)))?;
    let resp: web_sys::Response =
        JsFuture::from(pending).await.map_err(|e| unavailable("shard call", &js(e)))?.unchecked_into();
    // One arrayBuffer() instead of reading the body stream chunk by chunk.
    let buffer = resp.array_buffer().map_err(|e| unavailable("shard response", &format!("{e:?}")))?;
    let buffer = JsFuture::from(buffer).await.map_err(|e| unavailable("shard response", &format!("{e:?}")))?;
    Ok(js_sys::Uint8Array::new(&buffer).to_vec())
}

fn unavailable(what: &str, e: &str) -> ApiError {
    log("error", "shard unreachable", json!({ "what": what, "error": e }));
    ApiError::new(ErrorCode::Unavailable, "the job store is temporarily unavailable; retry")
}
