//! `firedrill runbook ...`: validate, publish, list, show, rollback.

use super::*;

pub(super) async fn runbook(
    home: &Home,
    actor: &Actor,
    cmd: RunbookCommand,
) -> anyhow::Result<ExitCode> {
    match cmd {
        RunbookCommand::Validate { file, json } => {
            let text = read_text(&file, "runbook")?;
            let service = home.service().await?;
            match service.validate(&file.display().to_string(), &text).await {
                Ok(valid) => {
                    if json {
                        println!(
                            "{}",
                            serde_json::json!({"valid": true, "name": valid.runbook.name, "version": valid.runbook.version, "digest": valid.digest})
                        );
                    } else {
                        println!(
                            "{}: valid ({}@{}, {} steps, digest {})",
                            file.display(),
                            valid.runbook.name,
                            valid.runbook.version,
                            valid.runbook.steps.len() + valid.runbook.on_failure.len(),
                            valid.digest
                        );
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Err(problems) => {
                    if json {
                        println!(
                            "{}",
                            serde_json::json!({"valid": false, "problems": problems.problems, "omitted": problems.omitted})
                        );
                    } else {
                        eprintln!("{problems}");
                    }
                    Ok(ExitCode::from(EXIT_INVALID))
                }
            }
        }
        RunbookCommand::Publish { file, json } => {
            let text = read_text(&file, "runbook")?;
            let service = home.service().await?;
            match service
                .publish_runbook(&file.display().to_string(), &text, actor)
                .await
            {
                Ok((row, new)) => {
                    let value = crate::view::published(&row.name, row.version, &row.digest, new);
                    answer(json, &value, || {
                        published_line("runbook ", &value, "this exact content")
                    });
                    Ok(ExitCode::SUCCESS)
                }
                Err(e @ (PublishError::Invalid(_) | PublishError::Conflict { .. })) => {
                    eprintln!("error: {e}");
                    Ok(ExitCode::from(EXIT_INVALID))
                }
                Err(e) => Err(e.into()),
            }
        }
        RunbookCommand::List { json } => {
            let rows = home.store().await?.runbooks().await?;
            if json {
                let list: Vec<_> = rows
                    .iter()
                    .map(|r| serde_json::json!({"name": r.name, "version": r.version, "digest": r.digest, "published_at": r.published_at, "published_by": r.published_by}))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else if rows.is_empty() {
                println!(
                    "no runbooks published; publish one with `firedrill runbook publish FILE`"
                );
            } else {
                let mut table = term::Table::new(&[
                    ("NAME", usize::MAX),
                    ("VERSION", usize::MAX),
                    ("PUBLISHED BY", 32),
                    ("DIGEST", usize::MAX),
                ]);
                for r in rows {
                    table.row([r.name, r.version.to_string(), r.published_by, r.digest]);
                }
                print!("{}", table.render());
            }
            Ok(ExitCode::SUCCESS)
        }
        RunbookCommand::Show { runbook, json } => {
            let (name, version) = split_reference(&runbook)?;
            let row = home
                .store()
                .await?
                .runbook(&name, version)
                .await?
                .with_context(|| format!("runbook {runbook} is not published"))?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&crate::view::runbook_source(&row))?
                );
            } else {
                print!("{}", row.source);
            }
            Ok(ExitCode::SUCCESS)
        }
        RunbookCommand::Rollback {
            name,
            to,
            reason,
            json,
        } => {
            let service = home.service().await?;
            match service.rollback_runbook(&name, to, actor, &reason).await {
                Ok(row) => {
                    answer(json, &crate::view::rolled_back(&row), || {
                        format!(
                            "{name}@{} is current again (digest {}); publishing a new version ends the rollback",
                            row.version, row.digest
                        )
                    });
                    Ok(ExitCode::SUCCESS)
                }
                Err(crate::executor::ControlError::Store(e)) => Err(e.into()),
                Err(e) => {
                    eprintln!("error: {e}");
                    Ok(ExitCode::from(EXIT_INVALID))
                }
            }
        }
        RunbookCommand::Schema => {
            println!("{}", serde_json::to_string_pretty(&Runbook::json_schema())?);
            Ok(ExitCode::SUCCESS)
        }
    }
}
