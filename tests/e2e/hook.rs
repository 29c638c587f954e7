//! Webhooks name what they carry (#26, point 5), on the fault stack restarted with the
//! settings each test needs: a rotated `WEBHOOK_SIGNING_SECRET` whose deliveries verify at a
//! receiver holding either secret, a declared type's deliveries that a `webhook` job cannot
//! imitate, and `PAYLOAD_ENCRYPTION_KEYS` rotated with a re-seal so the old key can go.

use std::time::Duration;

use edgejobs_tests::hooks::{Received, Reply, verify_with_python};
use edgejobs_tests::proc::wait_until;
use edgejobs_tests::stack::Stack;
use serde_json::{Value, json};

use crate::util::{Ctx, Test, enqueue_on, ensure, job_on, unique, wait_on};

pub const TESTS: &[Test] = &[
    ("hook26_rotated_webhook_secret_verifies_with_either_and_types_have_their_own", rotated_secret_and_type_keys),
    ("hook26_reseal_lets_the_old_payload_key_go", reseal_lets_the_old_key_go),
];

fn admin_post(ctx: &Ctx, stack: &Stack, path: &str, body: &Value) -> anyhow::Result<crate::util::Resp> {
    ctx.send(ctx.http.post(format!("{}{path}", stack.edge_url)).bearer_auth(&stack.secrets.admin_key).json(body))
}

/// The receiver secrets an admin reads for `url` (and a type), newest first.
fn secrets(ctx: &Ctx, stack: &Stack, url: &str, job_type: Option<&str>) -> anyhow::Result<Vec<String>> {
    let mut body = json!({ "url": url });
    if let Some(t) = job_type {
        body["type"] = json!(t);
    }
    let r = admin_post(ctx, stack, "/v1/admin/webhook-secret", &body)?;
    ensure(r.status == 200, || format!("webhook-secret: {} {}", r.status, r.body))?;
    ensure(r.body["secrets"][0] == r.body["secret"], || format!("secret is the newest: {}", r.body))?;
    Ok(r.body["secrets"].as_array().into_iter().flatten().filter_map(|s| s.as_str().map(str::to_owned)).collect())
}

/// Whether the Standard Webhooks library, holding `secret`, accepts `delivery`.
fn verifies(secret: &str, delivery: &Received) -> anyhow::Result<bool> {
    let hook = standardwebhooks::Webhook::new(secret).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let mut headers = reqwest::header::HeaderMap::new();
    for (k, v) in &delivery.headers {
        if let (Ok(k), Ok(v)) =
            (reqwest::header::HeaderName::from_bytes(k.as_bytes()), reqwest::header::HeaderValue::from_str(v))
        {
            headers.insert(k, v);
        }
    }
    Ok(hook.verify(delivery.body.as_bytes(), &headers).is_ok())
}

fn delivered(ctx: &Ctx, path: &str) -> anyhow::Result<Received> {
    ensure(wait_until(Duration::from_secs(60), || !ctx.hooks.received(path).is_empty()), || {
        format!("nothing delivered to {path}")
    })?;
    ctx.hooks.received(path).into_iter().next().ok_or_else(|| anyhow::anyhow!("no delivery at {path}"))
}

/// `WEBHOOK_SIGNING_SECRET="new,old"`: every delivery carries two `v1,` signatures; a
/// receiver holding only the old secret and one holding only the new verify the same
/// delivery (our crate and the reference Python library alike), a third secret does not.
/// A type declared with a fixed URL signs with its own secret: a `webhook` job sent to that
/// very URL with the same body does not verify with it.
fn rotated_secret_and_type_keys(ctx: &Ctx) -> anyhow::Result<()> {
    ctx.with_fault_stack(|stack| {
        let (rot_path, charge_path) = (format!("/{}", unique("rotated")), format!("/{}", unique("charge")));
        let url = ctx.hooks.script(&rot_path, vec![Reply::status(200)]);
        let charge_url = ctx.hooks.script(&charge_path, vec![Reply::status(200)]);
        // Before the rotation: the receiver's secret derives from the one secret configured.
        let before = secrets(ctx, stack, &url, None)?;
        ensure(before.len() == 1, || format!("one secret before the rotation: {before:?}"))?;
        let old = stack.secrets.webhook_secret.clone();
        let new = format!("ej_whsec_rotated_{}", edgejobs_tests::stack::random_hex(16));
        let types = json!({ "charge": { "lane": "edge", "url": charge_url } }).to_string();
        stack.restart_wrangler(vec![
            ("WEBHOOK_SIGNING_SECRET".into(), format!("{new},{old}")),
            ("JOB_TYPES".into(), types),
        ])?;
        let result = (|| -> anyhow::Result<()> {
            let during = secrets(ctx, stack, &url, None)?;
            ensure(during.len() == 2 && during[1] == before[0] && during[0] != before[0], || {
                format!("newest first, the old receiver secret unchanged: {before:?} → {during:?}")
            })?;
            let id =
                enqueue_on(ctx, stack, &json!({ "type": "webhook", "payload": { "url": url, "body": { "n": 1 } } }))?;
            wait_on(ctx, stack, &id, "completed")?;
            let d = delivered(ctx, &rot_path)?;
            let sig = d.headers.get("webhook-signature").cloned().unwrap_or_default();
            ensure(sig.split(' ').filter(|s| s.starts_with("v1,")).count() == 2, || format!("two signatures: {sig}"))?;
            ensure(verifies(&during[0], &d)?, || "a receiver holding only the new secret verifies".into())?;
            ensure(verifies(&during[1], &d)?, || "a receiver holding only the old secret verifies".into())?;
            let other = secrets(ctx, stack, "https://elsewhere.example/x", None)?;
            ensure(!verifies(&other[0], &d)? && !verifies(&other[1], &d)?, || {
                "another receiver's secrets do not".into()
            })?;
            for s in &during {
                let ids = verify_with_python(s, std::slice::from_ref(&d))?;
                ensure(ids == vec![Some(id.clone())], || {
                    format!("python standardwebhooks with either secret: {ids:?}")
                })?;
            }

            // A declared type's delivery verifies with the type's secret only; a webhook job
            // to the same URL with the same body (what an impersonation would send) does not.
            let type_secrets = secrets(ctx, stack, &charge_url, Some("charge"))?;
            let webhook_secrets = secrets(ctx, stack, &charge_url, None)?;
            ensure(type_secrets.len() == 2 && type_secrets[0] != webhook_secrets[0], || {
                format!("the type has its own secrets: {type_secrets:?} {webhook_secrets:?}")
            })?;
            let real = enqueue_on(ctx, stack, &json!({ "type": "charge", "payload": { "amount": 5 } }))?;
            wait_on(ctx, stack, &real, "completed")?;
            let forged = enqueue_on(
                ctx,
                stack,
                &json!({ "type": "webhook", "payload": { "url": charge_url, "body": { "amount": 5 } } }),
            )?;
            wait_on(ctx, stack, &forged, "completed")?;
            let got = ctx.hooks.received(&charge_path);
            let find = |id: &str| got.iter().find(|r| r.headers.get("webhook-id").is_some_and(|h| h == id)).cloned();
            let (real_d, forged_d) = (
                find(&real).ok_or_else(|| anyhow::anyhow!("the charge delivery arrived: {got:?}"))?,
                find(&forged).ok_or_else(|| anyhow::anyhow!("the webhook delivery arrived"))?,
            );
            ensure(real_d.body == forged_d.body, || format!("same body: {} / {}", real_d.body, forged_d.body))?;
            for s in &type_secrets {
                ensure(verifies(s, &real_d)?, || "the charge delivery verifies with the charge secret".into())?;
                ensure(!verifies(s, &forged_d)?, || "a webhook job does not pass for charge".into())?;
            }
            let ids = verify_with_python(&type_secrets[1], &[real_d.clone(), forged_d.clone()])?;
            ensure(ids == vec![Some(real.clone()), None], || format!("python, charge secret: {ids:?}"))?;
            // Asking for a type that delivers elsewhere, or an undeclared one: refused.
            for (u, t) in [("https://elsewhere.example/x", "charge"), (charge_url.as_str(), "nope")] {
                let r = admin_post(ctx, stack, "/v1/admin/webhook-secret", &json!({ "url": u, "type": t }))?;
                ensure(r.status == 400 && r.body["error"]["field"] == "type", || format!("{u} {t}: {}", r.body))?;
            }
            Ok(())
        })();
        stack.restart_wrangler(Vec::new())?;
        result
    })
}

/// Every shard of `stack`, re-sealed page by page; returns the totals (jobs, schedules,
/// unopenable) and checks the refusals of a bad shard number.
fn reseal_all(ctx: &Ctx, stack: &Stack) -> anyhow::Result<(u64, u64, u64)> {
    let (mut jobs, mut schedules, mut unopenable) = (0, 0, 0);
    for (shards, shard) in (0..=256u64).enumerate() {
        let mut cursor = Value::Null;
        for page in 0..1000 {
            let r =
                admin_post(ctx, stack, "/v1/admin/reseal", &json!({ "shard": shard, "cursor": cursor, "limit": 3 }))?;
            if page == 0 && r.status == 400 && r.body["error"]["field"] == "shard" {
                ensure(shards > 0, || format!("shard 0 refused: {}", r.body))?;
                return Ok((jobs, schedules, unopenable));
            }
            ensure(r.status == 200 && r.body["shard"] == shard, || format!("reseal {shard}: {} {}", r.status, r.body))?;
            jobs += r.body["jobs_resealed"].as_u64().unwrap_or(0);
            schedules += r.body["schedules_resealed"].as_u64().unwrap_or(0);
            unopenable += r.body["unopenable"].as_u64().unwrap_or(0);
            ensure(r.body["key"] == "k2", || format!("sealed under k2: {}", r.body))?;
            if r.body["done"] == true {
                break;
            }
            cursor = r.body["cursor"].clone();
            ensure(cursor.is_string(), || format!("a cursor until done: {}", r.body))?;
        }
    }
    anyhow::bail!("more than 256 shards answered")
}

/// A delayed job and a schedule whose headers are sealed under `k1`; the Worker restarted
/// with `k2,k1`; every shard re-sealed; restarted with `k2` alone: the job delivers its
/// header and the schedule still runs with its own. A second re-seal changes nothing.
fn reseal_lets_the_old_key_go(ctx: &Ctx) -> anyhow::Result<()> {
    ctx.with_fault_stack(|stack| {
        let k1 = stack.secrets.payload_keys.clone();
        ensure(k1.starts_with("k1:") && !k1.contains(','), || "the stack seals with k1 alone".into())?;
        let k2 = edgejobs_tests::stack::generate_payload_key().replacen("k1:", "k2:", 1);
        let (job_path, run_path) = (format!("/{}", unique("resealed")), format!("/{}", unique("nightly")));
        let job_url = ctx.hooks.script(&job_path, vec![Reply::status(200)]);
        let run_url = ctx.hooks.script(&run_path, vec![Reply::status(200)]);
        let result = (|| -> anyhow::Result<()> {
            let id = enqueue_on(
                ctx,
                stack,
                &json!({ "type": "webhook", "delay": "45s",
                    "payload": { "url": job_url, "headers": { "authorization": "Bearer job-secret" } } }),
            )?;
            let name = unique("reseal");
            let r = admin_post(
                ctx,
                stack,
                "/v1/schedules",
                &json!({ "name": name, "cron": "0 0 1 1 *", "job": { "type": "webhook",
                    "payload": { "url": run_url, "headers": { "authorization": "Bearer run-secret" } } } }),
            )?;
            ensure(r.status == 201, || format!("schedule: {} {}", r.status, r.body))?;

            stack.restart_wrangler(vec![("PAYLOAD_ENCRYPTION_KEYS".into(), format!("{k2},{k1}"))])?;
            let (jobs, schedules, unopenable) = reseal_all(ctx, stack)?;
            ensure(jobs >= 1 && schedules >= 1 && unopenable == 0, || {
                format!("re-sealed {jobs} jobs, {schedules} schedules, {unopenable} unopenable")
            })?;
            // Idempotent: nothing left to re-seal, through the API and through the CLI.
            let again = reseal_all(ctx, stack)?;
            ensure(again == (0, 0, 0), || format!("a second re-seal: {again:?}"))?;
            let bin = edgejobs_tests::stack::binary(&edgejobs_tests::stack::StackOptions::default_root(), "edgejobs")?;
            let out = std::process::Command::new(bin)
                .env_clear()
                .env("PATH", std::env::var("PATH").unwrap_or_default())
                .env("EDGEJOBS_URL", &stack.edge_url)
                .env("EDGEJOBS_KEY", &stack.secrets.admin_key)
                .current_dir(std::env::temp_dir())
                .args(["--json", "reseal", "--limit", "2"])
                .output()?;
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let pages: Vec<Value> = serde_json::from_str(&text).unwrap_or_default();
            ensure(out.status.success() && !pages.is_empty(), || {
                format!("edgejobs reseal: {:?} {text} {}", out.status, String::from_utf8_lossy(&out.stderr))
            })?;
            ensure(pages.iter().all(|p| p["jobs_resealed"] == 0 && p["done"] == true && p["key"] == "k2"), || {
                format!("edgejobs reseal after a complete pass: {text}")
            })?;
            let bad = admin_post(ctx, stack, "/v1/admin/reseal", &json!({ "shard": 0, "limit": 0 }))?;
            ensure(bad.status == 400 && bad.body["error"]["field"] == "limit", || format!("limit 0: {}", bad.body))?;

            // The old key retired.
            stack.restart_wrangler(vec![("PAYLOAD_ENCRYPTION_KEYS".into(), k2.clone())])?;
            let t = ctx.send(
                ctx.http
                    .post(format!("{}/v1/schedules/{name}/trigger", stack.edge_url))
                    .bearer_auth(&stack.secrets.admin_key)
                    .json(&json!({})),
            )?;
            ensure(t.status == 200 || t.status == 201, || format!("trigger with k2 alone: {} {}", t.status, t.body))?;
            let run = delivered(ctx, &run_path)?;
            ensure(run.headers.get("authorization").map(String::as_str) == Some("Bearer run-secret"), || {
                format!("the schedule's run carries its header: {:?}", run.headers)
            })?;
            let ok = wait_until(Duration::from_secs(90), || {
                job_on(ctx, stack, &id).is_ok_and(|j| j["state"] == "completed" || j["state"] == "dead")
            });
            let job = job_on(ctx, stack, &id)?;
            ensure(ok && job["state"] == "completed", || format!("the delayed job delivers with k2 alone: {job}"))?;
            let got = delivered(ctx, &job_path)?;
            ensure(got.headers.get("authorization").map(String::as_str) == Some("Bearer job-secret"), || {
                format!("the job's header: {:?}", got.headers)
            })?;
            let del = ctx.send(
                ctx.http
                    .delete(format!("{}/v1/schedules/{name}", stack.edge_url))
                    .bearer_auth(&stack.secrets.admin_key),
            )?;
            ensure(del.status == 200, || format!("delete the schedule: {} {}", del.status, del.body))
        })();
        stack.restart_wrangler(Vec::new())?;
        result
    })
}
