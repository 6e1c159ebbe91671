//! A real browser for tests: Debian's headless Chromium driven through ChromeDriver's
//! W3C WebDriver HTTP API (plain JSON over HTTP, so no client crate is needed).

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::service::agent;

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
/// The W3C key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A headless Chromium session; closed (and the driver stopped) on drop.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
}

impl Browser {
    /// Start ChromeDriver and a headless Chromium session.
    pub fn start() -> Browser {
        for path in [CHROMEDRIVER, CHROMIUM] {
            assert!(
                Path::new(path).exists(),
                "{path} not found: install Debian's chromium and chromium-driver (scripts/setup.sh does)"
            );
        }
        let port = {
            let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
            listener.local_addr().expect("address").port()
        };
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while agent().get(format!("{base}/status")).call().is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let mut browser = Browser {
            driver,
            base,
            session: String::new(),
        };
        let answer = browser.command(
            "POST",
            "/session",
            json!({ "capabilities": { "alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": CHROMIUM,
                    "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                             "--disable-dev-shm-usage", "--window-size=1280,1800",
                             "--no-first-run", "--disable-background-networking"],
                },
            }}}),
        );
        browser.session = answer["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {answer}"))
            .to_string();
        browser
    }

    fn command(&self, method: &str, path: &str, body: Value) -> Value {
        let url = format!("{}{path}", self.base);
        let mut response = match method {
            "GET" => agent().get(&url).call(),
            "DELETE" => agent().delete(&url).call(),
            _ => agent()
                .post(&url)
                .header("Content-Type", "application/json")
                .send(body.to_string().as_bytes()),
        }
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let text = response.body_mut().read_to_string().unwrap_or_default();
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        assert!(
            response.status().is_success(),
            "{method} {path}: {} {text}",
            response.status()
        );
        value["value"].clone()
    }

    fn session_path(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    /// Open a page.
    pub fn goto(&self, url: &str) {
        self.command("POST", &self.session_path("/url"), json!({ "url": url }));
    }

    /// Run a script in the page (its body: `return …;` gives the value).
    pub fn eval(&self, script: &str) -> Value {
        self.command(
            "POST",
            &self.session_path("/execute/sync"),
            json!({ "script": script, "args": [] }),
        )
    }

    /// Wait until `script` returns something truthy; returns it.
    pub fn wait_for(&self, what: &str, timeout: Duration, script: &str) -> Value {
        self.try_wait_for(timeout, script).unwrap_or_else(|| {
            panic!(
                "{what}: timed out after {timeout:?}; the page says:\n{}",
                self.page_text()
            )
        })
    }

    /// Wait until `script` returns something truthy, for at most `timeout`.
    pub fn try_wait_for(&self, timeout: Duration, script: &str) -> Option<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let value = self.eval(script);
            let truthy = match &value {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::String(s) => !s.is_empty(),
                Value::Number(n) => n.as_f64() != Some(0.0),
                _ => true,
            };
            if truthy {
                return Some(value);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// What a failure message shows of the page: its `#verdict` line first (where the page
    /// reports a refused request), then the start of its text. Only the start: a select of
    /// a thousand labels would bury everything else, and a test log keeps only its tail.
    pub fn page_text(&self) -> String {
        let text = self.eval(
            "const v = document.getElementById('verdict'); \
             return 'verdict: ' + (v ? v.textContent : '(none)') + '\\n' + \
             document.body.innerText.slice(0, 3000);",
        );
        text.as_str().unwrap_or("(not text)").to_string()
    }

    /// Type into an element (for a file input: the file's path).
    pub fn send_keys(&self, css: &str, text: &str) {
        let element = self.command(
            "POST",
            &self.session_path("/element"),
            json!({ "using": "css selector", "value": css }),
        );
        let id = element[ELEMENT].as_str().expect("element id").to_string();
        self.command(
            "POST",
            &self.session_path(&format!("/element/{id}/value")),
            json!({ "text": text }),
        );
    }

    /// A PNG screenshot of the window.
    pub fn screenshot(&self) -> Vec<u8> {
        let b64 = self.command("GET", &self.session_path("/screenshot"), Value::Null);
        let text = b64.as_str().expect("base64");
        // A small decoder: the standard alphabet, padding ignored.
        let mut bits = 0u32;
        let mut n = 0;
        let mut out = Vec::with_capacity(text.len() * 3 / 4);
        for byte in text
            .bytes()
            .filter(|b| *b != b'=' && !b.is_ascii_whitespace())
        {
            let v = match byte {
                b'A'..=b'Z' => byte - b'A',
                b'a'..=b'z' => byte - b'a' + 26,
                b'0'..=b'9' => byte - b'0' + 52,
                b'+' => 62,
                b'/' => 63,
                _ => panic!("not base64: {byte}"),
            };
            bits = bits << 6 | u32::from(v);
            n += 6;
            if n >= 8 {
                n -= 8;
                out.push((bits >> n) as u8);
            }
        }
        out
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = agent()
                .delete(format!("{}/session/{}", self.base, self.session))
                .call();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
