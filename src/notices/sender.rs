//! The sender task: takes due notices from the `outbox`, renders them and hands them to the
//! configured SMTP server (lettre, STARTTLS or implicit TLS through native-tls).
//!
//! A notice the server does not take is tried again after 30 s, then twice as long each time
//! up to an hour, and given up after [`MAX_ATTEMPTS`]; a permanent refusal (5xx) fails it at
//! once. Rows stay `pending` in the database meanwhile, so a restart resumes them: the first
//! pass after start tries every pending notice at once. Without `[smtp]` every notice is
//! recorded as not sent ("smtp not configured").

use std::path::Path;
use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde_json::Value;
use zeroize::Zeroizing;

use super::templates::{TemplateError, Templates, Values};
use super::{manager_recipient, notice_recipient, Kind};
use crate::clock::SharedClock;
use crate::config::{Config, SmtpSecurity};
use crate::store::outbox::{self, Attempt, PendingNotice};
use crate::store::{Store, StoreError};

/// Attempts before a notice is given up (with the backoff capped at an hour, about two days).
pub const MAX_ATTEMPTS: i64 = 50;
/// How often the outbox is looked at.
const POLL: Duration = Duration::from_secs(1);
/// Notices taken per pass.
const BATCH: i64 = 50;

/// Why the sender cannot be set up; `serve` stops with it.
#[derive(Debug, thiserror::Error)]
pub enum NoticeError {
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error("smtp_password_file {path}: {reason} — the file must hold the SMTP password")]
    Password { path: String, reason: String },
    #[error("smtp: {0}")]
    Smtp(String),
}

/// A configured SMTP server.
struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    /// Longest wait for one message to be accepted, connection included
    /// (`smtp_timeout_seconds`).
    timeout: Duration,
}

/// Seconds before the next attempt after `attempts` failed ones: 30 s doubling, at most 1 h.
pub fn backoff_seconds(attempts: i64) -> i64 {
    let exponent = u32::try_from(attempts.clamp(1, 20) - 1).unwrap_or(0);
    30_i64.saturating_mul(1_i64 << exponent).min(3_600)
}

/// Sends the outbox's notices; see the module documentation.
pub struct Sender {
    store: Store,
    clock: SharedClock,
    templates: Templates,
    mailer: Option<Mailer>,
    security_contact: String,
}

impl Sender {
    /// The sender for `config`: its templates checked, its password read, its transport built.
    pub fn from_config(
        store: Store,
        clock: SharedClock,
        config: &Config,
    ) -> Result<Self, NoticeError> {
        let templates = Templates::load(config.smtp_templates_dir.as_deref())?;
        let mailer = match (&config.smtp_host, &config.smtp_from) {
            (Some(host), Some(from)) => Some(mailer(config, host, from)?),
            _ => None,
        };
        Ok(Self {
            store,
            clock,
            templates,
            mailer,
            security_contact: config.smtp_security_contact.clone().unwrap_or_default(),
        })
    }

    /// Whether notices go anywhere (an SMTP server is configured).
    pub fn sends(&self) -> bool {
        self.mailer.is_some()
    }

    /// Runs until the process ends: a first pass over every pending notice, then due ones
    /// every second.
    pub fn spawn(self) -> tokio::task::JoinHandle<()> {
        self.spawn_gated(crate::shared::JobLock::Single)
    }

    /// [`Self::spawn`] for one of several instances: passes run only while this instance
    /// holds `lock` (`notice-sender`), so no two instances mail one notice at once.
    pub fn spawn_gated(self, mut lock: crate::shared::JobLock) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut first = true;
            loop {
                if !lock.may_run().await {
                    tokio::time::sleep(POLL).await;
                    continue;
                }
                match self.pass(first).await {
                    Ok(n) if n as i64 == BATCH => continue,
                    Ok(_) => first = false,
                    Err(e) => {
                        tracing::warn!(error = %e, "notice sender: cannot read the outbox; retrying")
                    }
                }
                tokio::time::sleep(POLL).await;
            }
        })
    }

    /// Tries the due notices (every pending one if `all`); returns how many were taken.
    pub async fn pass(&self, all: bool) -> Result<usize, StoreError> {
        let now = self.clock.unix();
        let due = outbox::due(&self.store, if all { i64::MAX } else { now }, BATCH).await?;
        let taken = due.len();
        if taken == 0 {
            return Ok(0);
        }
        let Some(mailer) = &self.mailer else {
            // Nothing to send: the whole batch becomes `unsent` in one transaction (one
            // commit, not one per notice, on the write connection the grants use).
            let mut tx = self.store.begin_write().await?;
            for notice in &due {
                let unsent = Attempt::Unsent {
                    reason: "smtp not configured",
                };
                outbox::record_attempt(&mut tx, notice.id, now, unsent).await?;
            }
            tx.commit().await?;
            return Ok(taken);
        };
        for notice in due {
            self.send(mailer, notice).await?;
        }
        Ok(taken)
    }

    /// Records an attempt's outcome through the one write connection, where it queues behind
    /// the grants instead of racing them for SQLite's lock (`store::readers`). One commit per
    /// notice: a mail that left is recorded before the next one is tried, so a crash resends
    /// at most one.
    async fn record(&self, id: i64, at: i64, attempt: Attempt<'_>) -> Result<(), StoreError> {
        let mut tx = self.store.begin_write().await?;
        outbox::record_attempt(&mut tx, id, at, attempt).await?;
        tx.commit().await
    }

    async fn send(&self, mailer: &Mailer, notice: PendingNotice) -> Result<(), StoreError> {
        let now = self.clock.unix();
        let record = |attempt| self.record(notice.id, now, attempt);
        let Some(kind) = Kind::parse(&notice.kind) else {
            return record(Attempt::Failed {
                error: "unknown kind of notice",
            })
            .await;
        };
        let mut to = Vec::new();
        if let Some(owner) = notice_recipient(&self.store, &notice.owner).await? {
            to.push(owner);
        }
        if notice.notify_manager {
            if let Some(manager) = manager_recipient(&self.store, &notice.owner).await? {
                to.push(manager);
            }
        }
        if to.is_empty() {
            let reason = format!("no email address known for owner '{}'", notice.owner);
            return record(Attempt::Unsent { reason: &reason }).await;
        }
        let mut facts: Value = serde_json::from_str(&notice.facts).unwrap_or(Value::Null);
        let message = match self.message(mailer, kind, &notice, &facts, &to) {
            Ok(message) => message,
            Err(error) => return record(Attempt::Failed { error: &error }).await,
        };
        let sent = tokio::time::timeout(mailer.timeout, mailer.transport.send(message)).await;
        let failure = match sent {
            Ok(Ok(_)) => {
                // A delivery link opens a delivery: once sent, the vault keeps no copy of it.
                if let Some(map) = facts.as_object_mut() {
                    map.remove("link");
                }
                let kept = facts.to_string();
                let recipients = to.join(", ");
                return record(Attempt::Sent {
                    recipients: &recipients,
                    facts: &kept,
                })
                .await;
            }
            Ok(Err(e)) if e.is_permanent() => {
                let error = format!("refused by the mail server: {e}");
                return record(Attempt::Failed { error: &error }).await;
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {} s", mailer.timeout.as_secs()),
        };
        let attempts = notice.attempts + 1;
        tracing::warn!(notice = notice.id, serial = %notice.serial, attempts, error = %failure, "notice not sent; will retry");
        if attempts >= MAX_ATTEMPTS {
            let error = format!("gave up after {attempts} attempts: {failure}");
            return record(Attempt::Failed { error: &error }).await;
        }
        record(Attempt::Retry {
            error: &failure,
            retry_at: now + backoff_seconds(attempts),
        })
        .await
    }

    fn message(
        &self,
        mailer: &Mailer,
        kind: Kind,
        notice: &PendingNotice,
        facts: &Value,
        to: &[String],
    ) -> Result<Message, String> {
        let text = |key: &str| facts.get(key).and_then(Value::as_str).unwrap_or_default();
        let time = facts
            .get("time")
            .and_then(Value::as_i64)
            .map_or_else(|| when(notice.created_at), when);
        let expires = facts
            .get("expires_at")
            .and_then(Value::as_i64)
            .map(when)
            .unwrap_or_default();
        let ticket = Some(text("ticket"))
            .filter(|t| !t.is_empty())
            .unwrap_or("(none given)");
        let values = Values {
            pairs: vec![
                ("serial", notice.serial.as_str()),
                ("owner", notice.owner.as_str()),
                ("operator", text("operator")),
                ("time", &time),
                ("ticket", ticket),
                ("security_contact", &self.security_contact),
                ("link", text("link")),
                ("expires", &expires),
            ],
        };
        let (subject, body) = self.templates.render(kind, &values);
        let mut builder = Message::builder()
            .from(mailer.from.clone())
            .subject(subject)
            .header(ContentType::TEXT_PLAIN);
        for address in to {
            let mailbox: Mailbox = address
                .parse()
                .map_err(|e| format!("recipient '{address}': {e}"))?;
            builder = builder.to(mailbox);
        }
        builder.body(body).map_err(|e| e.to_string())
    }
}

fn mailer(config: &Config, host: &str, from: &str) -> Result<Mailer, NoticeError> {
    let tls = || TlsParameters::new(host.to_owned()).map_err(|e| NoticeError::Smtp(e.to_string()));
    let timeout = Duration::from_secs(u64::from(config.smtp_timeout_seconds));
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
        .port(config.smtp_port)
        .timeout(Some(timeout));
    builder = match config.smtp_security {
        SmtpSecurity::Starttls => builder.tls(Tls::Required(tls()?)),
        SmtpSecurity::Tls => builder.tls(Tls::Wrapper(tls()?)),
        SmtpSecurity::None => builder.tls(Tls::None),
    };
    if let (Some(user), Some(file)) = (&config.smtp_username, &config.smtp_password_file) {
        builder = builder.credentials(Credentials::new(
            user.clone(),
            read_password(file)?.to_string(),
        ));
    }
    let from = from
        .parse()
        .map_err(|e| NoticeError::Smtp(format!("smtp_from: {e}")))?;
    Ok(Mailer {
        transport: builder.build(),
        from,
        timeout,
    })
}

fn read_password(path: &Path) -> Result<Zeroizing<String>, NoticeError> {
    let error = |reason: String| NoticeError::Password {
        path: path.display().to_string(),
        reason,
    };
    let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?);
    let password = Zeroizing::new(text.trim_end_matches(['\r', '\n']).to_owned());
    if password.is_empty() {
        return Err(error("it is empty".into()));
    }
    Ok(password)
}

/// A unix time as `YYYY-MM-DD HH:MM UTC`.
fn when(seconds: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(seconds)
        .ok()
        .and_then(|t| {
            t.format(time::macros::format_description!(
                "[year]-[month]-[day] [hour]:[minute] UTC"
            ))
            .ok()
        })
        .unwrap_or_else(|| seconds.to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// The outcome of an attempt is written through the one write connection: while another
    /// write holds SQLite's lock, it waits its turn. Written beside the writer (as it once
    /// was, on the read side) it slept in SQLite's busy handler on a runtime thread, stalling
    /// the reveals scheduled there, and failed as "database is locked" after the timeout.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_attempt_waits_for_a_held_write_instead_of_failing_as_busy() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_with(dir.path(), Duration::from_millis(20))
            .await
            .unwrap();
        let mut tx = store.begin_write().await.unwrap();
        let notice = outbox::NewNotice {
            kind: "reveal",
            serial: "S1",
            owner: "amy",
            notify_manager: false,
            facts: "{}",
            created_at: 10,
        };
        outbox::insert(&mut tx, &notice).await.unwrap();
        tx.commit().await.unwrap();
        let config = crate::config::Config::validate(Default::default()).unwrap();
        let clock: SharedClock = Arc::new(crate::clock::ManualClock::at_unix(100));
        let sender = Sender::from_config(store.clone(), clock, &config).unwrap();

        let held = store.begin_write().await.unwrap();
        let pass = tokio::spawn(async move { sender.pass(true).await });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            !pass.is_finished(),
            "the attempt did not wait for the held write"
        );
        held.commit().await.unwrap();
        assert_eq!(pass.await.unwrap().unwrap(), 1);
        assert_eq!(outbox::counts(&store).await.unwrap().unsent, 1);
    }

    #[test]
    fn retries_back_off_from_half_a_minute_doubling_up_to_an_hour() {
        let waits: Vec<i64> = (1..=9).map(backoff_seconds).collect();
        assert_eq!(waits, [30, 60, 120, 240, 480, 960, 1920, 3600, 3600]);
        assert_eq!(backoff_seconds(MAX_ATTEMPTS), 3600);
    }
}
