//! Configuration: defaults, then an optional `seedvault.toml`, then `SEEDVAULT_*` environment
//! variables, then command-line flags — each overriding the one before. The result is
//! validated once; a bad value stops start-up with the setting's name and the fix.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use url::Url;

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
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub bind: SocketAddr,
    /// The public origin browsers use; WebAuthn and the `Origin` check are bound to it.
    pub origin: Url,
    /// A `tracing` filter such as `info` or `seedvault=debug`.
    pub log: String,
    /// Days an escrowed seed may wait for delivery before it is purged.
    pub retention_days: u32,
    /// Hours an operator invite stays valid.
    pub invite_ttl_hours: u32,
    /// Minutes of inactivity after which a session ends.
    pub session_idle_minutes: u32,
    /// Hours after sign-in after which a session ends regardless of activity.
    pub session_absolute_hours: u32,
    /// Directory of policy files.
    pub policies_dir: PathBuf,
}

/// Settings as they appear in the file, the environment or flags: all optional.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Overrides {
    pub data_dir: Option<PathBuf>,
    pub bind: Option<String>,
    pub origin: Option<String>,
    pub log: Option<String>,
    pub retention_days: Option<u32>,
    pub invite_ttl_hours: Option<u32>,
    pub session_idle_minutes: Option<u32>,
    pub session_absolute_hours: Option<u32>,
    pub policies_dir: Option<PathBuf>,
}

impl Overrides {
    fn apply(&mut self, other: Overrides) {
        macro_rules! take {
            ($($field:ident),*) => { $( if other.$field.is_some() { self.$field = other.$field; } )* };
        }
        take!(
            data_dir,
            bind,
            origin,
            log,
            retention_days,
            invite_ttl_hours,
            session_idle_minutes,
            session_absolute_hours,
            policies_dir
        );
    }

    /// Reads `SEEDVAULT_*` variables through `get` (the process environment in production).
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let number = |name: &'static str| -> Result<Option<u32>, ConfigError> {
            get(name)
                .map(|v| {
                    v.trim().parse::<u32>().map_err(|_| ConfigError::Invalid {
                        setting: name,
                        value: v.clone(),
                        fix: "expected a whole number",
                    })
                })
                .transpose()
        };
        Ok(Self {
            data_dir: get("SEEDVAULT_DATA_DIR").map(PathBuf::from),
            bind: get("SEEDVAULT_BIND"),
            origin: get("SEEDVAULT_ORIGIN"),
            log: get("SEEDVAULT_LOG"),
            retention_days: number("SEEDVAULT_RETENTION_DAYS")?,
            invite_ttl_hours: number("SEEDVAULT_INVITE_TTL_HOURS")?,
            session_idle_minutes: number("SEEDVAULT_SESSION_IDLE_MINUTES")?,
            session_absolute_hours: number("SEEDVAULT_SESSION_ABSOLUTE_HOURS")?,
            policies_dir: get("SEEDVAULT_POLICIES_DIR").map(PathBuf::from),
        })
    }

    /// Reads a TOML config file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: shown.clone(),
            reason: e.to_string(),
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: shown,
            reason: e.to_string(),
        })
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

    /// Defaults with the given overrides, validated.
    pub fn validate(o: Overrides) -> Result<Self, ConfigError> {
        let bind_text = o.bind.unwrap_or_else(|| "127.0.0.1:8080".into());
        let bind = bind_text
            .parse::<SocketAddr>()
            .map_err(|_| ConfigError::Invalid {
                setting: "bind",
                value: bind_text.clone(),
                fix: "expected IP:PORT, for example 127.0.0.1:8080",
            })?;
        // Without an explicit origin, browsers on this machine reach the server at the bound
        // port: an invite printed for another port would fail WebAuthn's origin check.
        let origin_text = o.origin.unwrap_or_else(|| match bind.port() {
            0 => "http://localhost:8080".into(),
            port => format!("http://localhost:{port}"),
        });
        let origin = parse_origin(&origin_text)?;
        let positive = |setting: &'static str, value: u32, fix: &'static str| {
            if value == 0 {
                Err(ConfigError::Invalid {
                    setting,
                    value: value.to_string(),
                    fix,
                })
            } else {
                Ok(value)
            }
        };
        let data_dir = o
            .data_dir
            .unwrap_or_else(|| PathBuf::from("seedvault-data"));
        if data_dir.as_os_str().is_empty() {
            return Err(ConfigError::Invalid {
                setting: "data_dir",
                value: String::new(),
                fix: "give a directory path",
            });
        }
        Ok(Self {
            data_dir,
            bind,
            origin,
            log: o.log.unwrap_or_else(|| "info".into()),
            retention_days: positive(
                "retention_days",
                o.retention_days.unwrap_or(30),
                "expected at least 1 day",
            )?,
            invite_ttl_hours: positive(
                "invite_ttl_hours",
                o.invite_ttl_hours.unwrap_or(24),
                "expected at least 1 hour",
            )?,
            session_idle_minutes: positive(
                "session_idle_minutes",
                o.session_idle_minutes.unwrap_or(15),
                "expected at least 1 minute",
            )?,
            session_absolute_hours: positive(
                "session_absolute_hours",
                o.session_absolute_hours.unwrap_or(8),
                "expected at least 1 hour",
            )?,
            policies_dir: o.policies_dir.unwrap_or_else(|| PathBuf::from("policies")),
        })
    }

    /// Whether the origin is https (cookies are then marked `Secure`).
    pub fn origin_is_https(&self) -> bool {
        self.origin.scheme() == "https"
    }

    /// The origin as browsers send it in the `Origin` header: scheme://host[:port].
    pub fn origin_header(&self) -> String {
        self.origin.origin().ascii_serialization()
    }
}

fn parse_origin(text: &str) -> Result<Url, ConfigError> {
    let invalid = |fix| ConfigError::Invalid {
        setting: "origin",
        value: text.to_owned(),
        fix,
    };
    let url = Url::parse(text).map_err(|_| {
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
}
