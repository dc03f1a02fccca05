//! `firedrill inventory check`: the inventory's problems, and probes.

use super::*;

/// Time limit of one reachability probe.
pub(super) const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

pub(super) async fn inventory_check(
    home: &Home,
    probe: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let inventory = home.inventory()?;
    let problems = inventory.problems();
    let mut probes = Vec::new();
    if probe {
        let targets =
            crate::transport::Targets::with_config(inventory.clone(), &home.config().targets);
        // Concurrently, so that a fleet of unreachable hosts takes one
        // timeout, not one each; the executors' own pools bound the fan-out.
        let checks = inventory.targets.keys().map(|name| {
            let targets = &targets;
            async move {
                let result = targets.probe(name, PROBE_TIMEOUT).await;
                let (ok, detail) = match result {
                    Ok(detail) => (true, detail),
                    Err(e) => (false, e.to_string()),
                };
                (name.clone(), ok, detail)
            }
        });
        probes = futures::future::join_all(checks).await;
    }
    let failed = !problems.is_empty() || probes.iter().any(|(_, ok, _)| !ok);
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "path": home.inventory_path(),
                "targets": inventory.targets.len(),
                "groups": inventory.groups.len(),
                "problems": problems,
                "probes": probes.iter().map(|(t, ok, d)| serde_json::json!({"target": t, "reachable": ok, "detail": d})).collect::<Vec<_>>(),
                "ok": !failed,
            }))?
        );
    } else {
        println!(
            "{}: {} targets, {} groups",
            home.inventory_path().display(),
            inventory.targets.len(),
            inventory.groups.len()
        );
        for p in &problems {
            println!("  problem: {p}");
        }
        for (t, ok, d) in &probes {
            println!("  {:<24} {}  {d}", t, if *ok { "ok  " } else { "FAIL" });
        }
        println!(
            "{}",
            if failed {
                "inventory has problems"
            } else {
                "inventory OK"
            }
        );
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
