//! A `scion-edge serve` process for tests: started with its HTTP API on a free port,
//! output and log in files, stopped with SIGTERM (or killed if the test fails).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{model, ort_lib, records};

/// A running service.
pub struct Service {
    child: Option<Child>,
    /// Base URL of its HTTP API (if started with one).
    pub url: String,
    /// Its JSON-lines output file.
    pub output: PathBuf,
    /// Its log file.
    pub log: PathBuf,
}

/// An HTTP client that reports statuses instead of failing on them.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

impl Service {
    /// Start `serve` with `args` (plus the test model unless `args` names one) and wait
    /// until its HTTP API listens (when `--listen` is among the args).
    pub fn start(dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> Service {
        let output = dir.join("frames.jsonl");
        let log = dir.join("serve.log");
        let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("scion-edge"));
        cmd.env("ORT_DYLIB_PATH", ort_lib())
            .env("SCION_EDGE_CONFIG", "/dev/null")
            .env_remove("RUST_LOG")
            .arg("serve")
            .args(args)
            .arg("--output")
            .arg(&output)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"));
        if !args.contains(&"--model") && !args.contains(&"--config") {
            cmd.arg("--model").arg(model());
        }
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("start scion-edge serve");
        let mut service = Service {
            child: Some(child),
            url: String::new(),
            output,
            log,
        };
        if args.contains(&"--listen") {
            let deadline = Instant::now() + Duration::from_secs(120);
            loop {
                let text = service.log_text();
                if let Some(rest) = text.split("HTTP API on ").nth(1) {
                    service.url = rest.lines().next().unwrap_or("").trim().to_string();
                    break;
                }
                if let Some(Ok(Some(status))) = service.child.as_mut().map(Child::try_wait) {
                    panic!("serve exited with {status}:\n{text}");
                }
                assert!(Instant::now() < deadline, "no HTTP API:\n{text}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        service
    }

    /// What it logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The records written so far.
    pub fn records(&self) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(&self.output).unwrap_or_default();
        // The last line may be half-written.
        let complete = text.rfind('\n').map_or("", |i| &text[..=i]);
        records(complete)
    }

    /// Wait until `done` holds for the records, or fail after `timeout`.
    pub fn wait_for(
        &self,
        timeout: Duration,
        what: &str,
        done: impl Fn(&[serde_json::Value]) -> bool,
    ) {
        let deadline = Instant::now() + timeout;
        while !done(&self.records()) {
            assert!(
                Instant::now() < deadline,
                "{what}: timed out\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// GET a path as text: (status, body).
    pub fn get(&self, path: &str) -> (u16, String) {
        let mut response = agent()
            .get(format!("{}{path}", self.url))
            .call()
            .expect("GET");
        let status = response.status().as_u16();
        (status, response.body_mut().read_to_string().expect("body"))
    }

    /// POST bytes with optional headers: (status, JSON body).
    pub fn post(
        &self,
        path: &str,
        body: &[u8],
        headers: &[(&str, &str)],
    ) -> (u16, serde_json::Value) {
        let mut request = agent().post(format!("{}{path}", self.url));
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let mut response = request.send(body).expect("POST");
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
        )
    }

    /// SIGTERM, then the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        let status = Command::new("sh")
            .args(["-c", &format!("kill -TERM {}", child.id())])
            .status()
            .expect("kill");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "serve did not stop within 30 s of SIGTERM\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Wait for the process to end by itself.
    pub fn wait(&mut self, timeout: Duration) -> Option<i32> {
        let mut child = self.child.take()?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("serve did not finish in time\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
