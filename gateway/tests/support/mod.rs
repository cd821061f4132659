//! Test fixtures: the real `switchyard` binary on port 0, in front of
//! in-process fake upstreams.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

#[allow(unused_imports, reason = "each test file uses its own part")]
pub use switchyard_fakes::{FakeConfig, FakeUpstream, Fault};

/// Start a fake upstream on a free port.
pub async fn fake() -> FakeUpstream {
    FakeUpstream::start("127.0.0.1:0".parse().unwrap(), FakeConfig::default())
        .await
        .unwrap()
}

/// A running gateway process; killed on drop.
pub struct Gateway {
    pub child: Child,
    pub addr: SocketAddr,
    /// Log lines after the "listening" line.
    pub logs: mpsc::Receiver<String>,
    /// Log lines before the "listening" line.
    pub startup: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Gateway {
    /// Write `config` to a temp file and start `switchyard serve` on it.
    pub fn start(config: &str, env: &[(&str, &str)]) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("switchyard.toml");
        std::fs::write(&path, config).unwrap();
        let path = path.to_str().unwrap().to_owned();
        Gateway::spawn(
            &["serve", "--listen", "127.0.0.1:0", "--config", &path],
            env,
            dir,
        )
    }

    /// Start `switchyard ARGS…` (any server subcommand) in `dir` and wait for its
    /// `listening…` log line, which carries its address.
    pub fn spawn(args: &[&str], env: &[(&str, &str)], dir: tempfile::TempDir) -> Gateway {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchyard"));
        // In its own directory: relative defaults (`data/access.sqlite3`)
        // land there, never in the source tree.
        cmd.args(args)
            .current_dir(dir.path())
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut startup = Vec::new();
        let addr = loop {
            let line = rx
                .recv_timeout(Duration::from_secs(20))
                .expect("switchyard did not log `listening` within 20 s");
            let v: serde_json::Value = match serde_json::from_str(&line) {
                Ok(v) => v,
                Err(_) => panic!("switchyard wrote a non-JSON log line: {line}"),
            };
            if v["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("listening"))
            {
                break v["addr"].as_str().unwrap().parse().unwrap();
            }
            startup.push(line);
        };
        Gateway {
            child,
            addr,
            logs: rx,
            startup,
            _dir: dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Log lines received so far (after start-up).
    pub fn drain_logs(&self) -> Vec<String> {
        self.logs.try_iter().collect()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A config with one model group `m` whose deployments are the given fakes,
/// in order, all OpenAI-format, with fast retries.
pub fn ordered_config(fakes: &[&FakeUpstream], extra: &str) -> String {
    let mut c =
        String::from("[retry]\nmax_retries = 2\nbackoff_base_ms = 10\nbackoff_max_ms = 50\n\n");
    c.push_str(extra);
    for (i, f) in fakes.iter().enumerate() {
        c.push_str(&format!(
            "\n[providers.p{i}]\ntype = \"openai_compat\"\nbase_url = \"{}/v1\"\napi_key = {{ env = \"TEST_KEY\" }}\n",
            f.url()
        ));
    }
    c.push_str("\n[[model_groups]]\nname = \"m\"\n");
    for i in 0..fakes.len() {
        c.push_str(&format!(
            "[[model_groups.deployments]]\nprovider = \"p{i}\"\nmodel = \"up{i}\"\ntimeouts = {{ connect_ms = 1000, ttft_ms = 1000, total_ms = 5000 }}\n"
        ));
    }
    c
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

pub fn chat_body(stream: bool) -> serde_json::Value {
    serde_json::json!({
        "model": "m",
        "stream": stream,
        "messages": [{"role": "user", "content": "hello world"}],
    })
}

/// POST the standard chat body (`chat_body(stream)`) to the gateway.
pub async fn post_chat(gw: &Gateway, stream: bool) -> reqwest::Response {
    client()
        .post(gw.url("/v1/chat/completions"))
        .json(&chat_body(stream))
        .send()
        .await
        .unwrap()
}

/// `GET /api/v1/fleet`: the scheduler's view of the fleet.
pub async fn fleet(gw: &Gateway) -> serde_json::Value {
    client()
        .get(gw.url("/api/v1/fleet"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}
