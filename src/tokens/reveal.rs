//! Reveal (DESIGN §5, §6): a helpdesk operator gets a token's current code only after the
//! policy's checklist is satisfied and the reveal is signed with a fresh passkey assertion.
//!
//! [`start`] runs before the passkey prompt: it checks the token, the checklist and the
//! limits and returns the WebAuthn challenge with a [`StartedReveal`] that the
//! web layer keeps until the assertion comes back. [`finish`] checks the assertion against the
//! operator's own passkeys, then re-checks everything in one transaction that records the
//! reveal, the passkey's counter and the audit event, and only then hands out the code. Every
//! refusal on the way is audited (`reveal.denied`, with the reason).
//!
//! Under a four-eyes policy (`[approval] second_operator = true`), [`start`] without an
//! approval records a request for a second operator instead ([`Started::AwaitingApproval`]);
//! with the id of an approved request it checks that approval ([`super::approval`] holds the
//! rules) and the grant consumes it.

use serde::{Deserialize, Serialize};
use serde_json::json;
use webauthn_rs::prelude::{
    PasskeyAuthentication, PublicKeyCredential, RequestChallengeResponse, Webauthn,
};

use super::approval::{self, Approval, ApprovalError};
use super::{Env, Token, TokenError, TokenState};
use crate::audit::{self, NewEvent, Outcome};
use crate::directory::{self, OfRecord};
use crate::notices;
use crate::operators::passkeys::SignRefusal;
use crate::operators::{self, Operator, UsedPasskey};
use crate::otp::{self, OneTimeCode};
use crate::policy::{DirectoryNeed, Policy, Shortfall, Submission};
use crate::store::directory::{self as directory_rows, EntryRow};
use crate::store::tokens as rows;
use crate::store::{Inline, StoreError};
use crate::vault::SealedBlob;

/// How long a started reveal waits for its passkey assertion.
pub const PENDING_SECONDS: i64 = 120;

#[derive(Debug, thiserror::Error)]
pub enum RevealError {
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("check '{check}' relies on the directory of record, but {owner} has {} there — sync the directory (`seedvault directory sync`, or the Directory page) or add {owner} to its source (the HR export or LDAP), then start again; never use a number the caller gives", .needs.describe().replacen("a ", "no ", 1))]
    DirectoryRecord {
        check: String,
        owner: String,
        needs: DirectoryNeed,
    },
    #[error("token '{0}' has no owner yet — assign it (PATCH /api/v1/tokens/{0} or `seedvault token assign`) before revealing a code")]
    NoOwner(String),
    #[error("token '{0}' was never verified against its physical device, and its policy requires that before any code is revealed — a provisioner types a code read from the token on its page (or `seedvault token verify {0} --code CODE`); if the token has already left, verify it with the owner through a delivery instead, or cancel it and issue a new one")]
    NotVerified(String),
    #[error("the checklist does not satisfy policy '{policy}': {}", list(.shortfalls))]
    Checklist {
        policy: String,
        shortfalls: Vec<Shortfall>,
    },
    #[error("{what} limit reached ({limit}); the next reveal is allowed in {retry_after_seconds} seconds")]
    Limit {
        what: &'static str,
        limit: u32,
        retry_after_seconds: u64,
    },
    #[error("this reveal was started for token '{started}', not '{requested}' — start again for the token you mean")]
    WrongToken { started: String, requested: String },
    #[error("the reveal waited more than {PENDING_SECONDS} seconds for the passkey — start again")]
    Expired,
    #[error("you have no passkey to sign a reveal with — add one under your account first")]
    NoPasskey,
    #[error("this passkey is not registered to you — sign with one of your own passkeys")]
    ForeignPasskey,
    #[error("the passkey assertion was not accepted: {0}")]
    Assertion(String),
    #[error("cannot start the passkey prompt: {0}")]
    Challenge(String),
    #[error(transparent)]
    Operator(#[from] operators::OperatorError),
    #[error(transparent)]
    Approval(#[from] ApprovalError),
}

impl RevealError {
    /// A short, fixed name for the kind of refusal: the metrics' `reason` label, which must
    /// never carry the message's serials or names.
    pub fn reason_code(&self) -> &'static str {
        match self {
            Self::Token(TokenError::NotFound(_)) => "not-found",
            Self::Token(_) => "token-state",
            Self::NoOwner(_) => "no-owner",
            Self::NotVerified(_) => "not-verified",
            Self::Checklist { .. } => "checklist",
            Self::Limit { .. } => "limit",
            Self::WrongToken { .. } => "wrong-token",
            Self::Expired => "expired",
            Self::NoPasskey => "no-passkey",
            Self::ForeignPasskey => "foreign-passkey",
            Self::Assertion(_) => "assertion",
            Self::Challenge(_) => "challenge",
            Self::Operator(_) => "operator",
            Self::DirectoryRecord { .. } => "no-directory-record",
            Self::Approval(_) => "approval",
        }
    }
}

fn list(shortfalls: &[Shortfall]) -> String {
    shortfalls
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl From<StoreError> for RevealError {
    fn from(e: StoreError) -> Self {
        Self::Token(e.into())
    }
}

impl From<audit::AuditError> for RevealError {
    fn from(e: audit::AuditError) -> Self {
        Self::Token(e.into())
    }
}

/// What the operator submits with the reveal request.
pub struct RevealRequest<'a> {
    pub checks: &'a [String],
    pub ticket: Option<&'a str>,
    pub note: Option<&'a str>,
    /// The approved four-eyes request this reveal carries out. Without checks, ticket and note
    /// the request takes those the approval recorded.
    pub approval: Option<i64>,
}

/// A reveal that passed the checklist and waits for its passkey assertion. Bound to the
/// WebAuthn challenge in the server-side session; holds no secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingReveal {
    pub serial: String,
    pub operator_id: i64,
    pub policy: String,
    pub policy_hash: String,
    pub checks: Vec<String>,
    pub ticket: Option<String>,
    pub note: Option<String>,
    pub expires_at: i64,
    /// The approval this reveal carries out (four-eyes policies).
    #[serde(default)]
    pub approval: Option<i64>,
    /// What an approval of this reveal binds ([`approval::binding`]).
    #[serde(default)]
    pub binding: String,
    #[serde(default)]
    pub(crate) token_row: i64,
}

/// What [`start`] leads to.
pub enum Started {
    /// Sign the reveal with a passkey: the challenge, and the reveal waiting for [`finish`].
    Challenge(RequestChallengeResponse, Box<StartedReveal>),
    /// The policy needs a second operator: a request waits for their decision.
    AwaitingApproval(Approval),
}

/// A started reveal: what was checked, and the WebAuthn challenge state its passkey
/// assertion must answer. Holds no secret; finish it once ([`finish`] consumes it).
/// Serialisable so that instances on PostgreSQL share it (`web::ceremony`); no `Debug`.
#[derive(Serialize, Deserialize)]
pub struct StartedReveal {
    pub pending: PendingReveal,
    /// The owner's directory record, shown beside the checklist while the passkey signs.
    pub of_record: OfRecord,
    challenge: PasskeyAuthentication,
}

/// The code handed out. No `Debug`; dropped (and zeroized) after the response is written.
pub struct RevealedCode {
    pub code: OneTimeCode,
    pub next_code: Option<OneTimeCode>,
    pub period: u32,
    pub valid_for_seconds: u32,
}

fn check_revealable(token: &Token) -> Result<(), RevealError> {
    if token.state == TokenState::Programming {
        return Err(TokenError::WrongState {
            serial: token.serial.clone(),
            state: token.state.as_str().into(),
            hint: "no code is revealed before its device is confirmed: it is still being \
                   programmed; confirm a code from the programmed device first",
        }
        .into());
    }
    if token.state != TokenState::Escrowed {
        return Err(TokenError::WrongState {
            serial: token.serial.clone(),
            state: token.state.as_str().into(),
            hint: "its seed is gone, so no code can be revealed; use the physical token",
        }
        .into());
    }
    if token.owner.is_none() {
        return Err(RevealError::NoOwner(token.serial.clone()));
    }
    Ok(())
}

/// Refuses a token its policy wants verified against the device first (`require_verified`).
fn check_verified(policy: &Policy, token: &Token) -> Result<(), RevealError> {
    if policy.require_verified && token.verified_at.is_none() {
        return Err(RevealError::NotVerified(token.serial.clone()));
    }
    Ok(())
}

/// The spans over which a policy's reveal counts apply: `reveals_per_token_per_day` over the
/// token window, `reveals_per_operator_per_hour` over the operator window. Configured
/// (`reveal_token_window_hours`, `reveal_operator_window_minutes`); a day and an hour by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RevealWindows {
    pub token_seconds: i64,
    pub operator_seconds: i64,
}

impl Default for RevealWindows {
    fn default() -> Self {
        Self {
            token_seconds: 86_400,
            operator_seconds: 3_600,
        }
    }
}

/// Refuses once either window (this token's day, this operator's hour by default) is full.
fn within_limits(
    policy: &Policy,
    (by_token, by_operator): (rows::RevealWindow, rows::RevealWindow),
    spans: RevealWindows,
    now: i64,
) -> Result<(), RevealError> {
    if by_token.count >= i64::from(policy.reveals_per_token_per_day) {
        return Err(RevealError::Limit {
            what: "this token's daily reveal",
            limit: policy.reveals_per_token_per_day,
            retry_after_seconds: retry_after(by_token.oldest, spans.token_seconds, now),
        });
    }
    if by_operator.count >= i64::from(policy.reveals_per_operator_per_hour) {
        return Err(RevealError::Limit {
            what: "your hourly reveal",
            limit: policy.reveals_per_operator_per_hour,
            retry_after_seconds: retry_after(by_operator.oldest, spans.operator_seconds, now),
        });
    }
    Ok(())
}

/// [`within_limits`] with both windows read in one statement on `c`.
fn within_limits_on(
    env: &Env<'_>,
    c: &Inline<'_>,
    policy: &Policy,
    token: &Token,
    operator: &Operator,
) -> Result<(), RevealError> {
    let now = env.unix();
    let spans = env.reveal_windows;
    let windows = rows::reveal_windows_on(
        c,
        token.row_id,
        now - spans.token_seconds,
        operator.id,
        now - spans.operator_seconds,
    )?;
    within_limits(policy, windows, spans, now)
}

fn retry_after(oldest: Option<i64>, window: i64, now: i64) -> u64 {
    oldest.map_or(1, |t| u64::try_from(t + window - now).unwrap_or(1).max(1))
}

/// Records a refused reveal.
async fn record_denial(
    env: &Env<'_>,
    operator: &Operator,
    serial: &str,
    reason: &str,
) -> Result<(), RevealError> {
    let event = NewEvent::new(operator.actor(), "reveal.denied", super::target(serial))
        .outcome(Outcome::Denied)
        .details(json!({ "reason": reason }));
    operators::record(env.store, env.vault, env.now, event).await?;
    Ok(())
}

/// Whether a refusal is recorded: everything but an unknown token (nothing to attach it to)
/// and failures of the vault itself.
fn audited(error: &RevealError) -> bool {
    !matches!(
        error,
        RevealError::Token(
            TokenError::NotFound(_)
                | TokenError::Store(_)
                | TokenError::Audit(_)
                | TokenError::Vault(_)
        ) | RevealError::Operator(_)
    )
}

/// Records `outcome`'s refusal, if it is one to record, and hands it back. A refusal on the
/// approval's account is `approval.refused` (with the expiry or void it noticed).
async fn audit_refusal<T>(
    env: &Env<'_>,
    operator: &Operator,
    serial: &str,
    outcome: Result<T, RevealError>,
) -> Result<T, RevealError> {
    if let Err(error) = &outcome {
        if let RevealError::Approval(inner) = error {
            approval::record_reveal_refusal(env, operator, serial, inner).await?;
        } else if audited(error) {
            record_denial(env, operator, serial, &error.to_string()).await?;
            crate::telemetry::reveal_refused(error.reason_code());
        }
    }
    outcome
}

/// Checks a reveal request before the passkey prompt; a refusal is audited.
async fn authorize(
    env: &Env<'_>,
    operator: &Operator,
    serial: &str,
    request: &RevealRequest<'_>,
) -> Result<(PendingReveal, OfRecord), RevealError> {
    // One pooled connection for the token and its limits, held on this thread: one hand-off
    // to the connection's worker thread in all.
    let outcome = match env
        .store
        .inline(|c| authorize_on(env, operator, serial, request, c))
        .await
    {
        Ok(outcome) => outcome,
        Err(error) => Err(error.into()),
    };
    audit_refusal(env, operator, serial, outcome).await
}

fn authorize_on(
    env: &Env<'_>,
    operator: &Operator,
    serial: &str,
    request: &RevealRequest<'_>,
    c: &Inline<'_>,
) -> Result<(PendingReveal, OfRecord), RevealError> {
    let row =
        rows::by_serial_on(c, serial)?.ok_or_else(|| TokenError::NotFound(serial.to_owned()))?;
    let token = Token::from_row(row)?;
    check_revealable(&token)?;
    let policy = env
        .policies
        .get(&token.policy)
        .ok_or_else(|| TokenError::UnknownPolicy(token.policy.clone()))?;
    check_verified(policy, &token)?;
    let approved = request
        .approval
        .map(|id| approval::check_usable(env, c, operator, id))
        .transpose()?;
    let recorded: Vec<String>;
    let (checks, ticket, note) = match &approved {
        Some(row)
            if request.checks.is_empty() && request.ticket.is_none() && request.note.is_none() =>
        {
            recorded = serde_json::from_str(&row.checks).unwrap_or_default();
            (&recorded[..], row.ticket.as_deref(), row.note.as_deref())
        }
        _ => (request.checks, request.ticket, request.note),
    };
    let request = RevealRequest {
        checks,
        ticket,
        note,
        approval: request.approval,
    };
    let shortfalls = policy.evaluate(&Submission {
        checks: request.checks,
        ticket: request.ticket,
        note: request.note,
    });
    if !shortfalls.is_empty() {
        return Err(RevealError::Checklist {
            policy: policy.name.clone(),
            shortfalls,
        });
    }
    let owner = token.owner.clone().unwrap_or_default();
    let record = directory_rows::by_owner_on(c, &owner)?;
    directory_checks(policy, request.checks, &owner, record.as_ref())?;
    within_limits_on(env, c, policy, &token, operator)?;
    let mut checks: Vec<String> = request.checks.to_vec();
    checks.sort();
    checks.dedup();
    let ticket = request
        .ticket
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned);
    let note = request
        .note
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_owned);
    // Only a four-eyes reveal is bound to an approval; the others skip the digest.
    let binding = if policy.approval.second_operator || approved.is_some() {
        approval::binding(
            &token,
            operator.id,
            policy,
            &checks,
            ticket.as_deref(),
            note.as_deref(),
        )
    } else {
        String::new()
    };
    let pending = PendingReveal {
        serial: token.serial,
        operator_id: operator.id,
        policy: policy.name.clone(),
        policy_hash: policy.content_hash.clone(),
        checks,
        ticket,
        note,
        expires_at: env.unix() + PENDING_SECONDS,
        approval: request.approval,
        binding,
        token_row: token.row_id,
    };
    if let Some(row) = &approved {
        approval::check_binding(row, &pending)?;
    }
    Ok((pending, OfRecord::new(&owner, record)))
}

/// Refuses a reveal whose policy relies on a directory record the owner lacks: for every
/// check with `source = "directory"` that is required or ticked.
fn directory_checks(
    policy: &Policy,
    ticked: &[String],
    owner: &str,
    record: Option<&EntryRow>,
) -> Result<(), RevealError> {
    for check in &policy.checks {
        let Some(needs) = check.needs else { continue };
        let relied_on = check.required || ticked.contains(&check.id);
        if relied_on && !directory::satisfies(record, needs) {
            return Err(RevealError::DirectoryRecord {
                check: check.id.clone(),
                owner: owner.to_owned(),
                needs,
            });
        }
    }
    Ok(())
}

/// Starts a reveal: checks the request (`authorize`), then challenges the operator's passkeys to
/// sign it. The challenge goes to the browser; the [`StartedReveal`] waits for [`finish`].
/// Under a four-eyes policy, a request without an approval becomes a request for one instead.
pub async fn start(
    env: &Env<'_>,
    webauthn: &Webauthn,
    operator: &Operator,
    serial: &str,
    request: &RevealRequest<'_>,
) -> Result<Started, RevealError> {
    let (pending, of_record) = authorize(env, operator, serial, request).await?;
    let policy = env
        .policies
        .get(&pending.policy)
        .ok_or_else(|| TokenError::UnknownPolicy(pending.policy.clone()))?;
    if policy.approval.second_operator && pending.approval.is_none() {
        let requested = approval::request(env, operator, &pending, policy).await?;
        return Ok(Started::AwaitingApproval(requested));
    }
    let passkeys: Vec<_> = operators::passkeys::of(env.store, operator.id)
        .await?
        .into_iter()
        .map(|stored| stored.passkey)
        .collect();
    if passkeys.is_empty() {
        return audit_refusal(env, operator, serial, Err(RevealError::NoPasskey)).await;
    }
    let (challenge, state) = webauthn
        .start_passkey_authentication(&passkeys)
        .map_err(|e| RevealError::Challenge(e.to_string()))?;
    Ok(Started::Challenge(
        challenge,
        Box::new(StartedReveal {
            pending,
            of_record,
            challenge: state,
        }),
    ))
}

/// Finishes a reveal with the passkey's assertion: checks that it answers this reveal in
/// time, comes from one of the operator's own passkeys and verifies, then grants it (`grant`).
/// Every refusal is audited.
pub async fn finish(
    env: &Env<'_>,
    webauthn: &Webauthn,
    operator: &Operator,
    started: StartedReveal,
    serial: &str,
    assertion: &PublicKeyCredential,
) -> Result<RevealedCode, RevealError> {
    let outcome = async {
        check_pending(env, &started.pending, serial)?;
        let used = verify(env, webauthn, operator, &started.challenge, assertion).await?;
        grant(env, operator, &started.pending, &used).await
    }
    .await;
    audit_refusal(env, operator, serial, outcome).await
}

/// The operator's passkey that signed `assertion`, with its new counter, once the assertion
/// verified against the challenge.
async fn verify(
    env: &Env<'_>,
    webauthn: &Webauthn,
    operator: &Operator,
    challenge: &PasskeyAuthentication,
    assertion: &PublicKeyCredential,
) -> Result<UsedPasskey, RevealError> {
    match operators::passkeys::verify_own(env.store, webauthn, operator.id, challenge, assertion)
        .await?
    {
        Ok(used) => Ok(used),
        Err(SignRefusal::Foreign) => Err(RevealError::ForeignPasskey),
        Err(SignRefusal::Invalid(reason)) => Err(RevealError::Assertion(reason)),
    }
}

/// Checks that a finished assertion belongs to this pending reveal (right token, in time).
fn check_pending(env: &Env<'_>, pending: &PendingReveal, serial: &str) -> Result<(), RevealError> {
    if pending.serial != serial {
        return Err(RevealError::WrongToken {
            started: pending.serial.clone(),
            requested: serial.to_owned(),
        });
    }
    if env.unix() > pending.expires_at {
        return Err(RevealError::Expired);
    }
    Ok(())
}

/// Grants a reveal whose passkey assertion has verified: re-checks state and limits, records
/// the reveal and the credential's new counter with its audit event in one transaction, then
/// returns the code — only once that transaction is durably committed. Concurrent reveals
/// share the commit (group commit, [`crate::store::GroupTx`]); each stays atomic on its own.
async fn grant(
    env: &Env<'_>,
    operator: &Operator,
    pending: &PendingReveal,
    credential: &UsedPasskey,
) -> Result<RevealedCode, RevealError> {
    // The savepoint, the grant's statements and the release in one call on the write
    // connection, without a hand-off to sqlx's worker thread for each; the code comes back
    // only once the shared transaction holding them is durably committed.
    let revealed = env
        .store
        .write_grouped(|c| grant_on(env, operator, pending, c, credential))
        .await??;
    crate::telemetry::reveal_granted();
    Ok(revealed)
}

fn grant_on(
    env: &Env<'_>,
    operator: &Operator,
    pending: &PendingReveal,
    c: &Inline<'_>,
    credential: &UsedPasskey,
) -> Result<RevealedCode, RevealError> {
    let rows::TokenWithSeed { row, sealed_seed } =
        rows::by_serial_with_seed_on(c, &pending.serial)?
            .ok_or_else(|| TokenError::NotFound(pending.serial.clone()))?;
    let token = Token::from_row(row)?;
    // First of this transaction's locks: the limit windows below count what it then inserts.
    rows::lock_reveal_limits_on(c, token.row_id, operator.id)?;
    check_revealable(&token)?;
    let policy = env
        .policies
        .get(&token.policy)
        .ok_or_else(|| TokenError::UnknownPolicy(token.policy.clone()))?;
    if policy.content_hash != pending.policy_hash {
        // The policy changed between start and finish: the checklist must be redone.
        return Err(RevealError::Expired);
    }
    check_verified(policy, &token)?;
    let now = env.unix();
    // The directory may have been synced since start: the record the checks relied on must
    // still be there.
    let owner = token.owner.clone().unwrap_or_default();
    let record = directory_rows::by_owner_on(c, &owner)?;
    directory_checks(policy, &pending.checks, &owner, record.as_ref())?;
    // The approval first: a second reveal on a used approval is told so, not about a limit.
    let approved_by = approval::consume_on(env, c, operator, policy, pending)?;
    within_limits_on(env, c, policy, &token, operator)?;
    let sealed = sealed_seed.ok_or_else(|| TokenError::WrongState {
        serial: token.serial.clone(),
        state: "purged".into(),
        hint: "its seed is gone",
    })?;
    let seed = crate::vault::rotate::unseal_following(
        env.vault,
        c,
        &token.token_id,
        &token.serial,
        &SealedBlob::from_stored(sealed),
    )
    .map_err(TokenError::from)?;
    let spec = token.spec()?;
    let revealed = RevealedCode {
        code: otp::code_at(&seed, &spec, now, token.drift_steps),
        next_code: policy
            .next_code
            .then(|| otp::code_at(&seed, &spec, now, token.drift_steps + 1)),
        period: spec.period,
        valid_for_seconds: spec.valid_for_seconds(now),
    };
    drop(seed);
    rows::insert_reveal_on(c, token.row_id, operator.id, now)?;
    operators::record_credential_use_on(c, credential, env.now)?;
    let mut details = json!({
        "owner": token.owner,
        "policy": policy.name,
        "policy_hash": policy.content_hash,
        "checks": pending.checks,
        "ticket": pending.ticket,
        "note": pending.note,
        "next_code": revealed.next_code.is_some(),
    });
    if let (Some(id), Some(fields)) = (pending.approval, details.as_object_mut()) {
        fields.insert("approval".into(), id.into());
        fields.insert("approved_by".into(), approved_by.into());
    }
    let event = NewEvent::new(operator.actor(), "reveal.granted", token.target()).details(details);
    audit::append_on(c, env.vault, env.now, event)?;
    if let Some(owner) = &token.owner {
        // The owner hears of every code given out; recorded in this transaction, sent later.
        notices::record_on(
            c,
            &notices::Notice {
                kind: notices::Kind::Reveal,
                serial: &token.serial,
                owner,
                notify_manager: policy.notify_manager,
                operator: &operator.name,
                ticket: pending.ticket.as_deref(),
                link: None,
                expires_at: None,
                at: now,
            },
        )?;
    }
    Ok(revealed)
}
