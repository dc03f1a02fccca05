//! `firedrill drill ...`: readiness, and a drill now.

use super::*;

pub(super) async fn drill(home: &Home, cmd: DrillCommand) -> anyhow::Result<ExitCode> {
    let service = home.service().await?;
    match cmd {
        DrillCommand::Status { json } => {
            let rows = crate::drill::readiness(&service, std::time::SystemTime::now()).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                print!("{}", render::readiness_text(&rows));
            }
            Ok(ExitCode::SUCCESS)
        }
        DrillCommand::Run { runbook, json } => {
            let prepared = match crate::drill::prepare_drill(&service, &runbook).await {
                Ok(p) => p,
                Err(e) if !exit::run_refused(&e) => return Err(e.into()),
                Err(e) => {
                    eprintln!("error: {e}\nno drill was run.");
                    return Ok(ExitCode::from(EXIT_INVALID));
                }
            };
            let id = service.execute_prepared(prepared).await?;
            show_run(&service, &id, json, false).await
        }
    }
}
