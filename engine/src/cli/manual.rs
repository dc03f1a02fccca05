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
/// into `dir`. Man pages are for everyone: the pages are 0644 and a
/// directory created here 0755, whatever this process's umask. Each page
/// is written to a temporary file and renamed over its name, so a symlink
/// planted under that name is replaced, never written through.
pub(super) fn man(dir: &Path) -> anyhow::Result<ExitCode> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    if !dir.is_dir() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .with_context(|| format!("cannot create the man page directory {}", dir.display()))?;
        // The umask (077 for this process) narrows the mode given above.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    }
    let mut root = Cli::command().disable_help_subcommand(true);
    root.build();
    let mut pages = Vec::new();
    collect(&root, &mut pages);
    for cmd in &pages {
        let page = clap_mangen::Man::new(cmd.clone());
        let mut text = Vec::new();
        page.render(&mut text)?;
        let mut file = tempfile::Builder::new()
            .prefix(".firedrill-man-")
            .tempfile_in(dir)
            .with_context(|| format!("cannot write man pages into {}", dir.display()))?;
        file.write_all(&text)?;
        file.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))?;
        let target = dir.join(page.get_filename());
        file.persist(&target)
            .with_context(|| format!("cannot write {}", target.display()))?;
    }
    println!("wrote {} man pages into {}", pages.len(), dir.display());
    Ok(ExitCode::SUCCESS)
}

/// `cmd` and every visible subcommand under it, depth first.
fn collect(cmd: &clap::Command, out: &mut Vec<clap::Command>) {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        collect(sub, out);
    }
    out.push(cmd.clone());
}
