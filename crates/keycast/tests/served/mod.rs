//! A `keycast serve …` process for the CLI tests: started, waited for, stopped by SIGTERM.

#![allow(dead_code)]

pub mod gst;
pub mod stack;

use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A served role (`keycast serve …`); killed if the test ends before it stops.
pub struct Served {
    child: Child,
    log: PathBuf,
}

impl Drop for Served {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Served {
    /// Runs `keycast ARGS` with its log (standard error) in `log`, standard output beside it, and waits until every port in
    /// `ports` accepts connections (at most 30 s).
    pub fn start(args: &[&str], log: PathBuf, ports: &[u16]) -> Self {
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_keycast"))
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(fs::File::create(log.with_extension("out")).unwrap())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut served = Served { child, log };
        let deadline = Instant::now() + Duration::from_secs(30);
        for port in ports {
            let addr = SocketAddr::from(([127, 0, 0, 1], *port));
            while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
                if let Ok(Some(status)) = served.child.try_wait() {
                    panic!("keycast exited early ({status}):\n{}", served.log_text());
                }
                assert!(Instant::now() < deadline, "keycast not listening on {port}:\n{}", served.log_text());
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        served
    }

    /// SIGKILL (`kill -9`): no clean-up runs in the process.
    pub fn kill_hard(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// What the process printed on standard output (kept beside the log, extension `out`).
    pub fn stdout_text(&self) -> String {
        fs::read_to_string(self.log.with_extension("out")).unwrap_or_default()
    }

    /// SIGINT (what ctrl-c sends), then waits (at most 20 s) for the process to exit.
    pub fn interrupt(&mut self) -> std::process::ExitStatus {
        self.signal("-INT")
    }

    /// SIGTERM, then waits (at most 20 s) for a clean exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.signal("-TERM")
    }

    fn signal(&mut self, signal: &str) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        assert!(std::process::Command::new("kill").args([signal, &pid]).status().unwrap().success());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "keycast did not stop on {signal}:\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
