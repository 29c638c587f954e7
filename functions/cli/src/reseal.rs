//! `reseal` (admin key): re-seals every shard's stored header values under the newest
//! `PAYLOAD_ENCRYPTION_KEYS` key, page by page (`POST /v1/admin/reseal`), so an old key can
//! be retired. Idempotent: run it again at any time.

use edgejobs_client::{ResealPage as Page, ResealRequest};

use crate::Cli;
use crate::client::{Api, Failure, Res};

/// Most pages one shard may take (at `limit` jobs each) before the command gives up.
const MAX_PAGES: usize = 100_000;

pub fn run(cli: &Cli, api: &Api, limit: u32) -> Res<()> {
    // `shards.of` of the stats is the deployment's SHARD_COUNT.
    let shards = api.run(api.client.stats(None))?.shards.of;
    let mut totals: Vec<Page> = Vec::with_capacity(shards);
    for shard in 0..shards {
        let mut total = Page { shard, ..Page::default() };
        let mut cursor: Option<String> = None;
        for page in 0.. {
            if page == MAX_PAGES {
                return Err(Failure::new(1, format!("shard {shard}: no end after {MAX_PAGES} pages")));
            }
            let body = ResealRequest { shard, cursor: cursor.clone(), limit: Some(limit) };
            let r = api.run(api.client.reseal(&body))?;
            total.key = r.key;
            total.scanned += r.scanned;
            total.jobs_resealed += r.jobs_resealed;
            total.schedules_resealed += r.schedules_resealed;
            total.unopenable += r.unopenable;
            if r.done {
                break;
            }
            cursor = r.cursor;
            if cursor.is_none() {
                return Err(Failure::new(1, format!("shard {shard}: a page not done answered no cursor")));
            }
        }
        total.done = true;
        if !cli.json {
            println!(
                "shard {shard}: {} jobs read, {} jobs and {} schedules re-sealed under {}, {} unopenable",
                total.scanned, total.jobs_resealed, total.schedules_resealed, total.key, total.unopenable
            );
        }
        totals.push(total);
    }
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&totals).map_err(|e| Failure::new(1, e.to_string()))?);
    }
    let unopenable: u64 = totals.iter().map(|t| t.unopenable).sum();
    if unopenable > 0 {
        return Err(Failure::new(
            3,
            format!("{unopenable} stored values open with no configured key: keep the old key"),
        ));
    }
    Ok(())
}
