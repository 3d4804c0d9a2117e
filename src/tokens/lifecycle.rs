//! The end of a token's life (DESIGN §9): delivery confirmed by a code read from the physical
//! token (or, with a reason, without one), cancellation, and expiry. Each purges the seed in
//! the same transaction as its audit event; afterwards the WAL is checkpointed and truncated
//! so that no byte of the sealed seed survives in the database files.

use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;

use super::{Env, Token, TokenError, TokenState};
use crate::audit::{self, NewEvent, Outcome};
use crate::notices::{self, Kind, Notice};
use crate::otp;
use crate::store::tokens::{self as rows, PurgeRow};
use crate::store::StoreError;
use crate::vault::SealedBlob;
use zeroize::Zeroizing;

/// Steps searched around the recorded drift for a delivery code. Entra accepts up to ±15
/// steps of clock drift for hardware OATH tokens; the nearest match wins.
pub const DELIVERY_WINDOW: u32 = 15;
/// Wrong delivery codes allowed per token per hour before further attempts are refused.
pub const DELIVERY_ATTEMPTS_PER_HOUR: usize = 5;
/// Tokens purged per transaction by the sweeper, so reveals keep flowing meanwhile: a batch
/// holds the write path ≈6 ms (25 × ≈240 µs), so a reveal waits at most that long behind it.
/// 200 per batch swept 10,000 tokens twice as fast but doubled reveal p99 meanwhile
/// (BENCHMARKS.md, "Retention sweep"); the sweep runs in the background, reveals do not.
pub const SWEEP_BATCH: i64 = 25;

#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("the code does not match token '{0}' — ask the user to read the code currently on the token's display")]
    WrongCode(String),
    #[error("too many wrong codes for this token in the last hour; try again in {retry_after_seconds} seconds")]
    TooManyAttempts { retry_after_seconds: u64 },
    #[error("{0}")]
    Invalid(String),
}

impl From<StoreError> for LifecycleError {
    fn from(e: StoreError) -> Self {
        Self::Token(e.into())
    }
}

impl From<audit::AuditError> for LifecycleError {
    fn from(e: audit::AuditError) -> Self {
        Self::Token(e.into())
    }
}

/// The result of a purge, as reported to the caller.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Purged {
    pub serial: String,
    pub state: TokenState,
    /// `delivered`, `delivered-unverified`, `cancelled`, `abandoned` or `expired`.
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drift_steps: Option<i64>,
}

/// How delivery is confirmed — the one input of a delivery, whichever front end (API body,
/// token page, `seedvault token deliver`) it came from. Build it with
/// [`DeliveryRequest::new`], which holds the rule.
pub enum DeliveryRequest {
    /// The code the user read from the physical token.
    Code(Zeroizing<String>),
    /// No code could be read; the reason is recorded.
    Unverified { reason: String },
}

impl DeliveryRequest {
    /// Exactly one of: a code, or `unverified` with a reason. A blank code or reason counts as
    /// not given, so an empty code field is refused rather than taken for an unverified
    /// delivery; a reason beside a code is refused rather than silently dropped.
    pub fn new(
        code: Option<Zeroizing<String>>,
        unverified: bool,
        reason: Option<&str>,
    ) -> Result<Self, LifecycleError> {
        let code = code.filter(|c| !c.trim().is_empty());
        let reason = reason.map(str::trim).filter(|r| !r.is_empty());
        match (code, unverified) {
            (Some(_), true) => Err(LifecycleError::Invalid(
                "unverified: send either a code or unverified with a reason, not both".into(),
            )),
            (Some(_), false) if reason.is_some() => Err(LifecycleError::Invalid(
                "reason: only a delivery confirmed without a code takes a reason — drop it, or \
                 confirm unverified instead"
                    .into(),
            )),
            (Some(code), false) => Ok(Self::Code(code)),
            (None, true) => Ok(Self::Unverified {
                reason: clean_reason(reason.unwrap_or_default())?,
            }),
            (None, false) => Err(LifecycleError::Invalid(
                "code: enter the code the user reads from the token, or confirm unverified with \
                 a reason"
                    .into(),
            )),
        }
    }
}

/// Why a token is cancelled — the one input of a cancellation from any front end.
pub struct CancelRequest {
    reason: String,
}

impl CancelRequest {
    /// A reason is required (it is recorded in the audit trail), at most 500 characters.
    pub fn new(reason: &str) -> Result<Self, LifecycleError> {
        Ok(Self {
            reason: clean_reason(reason)?,
        })
    }
}

pub(crate) fn require_escrowed(token: &Token) -> Result<(), TokenError> {
    match token.state {
        TokenState::Escrowed => Ok(()),
        TokenState::Programming => Err(TokenError::WrongState {
            serial: token.serial.clone(),
            state: token.state.as_str().into(),
            hint: PROGRAMMING_HINT,
        }),
        _ => Err(TokenError::WrongState {
            serial: token.serial.clone(),
            state: token.state.as_str().into(),
            hint: "its seed was already destroyed",
        }),
    }
}

/// What to do with a token still being programmed, wherever an escrowed one is needed.
pub const PROGRAMMING_HINT: &str = "it is still being programmed: confirm a code from the \
     programmed device first (POST /api/v1/tokens/{serial}/programming, or the token's page), \
     or cancel it to abandon it";

fn clean_reason(reason: &str) -> Result<String, LifecycleError> {
    let reason = reason.trim();
    if reason.is_empty() {
        return Err(LifecycleError::Invalid(
            "reason: a reason is required — say why, for the audit trail".into(),
        ));
    }
    if reason.chars().count() > 500 {
        return Err(LifecycleError::Invalid(
            "reason: longer than 500 characters".into(),
        ));
    }
    Ok(reason.to_owned())
}

/// Purges in the open transaction and appends the event; the caller commits.
async fn purge_in(
    env: &Env<'_>,
    tx: &mut crate::store::WriteTx,
    token: &Token,
    row: PurgeRow<'_>,
    event: NewEvent,
) -> Result<(), LifecycleError> {
    if !rows::purge(tx, &row).await? {
        return Err(TokenError::WrongState {
            serial: token.serial.clone(),
            state: "no longer escrowed".into(),
            hint: "another action purged it meanwhile",
        }
        .into());
    }
    audit::append(tx, env.vault, env.now, event).await?;
    Ok(())
}

/// Rewrites the database so the purged bytes leave the WAL too.
pub(crate) async fn scrub(env: &Env<'_>) {
    if let Err(e) = env.store.scrub_freed_space().await {
        // The purge itself committed; the next checkpoint will finish the job.
        tracing::warn!(error = %e, "WAL checkpoint after purge did not complete");
    }
}

/// Confirms delivery: verifies the code (or records why not), then purges — one transaction.
pub async fn deliver(
    env: &Env<'_>,
    actor: &str,
    serial: &str,
    request: DeliveryRequest,
) -> Result<Purged, LifecycleError> {
    let mut tx = env.store.begin_write().await?;
    let row = rows::by_serial(&mut tx, serial)
        .await?
        .ok_or_else(|| TokenError::NotFound(serial.to_owned()))?;
    let token = Token::from_row(row)?;
    require_escrowed(&token)?;
    let attempted = deliver_in(env, &mut tx, actor, token, request).await?;
    tx.commit().await?;
    attempted.metric().count();
    match attempted {
        Attempted::Purged(purged) => {
            scrub(env).await;
            Ok(purged)
        }
        Attempted::Refused(refusal) => Err(refusal),
    }
}

/// The token's seed, read and unsealed inside `tx`. A key rotation running beside the server
/// may have re-sealed it under a key this process has not learned yet: it is learned first.
pub(crate) async fn unseal_in(
    env: &Env<'_>,
    tx: &mut crate::store::WriteTx,
    token: &Token,
) -> Result<crate::secret::Seed, TokenError> {
    let sealed = rows::sealed_seed(&mut *tx, token.row_id)
        .await?
        .ok_or_else(|| TokenError::NotFound(token.serial.clone()))?;
    let sealed = SealedBlob::from_stored(sealed);
    Ok(tx
        .inline(|c| {
            crate::vault::rotate::unseal_following(
                env.vault,
                c,
                &token.token_id,
                &token.serial,
                &sealed,
            )
        })
        .await??)
}

/// Seconds until a wrong code leaves the hour's window, when `attempts` (times of this hour's
/// wrong codes, oldest first) already reached the limit; `None` while another try is allowed.
pub(crate) fn attempts_exhausted(attempts: &[i64], now: i64) -> Option<u64> {
    (attempts.len() >= DELIVERY_ATTEMPTS_PER_HOUR).then(|| {
        let oldest = attempts.first().copied().unwrap_or(now);
        u64::try_from(oldest + 3_600 - now).unwrap_or(1).max(1)
    })
}

/// Checks a code read from the token's device against its seed within the delivery window,
/// under the hourly wrong-code limit: the one check behind delivery, confirming a programmed
/// device and verifying before shipping. A refusal (limit reached, or a wrong code, which is
/// counted) is audited as `refused_action` in `tx` and returned as the inner `Err`: the caller
/// commits `tx` so that the refusal and the count stay, then reports it.
pub(crate) async fn check_device_code(
    env: &Env<'_>,
    tx: &mut crate::store::WriteTx,
    token: &Token,
    actor: &str,
    code: &str,
    refused_action: &'static str,
) -> Result<Result<otp::Verified, LifecycleError>, LifecycleError> {
    let now = env.unix();
    let attempts = rows::delivery_attempts_since(&mut *tx, token.row_id, now - 3_600).await?;
    if let Some(retry_after_seconds) = attempts_exhausted(&attempts, now) {
        let event = NewEvent::new(actor, refused_action, token.target())
            .outcome(Outcome::Denied)
            .details(json!({ "reason": "too many wrong codes in the last hour" }));
        audit::append(tx, env.vault, env.now, event).await?;
        return Ok(Err(LifecycleError::TooManyAttempts {
            retry_after_seconds,
        }));
    }
    let seed = unseal_in(env, tx, token).await?;
    let verified = otp::verify(
        &seed,
        &token.spec()?,
        now,
        code,
        token.drift_steps,
        DELIVERY_WINDOW,
    );
    drop(seed);
    match verified {
        Some(verified) => Ok(Ok(verified)),
        None => {
            rows::insert_delivery_attempt(&mut *tx, token.row_id, now).await?;
            let event = NewEvent::new(actor, refused_action, token.target())
                .outcome(Outcome::Denied)
                .details(
                    json!({ "reason": "wrong code", "attempts_last_hour": attempts.len() + 1 }),
                );
            audit::append(tx, env.vault, env.now, event).await?;
            Ok(Err(LifecycleError::WrongCode(token.serial.clone())))
        }
    }
}

/// How a delivery ended inside its transaction. A refusal has been audited (and a wrong code
/// counted) in it, so the caller commits either way.
pub(crate) enum Attempted {
    Purged(Purged),
    Refused(LifecycleError),
}

impl Attempted {
    /// The delivery's metric label (fixed codes only), read before the outcome is consumed.
    pub(crate) fn metric(&self) -> DeliveryMetric {
        DeliveryMetric(match self {
            Attempted::Purged(purged) if purged.reason == "delivered" => "delivered",
            Attempted::Purged(_) => "delivered-unverified",
            Attempted::Refused(LifecycleError::TooManyAttempts { .. }) => "too-many-attempts",
            Attempted::Refused(_) => "wrong-code",
        })
    }
}

/// How a delivery ended, for the metrics; counted once its transaction committed.
#[derive(Clone, Copy)]
pub(crate) struct DeliveryMetric(&'static str);

impl DeliveryMetric {
    pub(crate) fn count(self) {
        crate::telemetry::delivery(self.0);
        if self.0.starts_with("delivered") {
            crate::telemetry::purged(self.0, 1);
        }
    }
}

/// The one delivery path, for the helpdesk ([`deliver`]) and the owner's self-service link
/// (`delivery_link::confirm`): checks the code against the token's drift window (or records
/// why there is none), then purges with the `token.delivered` event and the owner's notice —
/// all in `tx`, which the caller commits; then it calls [`scrub`].
pub(crate) async fn deliver_in(
    env: &Env<'_>,
    tx: &mut crate::store::WriteTx,
    actor: &str,
    token: Token,
    request: DeliveryRequest,
) -> Result<Attempted, LifecycleError> {
    let now = env.unix();
    let (reason, drift, details) = match request {
        DeliveryRequest::Unverified { reason: why } => (
            "delivered-unverified",
            None,
            json!({ "verified": false, "reason": why }),
        ),
        DeliveryRequest::Code(code) => {
            let verified =
                match check_device_code(env, tx, &token, actor, &code, "delivery.refused").await? {
                    Ok(verified) => verified,
                    Err(refused) => return Ok(Attempted::Refused(refused)),
                };
            (
                "delivered",
                Some(verified.drift_steps),
                json!({ "verified": true, "drift_steps": verified.drift_steps }),
            )
        }
    };
    let event = NewEvent::new(actor, "token.delivered", token.target()).details(details);
    let purge = PurgeRow {
        id: token.row_id,
        reason,
        at: now,
        delivered_by: Some(actor),
        drift_steps: drift,
    };
    purge_in(env, tx, &token, purge, event).await?;
    notify(env, tx, &token, Kind::Delivered, actor).await?;
    Ok(Attempted::Purged(Purged {
        serial: token.serial,
        state: TokenState::Purged,
        reason: reason.into(),
        drift_steps: drift,
    }))
}

/// Records the owner's notice of `kind` in `tx` (nothing for a token without an owner).
async fn notify(
    env: &Env<'_>,
    tx: &mut crate::store::WriteTx,
    token: &Token,
    kind: Kind,
    actor: &str,
) -> Result<(), LifecycleError> {
    let Some(owner) = &token.owner else {
        return Ok(());
    };
    let notice = Notice {
        kind,
        serial: &token.serial,
        owner,
        notify_manager: env
            .policies
            .get(&token.policy)
            .is_some_and(|p| p.notify_manager),
        operator: shown_actor(actor),
        ticket: None,
        link: None,
        expires_at: None,
        at: env.unix(),
    };
    notices::record(tx, &notice).await?;
    Ok(())
}

/// Who acted, as a notice names them: an operator by name, the owner as "you".
fn shown_actor(actor: &str) -> &str {
    if actor.starts_with("owner:") {
        return "you";
    }
    actor.strip_prefix("operator:").unwrap_or(actor)
}

/// Cancels an escrowed token (lost in transit, wrong user) and purges its seed; a token still
/// being programmed is abandoned the same way (`token.abandoned`, purge reason `abandoned`).
pub async fn cancel(
    env: &Env<'_>,
    actor: &str,
    serial: &str,
    request: CancelRequest,
) -> Result<Purged, LifecycleError> {
    let why = request.reason;
    let mut tx = env.store.begin_write().await?;
    let row = rows::by_serial(&mut tx, serial)
        .await?
        .ok_or_else(|| TokenError::NotFound(serial.to_owned()))?;
    let token = Token::from_row(row)?;
    let (action, reason) = if token.state == TokenState::Programming {
        ("token.abandoned", "abandoned")
    } else {
        require_escrowed(&token)?;
        ("token.cancelled", "cancelled")
    };
    let event = NewEvent::new(actor, action, token.target()).details(json!({ "reason": why }));
    let purge = PurgeRow {
        id: token.row_id,
        reason,
        at: env.unix(),
        delivered_by: None,
        drift_steps: None,
    };
    purge_in(env, &mut tx, &token, purge, event).await?;
    notify(env, &mut tx, &token, Kind::Cancelled, actor).await?;
    tx.commit().await?;
    crate::telemetry::purged("cancelled", 1);
    scrub(env).await;
    Ok(Purged {
        serial: token.serial,
        state: TokenState::Purged,
        reason: reason.into(),
        drift_steps: None,
    })
}

/// Expires and purges every escrowed token past its retention deadline, in batches so other
/// requests interleave. Returns the serials purged.
pub async fn purge_expired(env: &Env<'_>, actor: &str) -> Result<Vec<String>, LifecycleError> {
    purge_expired_paced(env, actor, SweepPace::Full).await
}

/// How the retention sweep shares the vault with reveals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SweepPace {
    /// Batch after batch (`seedvault purge --expired`, tests).
    Full,
    /// The server's background sweeper: after each full batch it pauses
    /// [`SWEEP_YIELD`] times as long as the batch took (at most [`SWEEP_MAX_PAUSE`]), so the
    /// writer and the cores are free for reveals most of the time. The sweep takes longer;
    /// nobody waits for it.
    Yielding,
}

/// The server's sweeper pauses this many times a batch's own duration after it.
pub const SWEEP_YIELD: u32 = 2;
/// The longest pause between two batches of the server's sweeper.
pub const SWEEP_MAX_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);

/// [`purge_expired`] at the given pace.
pub async fn purge_expired_paced(
    env: &Env<'_>,
    actor: &str,
    pace: SweepPace,
) -> Result<Vec<String>, LifecycleError> {
    let now = env.unix();
    let mut purged = Vec::new();
    loop {
        let batch_started = std::time::Instant::now();
        let overdue = rows::overdue(env.store, now, SWEEP_BATCH).await?;
        if overdue.is_empty() {
            break;
        }
        let full_batch = overdue.len() as i64 == SWEEP_BATCH;
        let mut tx = env.store.begin_write().await?;
        let before = purged.len();
        for row in overdue {
            let token = Token::from_row(row)?;
            let purge = PurgeRow {
                id: token.row_id,
                reason: "expired",
                at: now,
                delivered_by: None,
                drift_steps: None,
            };
            // Skipped when delivered or cancelled since the batch was read.
            if rows::purge(&mut tx, &purge).await? {
                let event = NewEvent::new(actor, "token.expired", token.target())
                    .details(json!({ "retention_deadline": token.retention_deadline }));
                audit::append(&mut tx, env.vault, env.now, event).await?;
                notify(env, &mut tx, &token, Kind::Expired, actor).await?;
                purged.push(token.serial);
            }
        }
        tx.commit().await?;
        crate::telemetry::purged("expired", purged.len() - before);
        if pace == SweepPace::Yielding && full_batch {
            let pause = (batch_started.elapsed() * SWEEP_YIELD).min(SWEEP_MAX_PAUSE);
            tokio::time::sleep(pause).await;
        }
    }
    if !purged.is_empty() {
        scrub(env).await;
    }
    Ok(purged)
}

/// Purges again, in a restored vault, the tokens that a later audit export of the original
/// shows destroyed (`seedvault restore --replay-purges`): `destroyed` holds each serial with
/// the reason the original recorded. Tokens no longer escrowed (or unknown) are left as they
/// are; each purge is audited as `token.purged`. Returns the serials purged.
pub async fn purge_replayed(
    store: &crate::store::Store,
    vault: &crate::vault::Vault,
    now: time::OffsetDateTime,
    actor: &str,
    destroyed: &[(String, &str)],
) -> Result<Vec<String>, LifecycleError> {
    let mut purged = Vec::new();
    for batch in destroyed.chunks(SWEEP_BATCH as usize) {
        let mut tx = store.begin_write().await?;
        for (serial, reason) in batch {
            let Some(row) = rows::by_serial(&mut tx, serial).await? else {
                continue;
            };
            let token = Token::from_row(row)?;
            let purge = PurgeRow {
                id: token.row_id,
                reason,
                at: now.unix_timestamp(),
                delivered_by: None,
                drift_steps: None,
            };
            if rows::purge(&mut tx, &purge).await? {
                let event = NewEvent::new(actor, "token.purged", token.target())
                    .details(json!({ "reason": "replayed", "original": reason }));
                audit::append(&mut tx, vault, now, event).await?;
                purged.push(token.serial);
            }
        }
        tx.commit().await?;
    }
    if !purged.is_empty() {
        if let Err(e) = store.scrub_freed_space().await {
            tracing::warn!(error = %e, "WAL checkpoint after purge did not complete");
        }
    }
    Ok(purged)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn code(text: &str) -> Option<Zeroizing<String>> {
        Some(Zeroizing::new(text.to_owned()))
    }

    fn refusal(result: Result<DeliveryRequest, LifecycleError>) -> String {
        match result {
            Ok(_) => panic!("the delivery request should be refused"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_delivery_is_confirmed_by_a_code_or_unverified_with_a_reason() {
        assert!(matches!(
            DeliveryRequest::new(code(" 123456 "), false, None).unwrap(),
            DeliveryRequest::Code(_)
        ));
        let DeliveryRequest::Unverified { reason } =
            DeliveryRequest::new(code(""), true, Some(" display broken ")).unwrap()
        else {
            panic!("expected an unverified delivery");
        };
        assert_eq!(reason, "display broken");
    }

    #[test]
    fn a_blank_code_is_refused_instead_of_becoming_an_unverified_delivery() {
        for blank in [None, code(""), code("   ")] {
            let err = refusal(DeliveryRequest::new(blank, false, None));
            assert!(err.starts_with("code: "), "{err}");
        }
        let err = refusal(DeliveryRequest::new(code(""), false, Some("no display")));
        assert!(err.starts_with("code: "), "{err}");
    }

    #[test]
    fn contradictory_delivery_input_names_the_field_to_drop() {
        let err = refusal(DeliveryRequest::new(code("123456"), true, Some("x")));
        assert!(err.starts_with("unverified: "), "{err}");
        let err = refusal(DeliveryRequest::new(code("123456"), false, Some("x")));
        assert!(err.starts_with("reason: "), "{err}");
        let err = refusal(DeliveryRequest::new(None, true, Some("  ")));
        assert!(err.starts_with("reason: "), "{err}");
    }

    #[test]
    fn a_cancellation_needs_a_reason_of_at_most_500_characters() {
        assert_eq!(CancelRequest::new(" lost ").unwrap().reason, "lost");
        assert!(CancelRequest::new(" ").is_err());
        assert!(CancelRequest::new(&"x".repeat(501)).is_err());
    }
}
