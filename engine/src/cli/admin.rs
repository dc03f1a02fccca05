//! `firedrill serve`, `token ...`, `switch ...`, `backup` and `restore`.

use super::*;

pub(super) async fn serve(home: &Home, listen: Option<String>) -> anyhow::Result<ExitCode> {
    let mut config = home.config().server.clone();
    if let Some(l) = listen {
        config.listen = l;
    }
    if let Err(e) = config.check() {
        eprintln!("error: firedrill.toml: {e}");
        return Ok(ExitCode::from(EXIT_INVALID));
    }
    if let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key)
        && let Err(e) = crate::server::listen::Tls::load(cert, key)
    {
        eprintln!("error: {e}");
        return Ok(ExitCode::from(EXIT_INVALID));
    }
    let scheme = if config.tls_cert.is_some() {
        "https"
    } else {
        "http"
    };
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {}; pick a free address with --listen or [server] listen",
                config.listen
            )
        })?;
    let addr = listener.local_addr()?;
    let mut state = crate::server::AppState::new(home.service().await?, config);
    // Checkpoints, witnesses and the syslog export; a bad [audit] config
    // stops the start (an operator who configured witnesses expects them).
    let tlog = match crate::tlog::serve::spawn(
        state.service.store().clone(),
        home.dir(),
        &home.config().audit,
        home.secrets().as_ref(),
    )
    .await
    {
        Ok(t) => t,
        Err(crate::tlog::TlogError::Invalid(m)) => {
            eprintln!("error: [audit]: {m}");
            return Ok(ExitCode::from(EXIT_INVALID));
        }
        Err(e) => return Err(e.into()),
    };
    state.tlog = Some(tlog.status.clone());
    // Notifications; a bad [notify] config stops the start too.
    let _notifier = match crate::notify::spawn(
        state.service.clone(),
        state.alerts.clone(),
        &home.config().notify,
        home.secrets().as_ref(),
    ) {
        Ok(n) => n,
        Err(m) => {
            eprintln!("error: {m}");
            return Ok(ExitCode::from(EXIT_INVALID));
        }
    };
    // The address on stdout, for scripts and tests (`--listen 127.0.0.1:0`).
    println!("listening on {scheme}://{addr}");
    let shutdown = async {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
        tracing::warn!(
            "shutting down: no new requests; runs in progress get server.shutdown-grace-ms"
        );
    };
    let grace = std::time::Duration::from_millis(state.config.shutdown_grace_ms);
    let served = crate::server::serve(state, listener, shutdown).await;
    // A last checkpoint of everything written, for the witnesses.
    tlog.stop(grace.min(std::time::Duration::from_secs(10)))
        .await;
    served?;
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn token(
    home: &Home,
    actor: &Actor,
    cmd: TokenCommand,
) -> anyhow::Result<ExitCode> {
    use crate::auth::TokenError;
    let store = home.store().await?;
    let refused = |e: TokenError| -> anyhow::Result<ExitCode> {
        match e {
            TokenError::Store(e) => Err(e.into()),
            e => {
                eprintln!("error: {e}");
                Ok(ExitCode::from(EXIT_INVALID))
            }
        }
    };
    match cmd {
        TokenCommand::Create {
            name,
            role,
            runbooks,
            owner,
            json,
        } => match crate::auth::create(
            store.as_ref(),
            crate::auth::TokenSpec {
                name,
                role,
                runbooks,
                owner,
            },
            None,
            actor,
        )
        .await
        {
            Ok((row, token)) if json => {
                println!("{}", crate::view::token_created(&row, &token));
                Ok(ExitCode::SUCCESS)
            }
            Ok((row, token)) => {
                eprintln!(
                    "created token {:?} (role {}, owner {}, id {}); it is shown once and only its hash is kept:",
                    row.name,
                    row.role.as_str(),
                    row.owner,
                    row.id
                );
                println!("{token}");
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => refused(e),
        },
        TokenCommand::List { json } => {
            let tokens = store.tokens().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&tokens)?);
            } else if tokens.is_empty() {
                println!(
                    "no tokens; create one with `firedrill token create --name N --role R --owner PERSON`"
                );
            } else {
                let mut table = term::Table::new(&[
                    ("NAME", usize::MAX),
                    ("ROLE", usize::MAX),
                    ("STATE", usize::MAX),
                    ("OWNER", 32),
                    ("RUNBOOKS", 40),
                    ("CREATED", usize::MAX),
                    ("BY", 32),
                    ("REVOKED", usize::MAX),
                ]);
                for t in &tokens {
                    table.row([
                        t.name.clone(),
                        t.role.as_str().to_string(),
                        if t.revoked_at.is_some() {
                            "revoked"
                        } else {
                            "live"
                        }
                        .to_string(),
                        if t.owner.is_empty() {
                            "(none)".to_string()
                        } else {
                            t.owner.clone()
                        },
                        if t.runbooks.is_empty() {
                            "all runbooks".to_string()
                        } else {
                            t.runbooks.join(",")
                        },
                        t.created_at.clone(),
                        t.created_by.clone(),
                        t.revoked_at.clone().unwrap_or_else(|| "-".into()),
                    ]);
                }
                print!("{}", table.render());
            }
            Ok(ExitCode::SUCCESS)
        }
        TokenCommand::Revoke { token, json } => {
            match crate::auth::revoke(store.as_ref(), &token, None, actor).await {
                Ok(row) => {
                    answer(json, &crate::view::token_revoked(&row), || {
                        format!("revoked token {:?} ({})", row.name, row.id)
                    });
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => refused(e),
            }
        }
    }
}

pub(super) async fn switch(
    home: &Home,
    actor: &Actor,
    cmd: SwitchCommand,
) -> anyhow::Result<ExitCode> {
    let store = home.store().await?;
    let (runbook, engaged, reason, json) = match cmd {
        SwitchCommand::Status { json } => {
            let switches = store.switches().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&switches)?);
            } else if switches.iter().all(|s| !s.engaged) {
                println!("live automation is running: no switch is engaged");
            }
            if !json {
                for s in switches.iter().filter(|s| s.engaged) {
                    println!("ENGAGED  {}", term::field(&s.describe()));
                }
            }
            return Ok(ExitCode::SUCCESS);
        }
        SwitchCommand::On {
            runbook,
            reason,
            json,
        } => (runbook, true, reason, json),
        SwitchCommand::Off {
            runbook,
            reason,
            json,
        } => (runbook, false, reason, json),
    };
    match crate::switch::flip(store.as_ref(), runbook.as_deref(), engaged, &reason, actor).await {
        Ok(row) => {
            // The API answers with the switch as it now is.
            answer(json, &serde_json::to_value(&row)?, || {
                if row.engaged {
                    format!(
                        "ENGAGED {}: live runs are refused and running ones halt before their next step; dry-runs still run",
                        row.scope
                    )
                } else {
                    format!("released {}: live runs may start again", row.scope)
                }
            });
            Ok(ExitCode::SUCCESS)
        }
        Err(e @ (crate::switch::SwitchError::Reason | crate::switch::SwitchError::Scope(_))) => {
            eprintln!("error: {e}");
            Ok(ExitCode::from(EXIT_INVALID))
        }
        Err(e) => Err(e.into()),
    }
}

pub(super) async fn backup(
    home: &Home,
    actor: &Actor,
    file: &Path,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let done = home.backup(file, actor).await?;
    let info = &done.copy;
    if json {
        println!("{}", serde_json::to_string_pretty(&done)?);
    } else {
        println!(
            "backed up the store to {} ({} bytes, schema {}, {} audit records, head {})",
            info.path,
            info.bytes,
            info.schema,
            info.audit_records,
            info.audit_head_hash.as_deref().unwrap_or("none"),
        );
    }
    if !done.recorded {
        eprintln!(
            "warning: not recorded in the audit log: the store's schema ({}) is older than this binary's, and recording would migrate it; this is the copy to keep before the upgrade",
            info.schema
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn restore(
    home: &Home,
    actor: &Actor,
    file: &Path,
    accept_loss: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let done = home.restore(file, accept_loss, actor).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&done)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "restored the store from {} ({} audit records, head {}); the audit chain goes on from there",
        done.backup.path,
        done.backup.audit_records,
        done.backup.audit_head_hash.as_deref().unwrap_or("none"),
    );
    if let Some(previous) = &done.previous {
        println!("the store it replaced is kept at {previous}");
    }
    if let (Some(from), Some(to)) = (done.lost_from, done.lost_to) {
        println!(
            "audit records {from} to {to} are lost, as --accept-loss allowed (recorded); witnesses that hold checkpoints of them will show it in `audit verify`"
        );
    }
    if let Some(moved) = &done.signed_checkpoint_moved_to {
        println!("this home's last signed checkpoint, which covered them, is kept at {moved}");
    }
    let p = &done.prepared;
    println!(
        "console sessions cleared: {}; tokens revoked again (revoked after the backup): {}",
        p.sessions_cleared,
        p.tokens_revoked_again.len()
    );
    if done.switch_engaged {
        println!(
            "the big red switch is ENGAGED: {} runs were in flight in the backup; check them (firedrill runs list), then `firedrill switch off --reason ...`",
            p.runs_in_flight
        );
    }
    Ok(ExitCode::SUCCESS)
}
