//! `backups list|verify|start|restore` (admin key).

use edgejobs_api::{BackupList, Manifest, RestoreRequest, Restored, VerifyResult};

use crate::client::{Api, Failure, Res, enc};
use crate::output::{cell_of, confirm, print_json, table};
use crate::{Backups, Cli};

pub fn run(cli: &Cli, api: &Api, b: &Backups) -> Res<()> {
    match b {
        Backups::List => {
            let out = api.get::<BackupList>("GET", "/v1/admin/backups")?;
            if cli.json {
                print_json(&out.raw);
            } else {
                table(
                    &["id", "created", "rows", "bytes", "complete"],
                    out.value
                        .backups
                        .iter()
                        .map(|b| {
                            vec![
                                cell_of(&b.id),
                                cell_of(&b.created_at),
                                cell_of(&b.rows),
                                cell_of(&b.bytes),
                                cell_of(&b.valid),
                            ]
                        })
                        .collect(),
                );
            }
        }
        Backups::Verify { id } => {
            let out = api.get::<VerifyResult>("POST", &format!("/v1/admin/backups/{}/verify", enc(id)))?;
            if cli.json {
                print_json(&out.raw);
            } else {
                println!("{id}: {}", if out.value.valid { "valid" } else { "DAMAGED" });
                for p in &out.value.problems {
                    println!("  {p}");
                }
            }
            if !out.value.valid {
                return Err(Failure::new(3, "the backup is damaged"));
            }
        }
        Backups::Start => {
            let out = api.get::<Manifest>("POST", "/v1/admin/backups")?;
            if cli.json {
                print_json(&out.raw);
            } else {
                println!("{} {} rows", out.value.id, out.value.total_rows);
            }
        }
        Backups::Restore { id, yes } => {
            confirm(&format!("Replace every job with those of backup {id}?"), *yes)?;
            let out =
                api.call::<Restored>("POST", "/v1/admin/restore", Some(&RestoreRequest { backup: id.clone() }))?;
            print_json(&out.raw);
        }
    }
    Ok(())
}
