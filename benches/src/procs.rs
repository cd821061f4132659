//! Child processes for benchmarks: start, wait for the port, measure RSS,
//! kill on drop.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process killed on drop, with every process of its group (a
/// multi-worker server's workers outlive a killed parent otherwise).
pub struct Proc {
    pub child: Child,
    pub addr: SocketAddr,
    group: bool,
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.group {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", self.child.id())])
                .status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    /// Resident set size in bytes (Linux `/proc`).
    pub fn rss_bytes(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))?
            .split_whitespace()
            .nth(1)?
            .parse::<u64>()
            .ok()
            .map(|kb| kb * 1024)
    }
}

/// Start a `switchyard` subcommand that logs JSON with an `addr` field on
/// its "listening" line, and wait for that line.
/// With `cpus`, the process is pinned to those CPUs (`taskset -c`).
pub fn start_switchyard(
    bin: &str,
    args: &[&str],
    env: &[(&str, &str)],
    cpus: Option<&str>,
) -> anyhow::Result<Proc> {
    let mut cmd = match cpus {
        Some(c) => {
            let mut cmd = Command::new("taskset");
            cmd.args(["-c", c, bin]);
            cmd
        }
        None => Command::new(bin),
    };
    cmd.args(args).stdout(Stdio::null()).stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn()?;
    let stderr = child
        .stderr
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stderr"))?;
    // Read stderr on a thread (and keep draining it, so the child never
    // blocks on a full pipe); wait for the address with a deadline.
    let (tx, rx) = std::sync::mpsc::channel::<SocketAddr>();
    let mut log_file = match std::env::var("SWITCHYARD_BENCH_LOG_DIR") {
        Ok(dir) => Some(std::fs::File::create(format!(
            "{dir}/{}.log",
            args.first().unwrap_or(&"proc")
        ))?),
        Err(_) => None,
    };
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(f) = log_file.as_mut() {
                use std::io::Write;
                let _ = writeln!(f, "{line}");
            }
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                && v["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("listening"))
                && let Some(addr) = v["addr"].as_str().and_then(|a| a.parse().ok())
            {
                let _ = tx.send(addr);
            }
        }
    });
    if let Ok(addr) = rx.recv_timeout(Duration::from_secs(30)) {
        return Ok(Proc {
            child,
            addr,
            group: false,
        });
    }
    let _ = child.kill();
    anyhow::bail!("{bin} {args:?} did not report its address")
}

/// Start any command and wait until `addr` accepts TCP connections.
pub fn start_command(
    program: &str,
    args: &[&str],
    addr: SocketAddr,
    env: &[(&str, &str)],
) -> anyhow::Result<Proc> {
    let mut cmd = Command::new(program);
    cmd.args(args).stdout(Stdio::null()).stderr(Stdio::null());
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn()?;
    let proc = Proc {
        child,
        addr,
        group: true,
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(proc);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    anyhow::bail!("{program} did not open {addr} within 120 s")
}

/// A free TCP port on 127.0.0.1.
pub fn free_addr() -> anyhow::Result<SocketAddr> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?)
}

/// Pin this process (all its threads) to `cpus`.
pub fn pin_self(cpus: &str) -> anyhow::Result<()> {
    let status = Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &std::process::id().to_string()])
        .stdout(Stdio::null())
        .status()?;
    anyhow::ensure!(status.success(), "taskset failed");
    Ok(())
}
