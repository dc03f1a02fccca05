//! Headless Chromium driven over WebDriver, for the console's browser
//! tests: Debian's `chromedriver` on a free loopback port, `chromium` with a
//! fresh profile and no background networking (the machine has no outside
//! network), both stopped when the `Browser` is dropped.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};

use crate::free_port;

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A browser session; `client` drives it.
pub struct Browser {
    pub client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl std::fmt::Debug for Browser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Browser")
            .field("driver", &self.driver.id())
            .finish()
    }
}

impl Browser {
    /// # Panics
    /// If Chromium or chromedriver is missing or does not start.
    #[allow(clippy::expect_used)]
    pub async fn start() -> Browser {
        for bin in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(bin).exists(),
                "{bin} is missing: run scripts/test, which installs chromium and chromium-driver"
            );
        }
        let port = free_port();
        // Its own process group, so dropping it stops Chromium too.
        let driver = Command::new(CHROMEDRIVER)
            .args([format!("--port={port}"), "--allowed-ips=127.0.0.1".into()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start chromedriver");
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = reqwest::get(format!("{url}/status"))
                .await
                .ok()
                .filter(|r| r.status().is_success());
            if ready.is_some() {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile = tempfile::tempdir().expect("profile dir");
        let caps = serde_json::json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--window-size=1280,1000",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            },
        });
        let serde_json::Value::Object(caps) = caps else {
            unreachable!("an object")
        };
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&url)
            .await
            .expect("a Chromium session");
        Browser {
            client,
            driver,
            _profile: profile,
        }
    }

    /// Go to `url` (the page then renders itself: wait with `wait_text`).
    ///
    /// # Panics
    /// If the page does not load.
    #[allow(clippy::expect_used)]
    pub async fn open(&self, url: &str) {
        self.client.goto(url).await.expect("navigate");
    }

    /// Wait (up to `within`) until the element at `css` exists and its
    /// text contains `text`; returns the text.
    ///
    /// # Panics
    /// With the page's main text when it never does.
    pub async fn wait_text(&self, css: &str, text: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(el) = self.client.find(Locator::Css(css)).await
                && let Ok(t) = el.text().await
                && t.contains(text)
            {
                return t;
            }
            if Instant::now() > deadline {
                let body = self.main_text().await;
                panic!("{css} never showed {text:?} within {within:?}; the page says:\n{body}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The visible text of the page's `<main>` (for failure messages).
    pub async fn main_text(&self) -> String {
        match self.client.find(Locator::Css("main")).await {
            Ok(el) => el.text().await.unwrap_or_default(),
            Err(e) => format!("(no <main>: {e})"),
        }
    }

    /// Click the button (or link) whose text contains `label`, inside `scope`
    /// (a CSS selector).
    ///
    /// # Panics
    /// If there is none.
    pub async fn click(&self, scope: &str, label: &str) {
        let xpath = format!(
            "//*[self::button or self::a][contains(normalize-space(.), {})]",
            xpath_literal(label)
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(root) = self.client.find(Locator::Css(scope)).await
                && let Ok(el) = root.find(Locator::XPath(&xpath)).await
                && el.click().await.is_ok()
            {
                return;
            }
            if Instant::now() > deadline {
                let body = self.main_text().await;
                panic!("no clickable {label:?} in {scope}; the page says:\n{body}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Type `text` into the input labelled `label` inside `scope`.
    ///
    /// # Panics
    /// If there is no such input.
    #[allow(clippy::expect_used)]
    pub async fn fill(&self, scope: &str, label: &str, text: &str) {
        let root = self.client.find(Locator::Css(scope)).await.expect("scope");
        let xpath = format!(
            ".//label[contains(normalize-space(.), {})]",
            xpath_literal(label)
        );
        let l = root
            .find(Locator::XPath(&xpath))
            .await
            .unwrap_or_else(|e| panic!("no label {label:?} in {scope}: {e}"));
        let id = l
            .attr("for")
            .await
            .expect("for")
            .expect("a label for an input");
        let input = self
            .client
            .find(Locator::Id(&id))
            .await
            .expect("labelled input");
        input.clear().await.expect("clear");
        input.send_keys(text).await.expect("type");
    }

    /// Save a PNG of the window to `dir/name.png`.
    ///
    /// # Panics
    /// If it cannot be taken or written.
    #[allow(clippy::expect_used)]
    pub async fn screenshot(&self, dir: &Path, name: &str) -> PathBuf {
        std::fs::create_dir_all(dir).expect("screenshot dir");
        let png = self.client.screenshot().await.expect("screenshot");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write screenshot");
        path
    }

    /// End the session (Chromium exits) and stop chromedriver.
    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.driver.id()) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = self.driver.wait();
    }
}

/// `s` as an XPath string literal (XPath 1.0 has no escapes).
fn xpath_literal(s: &str) -> String {
    if !s.contains('"') {
        format!("\"{s}\"")
    } else if !s.contains('\'') {
        format!("'{s}'")
    } else {
        let parts: Vec<String> = s.split('"').map(|p| format!("\"{p}\"")).collect();
        format!("concat({})", parts.join(", '\"', "))
    }
}
