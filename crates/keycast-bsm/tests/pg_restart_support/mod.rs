//! A PostgreSQL cluster of the test's own, which it may stop and start again (the shared CI
//! cluster of `.ci/postgres-setup` serves other tests and is never touched). Made as that script
//! makes its own: `initdb -A trust`, loopback only on a free port, the socket in the cluster's
//! temporary directory, `fsync=off`; as root the directory belongs to `postgres` and the binaries
//! run through `runuser -u postgres --` (initdb refuses to run as root). [`PgCluster`] stops the
//! server and removes the directory when dropped, also when the test fails.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `bin` directory of the newest PostgreSQL under `/usr/lib/postgresql/*/bin` with an
/// `initdb`, or `None`.
pub fn postgres_bin() -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

/// Whether this process runs as root (`id -u` prints 0).
fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A free TCP port on loopback (bound, read and released; the server binds it right after).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// One PostgreSQL cluster in a temporary directory, superuser `keycast`, trust authentication,
/// listening on `127.0.0.1:<port>` only.
pub struct PgCluster {
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
    running: bool,
    // Last: removed after `Drop::drop` stopped the server.
    dir: tempfile::TempDir,
}

impl PgCluster {
    /// Creates the cluster and starts it (blocking: run it on a blocking thread).
    pub fn start_new(bin: PathBuf) -> Self {
        let dir = tempfile::Builder::new().prefix("keycast-pg-restart.").tempdir().unwrap();
        let as_postgres = is_root();
        if as_postgres {
            let out = Command::new("chown").arg("postgres:postgres").arg(dir.path()).output().unwrap();
            assert!(out.status.success(), "chown postgres: {}", String::from_utf8_lossy(&out.stderr));
        }
        let mut cluster = PgCluster { bin, port: free_port(), as_postgres, running: false, dir };
        let data = cluster.data();
        let s = OsStr::new;
        cluster
            .run_ok("initdb", &[s("-D"), data.as_os_str(), s("-A"), s("trust"), s("-U"), s("keycast"), s("--no-sync")]);
        cluster.start();
        cluster
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The cluster's temporary directory (data, socket, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The loopback port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of its `postgres` database.
    pub fn url(&self) -> String {
        format!("postgresql://keycast@127.0.0.1:{}/postgres", self.port)
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.arg("-u").arg("postgres").arg("--").arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    fn run(&self, program: &str, args: &[&OsStr]) -> Output {
        self.command(program).args(args).output().unwrap_or_else(|e| panic!("{program}: {e}"))
    }

    fn run_ok(&self, program: &str, args: &[&OsStr]) {
        let out = self.run(program, args);
        assert!(
            out.status.success(),
            "{program} failed: {}{}\nserver log:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log_tail()
        );
    }

    /// The last lines of the server log.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// `pg_ctl start`, waiting until it accepts connections (blocking).
    pub fn start(&mut self) {
        let options =
            format!("-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=off", self.port, self.dir.path().display());
        let data = self.data();
        let log = self.dir.path().join("log");
        let s = OsStr::new;
        self.run_ok(
            "pg_ctl",
            &[
                s("-D"),
                data.as_os_str(),
                s("-o"),
                s(&options),
                s("-l"),
                log.as_os_str(),
                s("-t"),
                s("20"),
                s("-w"),
                s("start"),
            ],
        );
        self.running = true;
    }

    /// `pg_ctl stop` in `mode` (`fast`: active sessions are terminated; `immediate`: no shutdown
    /// checkpoint), waiting until the server is gone (blocking).
    pub fn stop(&mut self, mode: &str) {
        let data = self.data();
        let s = OsStr::new;
        self.run_ok("pg_ctl", &[s("-D"), data.as_os_str(), s("-m"), s(mode), s("-t"), s("20"), s("-w"), s("stop")]);
        self.running = false;
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if self.running {
            let data = self.data();
            let s = OsStr::new;
            let _ =
                self.run("pg_ctl", &[s("-D"), data.as_os_str(), s("-m"), s("immediate"), s("-s"), s("-w"), s("stop")]);
        }
    }
}
