//! `firedrill audit ...`: list, verify (chain and checkpoints), checkpoint,
//! prove, consistency, key, export.

use super::*;
use crate::audit::checkpoint::{SignedCheckpoint, VerifierKey};
use crate::tlog::{self, Keys};

pub(super) async fn audit(
    home: &Home,
    actor: &Actor,
    cmd: AuditCommand,
) -> anyhow::Result<ExitCode> {
    let store = home.store().await?;
    let config = &home.config().audit;
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
        AuditCommand::Verify {
            checkpoints,
            witness_dirs,
            json,
        } => {
            let report = home
                .verify_audit(store.as_ref(), checkpoints, witness_dirs)
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", render_report(&report));
            }
            Ok(ExitCode::from(report.exit_code()))
        }
        AuditCommand::Checkpoint { json } => {
            let keys = keys(home, store.as_ref(), actor, false).await?;
            let cp = tlog::checkpoint_now(store.as_ref(), &keys).await?;
            let secrets = home.secrets();
            let mut undelivered = 0;
            for w in &config.witnesses {
                let delivered = match tlog::witness::Witness::new(w, secrets.as_ref()) {
                    Ok(mut witness) => witness.deliver(&cp).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = delivered {
                    undelivered += 1;
                    eprintln!("warning: witness {}: {e}", w.name());
                }
            }
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({
                        "origin": cp.checkpoint.origin,
                        "size": cp.checkpoint.size,
                        "root": cp.checkpoint.root_b64(),
                        "signer": cp.signer,
                        "note": cp.note,
                        "witnesses_failed": undelivered,
                    }))?
                );
            } else {
                print!("{}", cp.note);
            }
            Ok(if undelivered > 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        AuditCommand::Prove { seq, checkpoint } => {
            let (_, trusted) = tlog::trusted(home.dir(), config)?;
            let cp = match checkpoint {
                Some(path) => open_file(&path, &trusted)?,
                None => newest(store.as_ref(), &trusted).await?,
            };
            print_proof(tlog::prove(store.as_ref(), &cp, seq).await)
        }
        AuditCommand::Consistency { old, new } => {
            let (_, trusted) = tlog::trusted(home.dir(), config)?;
            let old = named(store.as_ref(), &trusted, &old).await?;
            let new = match new {
                Some(n) => named(store.as_ref(), &trusted, &n).await?,
                None => newest(store.as_ref(), &trusted).await?,
            };
            print_proof(tlog::consistency(store.as_ref(), &old, &new).await)
        }
        AuditCommand::Key { command, json } => {
            let rotate = matches!(command, Some(AuditKeyCommand::Rotate));
            let mut keys = keys(home, store.as_ref(), actor, rotate).await?;
            if rotate {
                let (old, new) = keys.rotate(config)?;
                tlog::record_key_change(
                    store.as_ref(),
                    actor,
                    crate::audit::Action::AuditKeyRotated,
                    Some(&old),
                    &new,
                )
                .await?;
                if json {
                    println!(
                        "{}",
                        serde_json::json!({"verifier_key": keys.verifier().to_string(), "rotated": true, "key": new.label(), "previous_key": old.label()})
                    );
                    return Ok(ExitCode::SUCCESS);
                }
                eprintln!(
                    "rotated the audit signing key: {} replaces {} (still trusted for older checkpoints); give verifiers the new key:",
                    new.label(),
                    old.label()
                );
            }
            answer(
                json,
                &serde_json::json!({"verifier_key": keys.verifier().to_string(), "rotated": false}),
                || keys.verifier().to_string(),
            );
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Export { after, follow } => {
            let mut out = std::io::stdout().lock();
            tlog::export::write(store.as_ref(), &config.origin(), after, follow, &mut out).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// A proof as JSON; a refusal (the log does not match the checkpoint)
/// exits 2 with its reason.
fn print_proof<T: serde::Serialize>(proof: Result<T, tlog::TlogError>) -> anyhow::Result<ExitCode> {
    match proof {
        Ok(proof) => {
            println!("{}", serde_json::to_string_pretty(&proof)?);
            Ok(ExitCode::SUCCESS)
        }
        Err(tlog::TlogError::Invalid(m)) => {
            eprintln!("error: {m}");
            Ok(ExitCode::from(EXIT_INVALID))
        }
        Err(e) => Err(e.into()),
    }
}

/// The home's keys (`renaming`: see [`Keys::load_as`]); a key generated
/// now is audited.
async fn keys(
    home: &Home,
    store: &dyn crate::store::Store,
    actor: &Actor,
    renaming: bool,
) -> anyhow::Result<Keys> {
    let (keys, created) = Keys::load_as(home.dir(), &home.config().audit, renaming)?;
    if created {
        tlog::record_key_change(
            store,
            actor,
            crate::audit::Action::AuditKeyCreated,
            None,
            &keys.verifier(),
        )
        .await?;
    }
    Ok(keys)
}

fn open_file(path: &Path, trusted: &[VerifierKey]) -> anyhow::Result<SignedCheckpoint> {
    let held = tlog::read_checkpoint_file(path)
        .map_err(|why| anyhow::anyhow!("checkpoint {}: {why}", path.display()))?;
    crate::audit::checkpoint::open(&held, trusted)
        .with_context(|| format!("checkpoint {}", path.display()))
}

async fn newest(
    store: &dyn crate::store::Store,
    trusted: &[VerifierKey],
) -> anyhow::Result<SignedCheckpoint> {
    let row = store
        .checkpoints(1)
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| {
            anyhow::anyhow!("no checkpoint is kept yet; sign one with `firedrill audit checkpoint`")
        })?;
    Ok(crate::audit::checkpoint::open(&row.note, trusted)?)
}

/// A checkpoint named by a file path or the size of a kept checkpoint.
async fn named(
    store: &dyn crate::store::Store,
    trusted: &[VerifierKey],
    name: &str,
) -> anyhow::Result<SignedCheckpoint> {
    if let Ok(size) = name.parse::<u64>()
        && !Path::new(name).exists()
    {
        let row = tlog::stored_checkpoint(store, size).await?.ok_or_else(|| {
            anyhow::anyhow!("no checkpoint of size {size} is kept; name a checkpoint file instead")
        })?;
        return Ok(crate::audit::checkpoint::open(&row.note, trusted)?);
    }
    open_file(Path::new(name), trusted)
}

fn render_report(r: &tlog::Report) -> String {
    let mut out = String::new();
    let chain = &r.chain;
    match &chain.first_bad {
        Some(bad) => out.push_str(&format!(
            "audit chain BROKEN at record {}: {}\n{} records checked; the chain is intact up to record {}.\n",
            bad.seq, bad.problem, chain.records, chain.head_seq
        )),
        None => out.push_str(&format!(
            "audit chain OK: {} records, head seq {} hash {}\n",
            chain.records, chain.head_seq, chain.head_hash
        )),
    }
    for f in &r.findings {
        if !matches!(f, tlog::Finding::ChainBroken { .. }) {
            out.push_str(&format!("{f}\n"));
        }
    }
    if r.checkpoints_checked == 0 {
        out.push_str("no trusted checkpoint to check against: a deleted tail or a rewrite with recomputed hashes cannot be seen; configure [[audit.witnesses]] and pass --checkpoint\n");
    } else if r.findings.is_empty() {
        out.push_str(&format!(
            "checkpoints OK: the log matches all {} trusted checkpoints (up to record {})\n",
            r.checkpoints_checked, r.matched_up_to
        ));
    }
    out
}
