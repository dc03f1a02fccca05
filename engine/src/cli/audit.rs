//! `firedrill audit ...`: list and verify the hash-chained log.

use super::*;

pub(super) async fn audit(home: &Home, cmd: AuditCommand) -> anyhow::Result<ExitCode> {
    let store = home.store().await?;
    match cmd {
        AuditCommand::List {
            run,
            actor,
            action,
            since,
            limit,
            json,
        } => {
            let records = store
                .audit(&AuditFilter {
                    run_id: run,
                    actor,
                    action,
                    since,
                    limit,
                })
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&records)?);
            } else {
                print!("{}", render::audit_text(&records));
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Verify { json } => {
            let v = verify_store(store.as_ref()).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else if let Some(bad) = &v.first_bad {
                println!(
                    "audit chain BROKEN at record {}: {}\n{} records checked; the chain is intact up to record {}.",
                    bad.seq, bad.problem, v.records, v.head_seq
                );
            } else {
                println!(
                    "audit chain OK: {} records, head seq {} hash {}",
                    v.records, v.head_seq, v.head_hash
                );
            }
            Ok(if v.first_bad.is_some() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}
