//! The SSH executor against real OpenSSH servers (started by the tests on
//! loopback, see `firedrill_tests::sshd`): host key pinning before auth,
//! authentication, timeouts, a server killed mid-command, output caps,
//! session reuse, connection retries, and the bounded blocking pool.

use std::sync::Arc;
use std::time::{Duration, Instant};

use firedrill::transport::{
    ExecError, ExecLimits, Faults, Inventory, RetryConfig, SshAuth, SshConfig, SshTarget,
    TargetSpec, Targets, TargetsConfig,
};
use firedrill_tests::sshd::Sshd;

fn limits(timeout_ms: u64, output_bytes: usize) -> ExecLimits {
    ExecLimits {
        timeout: Duration::from_millis(timeout_ms),
        output_bytes,
    }
}

fn quick_retries() -> RetryConfig {
    RetryConfig {
        attempts: 3,
        base_delay_ms: 50,
        max_delay_ms: 200,
    }
}

fn targets(specs: Vec<(&str, TargetSpec)>, ssh: SshConfig) -> Targets {
    let mut inventory = Inventory::default();
    for (name, spec) in specs {
        inventory.targets.insert(name.to_string(), spec);
    }
    Targets::with_config(
        inventory,
        &TargetsConfig {
            ssh,
            retry: quick_retries(),
            ..TargetsConfig::default()
        },
    )
}

async fn exec(
    t: &Targets,
    name: &str,
    cmd: &str,
    l: ExecLimits,
) -> (Result<firedrill::transport::ExecOutput, ExecError>, Faults) {
    let mut faults = Faults::default();
    let r = t.exec(name, cmd, l, &mut faults).await;
    (r, faults)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_commands_with_status_and_streams_and_reuses_the_session() {
    let sshd = Sshd::start();
    let t = targets(vec![("web", sshd.spec())], SshConfig::default());
    let (out, faults) = exec(
        &t,
        "web",
        "echo out; echo err >&2; echo \"$FIREDRILL_DEMO_DIR\"; exit 3",
        limits(10_000, 4096),
    )
    .await;
    let out = out.expect("runs");
    assert_eq!(out.exit_code, 3);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("out\n{}\n", sshd.state().display())
    );
    assert_eq!(out.stderr, b"err\n");
    assert!(!out.truncated);
    assert!(faults.is_empty());
    // Quoted metacharacters stay data through the remote timeout wrapper.
    let (out, _) = exec(&t, "web", "echo 'a; b' \"$((1+2))\"", limits(10_000, 4096)).await;
    assert_eq!(out.expect("runs").stdout, b"a; b 3\n");
    // A command reading stdin sees end of file instead of hanging.
    let (out, _) = exec(&t, "web", "cat; echo done", limits(10_000, 4096)).await;
    assert_eq!(out.expect("runs").stdout, b"done\n");
    // Three commands, one login: the session was pooled and reused.
    assert_eq!(sshd.logins(), 1, "{}", sshd.log());
    assert_eq!(t.ssh().idle_sessions("web"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_host_key_is_refused_before_authentication() {
    let sshd = Sshd::start();
    let mut target = sshd.target();
    target.host_key = None;
    let t = targets(vec![("web", TargetSpec::Ssh(target))], SshConfig::default());
    let (err, faults) = exec(&t, "web", "touch /tmp/should-not-run", limits(10_000, 1024)).await;
    let err = err.unwrap_err().to_string();
    let key = sshd.host_key_line();
    let blob = key.split_whitespace().nth(1).expect("blob");
    assert!(err.contains("is not pinned"), "{err}");
    // The message shows the presented fingerprint and the line to pin.
    let pinned = firedrill::transport::PinnedKey::parse(&key).expect("parses");
    let firedrill::transport::PinnedKey::Key { blob: raw, .. } = pinned else {
        panic!("key")
    };
    assert!(
        err.contains(&firedrill::transport::fingerprint(&raw)),
        "{err}"
    );
    assert!(err.contains(blob), "{err}");
    // Permanent: no retry. And the server never saw a userauth request.
    assert!(faults.is_empty());
    std::thread::sleep(Duration::from_millis(200));
    let log = sshd.log();
    assert!(log.contains("[preauth]"), "{log}");
    assert!(!log.contains("authenticating user"), "{log}");
    assert!(!log.contains("publickey"), "{log}");
    assert_eq!(sshd.logins(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_host_key_is_refused_and_a_fingerprint_pin_works() {
    let mut sshd = Sshd::start();
    let pinned = sshd.target();
    let t = targets(
        vec![("web", TargetSpec::Ssh(pinned.clone()))],
        SshConfig::default(),
    );
    exec(&t, "web", "true", limits(10_000, 64))
        .await
        .0
        .expect("pinned key accepted");
    // A SHA256 fingerprint pin, on a non-22 port, works too.
    let firedrill::transport::PinnedKey::Key { blob, .. } =
        firedrill::transport::PinnedKey::parse(&sshd.host_key_line()).expect("parses")
    else {
        panic!("key")
    };
    let mut by_fp = pinned.clone();
    by_fp.host_key = Some(firedrill::transport::fingerprint(&blob));
    let t2 = targets(vec![("web", TargetSpec::Ssh(by_fp))], SshConfig::default());
    exec(&t2, "web", "true", limits(10_000, 64))
        .await
        .0
        .expect("fingerprint pin accepted");

    sshd.restart(true);
    let logins_before = sshd.logins();
    let t3 = targets(vec![("web", TargetSpec::Ssh(pinned))], SshConfig::default());
    let err = exec(&t3, "web", "true", limits(10_000, 64))
        .await
        .0
        .unwrap_err()
        .to_string();
    assert!(err.contains("HOST KEY MISMATCH"), "{err}");
    assert_eq!(sshd.logins(), logins_before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_the_server_does_not_accept_fails_without_retries() {
    let sshd = Sshd::start();
    let mut target = sshd.target();
    target.auth = SshAuth::KeyFile(sshd.stranger_key());
    let t = targets(vec![("web", TargetSpec::Ssh(target))], SshConfig::default());
    let (err, faults) = exec(&t, "web", "true", limits(10_000, 64)).await;
    let err = err.unwrap_err().to_string();
    assert!(err.contains("authentication as"), "{err}");
    assert!(err.contains("authorized_keys"), "{err}");
    assert!(faults.is_empty(), "{faults:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_timeout_abandons_the_call_and_the_remote_command_is_killed() {
    let sshd = Sshd::start();
    let t = targets(
        vec![("web", sshd.spec())],
        SshConfig {
            remote_kill_grace_s: 1,
            ..SshConfig::default()
        },
    );
    let marker = sshd.state().join("finished");
    let started = Instant::now();
    let cmd = format!("sleep 4; touch {}", marker.display());
    let err = exec(&t, "web", &cmd, limits(1_000, 64))
        .await
        .0
        .unwrap_err();
    assert!(matches!(err, ExecError::Timeout(_)), "{err}");
    assert!(started.elapsed() < Duration::from_secs(4));
    // The remote `timeout` wrapper ends it at 2 s (1 s + 1 s margin).
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(!marker.exists(), "the remote command outlived its timeout");
    // The timed-out session was not returned to the pool; the next call works.
    exec(&t, "web", "true", limits(10_000, 64))
        .await
        .0
        .expect("next call");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sshd_killed_mid_command_is_a_lost_connection_never_a_success() {
    let mut sshd = Sshd::start();
    let t = Arc::new(targets(vec![("web", sshd.spec())], SshConfig::default()));
    let t2 = t.clone();
    let call = tokio::spawn(async move {
        exec(&t2, "web", "sleep 5; echo finished", limits(20_000, 1024)).await
    });
    tokio::time::sleep(Duration::from_millis(1000)).await;
    sshd.kill();
    let (result, faults) = call.await.expect("joins");
    let err = result.unwrap_err().to_string();
    assert!(
        err.contains("connection lost after the command was sent") && err.contains("not retried"),
        "{err}"
    );
    assert!(faults.is_empty(), "{faults:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_over_the_cap_is_truncated_and_the_command_still_completes() {
    let sshd = Sshd::start();
    let t = targets(vec![("web", sshd.spec())], SshConfig::default());
    // 3 MB on stdout and on stderr: more than the channel window, so
    // reading only one stream at a time would deadlock.
    let (out, _) = exec(
        &t,
        "web",
        "head -c 3000000 /dev/zero | tr '\\0' o; head -c 3000000 /dev/zero | tr '\\0' e >&2; exit 7",
        limits(30_000, 4096),
    )
    .await;
    let out = out.expect("runs");
    assert_eq!(out.exit_code, 7);
    assert_eq!(out.stdout.len(), 4096);
    assert_eq!(out.stderr.len(), 4096);
    assert!(out.stdout.iter().all(|b| *b == b'o'));
    assert!(out.truncated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_pooled_session_is_replaced_and_counted() {
    let mut sshd = Sshd::start();
    let t = targets(vec![("web", sshd.spec())], SshConfig::default());
    exec(&t, "web", "true", limits(10_000, 64))
        .await
        .0
        .expect("first");
    sshd.restart(false);
    let (out, faults) = exec(&t, "web", "echo again", limits(10_000, 64)).await;
    assert_eq!(out.expect("reconnects").stdout, b"again\n");
    assert_eq!(faults.reconnects, 1, "{faults:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_refused_is_retried_with_backoff_and_counted() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let sshd = Sshd::start();
    let mut target = sshd.target();
    target.port = port;
    let t = targets(
        vec![("down", TargetSpec::Ssh(target))],
        SshConfig::default(),
    );
    let started = Instant::now();
    let (err, faults) = exec(&t, "down", "true", limits(10_000, 64)).await;
    let err = err.unwrap_err().to_string();
    assert!(err.contains("after 3 connection attempts"), "{err}");
    assert_eq!(faults.retries, 2);
    // Backoff waited at least half of 50 ms + 100 ms.
    assert!(started.elapsed() >= Duration::from_millis(75));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_hosts_occupy_at_most_max_blocking_threads() {
    // A "host" that accepts TCP connections and never speaks SSH; it keeps
    // every connection open and notes when each was accepted.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let accepted = Arc::new(std::sync::Mutex::new(Vec::<Instant>::new()));
    {
        let accepted = accepted.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for stream in listener.incoming().flatten() {
                accepted.lock().expect("lock").push(Instant::now());
                held.push(stream);
            }
        });
    }
    let hung = |i: usize| {
        (
            format!("hung-{i}"),
            TargetSpec::Ssh(SshTarget {
                address: "127.0.0.1".into(),
                port,
                user: "nobody".into(),
                auth: SshAuth::Agent,
                host_key: Some("SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU".into()),
                labels: Default::default(),
            }),
        )
    };
    let specs: Vec<(String, TargetSpec)> = (0..20).map(hung).collect();
    let mut inventory = Inventory::default();
    inventory.targets.extend(specs);
    let t = Arc::new(Targets::with_config(
        inventory,
        &TargetsConfig {
            ssh: SshConfig {
                connect_timeout_ms: 1_000,
                max_blocking: 3,
                ..SshConfig::default()
            },
            retry: RetryConfig {
                attempts: 1,
                ..quick_retries()
            },
            ..TargetsConfig::default()
        },
    ));
    let calls: Vec<_> = (0..20)
        .map(|i| {
            let t = t.clone();
            tokio::spawn(
                async move { exec(&t, &format!("hung-{i}"), "true", limits(20_000, 64)).await },
            )
        })
        .collect();
    // Meanwhile the runtime's own blocking pool still serves other work.
    let other = tokio::time::timeout(Duration::from_secs(2), tokio::task::spawn_blocking(|| 42))
        .await
        .expect("blocking pool not exhausted")
        .expect("joins");
    assert_eq!(other, 42);
    for c in calls {
        let (r, _) = c.await.expect("joins");
        let err = r.unwrap_err().to_string();
        assert!(
            err.contains("handshake") || err.contains("timed out"),
            "{err}"
        );
    }
    // Each attempt holds a blocking thread for its 1 s connect timeout, so in
    // the first half second after the first connection no attempt has ended
    // and at most max-blocking (3) can have started. Unbounded, all 20 would.
    let accepted = accepted.lock().expect("lock").clone();
    assert_eq!(accepted.len(), 20);
    let first = accepted[0];
    let early = accepted
        .iter()
        .filter(|t| t.duration_since(first) < Duration::from_millis(500))
        .count();
    assert_eq!(early, 3, "{accepted:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_reports_reachability_and_the_presented_key() {
    let sshd = Sshd::start();
    let t = targets(vec![("web", sshd.spec())], SshConfig::default());
    let detail = t
        .probe("web", Duration::from_secs(10))
        .await
        .expect("reachable");
    assert!(detail.contains("host key verified"), "{detail}");
    let shown = t
        .ssh()
        .probe("web", &sshd.target(), Duration::from_secs(10))
        .await
        .expect("probe");
    assert_eq!(
        shown.presented_key,
        sshd.host_key_line().rsplit_once(' ').expect("comment").0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_per_host_are_bounded() {
    let sshd = Sshd::start();
    let t = Arc::new(targets(
        vec![("web", sshd.spec())],
        SshConfig {
            max_sessions_per_host: 2,
            ..SshConfig::default()
        },
    ));
    let calls: Vec<_> = (0..8)
        .map(|_| {
            let t = t.clone();
            tokio::spawn(
                async move { exec(&t, "web", "sleep 0.2; echo ok", limits(30_000, 64)).await },
            )
        })
        .collect();
    for c in calls {
        assert_eq!(c.await.expect("joins").0.expect("runs").stdout, b"ok\n");
    }
    // Eight concurrent commands shared two sessions; unbounded, eight
    // connections would have been opened.
    assert_eq!(sshd.logins(), 2, "{}", sshd.log());
    assert_eq!(t.ssh().idle_sessions("web"), 2);
}
