//! `backups list|verify|start|restore` (admin key).

use crate::client::{Api, Failure, Res};
use crate::output::{cell_of, confirm, print_json_of, table};
use crate::{Backups, Cli};

pub fn run(cli: &Cli, api: &Api, b: &Backups) -> Res<()> {
    match b {
        Backups::List => {
            let out = api.run(api.client.backups())?;
            if cli.json {
                print_json_of(&out);
            } else {
                table(
                    &["id", "created", "rows", "bytes", "complete"],
                    out.backups
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
            let out = api.run(api.client.verify_backup(id))?;
            if cli.json {
                print_json_of(&out);
            } else {
                println!("{id}: {}", if out.valid { "valid" } else { "DAMAGED" });
                for p in &out.problems {
                    println!("  {p}");
                }
            }
            if !out.valid {
                return Err(Failure::new(3, "the backup is damaged"));
            }
        }
        Backups::Start => {
            let out = api.run(api.client.start_backup())?;
            if cli.json {
                print_json_of(&out);
            } else {
                println!("{} {} rows", out.id, out.total_rows);
            }
        }
        Backups::Restore { id, yes } => {
            confirm(&format!("Replace every job with those of backup {id}?"), *yes)?;
            let out = api.run(api.client.restore(id))?;
            print_json_of(&out);
        }
    }
    Ok(())
}
