//! `firedrill completion SHELL` and `firedrill man --out DIR`: generated
//! from the same clap definitions that parse the command line, so they
//! cannot drift from it. Neither needs a home.

use std::io::Write as _;

use clap::CommandFactory as _;

use super::*;

/// Print the completion script for `shell`.
pub(super) fn completion(shell: clap_complete::Shell) -> anyhow::Result<ExitCode> {
    let mut cmd = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "firedrill", &mut out);
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(&out)
        .and_then(|()| stdout.flush())
        .context("cannot write the completion script to standard output")?;
    Ok(ExitCode::SUCCESS)
}

/// Write `firedrill.1` and a page per subcommand (`firedrill-runs-list.1`)
/// into `dir`.
pub(super) fn man(dir: &Path) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the man page directory {}", dir.display()))?;
    clap_mangen::generate_to(Cli::command(), dir)
        .with_context(|| format!("cannot write man pages into {}", dir.display()))?;
    let pages = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().ends_with(".1"))
                .count()
        })
        .unwrap_or(0);
    println!("wrote {pages} man pages into {}", dir.display());
    Ok(ExitCode::SUCCESS)
}
