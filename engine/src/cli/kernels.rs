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
            let value =
                crate::view::published(&entry.name, entry.version.clone(), &entry.digest, new);
            answer(json, &value, || {
                published_line("", &value, "these exact bytes")
            });
        }
        KernelCommand::Test(args) => return author::test(home, args).await,
        KernelCommand::New {
            name,
            lang,
            dir,
            sdk,
            json,
        } => return new_project(&name, lang, dir, sdk.as_deref(), json),
        KernelCommand::List { json } => {
            let entries = home.store().await?.kernels().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&entries)?);
            } else if entries.is_empty() {
                println!(
                    "no kernels published; publish one with `firedrill kernel publish FILE.wasm`"
                );
            } else {
                let mut table = term::Table::new(&[
                    ("NAME", usize::MAX),
                    ("VERSION", usize::MAX),
                    ("PUBLISHED BY", 32),
                    ("DIGEST", usize::MAX),
                ]);
                for e in entries {
                    table.row([e.name, e.version, e.published_by, e.digest]);
                }
                print!("{}", table.render());
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

/// `kernel new`: needs no home, and opens none.
pub(super) fn new_project(
    name: &str,
    lang: author::Lang,
    dir: Option<PathBuf>,
    sdk: Option<&Path>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let dir = dir.unwrap_or_else(|| PathBuf::from(name));
    let files = author::scaffold(lang, name, &dir, sdk)?;
    let value = serde_json::json!({
        "name": name,
        "dir": dir.display().to_string(),
        "files": files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>(),
    });
    answer(json, &value, || {
        format!(
            "created {} ({} files); next: cd {} && ./test.sh",
            dir.display(),
            files.len(),
            dir.display()
        )
    });
    Ok(ExitCode::SUCCESS)
}
