//! Headless Chromium for the pages a person uses (cashiers, the bank page), driven over WebDriver
//! by the system's `chromedriver`: Debian's `chromium` and `chromium-driver`, which
//! `scripts/install-test-deps.sh` installs where they are missing. Nothing is downloaded.
//!
//! ```no_run
//! # async fn demo() {
//! let browser = paymux_e2e::browser::Browser::start().await;
//! browser.client.goto("http://127.0.0.1:9102/_sandbox/cashier/x").await.unwrap();
//! browser.click_button_starting_with("Pay").await;
//! browser.close().await;
//! # }
//! ```

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use fantoccini::{ClientBuilder, Locator};
use serde_json::json;

/// One chromedriver process and one headless browser session on it.
#[derive(Debug)]
pub struct Browser {
    pub client: fantoccini::Client,
    driver: tokio::process::Child,
}

fn tool(env: &str, default: &str) -> PathBuf {
    let path = std::env::var_os(env).map(PathBuf::from).unwrap_or_else(|| PathBuf::from(default));
    assert!(
        path.exists(),
        "{} is missing: run scripts/install-test-deps.sh (installs Debian's chromium and \
         chromium-driver), or set {env}",
        path.display()
    );
    path
}

impl Browser {
    /// Starts chromedriver on a free loopback port and opens a headless Chromium session.
    pub async fn start() -> Self {
        let chromium = tool("PAYMUX_CHROMIUM", "/usr/bin/chromium");
        let chromedriver = tool("PAYMUX_CHROMEDRIVER", "/usr/bin/chromedriver");
        // chromedriver takes no port 0; a port just freed is the best we can do, so a start that
        // loses the race tries again on another.
        for _ in 0..5 {
            let port = {
                let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                l.local_addr().unwrap().port()
            };
            let mut driver = tokio::process::Command::new(&chromedriver)
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .unwrap();
            let url = format!("http://127.0.0.1:{port}");
            if let Some(client) = Self::connect(&url, &chromium).await {
                return Self { client, driver };
            }
            let _ = driver.kill().await;
        }
        panic!("chromedriver did not start a session");
    }

    async fn connect(url: &str, chromium: &Path) -> Option<fantoccini::Client> {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,900"],
            }),
        );
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector).capabilities(caps.clone()).connect(url).await {
                Ok(c) => return Some(c),
                Err(_) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                Err(_) => return None,
            }
        }
    }

    /// Posts a payment's `form` action (`{"type":"form","method","url","fields"}`) from the
    /// browser, as a merchant page's auto-submitting form does.
    pub async fn submit_form(&self, action: &serde_json::Value) {
        assert_eq!(action["type"], "form", "not a form action: {action}");
        let (method, url) = (&action["method"], &action["url"]);
        let fields = &action["fields"];
        let script = "const [method, url, fields] = arguments;\
            const f = document.createElement('form'); f.method = method; f.action = url;\
            for (const [k, v] of Object.entries(fields)) {\
              const i = document.createElement('input'); i.type = 'hidden'; i.name = k; i.value = v;\
              f.appendChild(i); }\
            document.body.appendChild(f); f.submit();";
        self.client.goto("about:blank").await.unwrap();
        self.client
            .execute(script, vec![method.clone(), url.clone(), fields.clone()])
            .await
            .unwrap();
    }

    /// Waits for a button whose text starts with `label` and clicks it.
    pub async fn click_button_starting_with(&self, label: &str) {
        let xpath = format!("//button[starts-with(normalize-space(.), '{label}')]");
        let button = self
            .client
            .wait()
            .at_most(Duration::from_secs(15))
            .for_element(Locator::XPath(&xpath))
            .await
            .unwrap_or_else(|e| panic!("no button starting with {label:?}: {e}"));
        button.click().await.unwrap();
    }

    /// The text of the page's body once it contains `needle`, waiting up to 15 s.
    pub async fn wait_for_text(&self, needle: &str) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let text = match self.client.find(Locator::Css("body")).await {
                Ok(body) => body.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            if text.contains(needle) {
                return text;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("the page never showed {needle:?}; it shows: {text}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Saves a PNG of the page to `$PAYMUX_SCREENSHOTS/name.png` when that variable is set (how
    /// the pictures in docs/ are made); does nothing otherwise.
    pub async fn screenshot(&self, name: &str) {
        if let Some(dir) = std::env::var_os("PAYMUX_SCREENSHOTS") {
            let png = self.client.screenshot().await.unwrap();
            std::fs::write(Path::new(&dir).join(format!("{name}.png")), png).unwrap();
        }
    }

    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill().await;
    }
}
