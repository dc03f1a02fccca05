//! The 3-step remediation over SSH, firedrill against Ansible: check a unit,
//! restart it, verify, on one real OpenSSH server on loopback (started by
//! the bench, as in the tests), the unit stopped before every run so that
//! every run really restarts it. Three contenders take turns in one loop
//! (the order rotates every round), on the same host, same commands, same
//! sshd:
//!
//! - **firedrill, pooled**: the demo runbook `restart-demo-web` run live
//!   through `Service::run` (validation, three steps with durable audit,
//!   five commands) with the default SSH pool: one session, reused.
//! - **firedrill, fresh connections**: the same with `idle-timeout-ms = 0`:
//!   every command connects, verifies the host key and authenticates anew.
//! - **Ansible**: `ansible-playbook` (ansible-core from PyPI, installed by
//!   `scripts/bench`) with the same three tasks (`command`/`shell` modules
//!   running the same `systemctl` commands), no fact gathering, pipelining,
//!   and connection reuse (`ControlMaster=auto`, `ControlPersist`), strict
//!   host key checking against the pinned key. One `ansible-playbook`
//!   process per remediation, as an operator or a webhook would start it.
//!
//! `cargo bench -p firedrill-tests --bench ssh` (env SSH_RUNS, default 25
//! measured runs each after one unmeasured; ANSIBLE_PLAYBOOK, default
//! `target/ansible-venv/bin/ansible-playbook`). Part of `scripts/bench`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use firedrill::Mode;
use firedrill::store::RunStatus;
use firedrill::transport::{Inventory, SshConfig, TargetsConfig};
use firedrill_tests::bench::{self, Goal, Measure, Stat};
use firedrill_tests::sshd::Sshd;
use firedrill_tests::{TestEnv, workspace_root};

const PLAYBOOK: &str = r#"- hosts: target
  gather_facts: false
  tasks:
    - name: probe
      ansible.builtin.command: systemctl is-active -- web
      register: probe
      changed_when: false
      failed_when: probe.rc not in [0, 3]
    - name: restart
      ansible.builtin.shell: systemctl restart -- web && systemctl is-active -- web
      when: probe.rc != 0
    - name: verify
      ansible.builtin.command: systemctl is-active -- web
      changed_when: false
"#;

fn ansible_playbook() -> PathBuf {
    let path = std::env::var_os("ANSIBLE_PLAYBOOK")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/ansible-venv/bin/ansible-playbook"));
    assert!(
        path.exists(),
        "{} is missing: run scripts/bench, which installs ansible-core from PyPI into target/ansible-venv (or set ANSIBLE_PLAYBOOK)",
        path.display()
    );
    path
}

/// Ansible's project directory: config, inventory, known_hosts, playbook.
fn ansible_project(dir: &Path, sshd: &Sshd) {
    let target = sshd.target();
    let key = sshd.host_key_line();
    let key = key.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
    std::fs::write(
        dir.join("known_hosts"),
        format!("[127.0.0.1]:{} {key}\n", sshd.port),
    )
    .expect("known_hosts");
    std::fs::write(
        dir.join("inventory.ini"),
        format!(
            "target ansible_host=127.0.0.1 ansible_port={} ansible_user={} ansible_ssh_private_key_file={} ansible_python_interpreter=/usr/bin/python3\n",
            sshd.port,
            target.user,
            sshd.client_key().display()
        ),
    )
    .expect("inventory");
    std::fs::write(
        dir.join("ansible.cfg"),
        format!(
            "[defaults]\ninventory = {d}/inventory.ini\nhost_key_checking = True\ngathering = explicit\nretry_files_enabled = False\nlocal_tmp = {d}/tmp\n\n\
             [ssh_connection]\npipelining = True\ncontrol_path_dir = {d}/cp\n\
             ssh_args = -F none -o IdentitiesOnly=yes -o ControlMaster=auto -o ControlPersist=600s -o UserKnownHostsFile={d}/known_hosts -o StrictHostKeyChecking=yes\n",
            d = dir.display()
        ),
    )
    .expect("ansible.cfg");
    std::fs::write(dir.join("playbook.yml"), PLAYBOOK).expect("playbook");
}

/// One `ansible-playbook` run; its output.
fn ansible_run(bin: &Path, dir: &Path) -> String {
    let out = Command::new(bin)
        .arg(dir.join("playbook.yml"))
        .current_dir(dir)
        .env("ANSIBLE_CONFIG", dir.join("ansible.cfg"))
        .env("ANSIBLE_HOME", dir.join("home"))
        .stdin(Stdio::null())
        .output()
        .expect("run ansible-playbook");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "ansible-playbook failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[derive(Clone, Copy, PartialEq)]
enum Contender {
    Pooled,
    Fresh,
    Ansible,
}

fn main() {
    let runs = bench::size("SSH_RUNS", 25, 2);
    let ansible = ansible_playbook();
    let version = Command::new(&ansible)
        .arg("--version")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .to_string()
        })
        .unwrap_or_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let text =
        std::fs::read_to_string(workspace_root().join("runbooks/demo/restart-demo-web.yaml"))
            .expect("demo runbook");
    let sshd = Sshd::start();
    let project = tempfile::tempdir().expect("tmp");
    ansible_project(project.path(), &sshd);
    let env_with = |idle_timeout_ms| {
        let mut extra = Inventory::default();
        extra.targets.insert("ssh-host".into(), sshd.spec());
        let config = TargetsConfig {
            ssh: SshConfig {
                idle_timeout_ms,
                ..SshConfig::default()
            },
            ..TargetsConfig::default()
        };
        rt.block_on(TestEnv::with_targets(extra, config))
    };
    let pooled = env_with(SshConfig::default().idle_timeout_ms);
    let fresh = env_with(0);
    let order = [Contender::Pooled, Contender::Fresh, Contender::Ansible];
    let mut times: [Vec<f64>; 3] = Default::default();
    assert!(sshd.systemctl("start", "web"));
    // Round 0 is unmeasured: compiles kernels into the cache, opens the pool
    // and Ansible's control master, warms the page cache.
    for round in 0..=runs {
        for k in 0..order.len() {
            let who = order[(round + k) % order.len()];
            assert!(sshd.systemctl("stop", "web"));
            let started = Instant::now();
            match who {
                Contender::Ansible => {
                    let out = ansible_run(&ansible, project.path());
                    assert!(out.contains("changed=1"), "Ansible did not restart: {out}");
                }
                Contender::Pooled | Contender::Fresh => {
                    let env = if who == Contender::Pooled {
                        &pooled
                    } else {
                        &fresh
                    };
                    let id = rt
                        .block_on(env.run_text(
                            &text,
                            Mode::Live,
                            &[("unit", "web"), ("host", "ssh-host")],
                        ))
                        .expect("run");
                    let run = rt.block_on(env.store.run(&id)).expect("read").expect("run");
                    assert_eq!(run.status, RunStatus::Succeeded, "{run:?}");
                }
            }
            let elapsed = bench::ms(started.elapsed());
            if round > 0 {
                times[who as usize].push(elapsed);
            }
        }
    }
    assert_eq!(
        sshd.restarts("web"),
        3 * (runs + 1),
        "every run of every contender restarted the unit"
    );
    let ratios: Vec<f64> = times[2].iter().zip(&times[0]).map(|(a, f)| a / f).collect();
    let measures = vec![
        Measure::from_samples(
            "ssh.firedrill.pooled",
            "3-step SSH remediation, firedrill (pooled session)",
            "ms",
            &[times[0].clone()],
        ),
        Measure::from_samples(
            "ssh.firedrill.fresh",
            "3-step SSH remediation, firedrill (a connection per command)",
            "ms",
            &[times[1].clone()],
        ),
        Measure::from_samples(
            "ssh.ansible",
            "3-step SSH remediation, Ansible (ControlPersist, pipelining)",
            "ms",
            &[times[2].clone()],
        )
        .detail(serde_json::json!({"ansible": version})),
        Measure::from_rates(
            "ssh.ratio",
            "Ansible time / firedrill time (pooled), per round",
            "×",
            &ratios,
        )
        .goal(Goal::at_least(Stat::Median, 20.0))
        .detail(serde_json::json!({"sshd_logins": sshd.logins(), "rounds": runs})),
    ];
    bench::write(
        "ssh",
        "cargo bench -p firedrill-tests --bench ssh",
        &measures,
    );
}
