//! Four-eyes reveals (DESIGN §5): under a policy with `[approval] second_operator = true`, a
//! reveal needs a second operator's approval, signed with that operator's own passkey, before
//! the requester can sign it with theirs.
//!
//! The rules, all here:
//! - `reveal/start` without an approval records a *request* ([`request`]) bound to token,
//!   owner, requester, checks, ticket, note and the policy's content hash (the SHA-256
//!   [`binding`] of them is stored); it waits `approval_ttl` for a decision.
//! - An approver ([`approve_start`]/[`approve_finish`], [`deny`]) holds one of the policy's
//!   `approvers` roles and is never the requester, whatever their roles, session or passkeys;
//!   approving takes an assertion from one of the approver's own passkeys, answering a challenge
//!   made for that approval. A request is decided once. Approvals count against the approver's
//!   own limit: at most the policy's `reveals_per_operator_per_hour` approvals per operator
//!   window, counted apart from their reveals.
//! - An approval stays usable for `approval_ttl` from its decision, by the requester only, for
//!   the very reveal it approved: `reveal/start` with its id recomputes the binding, and any
//!   difference voids it (`approval.voided`). The grant consumes it in the reveal's own
//!   transaction (`approval.used`), so it is used at most once.
//! - Expiry is recorded when noticed (`approval.expired`): on access, or by the sweeper
//!   ([`expire_overdue`]). Every refusal is recorded as `approval.refused` with its reason.

use serde::Serialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use webauthn_rs::prelude::{
    PasskeyAuthentication, PublicKeyCredential, RequestChallengeResponse, Webauthn,
};

use super::reveal::{PendingReveal, PENDING_SECONDS};
use super::{Env, Token, TokenError, TokenState};
use crate::audit::{self, NewEvent, Outcome};
use crate::operators::passkeys::SignRefusal;
use crate::operators::{self, Operator, UsedPasskey};
use crate::policy::{Policy, MAX_NOTE_LEN};
use crate::store::approvals::{self as rows, ApprovalRow, Decision, NewApproval};
use crate::store::tokens as token_rows;
use crate::store::{Inline, StoreError};

/// Where an approval stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ApprovalStatus {
    /// Waiting for a second operator's decision.
    Pending,
    /// Approved: the requester may now sign the reveal.
    Approved,
    Denied,
    /// Consumed by the reveal it approved.
    Used,
    Expired,
    /// What it bound (token, owner, checks, ticket, note, policy) changed.
    Void,
}

impl ApprovalStatus {
    fn parse(text: &str) -> Result<Self, StoreError> {
        Ok(match text {
            "pending" => Self::Pending,
            "approved" => Self::Approved,
            "denied" => Self::Denied,
            "used" => Self::Used,
            "expired" => Self::Expired,
            "void" => Self::Void,
            other => {
                return Err(StoreError::Corrupt(format!(
                    "an approval has the unknown status '{other}'"
                )))
            }
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Denied => "denied",
            Self::Used => "used",
            Self::Expired => "expired",
            Self::Void => "void",
        }
    }
}

/// An approval as the requester and the approvers see it. Never secret material.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Approval {
    pub id: i64,
    pub status: ApprovalStatus,
    /// Unix time until which a pending request can be decided, or an approval used.
    pub expires_at: i64,
    pub serial: String,
    pub owner: Option<String>,
    pub policy: String,
    /// The operator who asked for the reveal.
    pub requester: String,
    /// The ids of the checks the requester ticked.
    pub checks: Vec<String>,
    pub ticket: Option<String>,
    pub note: Option<String>,
    pub created_at: i64,
    /// The operator who approved or denied it.
    pub decided_by: Option<String>,
    pub decided_at: Option<i64>,
    /// Why it was denied.
    pub reason: Option<String>,
    /// The owner's directory record (numbers, manager, sync time) when the directory of
    /// record has one; absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub directory: Option<serde_json::Value>,
}

impl Approval {
    fn from_row(row: ApprovalRow) -> Result<Self, StoreError> {
        let checks = serde_json::from_str(&row.checks).map_err(|_| {
            StoreError::Corrupt(format!("approval {} has unreadable checks", row.id))
        })?;
        Ok(Self {
            id: row.id,
            status: ApprovalStatus::parse(&row.status)?,
            expires_at: row.expires_at,
            directory: None,
            serial: row.serial,
            owner: row.owner,
            policy: row.policy,
            requester: row.requester,
            checks,
            ticket: row.ticket,
            note: row.note,
            created_at: row.created_at,
            decided_by: row.decided_by,
            decided_at: row.decided_at,
            reason: row.reason,
        })
    }
}

/// What the directory of record holds about the token's owner (numbers, manager, department,
/// sync time), shown to the approver beside the requester's answers; `None` without a record,
/// and nothing is made up.
async fn directory_entry(
    env: &Env<'_>,
    owner: Option<&str>,
) -> Result<Option<serde_json::Value>, StoreError> {
    let Some(owner) = owner else {
        return Ok(None);
    };
    let record = crate::directory::lookup(env.store, owner).await?;
    Ok(record
        .found
        .then(|| serde_json::to_value(&record).ok())
        .flatten())
}

/// The approval with the owner's directory record attached.
async fn with_directory(env: &Env<'_>, row: ApprovalRow) -> Result<Approval, ApprovalError> {
    let mut approval = Approval::from_row(row)?;
    approval.directory = directory_entry(env, approval.owner.as_deref()).await?;
    Ok(approval)
}

#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("no approval has id {0}")]
    NotFound(i64),
    #[error("approval {id} belongs to a reveal {requester} requested: only they can use it, and only operators with an approver role can see it")]
    NotYours { id: i64, requester: String },
    #[error("you requested this reveal yourself (approval {id}) — another operator with one of the roles {roles} must approve it")]
    OwnRequest { id: i64, roles: String },
    #[error("approval {id} can be decided only by operators with one of the roles {roles} (policy '{policy}')")]
    NotApprover {
        id: i64,
        roles: String,
        policy: String,
    },
    #[error(
        "approval {0} has expired — the requester must start the reveal again for a new approval"
    )]
    Expired(i64),
    #[error("approval {id} is already {status} — a request is decided once")]
    AlreadyDecided { id: i64, status: &'static str },
    #[error("approval {0} is still waiting for a second operator — reveal once it is approved")]
    StillPending(i64),
    #[error("approval {id} was denied by {by}: {reason} — this reveal cannot go ahead")]
    Denied { id: i64, by: String, reason: String },
    #[error("approval {0} has already been used for a reveal — an approval is single use; start the reveal again for a new one")]
    Used(i64),
    #[error("approval {id} is void: {what} changed since it was requested — start the reveal again for a new approval")]
    Void { id: i64, what: &'static str },
    #[error("approval {0} was used or expired while this reveal was being signed — start again")]
    Consumed(i64),
    #[error("policy '{0}' needs a second operator's approval for every reveal — start the reveal without an approval id to request one")]
    Required(String),
    #[error("this passkey prompt was started for approval {started}, not {requested} — start again for the request you mean")]
    WrongApproval { started: i64, requested: i64 },
    #[error(
        "the approval waited more than {PENDING_SECONDS} seconds for the passkey — start again"
    )]
    CeremonyExpired,
    #[error("reason: a reason is required to deny a request (the requester is shown it)")]
    ReasonMissing,
    #[error("reason: longer than {MAX_NOTE_LEN} characters")]
    ReasonTooLong,
    #[error("your approval limit is reached ({limit} per operator window); the next approval is allowed in {retry_after_seconds} seconds")]
    Limit {
        limit: u32,
        retry_after_seconds: u64,
    },
    #[error("you have no passkey to sign an approval with — add one under your account first")]
    NoPasskey,
    #[error("this passkey is not registered to you — approve with one of your own passkeys")]
    ForeignPasskey,
    #[error("the passkey assertion was not accepted: {0}")]
    Assertion(String),
    #[error("cannot start the passkey prompt: {0}")]
    Challenge(String),
    #[error(transparent)]
    Operator(#[from] operators::OperatorError),
}

impl From<StoreError> for ApprovalError {
    fn from(e: StoreError) -> Self {
        Self::Token(e.into())
    }
}

impl From<audit::AuditError> for ApprovalError {
    fn from(e: audit::AuditError) -> Self {
        Self::Token(e.into())
    }
}

impl ApprovalError {
    /// Whether the refusal is recorded: everything but an unknown approval (nothing to attach it
    /// to) and failures of the vault itself.
    fn audited(&self) -> bool {
        !matches!(
            self,
            Self::NotFound(_)
                | Self::Operator(_)
                | Self::Token(
                    TokenError::NotFound(_)
                        | TokenError::Store(_)
                        | TokenError::Audit(_)
                        | TokenError::Vault(_)
                )
        )
    }

    /// The status change a refusal records with it: an expiry noticed, a binding broken.
    fn status_change(&self) -> Option<(i64, StatusChange)> {
        match self {
            Self::Expired(id) => Some((*id, StatusChange::Expired)),
            Self::Void { id, .. } => Some((*id, StatusChange::Voided)),
            _ => None,
        }
    }
}

/// What a refusal noticed about its approval, written with it.
#[derive(Clone, Copy)]
enum StatusChange {
    Expired,
    Voided,
}

/// The SHA-256 (hex) of everything an approval binds: the token (its row and random id, serial,
/// owner and policy), the requester, the ticked checks (sorted), ticket, note, and the policy with its
/// content hash (which covers the `[approval]` settings).
pub fn binding(
    token: &Token,
    requester: i64,
    policy: &Policy,
    checks: &[String],
    ticket: Option<&str>,
    note: Option<&str>,
) -> String {
    let bound = json!({
        "token": token.token_id,
        "token_row": token.row_id,
        "serial": token.serial,
        "owner": token.owner,
        "token_policy": token.policy,
        "requester": requester,
        "checks": checks,
        "ticket": ticket,
        "note": note,
        "policy": policy.name,
        "policy_hash": policy.content_hash,
    });
    data_encoding::HEXLOWER.encode(&Sha256::digest(audit::canonical_json(&bound).as_bytes()))
}

/// Which part of a binding differs from what the approval recorded, for the message.
fn what_changed(row: &ApprovalRow, pending: &PendingReveal) -> &'static str {
    let checks: Vec<String> = serde_json::from_str(&row.checks).unwrap_or_default();
    if row.serial != pending.serial {
        "the token"
    } else if checks != pending.checks {
        "the ticked checks"
    } else if row.ticket != pending.ticket {
        "the ticket"
    } else if row.note != pending.note {
        "the note"
    } else if row.policy_hash != pending.policy_hash {
        "the policy"
    } else {
        "the token's owner or policy"
    }
}

/// The audit target of an approval: its token, so the token's timeline tells the whole story.
fn target(row: &ApprovalRow) -> String {
    super::target(&row.serial)
}

fn roles_text(policy: &Policy) -> String {
    policy
        .approval
        .approvers
        .iter()
        .map(|r| r.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Records a refusal (and the status change it carries: an expiry noticed, a broken binding)
/// in one transaction, if it is one to record, and hands it back.
async fn refused<T>(
    env: &Env<'_>,
    actor: &Operator,
    row: &ApprovalRow,
    outcome: Result<T, ApprovalError>,
) -> Result<T, ApprovalError> {
    if let Err(error) = &outcome {
        if error.audited() {
            record_refusal(env, actor, row.id, &target(row), error).await?;
        }
    }
    outcome
}

/// [`refused`]'s transaction: the status change with its event, then `approval.refused`.
pub(super) async fn record_refusal(
    env: &Env<'_>,
    actor: &Operator,
    id: i64,
    target: &str,
    error: &ApprovalError,
) -> Result<(), ApprovalError> {
    let now = env.unix();
    let mut tx = env.store.begin_write().await?;
    let reason = error.to_string();
    let written = tx
        .inline(|c| -> Result<(), ApprovalError> {
            if let Some((approval, change)) = error.status_change() {
                // An expiry is the clock's doing; a broken binding, the caller's.
                let (changed, action, by) = match change {
                    StatusChange::Expired => (
                        rows::expire_on(c, approval, now)?,
                        "approval.expired",
                        "system".to_owned(),
                    ),
                    StatusChange::Voided => (
                        rows::void_on(c, approval)?,
                        "approval.voided",
                        actor.actor(),
                    ),
                };
                if changed {
                    let event = NewEvent::new(by, action, target)
                        .outcome(Outcome::Denied)
                        .details(json!({ "approval": approval, "reason": reason }));
                    audit::append_on(c, env.vault, env.now, event)?;
                }
            }
            let event = NewEvent::new(actor.actor(), "approval.refused", target)
                .outcome(Outcome::Denied)
                .details(json!({ "approval": id, "reason": reason }));
            audit::append_on(c, env.vault, env.now, event)?;
            Ok(())
        })
        .await;
    match written {
        Ok(Ok(())) => Ok(tx.commit().await?),
        Ok(Err(e)) => Err(e),
        Err(e) => Err(e.into()),
    }
}

/// Loads an approval, noticing (and recording, as `approval.expired`) an expiry that has passed.
async fn load(env: &Env<'_>, id: i64) -> Result<ApprovalRow, ApprovalError> {
    let mut row = rows::by_id(env.store, id)
        .await?
        .ok_or(ApprovalError::NotFound(id))?;
    let live = row.status == "pending" || row.status == "approved";
    if live && row.expires_at < env.unix() {
        let mut tx = env.store.begin_write().await?;
        let now = env.unix();
        let target = target(&row);
        let outcome = tx
            .inline(|c| -> Result<(), ApprovalError> {
                if rows::expire_on(c, id, now)? {
                    let event = NewEvent::new("system", "approval.expired", target)
                        .details(json!({ "approval": id }));
                    audit::append_on(c, env.vault, env.now, event)?;
                }
                Ok(())
            })
            .await?;
        outcome?;
        tx.commit().await?;
        row.status = "expired".into();
    }
    Ok(row)
}

/// Records a request for a second operator's approval of `pending` (which passed the checklist
/// and the requester's limits): `approval.requested`, in one transaction.
pub(super) async fn request(
    env: &Env<'_>,
    operator: &Operator,
    pending: &PendingReveal,
    policy: &Policy,
) -> Result<Approval, ApprovalError> {
    let now = env.unix();
    let checks = serde_json::to_string(&pending.checks)
        .map_err(|e| StoreError::Corrupt(format!("checks: {e}")))?;
    let expires_at = now + policy.approval.ttl_seconds;
    let mut tx = env.store.begin_write().await?;
    let outcome = tx
        .inline(|c| -> Result<i64, ApprovalError> {
            let id = rows::insert_on(
                c,
                &NewApproval {
                    token_row: pending.token_row,
                    requester_id: operator.id,
                    policy: &pending.policy,
                    policy_hash: &pending.policy_hash,
                    checks: &checks,
                    ticket: pending.ticket.as_deref(),
                    note: pending.note.as_deref(),
                    binding: &pending.binding,
                    created_at: now,
                    expires_at,
                },
            )?;
            let event = NewEvent::new(
                operator.actor(),
                "approval.requested",
                super::target(&pending.serial),
            )
            .details(json!({
                "approval": id,
                "policy": pending.policy,
                "policy_hash": pending.policy_hash,
                "checks": pending.checks,
                "ticket": pending.ticket,
                "note": pending.note,
                "expires_at": expires_at,
            }));
            audit::append_on(c, env.vault, env.now, event)?;
            Ok(id)
        })
        .await?;
    let id = outcome?;
    tx.commit().await?;
    let row = rows::by_id(env.store, id)
        .await?
        .ok_or(ApprovalError::NotFound(id))?;
    Ok(Approval::from_row(row)?)
}

/// One approval, for its requester or an operator who may decide it.
pub async fn get(env: &Env<'_>, viewer: &Operator, id: i64) -> Result<Approval, ApprovalError> {
    let row = load(env, id).await?;
    let approver = env
        .policies
        .get(&row.policy)
        .is_some_and(|p| p.approval.may_approve(&viewer.roles));
    if row.requester_id != viewer.id && !approver {
        return Err(ApprovalError::NotYours {
            id,
            requester: row.requester,
        });
    }
    with_directory(env, row).await
}

/// The pending requests `viewer` may decide (not their own), oldest first.
pub async fn pending_for(env: &Env<'_>, viewer: &Operator) -> Result<Vec<Approval>, ApprovalError> {
    let policies = env.policies.approvable_by(&viewer.roles);
    if policies.is_empty() {
        return Ok(Vec::new());
    }
    let mut pending = Vec::new();
    for row in rows::pending(env.store, &policies, viewer.id, env.unix()).await? {
        pending.push(with_directory(env, row).await?);
    }
    Ok(pending)
}

/// How many requests `viewer` may decide: one COUNT (the header shows it on every page);
/// `None` for an operator who approves under no policy.
pub async fn pending_count(env: &Env<'_>, viewer: &Operator) -> Result<Option<i64>, ApprovalError> {
    let policies = env.policies.approvable_by(&viewer.roles);
    if policies.is_empty() {
        return Ok(None);
    }
    Ok(Some(
        rows::count_pending(env.store, &policies, viewer.id, env.unix()).await?,
    ))
}

/// Checks that `approver` may decide `row` now: it is pending, not theirs, they hold an
/// approver role, its token can still be revealed, and what it bound is unchanged; when
/// `approving`, also that the approver's own limit has room (denying is never limited).
fn check_decidable(
    env: &Env<'_>,
    c: &Inline<'_>,
    approver: &Operator,
    row: &ApprovalRow,
    approving: bool,
) -> Result<(), ApprovalError> {
    let policy = env
        .policies
        .get(&row.policy)
        .ok_or_else(|| TokenError::UnknownPolicy(row.policy.clone()))?;
    if row.requester_id == approver.id {
        return Err(ApprovalError::OwnRequest {
            id: row.id,
            roles: roles_text(policy),
        });
    }
    if !policy.approval.may_approve(&approver.roles) {
        return Err(ApprovalError::NotApprover {
            id: row.id,
            roles: roles_text(policy),
            policy: policy.name.clone(),
        });
    }
    match row.status.as_str() {
        "pending" if row.expires_at >= env.unix() => {}
        "pending" | "expired" => return Err(ApprovalError::Expired(row.id)),
        "void" => {
            return Err(ApprovalError::Void {
                id: row.id,
                what: "what it bound",
            })
        }
        other => {
            return Err(ApprovalError::AlreadyDecided {
                id: row.id,
                status: ApprovalStatus::parse(other)?.as_str(),
            })
        }
    }
    let token = Token::from_row(
        token_rows::by_serial_on(c, &row.serial)?
            .ok_or_else(|| TokenError::NotFound(row.serial.clone()))?,
    )?;
    if token.state != TokenState::Escrowed {
        return Err(TokenError::WrongState {
            serial: token.serial,
            state: token.state.as_str().into(),
            hint: "its seed is gone, so the request can no longer be approved",
        }
        .into());
    }
    let checks: Vec<String> = serde_json::from_str(&row.checks).unwrap_or_default();
    let current = binding(
        &token,
        row.requester_id,
        policy,
        &checks,
        row.ticket.as_deref(),
        row.note.as_deref(),
    );
    if current != row.binding {
        let what = if token.policy != row.policy || policy.content_hash != row.policy_hash {
            "the token's policy"
        } else {
            "the token's owner"
        };
        return Err(ApprovalError::Void { id: row.id, what });
    }
    if !approving {
        return Ok(());
    }
    let since = env.unix() - env.reveal_windows.operator_seconds;
    let window = rows::approved_by_since_on(c, approver.id, since)?;
    if window.count >= i64::from(policy.reveals_per_operator_per_hour) {
        let retry = window.oldest.map_or(1, |t| {
            u64::try_from(t + env.reveal_windows.operator_seconds - env.unix())
                .unwrap_or(1)
                .max(1)
        });
        return Err(ApprovalError::Limit {
            limit: policy.reveals_per_operator_per_hour,
            retry_after_seconds: retry,
        });
    }
    Ok(())
}

/// [`check_decidable`] on a pooled connection, for an approval about to be prompted for.
async fn decidable(
    env: &Env<'_>,
    approver: &Operator,
    row: &ApprovalRow,
) -> Result<(), ApprovalError> {
    env.store
        .inline(|c| check_decidable(env, c, approver, row, true))
        .await?
}

/// An approval's passkey prompt in flight: which approval, as it stood, and the WebAuthn state
/// the approver's assertion must answer. Holds no secret; finish it once. Serialisable so
/// that instances on PostgreSQL share it (`web::ceremony`); no `Debug`.
#[derive(Serialize, serde::Deserialize)]
pub struct StartedApproval {
    pub approval: i64,
    pub approver_id: i64,
    pub expires_at: i64,
    binding: String,
    challenge: PasskeyAuthentication,
}

/// Starts an approval: checks that `approver` may decide it now, then challenges the
/// approver's own passkeys (and only theirs) to sign it. Refusals are recorded.
pub async fn approve_start(
    env: &Env<'_>,
    webauthn: &Webauthn,
    approver: &Operator,
    id: i64,
) -> Result<(RequestChallengeResponse, StartedApproval), ApprovalError> {
    let row = load(env, id).await?;
    let outcome = async {
        decidable(env, approver, &row).await?;
        let passkeys: Vec<_> = operators::passkeys::of(env.store, approver.id)
            .await?
            .into_iter()
            .map(|stored| stored.passkey)
            .collect();
        if passkeys.is_empty() {
            return Err(ApprovalError::NoPasskey);
        }
        let (challenge, state) = webauthn
            .start_passkey_authentication(&passkeys)
            .map_err(|e| ApprovalError::Challenge(e.to_string()))?;
        Ok((
            challenge,
            StartedApproval {
                approval: row.id,
                approver_id: approver.id,
                expires_at: env.unix() + PENDING_SECONDS,
                binding: row.binding.clone(),
                challenge: state,
            },
        ))
    }
    .await;
    refused(env, approver, &row, outcome).await
}

/// Finishes an approval with the approver's assertion: it must answer the prompt started for
/// this approval, in time, from one of the approver's own passkeys; then the decision, the
/// credential's counter and `approval.approved` are written in one transaction, after every
/// rule is checked again inside it.
pub async fn approve_finish(
    env: &Env<'_>,
    webauthn: &Webauthn,
    approver: &Operator,
    started: StartedApproval,
    id: i64,
    assertion: &PublicKeyCredential,
) -> Result<Approval, ApprovalError> {
    let row = load(env, id).await?;
    let outcome = async {
        if started.approval != id {
            return Err(ApprovalError::WrongApproval {
                started: started.approval,
                requested: id,
            });
        }
        if env.unix() > started.expires_at {
            return Err(ApprovalError::CeremonyExpired);
        }
        let used = verify(env, webauthn, approver, &started.challenge, assertion).await?;
        decide(env, approver, id, Some((&started.binding, &used)), None).await
    }
    .await;
    refused(env, approver, &row, outcome).await
}

/// Denies a request with a reason the requester is shown. No passkey: refusing cannot hand
/// anything out. Recorded as `approval.denied`.
pub async fn deny(
    env: &Env<'_>,
    approver: &Operator,
    id: i64,
    reason: &str,
) -> Result<Approval, ApprovalError> {
    let row = load(env, id).await?;
    let reason = reason.trim();
    let outcome = if reason.is_empty() {
        Err(ApprovalError::ReasonMissing)
    } else if reason.chars().count() > MAX_NOTE_LEN {
        Err(ApprovalError::ReasonTooLong)
    } else {
        decide(env, approver, id, None, Some(reason)).await
    };
    refused(env, approver, &row, outcome).await
}

/// Writes a decision after checking every rule again inside its transaction: approve (with the
/// binding the prompt was started on and the verified passkey) or deny (with a reason).
async fn decide(
    env: &Env<'_>,
    approver: &Operator,
    id: i64,
    approve: Option<(&str, &UsedPasskey)>,
    reason: Option<&str>,
) -> Result<Approval, ApprovalError> {
    let now = env.unix();
    let mut tx = env.store.begin_write().await?;
    let outcome = tx
        .inline(|c| -> Result<(), ApprovalError> {
            if approve.is_some() {
                // First of this transaction's locks: the approver's window below counts it.
                rows::lock_approvals_by_on(c, approver.id)?;
            }
            let row = rows::by_id_on(c, id)?.ok_or(ApprovalError::NotFound(id))?;
            check_decidable(env, c, approver, &row, approve.is_some())?;
            let policy = env
                .policies
                .get(&row.policy)
                .ok_or_else(|| TokenError::UnknownPolicy(row.policy.clone()))?;
            if let Some((binding, _)) = approve {
                if binding != row.binding {
                    return Err(ApprovalError::Void {
                        id,
                        what: "what it bound",
                    });
                }
            }
            let decided = rows::decide_on(
                c,
                &Decision {
                    id,
                    by: approver.id,
                    approved: approve.is_some(),
                    at: now,
                    reason,
                    expires_at: if approve.is_some() {
                        now + policy.approval.ttl_seconds
                    } else {
                        row.expires_at
                    },
                },
            )?;
            if !decided {
                return Err(ApprovalError::AlreadyDecided {
                    id,
                    status: "decided",
                });
            }
            let event = match approve {
                Some((_, credential)) => {
                    operators::record_credential_use_on(c, credential, env.now)?;
                    NewEvent::new(approver.actor(), "approval.approved", target(&row)).details(
                        json!({
                            "approval": id,
                            "requester": row.requester,
                            "policy": row.policy,
                            "policy_hash": row.policy_hash,
                            "credential": credential.row,
                            "usable_until": now + policy.approval.ttl_seconds,
                        }),
                    )
                }
                None => NewEvent::new(approver.actor(), "approval.denied", target(&row))
                    .outcome(Outcome::Denied)
                    .details(json!({
                        "approval": id,
                        "requester": row.requester,
                        "reason": reason,
                    })),
            };
            audit::append_on(c, env.vault, env.now, event)?;
            Ok(())
        })
        .await;
    match outcome {
        Ok(Ok(())) => tx.commit().await?,
        Ok(Err(e)) => {
            drop(tx);
            return Err(e);
        }
        Err(e) => return Err(e.into()),
    }
    let row = rows::by_id(env.store, id)
        .await?
        .ok_or(ApprovalError::NotFound(id))?;
    Ok(Approval::from_row(row)?)
}

/// The approver's passkey that signed `assertion`, once it verified against the challenge.
async fn verify(
    env: &Env<'_>,
    webauthn: &Webauthn,
    approver: &Operator,
    challenge: &PasskeyAuthentication,
    assertion: &PublicKeyCredential,
) -> Result<UsedPasskey, ApprovalError> {
    match operators::passkeys::verify_own(env.store, webauthn, approver.id, challenge, assertion)
        .await?
    {
        Ok(used) => Ok(used),
        Err(SignRefusal::Foreign) => Err(ApprovalError::ForeignPasskey),
        Err(SignRefusal::Invalid(reason)) => Err(ApprovalError::Assertion(reason)),
    }
}

/// Checks, on `reveal/start` with an approval id, that the approval is `operator`'s, approved
/// and unexpired; the binding is compared once the request is checked ([`check_binding`]).
/// Returns the approval as recorded, whose checks, ticket and note stand in for a request that
/// omits them.
pub(super) fn check_usable(
    env: &Env<'_>,
    c: &Inline<'_>,
    operator: &Operator,
    id: i64,
) -> Result<ApprovalRow, ApprovalError> {
    let row = rows::by_id_on(c, id)?.ok_or(ApprovalError::NotFound(id))?;
    if row.requester_id != operator.id {
        return Err(ApprovalError::NotYours {
            id,
            requester: row.requester,
        });
    }
    match row.status.as_str() {
        "approved" if row.expires_at >= env.unix() => Ok(row),
        "approved" | "pending" if row.expires_at < env.unix() => Err(ApprovalError::Expired(id)),
        "expired" => Err(ApprovalError::Expired(id)),
        "pending" => Err(ApprovalError::StillPending(id)),
        "denied" => Err(ApprovalError::Denied {
            id,
            by: row.decided_by.unwrap_or_default(),
            reason: row.reason.unwrap_or_default(),
        }),
        "used" => Err(ApprovalError::Used(id)),
        _ => Err(ApprovalError::Void {
            id,
            what: "what it bound",
        }),
    }
}

/// Compares the reveal being started with what the approval bound.
pub(super) fn check_binding(
    row: &ApprovalRow,
    pending: &PendingReveal,
) -> Result<(), ApprovalError> {
    if row.binding == pending.binding {
        Ok(())
    } else {
        Err(ApprovalError::Void {
            id: row.id,
            what: what_changed(row, pending),
        })
    }
}

/// Inside the reveal grant's transaction: consumes the approval the reveal was started with,
/// records `approval.used`, and returns who approved it. A four-eyes policy never grants
/// without one.
pub(super) fn consume_on(
    env: &Env<'_>,
    c: &Inline<'_>,
    operator: &Operator,
    policy: &Policy,
    pending: &PendingReveal,
) -> Result<Option<String>, ApprovalError> {
    let Some(id) = pending.approval else {
        if policy.approval.second_operator {
            return Err(ApprovalError::Required(policy.name.clone()));
        }
        return Ok(None);
    };
    if !rows::use_on(c, id, &pending.binding, env.unix())? {
        return Err(ApprovalError::Consumed(id));
    }
    let row = rows::by_id_on(c, id)?.ok_or(ApprovalError::NotFound(id))?;
    let event = NewEvent::new(operator.actor(), "approval.used", target(&row))
        .details(json!({ "approval": id, "approved_by": row.decided_by }));
    audit::append_on(c, env.vault, env.now, event)?;
    Ok(row.decided_by)
}

/// Marks requests and approvals whose time ran out as expired (`approval.expired`, by
/// `system`), in one transaction; how many. The sweeper runs this every minute.
pub async fn expire_overdue(env: &Env<'_>) -> Result<usize, ApprovalError> {
    let overdue = rows::overdue(env.store, env.unix()).await?;
    if overdue.is_empty() {
        return Ok(0);
    }
    let now = env.unix();
    let mut tx = env.store.begin_write().await?;
    let outcome = tx
        .inline(|c| -> Result<usize, ApprovalError> {
            let mut expired = 0;
            for row in &overdue {
                if rows::expire_on(c, row.id, now)? {
                    let event = NewEvent::new("system", "approval.expired", target(row))
                        .details(json!({ "approval": row.id }));
                    audit::append_on(c, env.vault, env.now, event)?;
                    expired += 1;
                }
            }
            Ok(expired)
        })
        .await?;
    let expired = outcome?;
    tx.commit().await?;
    Ok(expired)
}

/// Records a refused `reveal/start` or `reveal/finish` that failed on its approval.
pub(super) async fn record_reveal_refusal(
    env: &Env<'_>,
    operator: &Operator,
    serial: &str,
    error: &ApprovalError,
) -> Result<(), ApprovalError> {
    let id = match error {
        ApprovalError::NotYours { id, .. }
        | ApprovalError::Expired(id)
        | ApprovalError::StillPending(id)
        | ApprovalError::Denied { id, .. }
        | ApprovalError::Used(id)
        | ApprovalError::Void { id, .. }
        | ApprovalError::Consumed(id) => Some(*id),
        _ => None,
    };
    match id {
        Some(id) if error.audited() => {
            record_refusal(env, operator, id, &super::target(serial), error).await
        }
        _ if error.audited() => {
            let event = NewEvent::new(operator.actor(), "approval.refused", super::target(serial))
                .outcome(Outcome::Denied)
                .details(json!({ "reason": error.to_string() }));
            operators::record(env.store, env.vault, env.now, event).await?;
            Ok(())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::secret::Algorithm;

    fn token() -> Token {
        Token {
            serial: "HR-1".into(),
            owner: Some("ceo@example.org".into()),
            display_name: None,
            manufacturer: None,
            model: None,
            algorithm: Algorithm::parse("SHA1").unwrap(),
            digits: 6,
            period: 30,
            drift_steps: 0,
            policy: "high-risk".into(),
            state: TokenState::Escrowed,
            captured_by: "operator:pat".into(),
            captured_at: 0,
            retention_deadline: 0,
            delivered_at: None,
            delivered_by: None,
            purged_at: None,
            purge_reason: None,
            verified_at: None,
            verified_by: None,
            shipped_at: None,
            shipped_by: None,
            carrier: None,
            tracking: None,
            expected: None,
            row_id: 7,
            token_id: "0b5c1f0e-6a55-4b0e-9a53-2f4f4cf0a001".into(),
            t0: 0,
        }
    }

    #[test]
    fn the_binding_changes_with_every_field_an_approval_binds() {
        let set = crate::policy::load_embedded().unwrap();
        let high = set.get("high-risk").unwrap();
        let checks = vec!["callback".to_owned(), "manager".to_owned()];
        let base = binding(&token(), 1, high, &checks, Some("INC-1"), Some("n"));
        assert_eq!(base.len(), 64);
        assert_eq!(
            base,
            binding(&token(), 1, high, &checks, Some("INC-1"), Some("n")),
            "the same reveal binds the same way"
        );
        let mut other_policy = high.clone();
        other_policy.content_hash = "0".repeat(64);
        let variations = [
            binding(
                &Token {
                    owner: None,
                    ..token()
                },
                1,
                high,
                &checks,
                Some("INC-1"),
                Some("n"),
            ),
            binding(
                &Token {
                    serial: "HR-2".into(),
                    ..token()
                },
                1,
                high,
                &checks,
                Some("INC-1"),
                Some("n"),
            ),
            binding(
                &Token {
                    row_id: 8,
                    ..token()
                },
                1,
                high,
                &checks,
                Some("INC-1"),
                Some("n"),
            ),
            binding(
                &Token {
                    policy: "standard".into(),
                    ..token()
                },
                1,
                high,
                &checks,
                Some("INC-1"),
                Some("n"),
            ),
            binding(&token(), 2, high, &checks, Some("INC-1"), Some("n")),
            binding(
                &token(),
                1,
                &other_policy,
                &checks,
                Some("INC-1"),
                Some("n"),
            ),
            binding(&token(), 1, high, &checks[..1], Some("INC-1"), Some("n")),
            binding(&token(), 1, high, &checks, Some("INC-2"), Some("n")),
            binding(&token(), 1, high, &checks, Some("INC-1"), None),
        ];
        for (i, changed) in variations.iter().enumerate() {
            assert_ne!(&base, changed, "variation {i} must change the binding");
        }
    }
}
