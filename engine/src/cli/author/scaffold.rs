//! `firedrill kernel new`: a buildable kernel project with a test, in Rust,
//! Python or JavaScript. Every language gets the same kernel (restart a
//! systemd unit when it is not active, then verify), the same `test.sh`
//! (scripted scenarios through `firedrill kernel test`) and a `build.sh`.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// The language of a new kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    Rust,
    Python,
    Js,
}

impl Lang {
    fn label(self) -> &'static str {
        match self {
            Lang::Rust => "Rust",
            Lang::Python => "Python",
            Lang::Js => "JavaScript",
        }
    }
}

const WIT: &str = include_str!("../../../../sdk/wit/kernel.wit");
const TEST_SH: &str = include_str!("templates/common/test.sh");
const INPUT: &str = include_str!("templates/common/input.json");
const README: &str = include_str!("templates/common/README.md");
const GITIGNORE: &str = include_str!("templates/common/gitignore");

/// (path in the project, contents, executable)
type File = (&'static str, &'static str, bool);

fn files(lang: Lang) -> Vec<File> {
    let mut files: Vec<File> = vec![
        ("test.sh", TEST_SH, true),
        ("tests/input.json", INPUT, false),
        ("README.md", README, false),
        (".gitignore", GITIGNORE, false),
    ];
    match lang {
        Lang::Rust => files.extend([
            (
                "Cargo.toml",
                include_str!("templates/rust/Cargo.toml"),
                false,
            ),
            ("src/lib.rs", include_str!("templates/rust/src.rs"), false),
            ("build.sh", include_str!("templates/rust/build.sh"), true),
        ]),
        Lang::Python => files.extend([
            ("app.py", include_str!("templates/python/app.py"), false),
            (
                "requirements.txt",
                include_str!("templates/python/requirements.txt"),
                false,
            ),
            ("build.sh", include_str!("templates/python/build.sh"), true),
            ("wit/kernel.wit", WIT, false),
        ]),
        Lang::Js => files.extend([
            ("kernel.js", include_str!("templates/js/kernel.js"), false),
            (
                "package.json",
                include_str!("templates/js/package.json"),
                false,
            ),
            ("build.mjs", include_str!("templates/js/build.mjs"), false),
            ("build.sh", include_str!("templates/js/build.sh"), true),
            ("wit/kernel.wit", WIT, false),
        ]),
    }
    files
}

/// The SDK a Rust kernel builds against: `--sdk`, else the `sdk/` of the
/// source tree this binary was built from, if it is still there.
fn sdk_dir(sdk: Option<&Path>) -> anyhow::Result<PathBuf> {
    let dir = match sdk {
        Some(dir) => dir.to_path_buf(),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk"),
    };
    let dir = std::fs::canonicalize(&dir).with_context(|| {
        format!(
            "the firedrill SDK is not at {}; pass --sdk with the sdk/ directory of a firedrill checkout",
            dir.display()
        )
    })?;
    anyhow::ensure!(
        dir.join("Cargo.toml").is_file() && dir.join("wit/kernel.wit").is_file(),
        "{} is not the firedrill SDK (no Cargo.toml and wit/kernel.wit); pass --sdk with the sdk/ directory of a firedrill checkout",
        dir.display()
    );
    Ok(dir)
}

/// Write a new `lang` kernel project `name` into `dir` (which must not
/// exist, or be empty). Written into a temporary sibling and renamed into
/// place, so a failure leaves nothing half-written. Returns the files.
pub fn scaffold(
    lang: Lang,
    name: &str,
    dir: &Path,
    sdk: Option<&Path>,
) -> anyhow::Result<Vec<PathBuf>> {
    anyhow::ensure!(
        firedrill_sdk::manifest::valid_name(name),
        "kernel name {name:?} is not valid: use 1 to 64 lower-case letters, digits and '-', starting with a letter"
    );
    if dir.exists() {
        let empty = std::fs::read_dir(dir)
            .with_context(|| format!("{} exists and cannot be read", dir.display()))?
            .next()
            .is_none();
        anyhow::ensure!(
            empty,
            "{} exists and is not empty; choose a new directory",
            dir.display()
        );
        std::fs::remove_dir(dir).with_context(|| format!("cannot replace {}", dir.display()))?;
    }
    let sdk = match lang {
        Lang::Rust => Some(sdk_dir(sdk)?),
        _ => None,
    };
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent)
        .with_context(|| format!("cannot create {}", parent.display()))?;
    let staging = tempfile::Builder::new()
        .prefix(".firedrill-new-")
        .tempdir_in(&parent)
        .with_context(|| format!("cannot write in {}", parent.display()))?;
    let crate_name = name.replace('-', "_");
    let sdk_text = sdk
        .as_deref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let mut written = Vec::new();
    for (path, text, executable) in files(lang) {
        let text = text
            .replace("{{name}}", name)
            .replace("{{crate}}", &crate_name)
            .replace("{{lang}}", lang.label())
            .replace("{{sdk}}", &sdk_text);
        let file = staging.path().join(path);
        if let Some(p) = file.parent() {
            std::fs::create_dir_all(p)?;
        }
        std::fs::write(&file, text).with_context(|| format!("cannot write {}", file.display()))?;
        if executable {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755))?;
        }
        written.push(dir.join(path));
    }
    let staged = staging.keep();
    std::fs::rename(&staged, dir).with_context(|| {
        let _ = std::fs::remove_dir_all(&staged);
        format!("cannot move the new project into {}", dir.display())
    })?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_language_gets_a_build_a_test_and_its_name() {
        for lang in [Lang::Rust, Lang::Python, Lang::Js] {
            let tmp = tempfile::tempdir().expect("tmp");
            let dir = tmp.path().join("restart-web");
            let files = scaffold(lang, "restart-web", &dir, None).expect("scaffold");
            for f in ["build.sh", "test.sh", "tests/input.json", "README.md"] {
                assert!(files.contains(&dir.join(f)), "{lang:?} lacks {f}");
            }
            for f in &files {
                let text = std::fs::read_to_string(f).expect("read");
                assert!(
                    !text.contains("{{"),
                    "{} has an unfilled placeholder",
                    f.display()
                );
            }
            let main = match lang {
                Lang::Rust => "src/lib.rs",
                Lang::Python => "app.py",
                Lang::Js => "kernel.js",
            };
            let text = std::fs::read_to_string(dir.join(main)).expect("main");
            assert!(text.contains("\"restart-web\"") || text.contains("'restart-web'"));
        }
    }

    #[test]
    fn refuses_bad_names_and_non_empty_directories_and_writes_nothing() {
        let tmp = tempfile::tempdir().expect("tmp");
        let err =
            scaffold(Lang::Python, "Bad_Name", &tmp.path().join("x"), None).expect_err("bad name");
        assert!(err.to_string().contains("not valid"), "{err}");
        assert!(!tmp.path().join("x").exists());
        std::fs::write(tmp.path().join("keep"), "mine").expect("write");
        let err = scaffold(Lang::Js, "ok", tmp.path(), None).expect_err("not empty");
        assert!(err.to_string().contains("not empty"), "{err}");
        let err = scaffold(Lang::Rust, "ok", &tmp.path().join("r"), Some(tmp.path()))
            .expect_err("no sdk there");
        assert!(err.to_string().contains("--sdk"), "{err}");
        let left: Vec<_> = std::fs::read_dir(tmp.path()).expect("dir").collect();
        assert_eq!(left.len(), 1, "only the user's file remains");
    }
}
