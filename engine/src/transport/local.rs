//! The `local` executor: runs a command on the engine host through `/bin/sh -c`.

use std::process::Stdio;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

use super::{ExecError, ExecLimits, ExecOutput, LocalTarget};

/// PATH given to commands when the target does not set one.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Runs commands on this host. Each command gets its own process group so that
/// a timeout kills everything it started, an empty environment (plus the
/// target's `env`), and no stdin.
#[derive(Debug, Default)]
pub struct LocalExecutor;

/// Read all of `reader`, keeping at most `cap` bytes. Keeps draining past the
/// cap so the child never blocks on a full pipe.
async fn read_capped<R: AsyncRead + Unpin>(mut reader: R, cap: usize) -> (Vec<u8>, bool) {
    let mut kept = Vec::new();
    let mut truncated = false;
    let mut buf = [0u8; 8192];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = cap.saturating_sub(kept.len());
                if n > room {
                    truncated = true;
                }
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
    (kept, truncated)
}

fn kill_group(pid: Option<u32>) {
    if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
        // The child leads its own process group (process_group(0) below).
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

impl LocalExecutor {
    /// Run `command` on this host for the local target `name`.
    pub async fn exec(
        &self,
        name: &str,
        target: &LocalTarget,
        command: &str,
        limits: ExecLimits,
    ) -> Result<ExecOutput, ExecError> {
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(command)
            .env_clear()
            .env("PATH", DEFAULT_PATH)
            .envs(&target.env)
            .current_dir(target.workdir.as_deref().unwrap_or("/"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|e| ExecError::Failed {
            target: name.to_string(),
            reason: format!("cannot start /bin/sh: {e}"),
        })?;
        let pid = child.id();
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            kill_group(pid);
            return Err(ExecError::Failed {
                target: name.to_string(),
                reason: "child has no stdout/stderr pipe".into(),
            });
        };
        let cap = limits.output_bytes;
        let run = async {
            let (out, err, status) = tokio::join!(
                read_capped(stdout, cap),
                read_capped(stderr, cap),
                child.wait()
            );
            (out, err, status)
        };
        // Whatever happens (timeout, or the caller dropping this future when the
        // invocation's wall clock runs out), the whole process group is killed.
        let guard = KillGuard(pid);
        let result = tokio::time::timeout(limits.timeout, run).await;
        drop(guard);
        let ((stdout, t1), (stderr, t2), status) =
            result.map_err(|_| ExecError::Timeout(limits.timeout))?;
        let status = status.map_err(|e| ExecError::Failed {
            target: name.to_string(),
            reason: format!("cannot wait for the command: {e}"),
        })?;
        Ok(ExecOutput {
            exit_code: status.code().unwrap_or(-1),
            stdout,
            stderr,
            truncated: t1 || t2,
        })
    }
}

/// Kills the process group when dropped: on timeout, on cancellation, and after
/// a normal exit (to reap stragglers the command left in the background).
struct KillGuard(Option<u32>);

impl Drop for KillGuard {
    fn drop(&mut self) {
        kill_group(self.0);
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    fn spec() -> LocalTarget {
        LocalTarget::default()
    }

    fn limits(ms: u64, bytes: usize) -> ExecLimits {
        ExecLimits {
            timeout: Duration::from_millis(ms),
            output_bytes: bytes,
        }
    }

    #[tokio::test]
    async fn runs_with_exit_code_and_empty_environment() {
        let out = LocalExecutor
            .exec(
                "l",
                &spec(),
                "echo out; echo err >&2; echo ${HOME:-nohome}; exit 3",
                limits(5000, 1024),
            )
            .await
            .expect("runs");
        assert_eq!(out.exit_code, 3);
        assert_eq!(out.stdout, b"out\nnohome\n");
        assert_eq!(out.stderr, b"err\n");
        assert!(!out.truncated);
    }

    #[tokio::test]
    async fn output_over_the_cap_is_truncated_and_the_child_is_not_blocked() {
        let out = LocalExecutor
            .exec(
                "l",
                &spec(),
                "head -c 1000000 /dev/zero",
                limits(10_000, 100),
            )
            .await
            .expect("runs");
        assert_eq!(out.stdout.len(), 100);
        assert!(out.truncated);
        assert_eq!(out.exit_code, 0);
    }

    #[tokio::test]
    async fn timeout_kills_the_whole_process_group() {
        let dir = tempfile::tempdir().expect("tempdir");
        let marker = dir.path().join("survived");
        let cmd = format!("(sleep 1; touch {}) & sleep 30", marker.display());
        let started = Instant::now();
        let err = LocalExecutor
            .exec("l", &spec(), &cmd, limits(200, 1024))
            .await
            .unwrap_err();
        assert!(matches!(err, ExecError::Timeout(_)), "{err}");
        assert!(started.elapsed() < Duration::from_secs(20));
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(!marker.exists(), "background child outlived the timeout");
    }
}
