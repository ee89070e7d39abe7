//! A PostgreSQL database for tests: each test gets a schema of its own
//! (so tests run in parallel) that is dropped when the test ends.
//!
//! The server: `HOOKRELAY_TEST_DATABASE_URL` if set; else the local server
//! on 127.0.0.1:5432 (trust auth, database `test`); else a throwaway
//! cluster started with the installed `initdb`/`pg_ctl` (stopped when the
//! test process exits). Without any of them the test fails and says how to
//! install PostgreSQL: a PostgreSQL test is never silently skipped.
#![allow(dead_code)]

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

/// The base URL of the server tests use (without a schema).
pub fn server_url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(find_server)
}

fn answers(addr: &str) -> bool {
    addr.parse::<SocketAddr>()
        .ok()
        .and_then(|a| TcpStream::connect_timeout(&a, Duration::from_secs(2)).ok())
        .is_some()
}

fn find_server() -> String {
    if let Ok(url) = std::env::var("HOOKRELAY_TEST_DATABASE_URL") {
        return url;
    }
    if answers("127.0.0.1:5432") {
        return "postgres://postgres@127.0.0.1:5432/test?sslmode=disable".into();
    }
    match throwaway_cluster() {
        Ok(url) => url,
        Err(why) => panic!(
            "these tests need PostgreSQL and none was found: nothing answers on \
             127.0.0.1:5432, HOOKRELAY_TEST_DATABASE_URL is not set, and a throwaway \
             cluster could not be started ({why}). Install it (Debian/Ubuntu: \
             `apt-get install postgresql`; the tests then start their own cluster with \
             initdb/pg_ctl), or point HOOKRELAY_TEST_DATABASE_URL at a server where the \
             user may create schemas."
        ),
    }
}

/// `initdb` and `pg_ctl` from PATH or Debian's /usr/lib/postgresql/*/bin.
fn pg_bin(name: &str) -> Option<PathBuf> {
    if let Ok(out) = Command::new("which").arg(name).output() {
        let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if out.status.success() && !path.is_empty() {
            return Some(PathBuf::from(path));
        }
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("bin").join(name))
        .filter(|p| p.exists())
        .collect();
    found.sort();
    found.pop()
}

/// Starts a cluster in a temporary directory on a free port, with a
/// watchdog that stops it when this process exits.
fn throwaway_cluster() -> Result<String, String> {
    let initdb = pg_bin("initdb").ok_or("initdb not found")?;
    let pg_ctl = pg_bin("pg_ctl").ok_or("pg_ctl not found")?;
    let dir = std::env::temp_dir().join(format!("hookrelay-pg-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    // PostgreSQL refuses to run as root: run it as `postgres` then.
    let as_root = std::env::var("USER").map(|u| u == "root").unwrap_or(false)
        || Command::new("id")
            .arg("-u")
            .output()
            .map(|o| o.stdout == b"0\n")
            .unwrap_or(false);
    let run = |program: &PathBuf, args: &[String]| -> Result<(), String> {
        let status = if as_root {
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(program)
                .args(args)
                .stdout(Stdio::null())
                .status()
        } else {
            Command::new(program)
                .args(args)
                .stdout(Stdio::null())
                .status()
        }
        .map_err(|e| e.to_string())?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("{} failed", program.display()))
        }
    };
    if as_root {
        let _ = Command::new("chown")
            .args(["postgres:postgres"])
            .arg(&dir)
            .status();
    }
    let data = dir.join("data").display().to_string();
    run(
        &initdb,
        &[
            "-D".into(),
            data.clone(),
            "-A".into(),
            "trust".into(),
            "-U".into(),
            "postgres".into(),
        ],
    )?;
    let options = format!(
        "-p {port} -h 127.0.0.1 -k {} -c fsync=off -c max_connections=300",
        dir.display()
    );
    run(
        &pg_ctl,
        &[
            "-D".into(),
            data.clone(),
            "-o".into(),
            options,
            "-w".into(),
            "-l".into(),
            dir.join("log").display().to_string(),
            "start".into(),
        ],
    )?;
    // The watchdog reads our end of a pipe: when this process exits the
    // pipe closes, `cat` returns, and the cluster is stopped.
    let stop = format!(
        "cat >/dev/null; {} {} -D {} -m immediate stop >/dev/null 2>&1",
        if as_root {
            "runuser -u postgres --"
        } else {
            ""
        },
        pg_ctl.display(),
        data
    );
    let child = Command::new("sh")
        .args(["-c", &stop])
        .stdin(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    static WATCHDOG: OnceLock<std::sync::Mutex<std::process::ChildStdin>> = OnceLock::new();
    let _ = WATCHDOG.set(std::sync::Mutex::new(child.stdin.expect("piped")));
    if let Some(w) = WATCHDOG.get() {
        let _ = w.lock().unwrap().flush();
    }
    Ok(format!(
        "postgres://postgres@127.0.0.1:{port}/postgres?sslmode=disable"
    ))
}

/// A schema of one test, dropped (with everything in it) on drop.
pub struct TestSchema {
    /// The server URL.
    pub url: String,
    /// The schema name (`t_` and random hex).
    pub schema: String,
}

impl TestSchema {
    /// A fresh, unique schema name on the test server (created by the store).
    pub fn new() -> Self {
        Self {
            url: server_url().to_string(),
            schema: format!("t_{:016x}", rand::random::<u64>()),
        }
    }

    /// The YAML `store:` block for a gateway on this schema.
    pub fn store_yaml(&self, lease: &str) -> String {
        self.store_yaml_at(&self.url, lease)
    }

    /// The same block reaching the server at another URL (a proxy).
    pub fn store_yaml_at(&self, url: &str, lease: &str) -> String {
        format!(
            "store:\n  postgres:\n    url: \"{url}\"\n    schema: {}\n    pool_size: 8\n    lease: {lease}\n",
            self.schema
        )
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        let url = self.url.clone();
        let schema = self.schema.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok((client, conn)) =
                    tokio_postgres::connect(&url, tokio_postgres::NoTls).await
                {
                    tokio::spawn(conn);
                    let _ = client
                        .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                        .await;
                }
            });
        })
        .join();
    }
}
