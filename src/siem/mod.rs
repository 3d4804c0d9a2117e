//! Streaming the audit trail to SIEM sinks without ever slowing the vault down.
//!
//! Each configured sink (`[[siem]]` in `seedvault.toml`) gets a forwarder task
//! ([`forward::spawn`]) that reads the events after the sink's durable cursor (table
//! `siem_cursors`, the last seq the sink acknowledged) in seq order, sends them in batches as
//! exactly the JSON objects the JSONL export writes ([`crate::audit::export::write_jsonl`]),
//! and moves the cursor only once the sink acknowledged. A down or slow sink only lags: the
//! request path never waits for a forwarder (a commit bumps a counter the forwarders watch,
//! [`crate::store::Store::commits`]), and retries back off up to a cap. Delivery is at least
//! once: after a failure the batch is sent again, and a SIEM de-duplicates by `seq`.
//!
//! Transports ([`transport`]): HTTP POST of JSON Lines (Splunk HEC raw endpoint, Elastic,
//! any webhook; one configured header for the credential), and syslog (RFC 5424, one event
//! per message, octet-counting framing of RFC 6587 §3.4.1) over TCP or TLS.

pub mod forward;
pub mod transport;

use std::path::PathBuf;

use serde::Deserialize;
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::config::ConfigError;
use crate::store::{self, Store, StoreError};

pub use forward::{spawn, Forwarding, SinkHealth};

/// One `[[siem]]` table as written in the file (or one object of `SEEDVAULT_SIEM`'s JSON
/// array); [`validate_sinks`] turns it into a [`Sink`].
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkSettings {
    /// Unique name: the cursor's key, the metrics' `sink` label.
    pub name: Option<String>,
    /// `http`, `syslog-tcp` or `syslog-tls`.
    pub kind: Option<String>,
    /// For `http`: the `http://` or `https://` URL batches are POSTed to.
    pub url: Option<String>,
    /// For syslog: `host:port`.
    pub address: Option<String>,
    /// For `http`: one extra header, `Name: value` (e.g. `Authorization: Splunk <token>`).
    pub header: Option<String>,
    /// PEM file of the CA that signed the sink's certificate; when given, only it is trusted.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (with `client_key`, PKCS#8 PEM) for sinks that require one.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// Name expected in the sink's certificate; default: the host of `url` / `address`.
    pub server_name: Option<String>,
    /// Events per batch (default 1000).
    pub batch_events: Option<u32>,
    /// Seconds a connection or a batch may take before it counts as failed (default 30).
    pub timeout_seconds: Option<u32>,
}

impl std::fmt::Debug for SinkSettings {
    /// The header may carry a credential: never shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkSettings")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("url", &self.url)
            .field("address", &self.address)
            .field("header", &self.header.as_ref().map(|_| "(redacted)"))
            .finish_non_exhaustive()
    }
}

/// How a sink is reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    Http,
    SyslogTcp,
    SyslogTls,
}

impl Kind {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::SyslogTcp => "syslog-tcp",
            Self::SyslogTls => "syslog-tls",
        }
    }
}

/// TLS material read at start, so that a missing or malformed file stops start-up.
#[derive(Clone)]
pub struct TlsFiles {
    pub ca_pem: Option<Vec<u8>>,
    pub identity: Option<(Vec<u8>, Zeroizing<Vec<u8>>)>,
    pub server_name: String,
}

/// A validated sink.
#[derive(Clone)]
pub struct Sink {
    pub name: String,
    pub kind: Kind,
    /// `host:port` to connect to.
    pub address: String,
    /// For `http`: the request target (path and query) and the `Host` header.
    pub path: String,
    pub host_header: String,
    /// For `http`: the configured extra header (name, value — the value may be a secret).
    pub header: Option<(String, Zeroizing<String>)>,
    /// TLS for `https` URLs and `syslog-tls`.
    pub tls: Option<TlsFiles>,
    pub batch_events: usize,
    pub timeout: std::time::Duration,
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("address", &self.address)
            .field("path", &self.path)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl Sink {
    /// Where it sends, for status lines: the URL or `kind://address`.
    pub fn endpoint(&self) -> String {
        match self.kind {
            Kind::Http => format!(
                "{}://{}{}",
                if self.tls.is_some() { "https" } else { "http" },
                self.address,
                self.path
            ),
            _ => format!("{}://{}", self.kind.as_str(), self.address),
        }
    }
}

/// Checks every `[[siem]]` table; the error names the sink, the field and the fix.
pub fn validate_sinks(
    _setting: &'static str,
    raw: Vec<SinkSettings>,
) -> Result<Vec<Sink>, ConfigError> {
    let mut sinks: Vec<Sink> = Vec::new();
    for (index, settings) in raw.into_iter().enumerate() {
        let sink = validate_sink(index, settings)?;
        if sinks.iter().any(|s| s.name == sink.name) {
            return Err(ConfigError::Sink {
                which: format!("#{} ('{}')", index + 1, sink.name),
                problem: "name is used by another [[siem]] table — give each sink its own name (it keys the sink's cursor)".into(),
            });
        }
        sinks.push(sink);
    }
    Ok(sinks)
}

fn validate_sink(index: usize, s: SinkSettings) -> Result<Sink, ConfigError> {
    let which = format!(
        "#{}{}",
        index + 1,
        s.name
            .as_deref()
            .map_or_else(String::new, |n| format!(" ('{n}')"))
    );
    let bad = |problem: String| ConfigError::Sink {
        which: which.clone(),
        problem,
    };
    let name = s
        .name
        .clone()
        .ok_or_else(|| bad("name is missing — add name = \"splunk\" (any short name)".into()))?;
    if name.is_empty()
        || name.len() > 64
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(bad(format!(
            "name = '{name}' is invalid: use 1 to 64 letters, digits, '-', '_' or '.'"
        )));
    }
    let kind = match s.kind.as_deref() {
        Some("http") => Kind::Http,
        Some("syslog-tcp") => Kind::SyslogTcp,
        Some("syslog-tls") => Kind::SyslogTls,
        Some(other) => {
            return Err(bad(format!(
                "kind = '{other}' is invalid: use http, syslog-tcp or syslog-tls"
            )))
        }
        None => {
            return Err(bad(
                "kind is missing — use http, syslog-tcp or syslog-tls".into()
            ))
        }
    };
    let batch_events = match s.batch_events {
        None => 1000,
        Some(n @ 1..=100_000) => n as usize,
        Some(n) => {
            return Err(bad(format!(
                "batch_events = {n} is invalid: use 1 to 100000"
            )))
        }
    };
    let timeout = match s.timeout_seconds {
        None => 30,
        Some(n @ 1..=3600) => n,
        Some(n) => {
            return Err(bad(format!(
                "timeout_seconds = {n} is invalid: use 1 to 3600"
            )))
        }
    };
    let (address, host, path, host_header, wants_tls) = match kind {
        Kind::Http => {
            if s.address.is_some() {
                return Err(bad(
                    "address is for syslog sinks — an http sink takes url".into()
                ));
            }
            let text = s.url.clone().ok_or_else(|| {
                bad("url is missing — add url = \"https://siem.example.org/ingest\"".into())
            })?;
            let url = url::Url::parse(&text)
                .map_err(|e| bad(format!("url = '{text}' is invalid: {e}")))?;
            let tls = match url.scheme() {
                "https" => true,
                "http" => false,
                other => {
                    return Err(bad(format!(
                        "url = '{text}' is invalid: scheme {other} — use http:// or https://"
                    )))
                }
            };
            let host = url
                .host_str()
                .ok_or_else(|| bad(format!("url = '{text}' is invalid: it has no host")))?
                .to_owned();
            let port = url.port_or_known_default().unwrap_or(443);
            let mut path = url.path().to_owned();
            if let Some(query) = url.query() {
                path.push('?');
                path.push_str(query);
            }
            let host_header = match url.port() {
                Some(p) => format!("{host}:{p}"),
                None => host.clone(),
            };
            (format!("{host}:{port}"), host, path, host_header, tls)
        }
        Kind::SyslogTcp | Kind::SyslogTls => {
            if s.url.is_some() || s.header.is_some() {
                return Err(bad(
                    "url and header are for http sinks — a syslog sink takes address = \"host:port\"".into(),
                ));
            }
            let text = s.address.clone().ok_or_else(|| {
                bad("address is missing — add address = \"siem.example.org:6514\"".into())
            })?;
            let (host, port) = text
                .rsplit_once(':')
                .filter(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0))
                .ok_or_else(|| {
                    bad(format!(
                        "address = '{text}' is invalid: expected host:port, e.g. siem.example.org:6514"
                    ))
                })?;
            let host = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let _ = port;
            (
                text.clone(),
                host,
                String::new(),
                String::new(),
                kind == Kind::SyslogTls,
            )
        }
    };
    let header = match &s.header {
        None => None,
        Some(text) => {
            let (hname, value) = text
                .split_once(':')
                .map(|(n, v)| (n.trim(), v.trim()))
                .filter(|(n, v)| {
                    axum::http::HeaderName::from_bytes(n.as_bytes()).is_ok()
                        && axum::http::HeaderValue::from_str(v).is_ok()
                        && !v.is_empty()
                })
                // The value may be a credential: the message never repeats it.
                .ok_or_else(|| bad("header is invalid: expected \"Name: value\" on one line, e.g. \"Authorization: Splunk <token>\"".into()))?;
            Some((hname.to_owned(), Zeroizing::new(value.to_owned())))
        }
    };
    let read = |field: &str, path: &PathBuf| {
        std::fs::read(path).map_err(|e| {
            bad(format!(
                "{field} = '{}' cannot be read: {e} — give a readable PEM file",
                path.display()
            ))
        })
    };
    let tls = if wants_tls {
        let ca_pem = s.ca_file.as_ref().map(|p| read("ca_file", p)).transpose()?;
        let identity = match (&s.client_cert, &s.client_key) {
            (Some(cert), Some(key)) => Some((
                read("client_cert", cert)?,
                Zeroizing::new(read("client_key", key)?),
            )),
            (None, None) => None,
            _ => {
                return Err(bad(
                    "client_cert and client_key go together — give both or neither".into(),
                ))
            }
        };
        let files = TlsFiles {
            ca_pem,
            identity,
            server_name: s.server_name.clone().unwrap_or(host),
        };
        // Parse the PEM files now, so that a bad one stops start-up with its setting named.
        transport::tls_connector(&files).map_err(|e| bad(e.to_string()))?;
        Some(files)
    } else {
        for (field, given) in [
            ("ca_file", s.ca_file.is_some()),
            ("client_cert", s.client_cert.is_some()),
            ("client_key", s.client_key.is_some()),
            ("server_name", s.server_name.is_some()),
        ] {
            if given {
                return Err(bad(format!(
                    "{field} is for TLS — use an https:// url or kind = \"syslog-tls\", or remove it"
                )));
            }
        }
        None
    };
    Ok(Sink {
        name,
        kind,
        address,
        path,
        host_header,
        header,
        tls,
        batch_events,
        timeout: std::time::Duration::from_secs(timeout.into()),
    })
}

/// How far a sink is behind the trail.
#[derive(Debug, Clone, PartialEq)]
pub struct Lag {
    pub sink: String,
    /// The last seq the sink acknowledged (0: none yet).
    pub acked_seq: i64,
    pub head_seq: i64,
    /// Events not yet acknowledged (0 when the cursor is ahead).
    pub events: i64,
    /// Age of the oldest event not yet acknowledged (0 when caught up).
    pub seconds: f64,
    /// The cursor is past the head: the vault was restored from a backup older than what the
    /// sink already holds. Forwarding to this sink stops until `seedvault siem reset`.
    pub cursor_ahead: bool,
}

/// The lag of every configured sink at `now`.
pub async fn lag(
    store: &Store,
    sinks: &[Sink],
    now: OffsetDateTime,
) -> Result<Vec<Lag>, StoreError> {
    let head = store::audit::head(store).await?.map_or(0, |(seq, _)| seq);
    let mut lags = Vec::with_capacity(sinks.len());
    for sink in sinks {
        let acked = store::siem::cursor(store, &sink.name)
            .await?
            .map_or(0, |c| c.acked_seq);
        let events = (head - acked).max(0);
        let seconds = if events > 0 {
            store::siem::event_time(store, acked + 1)
                .await?
                .and_then(|t| {
                    OffsetDateTime::parse(&t, &time::format_description::well_known::Rfc3339).ok()
                })
                .map_or(0.0, |t| (now - t).as_seconds_f64().max(0.0))
        } else {
            0.0
        };
        lags.push(Lag {
            sink: sink.name.clone(),
            acked_seq: acked,
            head_seq: head,
            events,
            seconds,
            cursor_ahead: acked > head,
        });
    }
    Ok(lags)
}

#[derive(Debug, thiserror::Error)]
pub enum ResetError {
    #[error(
        "no [[siem]] sink is named '{0}' in the configuration — `seedvault siem status` lists them"
    )]
    UnknownSink(String),
    #[error("--to {to} is past the audit head ({head}) — give a seq up to {head}")]
    PastHead { to: i64, head: i64 },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
}

/// Moves `sink`'s cursor to `to` (default: the head), audited as `siem.cursor_reset`. The
/// answer to a cursor ahead of the head after a restore (see docs/OBSERVABILITY.md), or a
/// way to send a range again (a lower `to`).
pub async fn reset(
    store: &Store,
    vault: &crate::vault::Vault,
    sinks: &[Sink],
    actor: &str,
    sink: &str,
    to: Option<i64>,
    now: OffsetDateTime,
) -> Result<i64, ResetError> {
    if !sinks.iter().any(|s| s.name == sink) {
        return Err(ResetError::UnknownSink(sink.to_owned()));
    }
    let mut tx = store.begin_write().await?;
    let head = store::audit::head(&mut tx).await?.map_or(0, |(seq, _)| seq);
    let to = to.unwrap_or(head).max(0);
    if to > head {
        return Err(ResetError::PastHead { to, head });
    }
    let before = store::siem::cursor(&mut tx, sink)
        .await?
        .map_or(0, |c| c.acked_seq);
    // The reset's own event comes after `to`, so the sink receives it next.
    store::siem::set(&mut tx, sink, to, now.unix_timestamp()).await?;
    let event = crate::audit::NewEvent::new(actor, "siem.cursor_reset", format!("siem:{sink}"))
        .details(serde_json::json!({ "from": before, "to": to, "head": head }));
    crate::audit::append(&mut tx, vault, now, event).await?;
    tx.commit().await?;
    Ok(to)
}
