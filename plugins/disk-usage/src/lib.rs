//! `disk-usage`: report how full the filesystem holding a path is (observe only).

use firedrill_sdk::prelude::*;

fn default_path() -> String {
    "/".to_string()
}

fn default_threshold() -> u8 {
    90
}

/// Which filesystem to check and when to call it full.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// Any path on the filesystem to check.
    #[serde(default = "default_path")]
    pub path: String,
    /// Usage (percent) at or above which `over_threshold` is true.
    #[serde(default = "default_threshold")]
    #[schemars(range(min = 1, max = 100))]
    pub threshold_percent: u8,
}

/// Usage of one filesystem.
#[derive(Debug, Serialize, JsonSchema, PartialEq, Eq)]
pub struct Output {
    pub target: String,
    pub filesystem: String,
    pub mounted_on: String,
    pub size_kib: u64,
    pub used_kib: u64,
    pub available_kib: u64,
    pub used_percent: u8,
    pub over_threshold: bool,
}

/// The kernel.
#[derive(Debug)]
pub struct DiskUsage;

/// Parse POSIX `df -P -k` output (header line, then one line per filesystem;
/// the mount point may contain spaces).
fn parse_df(stdout: &str) -> Result<(String, u64, u64, u64, u8, String), String> {
    let line = stdout
        .lines()
        .skip(1)
        .find(|l| !l.trim().is_empty())
        .ok_or_else(|| format!("df printed no filesystem line: {stdout:?}"))?;
    let fields: Vec<&str> = line.split_whitespace().collect();
    if fields.len() < 6 {
        return Err(format!(
            "df line has {} fields, expected 6: {line:?}",
            fields.len()
        ));
    }
    let number = |i: usize, what: &str| {
        fields[i]
            .parse::<u64>()
            .map_err(|e| format!("df {what} {:?} is not a number ({e}): {line:?}", fields[i]))
    };
    let percent = fields[4]
        .trim_end_matches('%')
        .parse::<u8>()
        .map_err(|e| format!("df capacity {:?} is not a percentage ({e})", fields[4]))?;
    Ok((
        fields[0].to_string(),
        number(1, "size")?,
        number(2, "used")?,
        number(3, "available")?,
        percent,
        fields[5..].join(" "),
    ))
}

impl Kernel for DiskUsage {
    type Input = Input;
    type Output = Output;

    fn declare() -> Declaration {
        Declaration::new(
            "disk-usage",
            env!("CARGO_PKG_VERSION"),
            "Report size, usage and free space of the filesystem holding a path",
        )
        .idempotent(true)
        .observe_exec("df -P -k -- *")
    }

    fn run(ctx: &Context<'_>, input: Input) -> Result<Output, KernelError> {
        let target = ctx.single_target()?;
        let r = ctx.exec_words(target, &["df", "-P", "-k", "--", &input.path])?;
        if !r.success() {
            return Err(KernelError::Failed(format!(
                "df on {target} for {:?} exited {}: {}",
                input.path,
                r.exit_code,
                r.stderr.trim()
            )));
        }
        let (filesystem, size_kib, used_kib, available_kib, used_percent, mounted_on) =
            parse_df(&r.stdout).map_err(KernelError::Failed)?;
        Ok(Output {
            target: target.to_string(),
            filesystem,
            mounted_on,
            size_kib,
            used_kib,
            available_kib,
            used_percent,
            over_threshold: used_percent >= input.threshold_percent,
        })
    }
}

export_kernel!(DiskUsage);

#[cfg(test)]
mod tests {
    use super::*;
    use firedrill_sdk::testing::MockHost;
    use serde_json::json;

    const DF: &str = "Filesystem     1024-blocks      Used Available Capacity Mounted on\n/dev/vda        263174212 11349876 238388940       5% /\n";

    #[test]
    fn parses_df_and_applies_threshold() {
        let mut host = MockHost::for_kernel::<DiskUsage>();
        host.on_exec("df -P -k -- /", ExecResult::ok(DF));
        let out = host
            .run::<DiskUsage>(Mode::DryRun, &["web-1"], json!({"threshold_percent": 5}))
            .expect("runs");
        assert_eq!(
            out,
            json!({"target": "web-1", "filesystem": "/dev/vda", "mounted_on": "/",
                   "size_kib": 263174212u64, "used_kib": 11349876u64, "available_kib": 238388940u64,
                   "used_percent": 5, "over_threshold": true})
        );
    }

    #[test]
    fn mount_points_with_spaces() {
        let parsed = parse_df("H\n/dev/sdb 100 50 50 50% /mnt/my disk\n").expect("parses");
        assert_eq!(parsed.5, "/mnt/my disk");
    }

    #[test]
    fn garbage_output_is_a_clear_failure() {
        for bad in [
            "",
            "header only\n",
            "H\n/dev/x a b c 5% /\n",
            "H\n/dev/x 1 2 3 many /\n",
        ] {
            let mut host = MockHost::for_kernel::<DiskUsage>();
            host.on_exec("df -P -k -- *", ExecResult::ok(bad));
            let err = host
                .run::<DiskUsage>(Mode::Live, &["web-1"], json!({}))
                .unwrap_err();
            assert!(
                matches!(err, KernelError::Failed(ref m) if m.contains("df")),
                "{bad:?}: {err}"
            );
        }
    }

    #[test]
    fn threshold_out_of_range_is_refused_by_schema() {
        let m = firedrill_sdk::manifest_of::<DiskUsage>();
        assert_eq!(
            m.input_schema["properties"]["threshold_percent"]["maximum"],
            json!(100)
        );
    }
}
