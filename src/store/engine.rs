//! Which database engine a deployment names (`database_url`), parsed once at the edge: the
//! embedded SQLite database in the data directory, or a PostgreSQL server.
//!
//! A PostgreSQL URL may carry a password; it is kept out of every `Debug`, `Display` and error
//! message ([`PostgresUrl::redacted`]), and a password file is read only when connecting.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgSslMode};
use url::Url;
use zeroize::Zeroizing;

use super::{StoreError, DATABASE_FILE};

/// The engine and location of the vault's database.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// `seedvault.db` in the data directory (the default).
    Sqlite,
    /// A PostgreSQL server (`postgres://…` or `postgresql://…`).
    Postgres(PostgresUrl),
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sqlite => f.write_str("Sqlite"),
            Self::Postgres(url) => write!(f, "Postgres({url})"),
        }
    }
}

/// Why a `database_url` was refused; the message names the fix and never holds a password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{fix}")]
pub struct DatabaseUrlError {
    /// The value as it may be shown (password replaced).
    pub shown: String,
    pub fix: &'static str,
}

impl DatabaseUrl {
    /// Parses `text` as written in the config: empty or `sqlite:` (the data directory's
    /// database), `sqlite:PATH` / `sqlite://PATH` / a bare path that names that same database
    /// (or the data directory itself), or `postgres://…`.
    pub fn parse(text: &str, data_dir: &Path) -> Result<Self, DatabaseUrlError> {
        let text = text.trim();
        let lower = text.to_ascii_lowercase();
        if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
            return PostgresUrl::parse(text).map(Self::Postgres);
        }
        let path = if text.is_empty() || lower == "sqlite:" || lower == "sqlite://" {
            return Ok(Self::Sqlite);
        } else if let Some(rest) = text
            .strip_prefix("sqlite://")
            .or_else(|| text.strip_prefix("sqlite:"))
        {
            rest
        } else if text.contains("://") {
            return Err(DatabaseUrlError {
                shown: redact_any(text),
                fix: "expected sqlite:PATH or postgres://USER@HOST[:PORT]/DATABASE[?sslmode=verify-full]",
            });
        } else {
            text
        };
        // The SQLite database always lives in the data directory (beside its vault-id marker,
        // backups and WAL); a URL naming another place would split the two silently.
        let path = PathBuf::from(path);
        let same = |a: &Path, b: &Path| {
            a == b || matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y)
        };
        if same(&path, data_dir) || same(&path, &data_dir.join(DATABASE_FILE)) {
            Ok(Self::Sqlite)
        } else {
            Err(DatabaseUrlError {
                shown: text.to_owned(),
                fix: "a SQLite database lives in the data directory as seedvault.db: set data_dir to its directory and leave database_url empty (or sqlite:)",
            })
        }
    }

    /// Whether this is PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        matches!(self, Self::Postgres(_))
    }
}

/// A PostgreSQL connection URL. Its password, if any, never shows: `Debug` and `Display` print
/// [`Self::redacted`].
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresUrl {
    url: Url,
}

/// The `sslmode` values libpq (and sqlx) know.
const SSL_MODES: [&str; 6] = [
    "disable",
    "allow",
    "prefer",
    "require",
    "verify-ca",
    "verify-full",
];

impl PostgresUrl {
    /// Parses and checks a `postgres://` URL: a host, a database, a known `sslmode`.
    pub fn parse(text: &str) -> Result<Self, DatabaseUrlError> {
        let refuse = |fix| DatabaseUrlError {
            shown: redact_any(text),
            fix,
        };
        let url = Url::parse(text).map_err(|_| {
            refuse("not a URL: expected postgres://USER@HOST[:PORT]/DATABASE[?sslmode=verify-full]")
        })?;
        if !matches!(url.scheme(), "postgres" | "postgresql") {
            return Err(refuse("expected the scheme postgres:// or postgresql://"));
        }
        let socket_host = url.query_pairs().any(|(k, _)| k == "host");
        if url.host_str().is_none_or(str::is_empty) && !socket_host {
            return Err(refuse(
                "name the server: postgres://USER@HOST[:PORT]/DATABASE",
            ));
        }
        if url.path().trim_start_matches('/').is_empty() {
            return Err(refuse(
                "name the database after the host: postgres://USER@HOST[:PORT]/DATABASE",
            ));
        }
        for (key, value) in url.query_pairs() {
            if (key == "sslmode" || key == "ssl-mode") && !SSL_MODES.contains(&value.as_ref()) {
                return Err(refuse(
                    "sslmode must be one of disable, allow, prefer, require, verify-ca, verify-full (verify-full checks the server's certificate and name)",
                ));
            }
        }
        PgConnectOptions::from_str(url.as_str()).map_err(|_| {
            refuse(
                "not a PostgreSQL URL sqlx can use: expected postgres://USER@HOST[:PORT]/DATABASE",
            )
        })?;
        Ok(Self { url })
    }

    /// The URL with its password (if any) replaced by `***`: what logs and messages show.
    pub fn redacted(&self) -> String {
        let mut shown = self.url.clone();
        if shown.password().is_some() {
            let _ = shown.set_password(Some("***"));
        }
        shown.to_string()
    }

    /// Whether the URL itself carries a password.
    pub fn has_password(&self) -> bool {
        self.url.password().is_some()
    }

    /// The options to connect with: the URL's (including `sslmode`, whose default is
    /// `prefer`, as libpq's), with the password from `password_file` when the URL has none.
    /// Without either, sqlx falls back to `PGPASSWORD` and the `PGPASSFILE` / `~/.pgpass` file,
    /// as libpq does.
    pub fn connect_options(
        &self,
        password_file: Option<&Path>,
    ) -> Result<PgConnectOptions, StoreError> {
        let options = PgConnectOptions::from_str(self.url.as_str())
            .map_err(|e| StoreError::Postgres(format!("cannot use {}: {e}", self.redacted())))?;
        match password_file {
            Some(path) if !self.has_password() => {
                let password = read_password_file(path)?;
                Ok(options.password(&password))
            }
            _ => Ok(options),
        }
    }

    /// The `sslmode` in force.
    pub fn ssl_mode(&self) -> PgSslMode {
        PgConnectOptions::from_str(self.url.as_str())
            .map(|o| o.get_ssl_mode())
            .unwrap_or(PgSslMode::Prefer)
    }
}

impl std::fmt::Debug for PostgresUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl std::fmt::Display for PostgresUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// Reads a password file: its first line, without the line ending (the rest is ignored, so a
/// file ending in a newline works).
fn read_password_file(path: &Path) -> Result<Zeroizing<String>, StoreError> {
    let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
        StoreError::Postgres(format!(
            "cannot read the database password file {}: {e} — check database_password_file and that this user may read it",
            path.display()
        ))
    })?);
    let first = text.lines().next().unwrap_or_default();
    if first.is_empty() {
        return Err(StoreError::Postgres(format!(
            "the database password file {} is empty — write the password on its first line",
            path.display()
        )));
    }
    Ok(Zeroizing::new(first.to_owned()))
}

/// `text` with anything between `://USER:` and `@` replaced, for messages about a URL that did
/// not even parse.
fn redact_any(text: &str) -> String {
    let Some((scheme, rest)) = text.split_once("://") else {
        return text.to_owned();
    };
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
            let hidden = if userinfo.contains(':') { ":***" } else { "" };
            format!("{scheme}://{user}{hidden}@{host}{tail}")
        }
        None => text.to_owned(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_is_the_default_and_a_sqlite_url_must_name_the_data_directory_database() {
        let dir = Path::new("/srv/seedvault");
        for text in [
            "",
            "sqlite:",
            "sqlite:/srv/seedvault",
            "sqlite:///srv/seedvault/seedvault.db",
            "/srv/seedvault/seedvault.db",
        ] {
            assert_eq!(
                DatabaseUrl::parse(text, dir).unwrap(),
                DatabaseUrl::Sqlite,
                "{text}"
            );
        }
        let elsewhere = DatabaseUrl::parse("sqlite:/tmp/other.db", dir).unwrap_err();
        assert!(elsewhere.fix.contains("data_dir"), "{elsewhere}");
        let unknown = DatabaseUrl::parse("mysql://u:pw@h/db", dir).unwrap_err();
        assert_eq!(unknown.shown, "mysql://u:***@h/db");
    }

    #[test]
    fn a_postgres_url_keeps_its_password_out_of_every_rendering() {
        let url = DatabaseUrl::parse(
            "postgres://vault:s3cret-pw@db.example.org:5433/seedvault?sslmode=verify-full",
            Path::new("d"),
        )
        .unwrap();
        let DatabaseUrl::Postgres(pg) = &url else {
            panic!("{url:?}")
        };
        for shown in [
            format!("{url:?}"),
            format!("{pg}"),
            format!("{pg:?}"),
            pg.redacted(),
        ] {
            assert!(!shown.contains("s3cret-pw"), "{shown}");
            assert!(
                shown.contains("vault:***@db.example.org:5433/seedvault"),
                "{shown}"
            );
        }
        assert!(matches!(pg.ssl_mode(), PgSslMode::VerifyFull));
    }

    #[test]
    fn bad_postgres_urls_are_refused_with_the_fix_and_without_the_password() {
        for (text, fix) in [
            (
                "postgres://u:pw@host/db?sslmode=strict",
                "sslmode must be one of",
            ),
            ("postgres://u:pw@host", "name the database"),
            ("postgres://u:pw@/db", "not a URL"),
        ] {
            let error = PostgresUrl::parse(text).unwrap_err();
            assert!(error.fix.contains(fix), "{text}: {error}");
            assert!(!error.shown.contains("pw@"), "{}", error.shown);
        }
    }

    #[test]
    fn the_password_file_supplies_the_password_unless_the_url_has_one() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "from-file\n").unwrap();
        let bare = PostgresUrl::parse("postgres://vault@h/db").unwrap();
        // sqlx keeps the password private; the options' Debug shows it, so compare there.
        let with_file = format!("{:?}", bare.connect_options(Some(&file)).unwrap());
        assert!(with_file.contains("\"from-file\""), "{with_file}");
        let own = PostgresUrl::parse("postgres://vault:in-url@h/db").unwrap();
        let kept = format!("{:?}", own.connect_options(Some(&file)).unwrap());
        assert!(kept.contains("\"in-url\"") && !kept.contains("from-file"));
        std::fs::write(&file, "").unwrap();
        let empty = bare.connect_options(Some(&file)).unwrap_err().to_string();
        assert!(empty.contains("is empty"), "{empty}");
    }
}
