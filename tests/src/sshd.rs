//! Real OpenSSH servers for end-to-end tests.
//!
//! Each [`Sshd`] is the Debian `sshd` binary started by the test on a free
//! loopback port, with its own config, generated host key, authorized user
//! key and state directory in a temp dir. Nothing of the machine's own sshd
//! (config, keys, port 22, service) is used or touched. Commands run as the
//! current user, with `PATH` leading to the demo `systemctl` stand-in,
//! `FIREDRILL_DEMO_DIR` pointing at this server's own state directory (so
//! each server behaves as a separate host), and `HOME` at the temp dir (so
//! the machine user's shell start-up files are not read: on this machine
//! root's `.bashrc` runs `pyenv init`, ~70 ms per command).

use std::io::Read;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use firedrill::transport::{SshAuth, SshTarget, TargetSpec};

use crate::free_port;
use crate::workspace_root;

/// Where Debian's openssh-server puts the daemon.
pub const SSHD: &str = "/usr/sbin/sshd";

/// One running sshd; killed (with its sessions) when dropped.
#[derive(Debug)]
pub struct Sshd {
    dir: tempfile::TempDir,
    pub port: u16,
    child: Option<Child>,
}

fn keygen(path: &Path) {
    let status = Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "firedrill-test",
            "-f",
        ])
        .arg(path)
        .stdin(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("ssh-keygen: {e}"));
    assert!(status.success(), "ssh-keygen failed");
}

fn current_user() -> String {
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| "root".into())
}

impl Sshd {
    /// Generate keys and start a server.
    ///
    /// # Panics
    /// If sshd is not installed or does not start.
    pub fn start() -> Sshd {
        assert!(
            Path::new(SSHD).exists(),
            "{SSHD} is missing: run scripts/test, which installs openssh-server"
        );
        // sshd refuses to start without its privilege separation directory.
        let _ = std::fs::create_dir_all("/run/sshd");
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        keygen(&dir.path().join("host_ed25519"));
        keygen(&dir.path().join("client_ed25519"));
        std::fs::copy(
            dir.path().join("client_ed25519.pub"),
            dir.path().join("authorized_keys"),
        )
        .unwrap_or_else(|e| panic!("authorized_keys: {e}"));
        std::fs::create_dir_all(dir.path().join("state")).unwrap_or_else(|e| panic!("{e}"));
        let mut sshd = Sshd {
            dir,
            port: 0,
            child: None,
        };
        sshd.launch(free_port());
        sshd
    }

    fn launch(&mut self, port: u16) {
        let d = self.dir.path();
        let bin = workspace_root().join("runbooks/demo/bin");
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {host}\nPidFile {d}/sshd.pid\n\
             AuthorizedKeysFile {d}/authorized_keys\nStrictModes no\nUsePAM no\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             PubkeyAuthentication yes\nPermitRootLogin prohibit-password\n\
             MaxStartups 200:30:400\nMaxSessions 64\nLogLevel VERBOSE\n\
             SetEnv PATH={bin}:/usr/local/bin:/usr/bin:/bin FIREDRILL_DEMO_DIR={d}/state HOME={d}\n",
            host = d.join("host_ed25519").display(),
            d = d.display(),
            bin = bin.display(),
        );
        std::fs::write(d.join("sshd_config"), config).unwrap_or_else(|e| panic!("{e}"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join("sshd.log"))
            .unwrap_or_else(|e| panic!("{e}"));
        let child = Command::new(SSHD)
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(d.join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start sshd: {e}"));
        self.child = Some(child);
        self.port = port;
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("sshd exited with {status}: {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "sshd did not listen: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The inventory entry for this server, host key pinned.
    pub fn target(&self) -> SshTarget {
        SshTarget {
            address: "127.0.0.1".into(),
            port: self.port,
            user: current_user(),
            auth: SshAuth::KeyFile(self.dir.path().join("client_ed25519")),
            host_key: Some(self.host_key_line()),
            labels: Default::default(),
        }
    }

    pub fn spec(&self) -> TargetSpec {
        TargetSpec::Ssh(self.target())
    }

    /// The server's public host key (`ssh-ed25519 AAAA... comment`).
    pub fn host_key_line(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("host_ed25519.pub"))
            .unwrap_or_else(|e| panic!("{e}"))
            .trim()
            .to_string()
    }

    /// The private key this server accepts.
    pub fn client_key(&self) -> PathBuf {
        self.dir.path().join("client_ed25519")
    }

    /// A private key this server does not accept.
    pub fn stranger_key(&self) -> PathBuf {
        let path = self.dir.path().join("stranger_ed25519");
        if !path.exists() {
            keygen(&path);
        }
        path
    }

    /// This server's demo state directory (the `systemctl` stand-in's units).
    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Run the `systemctl` stand-in locally against this server's state.
    pub fn systemctl(&self, verb: &str, unit: &str) -> bool {
        Command::new(workspace_root().join("runbooks/demo/bin/systemctl"))
            .args([verb, "--", unit])
            .env("FIREDRILL_DEMO_DIR", self.state())
            .stdout(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    /// How often `unit` was restarted on this server.
    pub fn restarts(&self, unit: &str) -> usize {
        std::fs::read_to_string(self.state().join(format!("{unit}.restarts")))
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }

    /// What sshd logged so far.
    pub fn log(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(self.dir.path().join("sshd.log")) {
            let _ = f.read_to_string(&mut text);
        }
        text
    }

    /// Connections that authenticated so far.
    pub fn logins(&self) -> usize {
        self.log().matches("Accepted publickey").count()
    }

    /// Kill -9 the server and every session process it started: the host
    /// dies mid-command.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = child.id();
            let mut pids = descendants(pid);
            pids.push(pid);
            for p in pids {
                if let Ok(p) = i32::try_from(p) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(p),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
            let _ = child.wait();
        }
    }

    /// Restart on the same port, with a new host key when `rotate_key`.
    pub fn restart(&mut self, rotate_key: bool) {
        self.kill();
        if rotate_key {
            let _ = std::fs::remove_file(self.dir.path().join("host_ed25519"));
            let _ = std::fs::remove_file(self.dir.path().join("host_ed25519.pub"));
            keygen(&self.dir.path().join("host_ed25519"));
        }
        let port = self.port;
        self.launch(port);
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.kill();
        // Stop the demo services the tests started on this "host".
        if let Ok(entries) = std::fs::read_dir(self.state()) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(unit) = name.strip_suffix(".pid") {
                    self.systemctl("stop", unit);
                }
            }
        }
    }
}

/// An `ssh-agent` on its own socket in a temp dir, holding the given keys;
/// killed when dropped. Pass [`Agent::socket`] as `SSH_AUTH_SOCK` to a child
/// process (the test process's own environment is left alone).
#[derive(Debug)]
pub struct Agent {
    dir: tempfile::TempDir,
    child: Child,
}

impl Agent {
    /// # Panics
    /// If ssh-agent or ssh-add fail.
    pub fn start(keys: &[&Path]) -> Agent {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let socket = dir.path().join("agent.sock");
        let child = Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("ssh-agent: {e}"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            assert!(Instant::now() < deadline, "ssh-agent did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        for key in keys {
            let status = Command::new("ssh-add")
                .arg("-q")
                .arg(key)
                .env("SSH_AUTH_SOCK", &socket)
                .stdin(Stdio::null())
                .status()
                .unwrap_or_else(|e| panic!("ssh-add: {e}"));
            assert!(status.success(), "ssh-add failed");
        }
        Agent { dir, child }
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("agent.sock")
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every process whose parent chain leads to `root` (from /proc).
fn descendants(root: u32) -> Vec<u32> {
    let mut parent_of: Vec<(u32, u32)> = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
                continue;
            };
            // pid (comm) state ppid ...; comm may contain spaces and parens.
            let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
                continue;
            };
            if let Some(ppid) = rest.split_whitespace().nth(1).and_then(|p| p.parse().ok()) {
                parent_of.push((pid, ppid));
            }
        }
    }
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let p = found[i];
        found.extend(parent_of.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    found.remove(0);
    found
}
