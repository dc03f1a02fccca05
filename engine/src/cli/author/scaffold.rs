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

/// The SDK this binary was built with, written into a Rust project as
/// `firedrill-sdk/` unless `--sdk` names another: the project then builds
/// on any machine, against the contract this firedrill runs.
const SDK: &[File] = &[
    (
        "firedrill-sdk/Cargo.toml",
        include_str!("templates/rust/sdk-Cargo.toml"),
        false,
    ),
    (
        "firedrill-sdk/README.md",
        include_str!("../../../../sdk/README.md"),
        false,
    ),
    ("firedrill-sdk/wit/kernel.wit", WIT, false),
    (
        "firedrill-sdk/src/lib.rs",
        include_str!("../../../../sdk/src/lib.rs"),
        false,
    ),
    (
        "firedrill-sdk/src/capability.rs",
        include_str!("../../../../sdk/src/capability.rs"),
        false,
    ),
    (
        "firedrill-sdk/src/guest.rs",
        include_str!("../../../../sdk/src/guest.rs"),
        false,
    ),
    (
        "firedrill-sdk/src/kernel.rs",
        include_str!("../../../../sdk/src/kernel.rs"),
        false,
    ),
    (
        "firedrill-sdk/src/manifest.rs",
        include_str!("../../../../sdk/src/manifest.rs"),
        false,
    ),
    (
        "firedrill-sdk/src/pattern.rs",
        include_str!("../../../../sdk/src/pattern.rs"),
        false,
    ),
    (
        "firedrill-sdk/src/testing.rs",
        include_str!("../../../../sdk/src/testing.rs"),
        false,
    ),
];

fn files(lang: Lang, vendored_sdk: bool) -> Vec<File> {
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
    if lang == Lang::Rust && vendored_sdk {
        files.extend(SDK.iter().copied());
    }
    files
}

/// The SDK directory `--sdk` names, checked.
fn sdk_dir(dir: &Path) -> anyhow::Result<PathBuf> {
    let dir = std::fs::canonicalize(dir).with_context(|| {
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
    // Rust: the SDK named by --sdk, else the copy written into the project.
    let sdk = match (lang, sdk) {
        (Lang::Rust, Some(dir)) => Some(sdk_dir(dir)?),
        _ => None,
    };
    let vendored = lang == Lang::Rust && sdk.is_none();
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
    let sdk_text = match &sdk {
        Some(p) => p.display().to_string(),
        None => "firedrill-sdk".to_string(),
    };
    let mut written = Vec::new();
    for (path, text, executable) in files(lang, vendored) {
        let text = text
            .replace("{{sdk_version}}", env!("CARGO_PKG_VERSION"))
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

    /// The SDK copy is the whole SDK: every file of sdk/ but its build
    /// output, and its manifest asks for the workspace's versions.
    #[test]
    fn the_sdk_copy_is_the_whole_sdk_with_the_workspaces_versions() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut on_disk = Vec::new();
        let mut stack = vec![root.join("sdk")];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).expect("sdk dir") {
                let p = e.expect("entry").path();
                let rel = p
                    .strip_prefix(root.join("sdk"))
                    .expect("inside")
                    .to_path_buf();
                if rel.starts_with("target") {
                    continue;
                }
                if p.is_dir() {
                    stack.push(p);
                } else {
                    on_disk.push(format!("firedrill-sdk/{}", rel.display()));
                }
            }
        }
        on_disk.sort();
        let mut copied: Vec<String> = SDK.iter().map(|(p, _, _)| (*p).to_string()).collect();
        copied.sort();
        assert_eq!(
            copied, on_disk,
            "SDK (scaffold.rs) must list every file of sdk/"
        );
        for (path, text, _) in SDK.iter().filter(|(p, _, _)| !p.ends_with("Cargo.toml")) {
            let original = root
                .join("sdk")
                .join(path.trim_start_matches("firedrill-sdk/"));
            assert_eq!(
                *text,
                std::fs::read_to_string(original).expect("read"),
                "{path}"
            );
        }
        let workspace = std::fs::read_to_string(root.join("Cargo.toml")).expect("Cargo.toml");
        let sdk_manifest = std::fs::read_to_string(root.join("sdk/Cargo.toml")).expect("sdk");
        let template = SDK[0].1;
        for line in sdk_manifest
            .lines()
            .filter(|l| l.contains(".workspace = true") || l.contains("workspace = true, optional"))
        {
            let dep = line.split(['.', ' ']).next().expect("name");
            if matches!(dep, "edition" | "rust-version" | "license") {
                continue;
            }
            let wanted = workspace
                .lines()
                .find(|l| l.starts_with(&format!("{dep} =")))
                .unwrap_or_else(|| panic!("{dep} is not a workspace dependency"));
            let spec = wanted.split_once(" = ").expect("spec").1;
            let copied = template
                .lines()
                .find(|l| l.starts_with(&format!("{dep} =")))
                .unwrap_or_else(|| panic!("the SDK copy's Cargo.toml lacks {dep}"));
            let expected = if line.contains("optional") {
                match spec.strip_suffix(" }") {
                    Some(table) => format!("{dep} = {table}, optional = true }}"),
                    None => format!("{dep} = {{ version = {spec}, optional = true }}"),
                }
            } else {
                format!("{dep} = {spec}")
            };
            assert_eq!(
                copied, expected,
                "the SDK copy's {dep} differs from the workspace's"
            );
        }
        let version = sdk_manifest
            .lines()
            .find_map(|l| l.strip_prefix("version = "))
            .expect("sdk version");
        assert_eq!(
            version.trim_matches('"'),
            env!("CARGO_PKG_VERSION"),
            "the SDK's version is firedrill's"
        );
    }

    #[test]
    fn a_rust_project_carries_its_sdk_and_no_path_of_the_build_machine() {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path().join("mine");
        let files = scaffold(Lang::Rust, "mine", &dir, None).expect("scaffold");
        assert!(files.contains(&dir.join("firedrill-sdk/wit/kernel.wit")));
        let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).expect("Cargo.toml");
        assert!(
            manifest.contains(r#"firedrill-sdk = { path = "firedrill-sdk" }"#),
            "{manifest}"
        );
        let build_machine = std::fs::canonicalize(env!("CARGO_MANIFEST_DIR")).expect("dir");
        let build_machine = build_machine.parent().expect("root").display().to_string();
        for f in &files {
            let text = std::fs::read_to_string(f).expect("read");
            assert!(
                !text.contains(&build_machine),
                "{} names {build_machine}",
                f.display()
            );
        }
        // A directory the user chooses instead.
        let other = tmp.path().join("theirs");
        let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk");
        let files = scaffold(Lang::Rust, "theirs", &other, Some(&sdk)).expect("scaffold");
        assert!(
            !files
                .iter()
                .any(|f| f.starts_with(other.join("firedrill-sdk")))
        );
        let manifest = std::fs::read_to_string(other.join("Cargo.toml")).expect("Cargo.toml");
        let sdk = std::fs::canonicalize(sdk).expect("sdk");
        assert!(
            manifest.contains(&format!("path = \"{}\"", sdk.display())),
            "{manifest}"
        );
        let err = scaffold(
            Lang::Rust,
            "nope",
            &tmp.path().join("nope"),
            Some(tmp.path()),
        )
        .expect_err("not an SDK");
        assert!(
            err.to_string().contains("is not the firedrill SDK"),
            "{err}"
        );
    }

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
