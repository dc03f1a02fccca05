//! `firedrill kernel ...`: publish, list, inspect (and the authoring tools in `author.rs`).

use super::*;

pub(super) async fn kernel(
    home: &Home,
    actor: &Actor,
    cmd: KernelCommand,
) -> anyhow::Result<ExitCode> {
    match cmd {
        KernelCommand::Inspect { file, json } => {
            let host = home.kernel_host()?;
            let bytes = std::fs::read(&file)
                .with_context(|| format!("cannot read kernel component {}", file.display()))?;
            let kernel = host
                .load(&bytes)
                .await
                .with_context(|| format!("{} is not a usable kernel", file.display()))?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&inspect_json(&host, &kernel))?
                );
            } else {
                print!("{}", render::inspect_text(&host, &kernel));
            }
        }
        KernelCommand::Publish { file, json } => {
            let service = home.service().await?;
            let bytes = std::fs::read(&file)
                .with_context(|| format!("cannot read kernel component {}", file.display()))?;
            let (published, _) = service
                .registry()
                .publish(service.host(), &bytes, actor)
                .await
                .with_context(|| format!("cannot publish {}", file.display()))?;
            let (entry, new) = match published {
                Published::New(e) => (e, true),
                Published::AlreadyPresent(e) => (e, false),
            };
            if json {
                println!(
                    "{}",
                    serde_json::json!({"name": entry.name, "version": entry.version, "digest": entry.digest, "new": new})
                );
            } else if new {
                println!(
                    "published {}@{} ({})",
                    entry.name, entry.version, entry.digest
                );
            } else {
                println!(
                    "{}@{} is already published with these exact bytes ({})",
                    entry.name, entry.version, entry.digest
                );
            }
        }
        KernelCommand::Test(args) => return author::test(home, args).await,
        KernelCommand::New {
            name,
            lang,
            dir,
            sdk,
        } => {
            let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
            let files = author::scaffold(lang, &name, &dir, sdk.as_deref())?;
            println!(
                "created {} ({} files); next: cd {} && ./test.sh",
                dir.display(),
                files.len(),
                dir.display()
            );
        }
        KernelCommand::List { json } => {
            let entries = home.store().await?.kernels().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&entries)?);
            } else if entries.is_empty() {
                println!(
                    "no kernels published; publish one with `firedrill kernel publish FILE.wasm`"
                );
            } else {
                println!(
                    "{:<24} {:<10} {:<24} DIGEST",
                    "NAME", "VERSION", "PUBLISHED BY"
                );
                for e in entries {
                    println!(
                        "{:<24} {:<10} {:<24} {}",
                        e.name, e.version, e.published_by, e.digest
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn inspect_json(host: &KernelHost, kernel: &LoadedKernel) -> serde_json::Value {
    serde_json::json!({
        "name": kernel.manifest.name,
        "version": kernel.manifest.version,
        "digest": kernel.digest,
        "size_bytes": kernel.size_bytes,
        "manifest": kernel.manifest,
        "limits": host.config().limits,
    })
}
