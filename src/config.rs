//! Configuration: defaults, then an optional `seedvault.toml`, then `SEEDVAULT_*` environment
//! variables, then command-line flags — each overriding the one before. The result is
//! validated once; a bad value stops start-up with the setting's name and the fix.
//!
//! Every setting is declared once, in the [`settings!`] table below: its name (the key in
//! `seedvault.toml`), the type read from file/env/flag and the validated type, the environment
//! variable, the flag (where one exists), the default, the check, and the help text. The file
//! reader, the environment reader, the clap flags' help ([`flag_help`]), [`SETTINGS`] and the
//! README's table (checked by a test) all come from it.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use url::Url;

use crate::directory::ldap::{AttributeMap, LdapSettings};
use crate::store::engine::DatabaseUrl;

/// Default file read from the working directory when `--config` is not given.
pub const DEFAULT_CONFIG_FILE: &str = "seedvault.toml";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("config file {path}: {reason}")]
    Parse { path: String, reason: String },
    #[error("{setting} = '{value}' is invalid: {fix}")]
    Invalid {
        setting: &'static str,
        value: String,
        fix: &'static str,
    },
    #[error("[[siem]] sink {which}: {problem}")]
    Sink { which: String, problem: String },
}

/// One setting as declared in the table: what the README, `--help` and error messages say.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    /// The key in `seedvault.toml` (and the name in error messages).
    pub name: &'static str,
    /// The environment variable.
    pub env: &'static str,
    /// The long flag without dashes, where the command line has one.
    pub flag: Option<&'static str>,
    /// The default as the README's table shows it.
    pub default: &'static str,
    help: &'static str,
}

impl Setting {
    /// What the setting is for, one sentence.
    pub fn help(&self) -> &'static str {
        self.help.trim()
    }
}

/// A value read from the environment (file values come through serde, flags through clap).
trait FromEnv: Sized {
    fn from_env(var: &'static str, text: &str) -> Result<Self, ConfigError>;
}

impl FromEnv for String {
    fn from_env(_: &'static str, text: &str) -> Result<Self, ConfigError> {
        Ok(text.to_owned())
    }
}

impl FromEnv for PathBuf {
    fn from_env(_: &'static str, text: &str) -> Result<Self, ConfigError> {
        Ok(PathBuf::from(text))
    }
}

impl FromEnv for u32 {
    fn from_env(var: &'static str, text: &str) -> Result<Self, ConfigError> {
        text.trim().parse().map_err(|_| ConfigError::Invalid {
            setting: var,
            value: text.to_owned(),
            fix: "expected a whole number",
        })
    }
}

impl FromEnv for Vec<crate::siem::SinkSettings> {
    /// The environment cannot hold TOML tables: the same objects as a JSON array.
    fn from_env(var: &'static str, text: &str) -> Result<Self, ConfigError> {
        serde_json::from_str(text).map_err(|e| ConfigError::Parse {
            path: var.to_owned(),
            reason: format!("{e} — expected a JSON array of sink objects, e.g. [{{\"name\":\"splunk\",\"kind\":\"http\",\"url\":\"https://…\"}}]"),
        })
    }
}

/// Declares every setting once; see the module documentation.
macro_rules! settings {
    ($(
        $(#[doc = $help:literal])+
        $name:ident: $raw:ty => $final:ty {
            env: $env:literal,
            flag: $flag:expr,
            default($o:pat): $default:expr,
            shown: $shown:literal,
            check: $check:expr $(,)?
        }
    )*) => {
        /// The validated configuration.
        #[derive(Debug, Clone)]
        pub struct Config {
            $( $(#[doc = $help])+ pub $name: $final, )*
        }

        /// Settings as they appear in the file, the environment or flags: all optional.
        #[derive(Debug, Default, Clone, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct Overrides {
            $( pub $name: Option<$raw>, )*
        }

        /// Every setting, in the order of the README's table.
        pub const SETTINGS: &[Setting] = &[
            $( Setting {
                name: stringify!($name),
                env: $env,
                flag: $flag,
                default: $shown,
                help: concat!($($help),+),
            }, )*
        ];

        impl Overrides {
            fn apply(&mut self, other: Overrides) {
                $( if other.$name.is_some() { self.$name = other.$name; } )*
            }

            /// Reads `SEEDVAULT_*` variables through `get` (the process environment in production).
            pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
                Ok(Self {
                    $( $name: get($env).map(|v| <$raw as FromEnv>::from_env($env, &v)).transpose()?, )*
                })
            }
        }

        impl Config {
    /// `busy_timeout_seconds` as the store takes it.
    pub fn busy_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.busy_timeout_seconds.into())
    }

            /// Defaults with the given overrides, validated in table order.
            pub fn validate(o: Overrides) -> Result<Self, ConfigError> {
                $(
                    let $name: $final = {
                        let $o = &o;
                        let raw: $raw = o.$name.clone().unwrap_or_else(|| $default);
                        ($check)(stringify!($name), raw)?
                    };
                )*
                Ok(Self { $( $name, )* })
            }
        }
    };
}

settings! {
    /// Directory holding the vault database.
    data_dir: PathBuf => PathBuf {
        env: "SEEDVAULT_DATA_DIR",
        flag: Some("data-dir"),
        default(_): PathBuf::from("seedvault-data"),
        shown: "`./seedvault-data`",
        check: not_empty("give a directory path"),
    }
    /// The database: empty or `sqlite:` for `seedvault.db` in `data_dir`, or
    /// `postgres://USER@HOST[:PORT]/DATABASE[?sslmode=verify-full]`. Commands that still need a
    /// part not yet ported refuse a `postgres://` URL and say which (`seedvault --help`,
    /// docs/ARCHITECTURE.md "PostgreSQL"). The password never shows in logs or messages.
    database_url: String => DatabaseUrl {
        env: "SEEDVAULT_DATABASE_URL",
        flag: Some("database-url"),
        default(o): String::new(),
        shown: "SQLite in `data_dir`",
        check: |name, v: String| database_url(name, &v, o.data_dir.as_deref()),
    }
    /// File holding the PostgreSQL password when `database_url` has none (its first line); without
    /// it, `PGPASSWORD` and `PGPASSFILE` / `~/.pgpass` apply as for libpq.
    database_password_file: PathBuf => Option<PathBuf> {
        env: "SEEDVAULT_DATABASE_PASSWORD_FILE",
        flag: None,
        default(_): PathBuf::new(),
        shown: "none",
        check: |_, v: PathBuf| Ok(Some(v).filter(|p| !p.as_os_str().is_empty())),
    }
    /// Connections each process keeps to PostgreSQL (ignored on SQLite). Every instance has its
    /// own pool: the server's `max_connections` must cover the instances' sum, the CLI and
    /// each running scheduled job's lock connection.
    database_pool_size: u32 => u32 {
        env: "SEEDVAULT_DATABASE_POOL_SIZE",
        flag: None,
        default(_): 16,
        shown: "`16`",
        check: at_least_one("expected at least 1 connection"),
    }
    /// Address to listen on.
    bind: String => SocketAddr {
        env: "SEEDVAULT_BIND",
        flag: Some("bind"),
        default(_): "127.0.0.1:8080".to_owned(),
        shown: "`127.0.0.1:8080`",
        check: socket_addr,
    }
    /// The public origin browsers use; WebAuthn and the `Origin` check are bound to it.
    origin: String => Url {
        env: "SEEDVAULT_ORIGIN",
        flag: Some("origin"),
        default(o): default_origin(o.bind.as_deref()),
        shown: "`http://localhost:PORT`, PORT from `bind`",
        check: parse_origin,
    }
    /// A `tracing` filter such as `info` or `seedvault=debug`.
    log: String => String {
        env: "SEEDVAULT_LOG",
        flag: None,
        default(_): "info".to_owned(),
        shown: "`info`",
        check: |_, v| Ok(v),
    }
    /// Largest seed file accepted by `POST /api/v1/imports` and the import page, in MiB (the
    /// command line reads files of any size). Every other request body stays under axum's 2 MB.
    max_upload_mb: u32 => u32 {
        env: "SEEDVAULT_MAX_UPLOAD_MB",
        flag: None,
        default(_): 64,
        shown: "`64`",
        check: at_least_one("expected at least 1 MiB"),
    }
    /// Seconds a write waits for another process's database lock (a CLI command writing beside the server) before it is refused with 503.
    busy_timeout_seconds: u32 => u32 {
        env: "SEEDVAULT_BUSY_TIMEOUT_SECONDS",
        flag: None,
        default(_): 10,
        shown: "`10`",
        check: at_least_one("expected at least 1 second"),
    }
    /// Days an escrowed seed may wait for delivery before it is purged.
    retention_days: u32 => u32 {
        env: "SEEDVAULT_RETENTION_DAYS",
        flag: None,
        default(_): 30,
        shown: "`30` (a policy may set fewer)",
        check: at_least_one("expected at least 1 day"),
    }
    /// Hours an operator invite stays valid.
    invite_ttl_hours: u32 => u32 {
        env: "SEEDVAULT_INVITE_TTL_HOURS",
        flag: None,
        default(_): 24,
        shown: "`24`",
        check: at_least_one("expected at least 1 hour"),
    }
    /// Minutes of inactivity after which a session ends.
    session_idle_minutes: u32 => u32 {
        env: "SEEDVAULT_SESSION_IDLE_MINUTES",
        flag: None,
        default(_): 15,
        shown: "`15`",
        check: at_least_one("expected at least 1 minute"),
    }
    /// Hours after sign-in after which a session ends regardless of activity.
    session_absolute_hours: u32 => u32 {
        env: "SEEDVAULT_SESSION_ABSOLUTE_HOURS",
        flag: None,
        default(_): 8,
        shown: "`8`",
        check: at_least_one("expected at least 1 hour"),
    }
    /// Directory of policy files.
    policies_dir: PathBuf => PathBuf {
        env: "SEEDVAULT_POLICIES_DIR",
        flag: None,
        default(_): PathBuf::from("policies"),
        shown: "`./policies` (built-in copies when absent)",
        check: not_empty("give a directory path"),
    }
    /// Failed sign-ins allowed per client within `sign_in_address_window_minutes`; past it that
    /// client gets no new sign-in challenge until the window moves on. Never counted per
    /// operator name: anyone could lock a named operator out.
    sign_in_attempts_per_address: u32 => u32 {
        env: "SEEDVAULT_SIGN_IN_ATTEMPTS_PER_ADDRESS",
        flag: None,
        default(_): 20,
        shown: "`20`",
        check: at_least_one("expected at least 1 attempt"),
    }
    /// Minutes over which failed sign-ins per client address are counted.
    sign_in_address_window_minutes: u32 => u32 {
        env: "SEEDVAULT_SIGN_IN_ADDRESS_WINDOW_MINUTES",
        flag: None,
        default(_): 15,
        shown: "`15`",
        check: at_least_one("expected at least 1 minute"),
    }
    /// Reverse proxies (IP addresses or CIDR networks, comma-separated in the environment) whose
    /// `X-Forwarded-For` / `Forwarded` header names the real client; from any other peer the
    /// header is ignored and the peer's address is the client.
    trusted_proxies: Vec<String> => Vec<IpNetwork> {
        env: "SEEDVAULT_TRUSTED_PROXIES",
        flag: None,
        default(_): Vec::new(),
        shown: "none: the peer address is the client",
        check: ip_networks,
    }
    /// Hours over which a policy's `reveals_per_token_per_day` is counted.
    reveal_token_window_hours: u32 => u32 {
        env: "SEEDVAULT_REVEAL_TOKEN_WINDOW_HOURS",
        flag: None,
        default(_): 24,
        shown: "`24`",
        check: at_least_one("expected at least 1 hour"),
    }
    /// Minutes over which a policy's `reveals_per_operator_per_hour` is counted.
    reveal_operator_window_minutes: u32 => u32 {
        env: "SEEDVAULT_REVEAL_OPERATOR_WINDOW_MINUTES",
        flag: None,
        default(_): 60,
        shown: "`60`",
        check: at_least_one("expected at least 1 minute"),
    }
    /// The directory of record's LDAP source, the `[directory.ldap]` table (url, starttls, bind_dn,
    /// bind_password_file, base_dn, filter, sync_interval_minutes, timeout_seconds,
    /// `[directory.ldap.attributes]`; see docs/DIRECTORY.md); in the environment, the table's
    /// body as TOML. The bind password never goes here: a file or `SEEDVAULT_DIRECTORY_LDAP_BIND_PASSWORD`.
    directory: DirectorySection => Option<LdapSettings> {
        env: "SEEDVAULT_DIRECTORY",
        flag: None,
        default(_): DirectorySection::default(),
        shown: "none: the directory comes from CSV only",
        check: directory_settings,
    }
    /// SMTP server for notices to token owners (`[smtp] host` in the file). Without it notices
    /// are recorded as not sent and the dashboard says so.
    smtp_host: String => Option<String> {
        env: "SEEDVAULT_SMTP_HOST",
        flag: None,
        default(_): String::new(),
        shown: "none: notices are recorded, not sent",
        check: |_, v: String| Ok(Some(v.trim().to_owned()).filter(|h| !h.is_empty())),
    }
    /// How the connection to the SMTP server is protected: `starttls`, `tls` (implicit TLS) or
    /// `none` (only for a server on loopback).
    smtp_security: String => SmtpSecurity {
        env: "SEEDVAULT_SMTP_SECURITY",
        flag: None,
        default(o): "starttls".to_owned(),
        shown: "`starttls`",
        check: |name, v| smtp_security(name, v, o.smtp_host.as_deref()),
    }
    /// Port of the SMTP server.
    smtp_port: u32 => u16 {
        env: "SEEDVAULT_SMTP_PORT",
        flag: None,
        default(o): default_smtp_port(o.smtp_security.as_deref()),
        shown: "`587` (`465` with `tls`, `25` with `none`)",
        check: |name, v: u32| u16::try_from(v).ok().filter(|p| *p > 0).ok_or(ConfigError::Invalid {
            setting: name,
            value: v.to_string(),
            fix: "expected a port between 1 and 65535",
        }),
    }
    /// Sender address of notices, e.g. `seedvault <vault@example.org>`; required with `smtp_host`.
    smtp_from: String => Option<String> {
        env: "SEEDVAULT_SMTP_FROM",
        flag: None,
        default(o): String::new(),
        shown: "none",
        check: |name, v| smtp_from(name, v, o.smtp_host.as_deref()),
    }
    /// User name for SMTP authentication (optional; the password comes from `smtp_password_file`).
    smtp_username: String => Option<String> {
        env: "SEEDVAULT_SMTP_USERNAME",
        flag: None,
        default(_): String::new(),
        shown: "none: no authentication",
        check: |_, v: String| Ok(Some(v.trim().to_owned()).filter(|u| !u.is_empty())),
    }
    /// File holding the SMTP password (never on the command line or in this file).
    smtp_password_file: PathBuf => Option<PathBuf> {
        env: "SEEDVAULT_SMTP_PASSWORD_FILE",
        flag: None,
        default(o): PathBuf::new(),
        shown: "none",
        check: |name, v| smtp_password_file(name, v, o.smtp_username.as_deref()),
    }
    /// Whom an owner should call if a notice tells of something they did not do, e.g. `+1 555
    /// 0100`: the NUMBER in "call security at NUMBER". Required with `smtp_host`.
    smtp_security_contact: String => Option<String> {
        env: "SEEDVAULT_SMTP_SECURITY_CONTACT",
        flag: None,
        default(o): String::new(),
        shown: "none",
        check: |name, v| smtp_security_contact(name, v, o.smtp_host.as_deref()),
    }
    /// Seconds one message may take to be accepted by the SMTP server, connection included; a
    /// server that does not answer in time is tried again later with backoff.
    smtp_timeout_seconds: u32 => u32 {
        env: "SEEDVAULT_SMTP_TIMEOUT_SECONDS",
        flag: None,
        default(_): 30,
        shown: "`30`",
        check: at_least_one("expected at least 1 second"),
    }
    /// Directory of notice templates (`reveal.txt`, `delivered.txt`, …) that replace the built-in
    /// ones in `templates/notices/`.
    smtp_templates_dir: PathBuf => Option<PathBuf> {
        env: "SEEDVAULT_SMTP_TEMPLATES_DIR",
        flag: None,
        default(_): PathBuf::new(),
        shown: "none: the built-in templates",
        check: |_, v: PathBuf| Ok(Some(v).filter(|p| !p.as_os_str().is_empty())),
    }
    /// Log lines as `text` (for people) or `json` (one object per line, for collectors; every
    /// line of a request carries its `request_id`).
    log_format: String => LogFormat {
        env: "SEEDVAULT_LOG_FORMAT",
        flag: None,
        default(_): "text".to_owned(),
        shown: "`text`",
        check: log_format,
    }
    /// A separate address (IP:PORT) serving only `GET /metrics` (Prometheus text format),
    /// without authentication: bind it to a network only the scraper reaches.
    metrics_bind: String => Option<SocketAddr> {
        env: "SEEDVAULT_METRICS_BIND",
        flag: None,
        default(_): String::new(),
        shown: "none: no metrics listener",
        check: optional_socket_addr,
    }
    /// A bearer token (at least 32 characters) that opens `GET /metrics` on the main listener;
    /// without it the main listener has no `/metrics`.
    metrics_token: String => Option<BearerToken> {
        env: "SEEDVAULT_METRICS_TOKEN",
        flag: None,
        default(_): String::new(),
        shown: "none: `/metrics` only on `metrics_bind`",
        check: bearer_token,
    }
    /// SIEM sinks, as `[[siem]]` tables in the file (a JSON array of the same objects in the
    /// environment); every audit event is forwarded to each. See docs/OBSERVABILITY.md.
    siem: Vec<crate::siem::SinkSettings> => Vec<crate::siem::Sink> {
        env: "SEEDVAULT_SIEM",
        flag: None,
        default(_): Vec::new(),
        shown: "none",
        check: crate::siem::validate_sinks,
    }
}

/// The declared setting called `name`.
pub fn setting(name: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.name == name)
}

/// The help of the flag for setting `name`: its purpose, default and environment variable.
pub fn flag_help(name: &str) -> String {
    match setting(name) {
        Some(s) => format!(
            "{} (default {}; env {})",
            s.help().trim_end_matches('.').replace('`', ""),
            s.default.replace('`', ""),
            s.env
        ),
        None => String::new(),
    }
}

/// `[directory]` as written in the file.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectorySection {
    pub ldap: Option<LdapSection>,
}

/// `[directory.ldap]` as written in the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LdapSection {
    pub url: String,
    #[serde(default)]
    pub starttls: bool,
    pub bind_dn: Option<String>,
    pub bind_password_file: Option<PathBuf>,
    pub base_dn: String,
    pub filter: Option<String>,
    pub sync_interval_minutes: Option<u32>,
    pub timeout_seconds: Option<u32>,
    pub attributes: Option<AttributeSection>,
}

/// `[directory.ldap.attributes]`: which LDAP attribute fills which field.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttributeSection {
    pub owner: Option<String>,
    pub phones: Option<Vec<String>>,
    pub manager: Option<String>,
    pub mail: Option<String>,
    pub display_name: Option<Vec<String>>,
    pub department: Option<Vec<String>>,
}

impl FromEnv for DirectorySection {
    fn from_env(var: &'static str, text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|_| ConfigError::Invalid {
            setting: var,
            value: text.to_owned(),
            fix: "expected the [directory] table's body as TOML, e.g. ldap = { url = \"ldaps://ldap.example.org\", base_dn = \"ou=people,dc=example,dc=org\" }",
        })
    }
}

/// Default minutes between LDAP syncs in `serve`.
const DEFAULT_SYNC_MINUTES: u32 = 60;

fn directory_settings(
    setting: &'static str,
    section: DirectorySection,
) -> Result<Option<LdapSettings>, ConfigError> {
    let Some(ldap) = section.ldap else {
        return Ok(None);
    };
    let invalid = |value: &str, fix| ConfigError::Invalid {
        setting,
        value: value.to_owned(),
        fix,
    };
    let url = Url::parse(&ldap.url).map_err(|_| {
        invalid(
            &ldap.url,
            "[directory.ldap] url must be a URL such as ldaps://ldap.example.org or ldap://ldap.example.org with starttls = true",
        )
    })?;
    match url.scheme() {
        "ldaps" if ldap.starttls => {
            return Err(invalid(
                &ldap.url,
                "starttls = true is for ldap:// URLs; ldaps:// is already TLS — drop starttls",
            ))
        }
        "ldap" | "ldaps" => {}
        _ => {
            return Err(invalid(
                &ldap.url,
                "[directory.ldap] url must start with ldap:// or ldaps://",
            ))
        }
    }
    if url.host_str().is_none() {
        return Err(invalid(&ldap.url, "[directory.ldap] url needs a host name"));
    }
    if ldap.base_dn.trim().is_empty() {
        return Err(invalid(
            "",
            "[directory.ldap] base_dn is empty — give the subtree holding the people, e.g. ou=people,dc=example,dc=org",
        ));
    }
    if ldap.timeout_seconds == Some(0) {
        return Err(invalid(
            "0",
            "[directory.ldap] timeout_seconds must be at least 1",
        ));
    }
    let defaults = AttributeMap::default();
    let a = ldap.attributes.unwrap_or_default();
    let one = |value: Option<String>, default: String| {
        value.filter(|v| !v.trim().is_empty()).unwrap_or(default)
    };
    let list = |value: Option<Vec<String>>, default: Vec<String>| {
        value.filter(|v| !v.is_empty()).unwrap_or(default)
    };
    Ok(Some(LdapSettings {
        url,
        starttls: ldap.starttls,
        bind_dn: ldap.bind_dn.filter(|d| !d.trim().is_empty()),
        bind_password_file: ldap.bind_password_file,
        base_dn: ldap.base_dn,
        filter: ldap
            .filter
            .filter(|f| !f.trim().is_empty())
            .unwrap_or_else(|| "(objectClass=inetOrgPerson)".to_owned()),
        attributes: AttributeMap {
            owner: one(a.owner, defaults.owner),
            phones: list(a.phones, defaults.phones),
            manager: one(a.manager, defaults.manager),
            mail: one(a.mail, defaults.mail),
            display_name: list(a.display_name, defaults.display_name),
            department: list(a.department, defaults.department),
        },
        sync_interval_minutes: ldap.sync_interval_minutes.unwrap_or(DEFAULT_SYNC_MINUTES),
        timeout: std::time::Duration::from_secs(ldap.timeout_seconds.unwrap_or(10).into()),
    }))
}

fn database_url(
    setting: &'static str,
    text: &str,
    data_dir: Option<&Path>,
) -> Result<DatabaseUrl, ConfigError> {
    let data_dir = data_dir.unwrap_or(Path::new("seedvault-data"));
    DatabaseUrl::parse(text, data_dir).map_err(|e| ConfigError::Invalid {
        setting,
        // Never the password: the value as it may be shown.
        value: e.shown,
        fix: e.fix,
    })
}

fn not_empty(fix: &'static str) -> impl Fn(&'static str, PathBuf) -> Result<PathBuf, ConfigError> {
    move |setting, path| {
        if path.as_os_str().is_empty() {
            Err(ConfigError::Invalid {
                setting,
                value: String::new(),
                fix,
            })
        } else {
            Ok(path)
        }
    }
}

/// An IP network: an address and a prefix length (a bare address is a /32 or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNetwork {
    address: IpAddr,
    prefix: u8,
}

impl IpNetwork {
    /// Whether `ip` lies in this network (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.address, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                prefix_matches(&net.octets(), &ip.octets(), self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_matches(&net.octets(), &ip.octets(), self.prefix)
            }
            _ => false,
        }
    }
}

fn prefix_matches(net: &[u8], ip: &[u8], prefix: u8) -> bool {
    let full = usize::from(prefix / 8);
    let rest = prefix % 8;
    if net[..full] != ip[..full] {
        return false;
    }
    rest == 0 || (net[full] ^ ip[full]) >> (8 - rest) == 0
}

impl std::str::FromStr for IpNetwork {
    type Err = ();

    fn from_str(text: &str) -> Result<Self, ()> {
        let text = text.trim();
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let address: IpAddr = address.parse().map_err(|_| ())?;
        let max = if address.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().map_err(|_| ())?,
            None => max,
        };
        if prefix > max {
            return Err(());
        }
        Ok(Self { address, prefix })
    }
}

impl FromEnv for Vec<String> {
    fn from_env(_: &'static str, text: &str) -> Result<Self, ConfigError> {
        Ok(text
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect())
    }
}

fn ip_networks(setting: &'static str, texts: Vec<String>) -> Result<Vec<IpNetwork>, ConfigError> {
    texts
        .iter()
        .map(|text| {
            text.parse().map_err(|()| ConfigError::Invalid {
                setting,
                value: text.clone(),
                fix: "expected IP addresses or CIDR networks such as 127.0.0.1 or 10.0.0.0/8",
            })
        })
        .collect()
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

fn log_format(setting: &'static str, text: String) -> Result<LogFormat, ConfigError> {
    match text.trim() {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        _ => Err(ConfigError::Invalid {
            setting,
            value: text,
            fix: "expected text or json",
        }),
    }
}

fn optional_socket_addr(
    setting: &'static str,
    text: String,
) -> Result<Option<SocketAddr>, ConfigError> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    socket_addr(setting, text).map(Some)
}

/// A secret bearer token from the configuration: compared in constant time, never shown by
/// `Debug`, wiped from memory when dropped.
#[derive(Clone)]
pub struct BearerToken(zeroize::Zeroizing<String>);

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken(redacted)")
    }
}

impl BearerToken {
    /// Whether an `Authorization` header value is `Bearer <this token>`; the comparison takes
    /// the same time wherever the first difference is.
    pub fn admits(&self, authorization: &str) -> bool {
        let Some(given) = authorization.strip_prefix("Bearer ") else {
            return false;
        };
        let (a, b) = (given.as_bytes(), self.0.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
    }
}

fn bearer_token(setting: &'static str, text: String) -> Result<Option<BearerToken>, ConfigError> {
    let text = zeroize::Zeroizing::new(text);
    if text.is_empty() {
        return Ok(None);
    }
    if text.len() < 32 || !text.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ConfigError::Invalid {
            setting,
            // The value is a secret: never repeated in an error.
            value: "(hidden)".into(),
            fix: "expected at least 32 printable characters without spaces, e.g. from `openssl rand -hex 32`",
        });
    }
    Ok(Some(BearerToken(text)))
}

fn at_least_one(fix: &'static str) -> impl Fn(&'static str, u32) -> Result<u32, ConfigError> {
    move |setting, value| {
        if value == 0 {
            Err(ConfigError::Invalid {
                setting,
                value: value.to_string(),
                fix,
            })
        } else {
            Ok(value)
        }
    }
}

fn socket_addr(setting: &'static str, text: String) -> Result<SocketAddr, ConfigError> {
    text.parse().map_err(|_| ConfigError::Invalid {
        setting,
        value: text.clone(),
        fix: "expected IP:PORT, for example 127.0.0.1:8080",
    })
}

/// Without an explicit origin, browsers on this machine reach the server at the bound port:
/// an invite printed for another port would fail WebAuthn's origin check.
fn default_origin(bind: Option<&str>) -> String {
    let port = bind
        .and_then(|b| b.parse::<SocketAddr>().ok())
        .map_or(8080, |a| a.port());
    match port {
        0 => "http://localhost:8080".into(),
        port => format!("http://localhost:{port}"),
    }
}

/// How the connection to the SMTP server is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpSecurity {
    /// Plain connection upgraded with STARTTLS (RFC 3207), which must succeed.
    Starttls,
    /// TLS from the first byte (RFC 8314, port 465).
    Tls,
    /// No TLS: only for a relay on the same host.
    None,
}

fn smtp_security(
    setting: &'static str,
    text: String,
    host: Option<&str>,
) -> Result<SmtpSecurity, ConfigError> {
    let invalid = |fix| ConfigError::Invalid {
        setting,
        value: text.clone(),
        fix,
    };
    let security = match text.trim().to_ascii_lowercase().as_str() {
        "starttls" => SmtpSecurity::Starttls,
        "tls" => SmtpSecurity::Tls,
        "none" => SmtpSecurity::None,
        _ => return Err(invalid("expected starttls, tls or none")),
    };
    let host = host.map(str::trim).unwrap_or_default();
    let loopback = host.is_empty()
        || host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if security == SmtpSecurity::None && !loopback {
        return Err(invalid(
            "none sends notices unencrypted, allowed only to a relay on loopback (localhost, 127.0.0.1, ::1); use starttls or tls",
        ));
    }
    Ok(security)
}

fn default_smtp_port(security: Option<&str>) -> u32 {
    match security.map(|s| s.trim().to_ascii_lowercase()).as_deref() {
        Some("tls") => 465,
        Some("none") => 25,
        _ => 587,
    }
}

fn smtp_from(
    setting: &'static str,
    text: String,
    host: Option<&str>,
) -> Result<Option<String>, ConfigError> {
    let text = text.trim().to_owned();
    let host_set = host.is_some_and(|h| !h.trim().is_empty());
    if text.is_empty() {
        return if host_set {
            Err(ConfigError::Invalid {
                setting,
                value: text,
                fix: "notices need a sender address with smtp_host, e.g. seedvault <vault@example.org>",
            })
        } else {
            Ok(None)
        };
    }
    if text.parse::<lettre::message::Mailbox>().is_err() {
        return Err(ConfigError::Invalid {
            setting,
            value: text,
            fix: "expected an address such as vault@example.org or seedvault <vault@example.org>",
        });
    }
    Ok(Some(text))
}

fn smtp_password_file(
    setting: &'static str,
    path: PathBuf,
    username: Option<&str>,
) -> Result<Option<PathBuf>, ConfigError> {
    let user_set = username.is_some_and(|u| !u.trim().is_empty());
    match (path.as_os_str().is_empty(), user_set) {
        (true, false) => Ok(None),
        (false, true) => Ok(Some(path)),
        (true, true) => Err(ConfigError::Invalid {
            setting,
            value: String::new(),
            fix: "smtp_username is set: give the file holding its password",
        }),
        (false, false) => Err(ConfigError::Invalid {
            setting,
            value: path.display().to_string(),
            fix: "a password needs smtp_username too; set it or drop the password file",
        }),
    }
}

fn smtp_security_contact(
    setting: &'static str,
    text: String,
    host: Option<&str>,
) -> Result<Option<String>, ConfigError> {
    let text = text.trim().to_owned();
    if text.is_empty() && host.is_some_and(|h| !h.trim().is_empty()) {
        return Err(ConfigError::Invalid {
            setting,
            value: text,
            fix:
                "notices tell owners whom to call if they did not ask for a code: give that number",
        });
    }
    Ok(Some(text).filter(|t| !t.is_empty()))
}

/// Tables of the file whose keys are settings named `SECTION_KEY` (`[smtp] host` is
/// `smtp_host`), so related settings read as a section in the file.
const SECTIONS: &[&str] = &["smtp"];

/// Moves the keys of each of [`SECTIONS`] to the top level under their setting's name.
fn flatten_sections(mut table: toml::Table) -> Result<toml::Table, String> {
    for section in SECTIONS {
        let Some(value) = table.remove(*section) else {
            continue;
        };
        let toml::Value::Table(inner) = value else {
            return Err(format!("[{section}] must be a table of settings"));
        };
        for (key, value) in inner {
            let name = format!("{section}_{key}");
            if table.contains_key(&name) {
                return Err(format!(
                    "{name} is set both at the top level and as [{section}] {key}; keep one"
                ));
            }
            table.insert(name, value);
        }
    }
    Ok(table)
}

impl Overrides {
    /// Reads a TOML config file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: shown.clone(),
            reason: e.to_string(),
        })?;
        let parse = |reason: String| ConfigError::Parse {
            path: shown.clone(),
            reason,
        };
        let table: toml::Table = toml::from_str(&text).map_err(|e| parse(e.to_string()))?;
        let table = flatten_sections(table).map_err(parse)?;
        Self::deserialize(toml::Value::Table(table)).map_err(|e| parse(e.to_string()))
    }
}

impl Config {
    /// Layers file, environment and flags over the defaults and validates the result.
    /// `file` is the explicit `--config`; without it `./seedvault.toml` is read if present.
    pub fn load(
        file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
        flags: Overrides,
    ) -> Result<Self, ConfigError> {
        let mut merged = Overrides::default();
        match file {
            Some(path) => merged.apply(Overrides::from_file(path)?),
            None if Path::new(DEFAULT_CONFIG_FILE).is_file() => {
                merged.apply(Overrides::from_file(Path::new(DEFAULT_CONFIG_FILE))?)
            }
            None => {}
        }
        merged.apply(Overrides::from_env(env)?);
        merged.apply(flags);
        Self::validate(merged)
    }

    /// Whether the origin is https (cookies are then marked `Secure`).
    pub fn origin_is_https(&self) -> bool {
        self.origin.scheme() == "https"
    }

    /// The spans of the policies' reveal limits.
    pub fn reveal_windows(&self) -> crate::tokens::reveal::RevealWindows {
        crate::tokens::reveal::RevealWindows {
            token_seconds: i64::from(self.reveal_token_window_hours) * 3_600,
            operator_seconds: i64::from(self.reveal_operator_window_minutes) * 60,
        }
    }

    /// The origin as browsers send it in the `Origin` header: scheme://host[:port].
    pub fn origin_header(&self) -> String {
        self.origin.origin().ascii_serialization()
    }
}

fn parse_origin(setting: &'static str, text: String) -> Result<Url, ConfigError> {
    let invalid = |fix| ConfigError::Invalid {
        setting,
        value: text.clone(),
        fix,
    };
    let url = Url::parse(&text).map_err(|_| {
        invalid("expected a URL such as https://vault.example.org or http://localhost:8080")
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("the origin must use http or https"));
    }
    if url.host_str().is_none() {
        return Err(invalid("the origin needs a host name"));
    }
    if url.path() != "/" || url.query().is_some() {
        return Err(invalid("give only scheme, host and port, without a path"));
    }
    if url.scheme() == "http" && url.host_str() != Some("localhost") {
        return Err(invalid(
            "browsers allow passkeys over plain http only on localhost; use https",
        ));
    }
    Ok(url)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn defaults_serve_localhost_from_a_local_data_directory() {
        let config = Config::validate(Overrides::default()).unwrap();
        assert_eq!(config.data_dir, PathBuf::from("seedvault-data"));
        assert_eq!(config.bind.to_string(), "127.0.0.1:8080");
        assert_eq!(config.origin_header(), "http://localhost:8080");
        assert_eq!(config.retention_days, 30);
    }

    #[test]
    fn the_default_origin_follows_the_bound_port_unless_an_origin_is_set() {
        let bound = |bind: &str, origin: Option<&str>| {
            Config::validate(Overrides {
                bind: Some(bind.into()),
                origin: origin.map(Into::into),
                ..Default::default()
            })
            .unwrap()
            .origin_header()
        };
        assert_eq!(bound("127.0.0.1:9443", None), "http://localhost:9443");
        assert_eq!(bound("0.0.0.0:8080", None), "http://localhost:8080");
        assert_eq!(
            bound("127.0.0.1:9443", Some("https://vault.example.org")),
            "https://vault.example.org"
        );
    }

    #[test]
    fn flags_override_environment_which_overrides_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("seedvault.toml");
        std::fs::write(
            &file,
            "bind = \"127.0.0.1:1\"\nlog = \"debug\"\nretention_days = 7\n",
        )
        .unwrap();
        let env = |name: &str| match name {
            "SEEDVAULT_BIND" => Some("127.0.0.1:2".to_owned()),
            "SEEDVAULT_LOG" => Some("warn".to_owned()),
            _ => None,
        };
        let flags = Overrides {
            bind: Some("127.0.0.1:3".into()),
            ..Default::default()
        };
        let config = Config::load(Some(&file), env, flags).unwrap();
        assert_eq!(config.bind.port(), 3);
        assert_eq!(config.log, "warn");
        assert_eq!(config.retention_days, 7);
    }

    #[test]
    fn invalid_settings_name_the_setting_and_the_fix() {
        let cases: Vec<(Overrides, &str)> = vec![
            (
                Overrides {
                    bind: Some("localhost".into()),
                    ..Default::default()
                },
                "bind = 'localhost' is invalid: expected IP:PORT",
            ),
            (
                Overrides {
                    origin: Some("ftp://x".into()),
                    ..Default::default()
                },
                "origin = 'ftp://x' is invalid: the origin must use http or https",
            ),
            (
                Overrides {
                    origin: Some("http://vault.example.org".into()),
                    ..Default::default()
                },
                "use https",
            ),
            (
                Overrides {
                    origin: Some("https://vault.example.org/app".into()),
                    ..Default::default()
                },
                "without a path",
            ),
            (
                Overrides {
                    retention_days: Some(0),
                    ..Default::default()
                },
                "retention_days = '0' is invalid",
            ),
        ];
        for (overrides, expected) in cases {
            let err = Config::validate(overrides).unwrap_err().to_string();
            assert!(err.contains(expected), "{err} should contain {expected}");
        }
        let err = Config::load(
            None,
            |n| (n == "SEEDVAULT_RETENTION_DAYS").then(|| "ten".into()),
            Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("SEEDVAULT_RETENTION_DAYS"), "{err}");
        let _ = no_env("x");
    }

    #[test]
    fn an_unknown_key_in_the_file_is_refused_with_the_file_name() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "bnid = \"x\"\n").unwrap();
        let err = Config::load(Some(&file), no_env, Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("c.toml") && err.contains("bnid"), "{err}");
    }

    /// The rows of the README's "## Configuration" table: (setting, env, default).
    fn readme_rows() -> Vec<(String, String, String)> {
        let readme = include_str!("../README.md");
        let section = readme
            .split("\n## Configuration")
            .nth(1)
            .and_then(|rest| rest.split("\n## ").next())
            .expect("README has a ## Configuration section");
        section
            .lines()
            .filter(|l| l.starts_with("| `"))
            .map(|line| {
                let cells: Vec<&str> = line.trim_matches('|').split(" | ").collect();
                assert_eq!(cells.len(), 3, "README row {line}");
                let bare = |c: &str| c.trim().trim_matches('`').to_owned();
                (bare(cells[0]), bare(cells[1]), cells[2].trim().to_owned())
            })
            .collect()
    }

    #[test]
    fn the_readme_lists_every_setting_with_its_env_var_and_default_and_nothing_else() {
        let declared: Vec<(String, String, String)> = SETTINGS
            .iter()
            .map(|s| (s.name.to_owned(), s.env.to_owned(), s.default.to_owned()))
            .collect();
        assert_eq!(readme_rows(), declared);
    }

    #[test]
    fn every_environment_variable_is_the_setting_name_in_capitals_and_every_setting_has_help() {
        for setting in SETTINGS {
            assert_eq!(
                setting.env,
                format!("SEEDVAULT_{}", setting.name.to_ascii_uppercase()),
                "{setting:?}"
            );
            assert!(!setting.help().is_empty(), "{} has no help", setting.name);
        }
    }

    /// The configuration is Debug-printed (and its values end up in messages): a database
    /// password in the URL must never show in either.
    #[test]
    fn a_database_url_password_never_shows_in_the_configuration_or_its_errors() {
        let config = Config::load(
            None,
            |name| {
                (name == "SEEDVAULT_DATABASE_URL")
                    .then(|| "postgres://vault:pa55-w0rd@db.example.org/seedvault".to_owned())
            },
            Overrides::default(),
        )
        .unwrap();
        assert!(config.database_url.is_postgres());
        let shown = format!("{config:?}");
        assert!(!shown.contains("pa55-w0rd") && shown.contains("vault:***@db.example.org"));
        let refused = Config::load(
            None,
            |name| {
                (name == "SEEDVAULT_DATABASE_URL")
                    .then(|| "postgres://vault:pa55-w0rd@db.example.org/x?sslmode=on".to_owned())
            },
            Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            refused.starts_with("database_url = 'postgres://vault:***@"),
            "{refused}"
        );
        assert!(refused.contains("sslmode must be one of"), "{refused}");
        assert!(!refused.contains("pa55-w0rd"), "{refused}");
    }

    #[test]
    fn flags_show_the_declared_help_default_and_environment_variable() {
        let help = flag_help("bind");
        assert!(help.contains("Address to listen on"), "{help}");
        assert!(help.contains("127.0.0.1:8080"), "{help}");
        assert!(help.contains("SEEDVAULT_BIND"), "{help}");
    }

    #[test]
    fn security_limits_default_to_todays_values_and_can_be_configured() {
        let config = Config::validate(Overrides::default()).unwrap();
        assert_eq!(
            (
                config.sign_in_attempts_per_address,
                config.sign_in_address_window_minutes,
            ),
            (20, 15)
        );
        assert!(config.trusted_proxies.is_empty());
        assert_eq!(
            config.reveal_windows(),
            crate::tokens::reveal::RevealWindows::default()
        );
        let env = |name: &str| match name {
            "SEEDVAULT_SIGN_IN_ATTEMPTS_PER_ADDRESS" => Some("3".to_owned()),
            "SEEDVAULT_TRUSTED_PROXIES" => Some("127.0.0.1, 10.0.0.0/8,::1".to_owned()),
            "SEEDVAULT_REVEAL_OPERATOR_WINDOW_MINUTES" => Some("30".to_owned()),
            _ => None,
        };
        let config = Config::load(None, env, Overrides::default()).unwrap();
        assert_eq!(config.sign_in_attempts_per_address, 3);
        assert_eq!(config.trusted_proxies.len(), 3);
        assert_eq!(config.reveal_windows().operator_seconds, 30 * 60);
        let err = Config::validate(Overrides {
            sign_in_attempts_per_address: Some(0),
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "sign_in_attempts_per_address = '0' is invalid: expected at least 1 attempt"
        );
    }

    #[test]
    fn trusted_proxies_are_addresses_or_networks_and_a_bad_one_is_named() {
        let net = |t: &str| t.parse::<IpNetwork>().unwrap();
        let ip = |t: &str| t.parse::<IpAddr>().unwrap();
        assert!(net("10.0.0.0/8").contains(ip("10.200.3.4")));
        assert!(!net("10.0.0.0/8").contains(ip("11.0.0.1")));
        assert!(net("192.168.1.0/25").contains(ip("192.168.1.127")));
        assert!(!net("192.168.1.0/25").contains(ip("192.168.1.128")));
        assert!(net("127.0.0.1").contains(ip("127.0.0.1")));
        assert!(net("127.0.0.1").contains(ip("::ffff:127.0.0.1")));
        assert!(!net("127.0.0.1").contains(ip("127.0.0.2")));
        assert!(net("fd00::/8").contains(ip("fd12::1")));
        assert!(!net("fd00::/8").contains(ip("10.0.0.1")));
        assert!(net("0.0.0.0/0").contains(ip("8.8.8.8")));
        for bad in ["10.0.0.0/33", "proxy.example.org", "10.0.0/8", "::1/129"] {
            assert!(bad.parse::<IpNetwork>().is_err(), "{bad}");
        }
        let err = Config::validate(Overrides {
            trusted_proxies: Some(vec!["127.0.0.1".into(), "nginx".into()]),
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("trusted_proxies = 'nginx' is invalid"),
            "{err}"
        );
    }

    #[test]
    fn the_ldap_directory_is_read_from_its_table_with_defaults_for_what_is_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("seedvault.toml");
        std::fs::write(
            &file,
            "[directory.ldap]\nurl = \"ldap://ldap.example.org\"\nstarttls = true\nbase_dn = \"ou=people,dc=example,dc=org\"\n[directory.ldap.attributes]\nowner = \"uid\"\n",
        )
        .unwrap();
        let config = Config::load(Some(&file), no_env, Overrides::default()).unwrap();
        let ldap = config.directory.unwrap();
        assert!(ldap.starttls);
        assert_eq!(ldap.attributes.owner, "uid");
        assert_eq!(ldap.attributes.phones, ["telephoneNumber", "mobile"]);
        assert_eq!(ldap.filter, "(objectClass=inetOrgPerson)");
        assert_eq!(ldap.sync_interval_minutes, 60);
        assert!(Config::validate(Overrides::default())
            .unwrap()
            .directory
            .is_none());
    }

    #[test]
    fn a_bad_ldap_table_names_the_setting_and_the_fix() {
        let table = [
            (
                "ldap = { url = \"http://x\", base_dn = \"dc=x\" }",
                "must start with ldap:// or ldaps://",
            ),
            (
                "ldap = { url = \"ldaps://x\", starttls = true, base_dn = \"dc=x\" }",
                "drop starttls",
            ),
            (
                "ldap = { url = \"ldaps://x\", base_dn = \" \" }",
                "base_dn is empty",
            ),
            ("ldap = { url = \"ldaps://x\" }", "SEEDVAULT_DIRECTORY"),
            (
                "ldap = { url = \"ldaps://x\", base_dn = \"dc=x\", bind_password = \"s\" }",
                "SEEDVAULT_DIRECTORY",
            ),
        ];
        for (text, expected) in table {
            let err = Config::load(
                None,
                |n| (n == "SEEDVAULT_DIRECTORY").then(|| text.to_owned()),
                Overrides::default(),
            )
            .unwrap_err()
            .to_string();
            assert!(err.contains(expected), "{text}: {err}");
        }
    }

    /// Whether `file` shows setting `name` as a key of its section (`[smtp]` then `host =`).
    fn in_section(file: &str, name: &str) -> bool {
        SECTIONS.iter().any(|section| {
            let Some(key) = name.strip_prefix(&format!("{section}_")) else {
                return false;
            };
            file.split_once(&format!("[{section}]"))
                .is_some_and(|(_, rest)| rest.contains(&format!("{key} =")))
        })
    }

    #[test]
    fn smtp_settings_read_as_a_section_of_the_file_and_are_checked_together() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("seedvault.toml");
        std::fs::write(
            &file,
            "[smtp]\nhost = \"mail.example.org\"\nsecurity = \"tls\"\nfrom = \"vault@example.org\"\nsecurity_contact = \"+1 555 0100\"\n",
        )
        .unwrap();
        let config = Config::load(Some(&file), no_env, Overrides::default()).unwrap();
        assert_eq!(config.smtp_host.as_deref(), Some("mail.example.org"));
        assert_eq!(config.smtp_security, SmtpSecurity::Tls);
        assert_eq!(config.smtp_port, 465);
        let refused = |o: Overrides| Config::validate(o).unwrap_err().to_string();
        let base = || Overrides {
            smtp_host: Some("mail.example.org".into()),
            smtp_from: Some("vault@example.org".into()),
            smtp_security_contact: Some("+1 555 0100".into()),
            ..Default::default()
        };
        let err = refused(Overrides {
            smtp_security: Some("none".into()),
            ..base()
        });
        assert!(
            err.starts_with("smtp_security = 'none' is invalid"),
            "{err}"
        );
        let err = refused(Overrides {
            smtp_from: None,
            ..base()
        });
        assert!(err.starts_with("smtp_from"), "{err}");
        let err = refused(Overrides {
            smtp_security_contact: None,
            ..base()
        });
        assert!(err.starts_with("smtp_security_contact"), "{err}");
        let err = refused(Overrides {
            smtp_username: Some("vault".into()),
            ..base()
        });
        assert!(err.starts_with("smtp_password_file"), "{err}");
        let local = Config::validate(Overrides {
            smtp_host: Some("127.0.0.1".into()),
            smtp_security: Some("none".into()),
            ..base()
        })
        .unwrap();
        assert_eq!(local.smtp_port, 25);
    }

    /// The packaged service's configuration file shows every setting, so an administrator
    /// finds each one where they look first.
    #[test]
    fn the_packaged_configuration_file_names_every_setting() {
        let file = include_str!("../packaging/seedvault.toml");
        let missing: Vec<&str> = SETTINGS
            .iter()
            .map(|s| s.name)
            .filter(|name| !file.contains(&format!("{name} =")) && !in_section(file, name))
            .collect();
        assert!(
            missing.is_empty(),
            "add to packaging/seedvault.toml: {missing:?}"
        );
    }
}
