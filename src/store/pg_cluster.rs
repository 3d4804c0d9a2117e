//! A throwaway PostgreSQL cluster for tests and benches (never in a release build): one per
//! process, started on first use from the machine's own binaries (Debian's `postgresql`
//! package; `.ci/run` installs it), a fresh database per caller.
//!
//! - `initdb --no-sync` into a temporary directory, `pg_ctl start` on a free loopback port with
//!   the unix socket in that directory. `initdb` refuses to run as root, so as root every
//!   command runs as `nobody` (`runuser`), who owns the directory.
//! - Local (socket) connections are trusted; TCP connections need the superuser's password
//!   ([`Cluster::PASSWORD`]), so tests can exercise passwords, password files and wrong ones.
//! - Stopped when the process ends, however it ends (tests failing, a panic, a signal): a
//!   guard process in its own session waits for EOF on a pipe only this process holds, then
//!   stops the cluster and removes the directory.
//!
//! Tests run the cluster with `fsync` and synchronous commits off (nothing in it outlives the
//! process). Benches that compare durable commits set `SEEDVAULT_PG_DURABLE=1` before the
//! cluster starts, for PostgreSQL's defaults (`fsync`, `synchronous_commit`,
//! `full_page_writes` on), as a real server runs.
//!
//! The binaries are found in `SEEDVAULT_PG_BIN`, else the newest `/usr/lib/postgresql/*/bin`,
//! else `PATH`.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};

/// The running cluster of this process.
pub struct Cluster {
    dir: PathBuf,
    port: u16,
    /// The guard's stdin: closed (and so the cluster stopped) when this process exits.
    _guard: Mutex<Child>,
}

static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();
static DATABASES: AtomicU32 = AtomicU32::new(0);

/// The process's cluster, started on first use; the error says what to install.
pub fn cluster() -> Result<&'static Cluster, String> {
    CLUSTER
        .get_or_init(Cluster::start)
        .as_ref()
        .map_err(Clone::clone)
}

/// A fresh, empty database on the process's cluster: its `postgres://` URL (with the password).
pub async fn fresh_database() -> Result<String, String> {
    let name = fresh_database_name().await?;
    Ok(cluster()?.url(&name))
}

/// A fresh, empty database on the process's cluster: its name (see [`Cluster::url`]).
pub async fn fresh_database_name() -> Result<String, String> {
    fresh_database_name_with("").await
}

/// A fresh, empty database whose default collation is ICU's `en-US` (the order a Debian
/// cluster initialised under `en_US.UTF-8` gives text, which this machine may lack as a libc
/// locale), where `a_2 < a-1 < A0 < B` rather than bytewise `A0 < B < a-1 < a_2`: for proving
/// that text keys order and page bytewise whatever the database's locale. Its URL.
pub async fn fresh_database_in_locale_order() -> Result<String, String> {
    let name =
        fresh_database_name_with(" TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US'")
            .await?;
    Ok(cluster()?.url(&name))
}

async fn fresh_database_name_with(options: &str) -> Result<String, String> {
    let cluster = cluster()?;
    let name = format!(
        "t{}_{}",
        std::process::id(),
        DATABASES.fetch_add(1, Ordering::Relaxed)
    );
    cluster.create_database(&name, options).await?;
    Ok(name)
}

impl Cluster {
    /// The superuser's name.
    pub const USER: &'static str = "seedvault";
    /// The superuser's password, needed over TCP (test-only; the cluster is loopback-only).
    pub const PASSWORD: &'static str = "throwaway-cluster-pw";

    /// The TCP URL of database `name`, with the password.
    pub fn url(&self, name: &str) -> String {
        format!(
            "postgres://{}:{}@127.0.0.1:{}/{name}?sslmode=disable",
            Self::USER,
            Self::PASSWORD,
            self.port
        )
    }

    /// The TCP URL of database `name` without a password.
    pub fn url_without_password(&self, name: &str) -> String {
        format!(
            "postgres://{}@127.0.0.1:{}/{name}?sslmode=disable",
            Self::USER,
            self.port
        )
    }

    /// The directory holding the cluster's data, socket and log (removed when it stops).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The loopback port the cluster listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Options for a superuser connection over the unix socket (trusted, no password).
    pub fn socket_options(&self, database: &str) -> sqlx::postgres::PgConnectOptions {
        sqlx::postgres::PgConnectOptions::new()
            .socket(&self.dir)
            .port(self.port)
            .username(Self::USER)
            .database(database)
    }

    async fn create_database(&self, name: &str, options: &str) -> Result<(), String> {
        use sqlx::Connection as _;
        let mut admin = sqlx::PgConnection::connect_with(&self.socket_options("postgres"))
            .await
            .map_err(|e| format!("cannot connect to the test cluster: {e}"))?;
        sqlx::query(&format!("CREATE DATABASE \"{name}\"{options}"))
            .execute(&mut admin)
            .await
            .map_err(|e| format!("cannot create test database {name}: {e}"))?;
        let _ = admin.close().await;
        Ok(())
    }

    fn start() -> Result<Self, String> {
        let bin = binaries()?;
        let root = running_as_root();
        let dir = private_dir()?;
        let as_owner = |program: &Path| {
            let mut command = if root {
                let mut c = Command::new("runuser");
                c.args(["-u", "nobody", "--"]).arg(program);
                c
            } else {
                Command::new(program)
            };
            command.stdin(Stdio::null());
            command
        };
        if root {
            run(Command::new("chown").arg("nobody").arg(&dir), "chown")?;
        }
        let password_file = dir.join("pw");
        std::fs::write(&password_file, format!("{}\n", Self::PASSWORD))
            .map_err(|e| format!("cannot write the cluster's password file: {e}"))?;
        if root {
            run(
                Command::new("chown").arg("nobody").arg(&password_file),
                "chown",
            )?;
        }
        let data = dir.join("data");
        run(
            as_owner(&bin.join("initdb"))
                .arg("-D")
                .arg(&data)
                .args(["--no-sync", "-E", "UTF8", "--locale=C", "-U", Self::USER])
                .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
                .arg(format!("--pwfile={}", password_file.display())),
            "initdb",
        )?;
        // The guard first: from here on the directory goes away with this process.
        let guard = guard(&bin.join("pg_ctl"), &data, &dir, root)?;
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port()?;
            let durability = if std::env::var_os("SEEDVAULT_PG_DURABLE").is_some() {
                ""
            } else {
                " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            };
            let options = format!(
                "-k {} -p {port} -h 127.0.0.1{durability} -c max_connections=300",
                dir.display()
            );
            let started = run(
                as_owner(&bin.join("pg_ctl"))
                    .arg("-D")
                    .arg(&data)
                    .args(["-o", &options, "-l"])
                    .arg(dir.join("log"))
                    .args(["-w", "-t", "30", "start"]),
                "pg_ctl start",
            );
            match started {
                Ok(()) => {
                    return Ok(Self {
                        dir,
                        port,
                        _guard: Mutex::new(guard),
                    })
                }
                Err(e) => last = e,
            }
        }
        let log = std::fs::read_to_string(dir.join("log")).unwrap_or_default();
        Err(format!("{last}\n{log}"))
    }
}

/// A new directory under the system's temporary directory, readable by its owner only.
fn private_dir() -> Result<PathBuf, String> {
    use std::os::unix::fs::DirBuilderExt;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dir = std::env::temp_dir().join(format!("seedvault-pg-{}-{nanos}", std::process::id()));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|e| format!("cannot create {} for the test cluster: {e}", dir.display()))?;
    Ok(dir)
}

/// The directory holding `initdb` and `pg_ctl`.
fn binaries() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("SEEDVAULT_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .find(|dir| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file())
        .ok_or_else(|| {
            "no PostgreSQL server binaries (initdb, pg_ctl) found: install Debian's `postgresql` package (`.ci/run` does), or set SEEDVAULT_PG_BIN to the directory holding them".to_owned()
        })
}

/// Whether this process runs as root (the owner of `/proc/self` is the effective user).
fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn free_port() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| format!("cannot find a free loopback port: {e}"))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| e.to_string())
}

fn run(command: &mut Command, what: &str) -> Result<(), String> {
    let output = command
        .output()
        .map_err(|e| format!("cannot run {what}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// A process in a session of its own (Ctrl-C on the test run does not reach it) that waits for
/// EOF on its stdin, then stops the cluster and removes `dir`. Only this process holds the pipe's
/// other end, so EOF comes exactly when it exits.
fn guard(pg_ctl: &Path, data: &Path, dir: &Path, root: bool) -> Result<Child, String> {
    let stop = if root {
        "runuser -u nobody -- \"$0\" -D \"$1\" -m immediate -w stop"
    } else {
        "\"$0\" -D \"$1\" -m immediate -w stop"
    };
    let script = format!("cat >/dev/null; {stop} >/dev/null 2>&1; rm -rf \"$2\"");
    let mut child = Command::new("setsid")
        .args(["sh", "-c", &script])
        .arg(pg_ctl)
        .arg(data)
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start the cluster's guard (setsid, sh): {e}"))?;
    // Nothing is ever written; the pipe only has to stay open.
    if let Some(stdin) = child.stdin.as_mut() {
        let _ = stdin.flush();
    }
    Ok(child)
}
