//! The crates in `examples/`, run as a user runs them, against the shared stack.

use std::process::Command;
use std::time::Duration;

use edgejobs_tests::proc::{Proc, wait_until};
use edgejobs_tests::stack::{StackOptions, binary};
use serde_json::json;

use crate::util::{Ctx, Test, ensure, unique};

pub const TESTS: &[Test] =
    &[("webhook_receiver_example_verifies_deliveries", webhook_receiver_example_verifies_deliveries)];

const WAIT: Duration = Duration::from_secs(40);

/// `examples/webhook-receiver` (the README's verification example) with the secret an admin
/// reads for its URL: edgejobs' deliveries verify and complete; a forged one and a real
/// delivery made for another receiver are refused.
fn webhook_receiver_example_verifies_deliveries(ctx: &Ctx) -> anyhow::Result<()> {
    let url = format!("http://127.0.0.1:{}/hooks/orders", ctx.receiver_port);
    let r = ctx.send(
        ctx.http.post(ctx.url("/v1/admin/webhook-secret")).bearer_auth(&ctx.admin_key).json(&json!({ "url": url })),
    )?;
    ensure(r.status == 200, || format!("webhook-secret: {} {}", r.status, r.body))?;
    let secret = r.body["secret"].as_str().unwrap_or_default().to_owned();
    let log = ctx.state_dir.join("logs").join("webhook-receiver.log");
    let mut cmd = Command::new(binary(&StackOptions::default_root(), "webhook-receiver")?);
    cmd.env("WEBHOOK_SECRET", &secret).env("LISTEN", format!("127.0.0.1:{}", ctx.receiver_port));
    // Free the reserved port just before the receiver binds it.
    drop(ctx.receiver_reservation.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take());
    let mut receiver = Proc::spawn("webhook-receiver", cmd, &log)?;
    let text = || std::fs::read_to_string(&log).unwrap_or_default();
    let result = (|| -> anyhow::Result<()> {
        ensure(wait_until(Duration::from_secs(10), || text().contains("listening on")), || {
            format!("the receiver started: {}", text())
        })?;
        // A real delivery: verified, answered 204, so the job completes.
        let order = unique("order");
        let id = ctx.enqueue(
            &json!({ "type": "webhook", "payload": { "url": url, "body": { "order": order } }, "max_attempts": 1 }),
        )?;
        let job = ctx.wait_state(&id, "completed", WAIT)?;
        ensure(job["result"]["status"] == 204, || format!("the receiver accepted it: {job}"))?;
        ensure(text().contains(&format!("verified {id} {{\"order\":\"{order}\"}}")), || {
            format!("the receiver verified it: {}", text())
        })?;
        // A delivery edgejobs made for another receiver (the shared webhook target), replayed
        // here with its genuine headers: refused, because each origin has its own key.
        let path = format!("/{}", unique("elsewhere"));
        let other = ctx.hooks.script(&path, vec![edgejobs_tests::hooks::Reply::status(200)]);
        let other_id =
            ctx.enqueue(&json!({ "type": "webhook", "payload": { "url": other, "body": { "order": order } } }))?;
        ctx.wait_state(&other_id, "completed", WAIT)?;
        let captured =
            ctx.hooks.received(&path).into_iter().next().ok_or_else(|| anyhow::anyhow!("no delivery captured"))?;
        let mut replay = ctx.http.post(&url).body(captured.body.clone());
        for name in ["webhook-id", "webhook-timestamp", "webhook-signature", "content-type"] {
            if let Some(v) = captured.headers.get(name) {
                replay = replay.header(name, v);
            }
        }
        ensure(replay.send()?.status().as_u16() == 401, || "a delivery signed for another receiver is refused".into())?;
        // A forged delivery: a made-up signature.
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
        let forged = ctx
            .http
            .post(&url)
            .header("webhook-id", "j0")
            .header("webhook-timestamp", now.to_string())
            .header("webhook-signature", "v1,Zm9yZ2VkIHNpZ25hdHVyZSBvZiAzMiBieXRlcyEhISE=")
            .body(r#"{"order":"forged"}"#)
            .send()?;
        ensure(forged.status().as_u16() == 401, || "a forged delivery is refused".into())?;
        ensure(text().matches("rejected").count() == 2, || format!("the receiver logged both refusals: {}", text()))?;
        ensure(!text().contains("forged"), || "nothing forged was trusted".into())
    })();
    receiver.stop(Duration::from_secs(5));
    result
}
