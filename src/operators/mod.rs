//! Operators (DESIGN §4): invites, registration, roles, credentials and sign-in records.
//! Sign-in and registration ceremonies (WebAuthn) run in the web layer; this module owns the
//! rules, the stored passkeys ([`passkeys`]), and writes each change in one transaction with
//! its audit event.

pub mod passkeys;
mod roles;

use data_encoding::BASE64URL_NOPAD;
use rand::RngCore;
use serde_json::json;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use uuid::Uuid;
use webauthn_rs::prelude::Passkey;
use zeroize::Zeroizing;

pub use passkeys::{StoredPasskey, UsedPasskey};
pub use roles::{Role, Roles, UnknownRole};

use crate::audit::{self, NewEvent, Outcome};
use crate::store::operators::{self as rows, CredentialRow, OperatorRow};
use crate::store::{Inline, Store, StoreError, WriteTx};
use crate::vault::Vault;

#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error("this invite link is not valid — ask an admin for a new invite")]
    InviteUnknown,
    #[error("this invite expired — ask an admin for a new invite")]
    InviteExpired,
    #[error("this invite was already used — each invite works once; ask an admin for a new one")]
    InviteUsed,
    #[error("an operator named '{0}' already exists — choose another name")]
    NameTaken(String),
    #[error("an unused invite for '{0}' already exists — use it, or wait until it expires")]
    InvitePending(String),
    #[error("operator name '{0}' is invalid — use 1 to 64 letters, digits, '.', '_', '-' or '@'")]
    InvalidName(String),
    #[error("give at least one role: admin, provisioner, helpdesk or auditor")]
    NoRoles,
    #[error(transparent)]
    UnknownRole(#[from] UnknownRole),
    #[error("no operator is named '{0}'")]
    UnknownOperator(String),
    #[error("no credential {0} belongs to you")]
    UnknownCredential(i64),
    #[error("this is your last passkey; add another before removing it, or you could never sign in again")]
    LastCredential,
    #[error("this credential is already registered")]
    CredentialExists,
    #[error("you cannot remove your own admin role or disable yourself; ask another admin")]
    SelfLockout,
    #[error("cannot store the passkey: {0}")]
    Passkey(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Audit(#[from] audit::AuditError),
}

/// A signed-up operator.
#[derive(Debug, Clone)]
pub struct Operator {
    pub id: i64,
    pub name: String,
    pub user_handle: Uuid,
    pub roles: Roles,
    pub disabled: bool,
    pub created_at: i64,
}

impl Operator {
    fn from_row(row: OperatorRow) -> Result<Self, OperatorError> {
        Ok(Self {
            user_handle: Uuid::parse_str(&row.user_handle).map_err(|_| {
                StoreError::Corrupt(format!("operator {} has a malformed user handle", row.name))
            })?,
            roles: Roles::parse_list(&row.roles)?,
            id: row.id,
            name: row.name,
            disabled: row.disabled,
            created_at: row.created_at,
        })
    }

    /// The audit trail's actor for this operator.
    pub fn actor(&self) -> String {
        format!("operator:{}", self.name)
    }
}

/// A freshly made invite token: shown once, stored only as a hash. No `Debug`.
pub struct InviteToken(Zeroizing<String>);

impl InviteToken {
    fn generate() -> Self {
        let mut bytes = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(bytes.as_mut());
        Self(Zeroizing::new(BASE64URL_NOPAD.encode(bytes.as_ref())))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// The stored form of an invite token.
pub fn invite_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// An invite as issued: the token (for the URL) and when it expires.
pub struct IssuedInvite {
    pub token: InviteToken,
    pub name: String,
    pub roles: Roles,
    pub expires_at: i64,
}

impl IssuedInvite {
    /// The registration URL: `<origin>/invite/<token>`.
    pub fn url(&self, origin: &str) -> String {
        format!(
            "{}/invite/{}",
            origin.trim_end_matches('/'),
            self.token.expose()
        )
    }
}

/// A valid invite, ready for registration.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PendingInvite {
    pub invite_id: i64,
    pub name: String,
    pub roles: Vec<Role>,
}

fn validate_name(name: &str) -> Result<(), OperatorError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if ok {
        Ok(())
    } else {
        Err(OperatorError::InvalidName(name.chars().take(64).collect()))
    }
}

async fn append(
    tx: &mut WriteTx,
    vault: &Vault,
    now: OffsetDateTime,
    event: NewEvent,
) -> Result<(), OperatorError> {
    audit::append(tx, vault, now, event).await?;
    Ok(())
}

async fn commit(tx: WriteTx) -> Result<(), OperatorError> {
    tx.commit().await?;
    Ok(())
}

pub async fn count(store: &Store) -> Result<i64, OperatorError> {
    Ok(rows::count_operators(store).await?)
}

pub async fn by_id(store: &Store, id: i64) -> Result<Option<Operator>, OperatorError> {
    rows::operator_by_id(store, id)
        .await?
        .map(Operator::from_row)
        .transpose()
}

/// A session's stored record and the operator it is signed in as, read in one round trip
/// (`operator_of` reads the operator id out of the record); `None` without such a session.
pub async fn with_session(
    store: &Store,
    session_id: &str,
    operator_of: impl FnOnce(&[u8]) -> Option<i64>,
) -> Result<Option<(Vec<u8>, Option<Operator>)>, OperatorError> {
    match crate::store::sessions::with_operator(store, session_id, operator_of).await? {
        Some((data, row)) => Ok(Some((data, row.map(Operator::from_row).transpose()?))),
        None => Ok(None),
    }
}

pub async fn by_name(store: &Store, name: &str) -> Result<Option<Operator>, OperatorError> {
    rows::operator_by_name(store, name)
        .await?
        .map(Operator::from_row)
        .transpose()
}

pub async fn by_handle(store: &Store, handle: &Uuid) -> Result<Option<Operator>, OperatorError> {
    rows::operator_by_handle(store, &handle.to_string())
        .await?
        .map(Operator::from_row)
        .transpose()
}

/// Every operator with the number of credentials they hold.
pub async fn list(store: &Store) -> Result<Vec<(Operator, i64)>, OperatorError> {
    let counts = rows::credential_counts(store).await?;
    rows::list_operators(store)
        .await?
        .into_iter()
        .map(|row| {
            let n = counts
                .iter()
                .find(|(id, _)| *id == row.id)
                .map_or(0, |(_, n)| *n);
            Operator::from_row(row).map(|op| (op, n))
        })
        .collect()
}

pub async fn credentials(
    store: &Store,
    operator_id: i64,
) -> Result<Vec<CredentialRow>, OperatorError> {
    Ok(rows::credentials_of(store, operator_id).await?)
}

/// What an invite is for.
pub struct NewInvite<'a> {
    pub name: &'a str,
    pub roles: &'a Roles,
    pub ttl_hours: u32,
    /// Expire older unused invites for the same name instead of refusing (the bootstrap
    /// invite, reprinted at each start until used).
    pub replace_pending: bool,
}

/// Makes a one-time invite for a new operator.
pub async fn create_invite(
    store: &Store,
    vault: &Vault,
    now: OffsetDateTime,
    actor: &str,
    invite: NewInvite<'_>,
) -> Result<IssuedInvite, OperatorError> {
    let NewInvite {
        name,
        roles,
        ttl_hours,
        replace_pending,
    } = invite;
    validate_name(name)?;
    if roles.is_empty() {
        return Err(OperatorError::NoRoles);
    }
    let token = InviteToken::generate();
    let expires_at = now.unix_timestamp() + i64::from(ttl_hours) * 3600;
    let mut tx = store.begin_write().await?;
    if rows::operator_by_name(&mut tx, name).await?.is_some() {
        return Err(OperatorError::NameTaken(name.to_owned()));
    }
    if replace_pending {
        // The bootstrap invite is reprinted at every start until used; older ones stop working.
        rows::expire_open_invites(&mut tx, name, now.unix_timestamp()).await?;
    } else if rows::open_invite_for(&mut tx, name, now.unix_timestamp()).await? {
        return Err(OperatorError::InvitePending(name.to_owned()));
    }
    rows::insert_invite(
        &mut tx,
        &invite_hash(token.expose()),
        name,
        &roles.to_stored(),
        actor,
        now.unix_timestamp(),
        expires_at,
    )
    .await?;
    let event = NewEvent::new(actor, "invite.created", format!("operator:{name}"))
        .details(json!({ "roles": roles.to_vec(), "expires_at": expires_at }));
    append(&mut tx, vault, now, event).await?;
    commit(tx).await?;
    Ok(IssuedInvite {
        token,
        name: name.to_owned(),
        roles: roles.clone(),
        expires_at,
    })
}

/// Checks an invite token; a refused one is audited.
pub async fn open_invite(
    store: &Store,
    vault: &Vault,
    now: OffsetDateTime,
    token: &str,
) -> Result<PendingInvite, OperatorError> {
    let found = rows::invite_by_hash(store, &invite_hash(token)).await?;
    let verdict = match &found {
        None => Err(OperatorError::InviteUnknown),
        Some(invite) if invite.used_at.is_some() => Err(OperatorError::InviteUsed),
        Some(invite) if invite.expires_at <= now.unix_timestamp() => {
            Err(OperatorError::InviteExpired)
        }
        Some(invite) => Ok(PendingInvite {
            invite_id: invite.id,
            name: invite.name.clone(),
            roles: Roles::parse_list(&invite.roles)?.to_vec(),
        }),
    };
    if let Err(error) = &verdict {
        let target = found.as_ref().map_or_else(
            || "invite:unknown".to_owned(),
            |i| format!("operator:{}", i.name),
        );
        record(
            store,
            vault,
            now,
            NewEvent::new("anonymous", "invite.refused", target)
                .outcome(Outcome::Denied)
                .details(json!({ "reason": error.to_string() })),
        )
        .await?;
    }
    verdict
}

/// Creates the operator from a used invite with their first credential, signed in.
pub async fn register(
    store: &Store,
    vault: &Vault,
    now: OffsetDateTime,
    invite: &PendingInvite,
    user_handle: Uuid,
    passkey: &Passkey,
) -> Result<Operator, OperatorError> {
    let at = now.unix_timestamp();
    let roles = Roles::new(invite.roles.iter().copied());
    let mut tx = store.begin_write().await?;
    if rows::operator_by_name(&mut tx, &invite.name)
        .await?
        .is_some()
    {
        return Err(OperatorError::NameTaken(invite.name.clone()));
    }
    let id = rows::insert_operator(
        &mut tx,
        &invite.name,
        &user_handle.to_string(),
        &roles.to_stored(),
        at,
    )
    .await?;
    if !rows::consume_invite(&mut tx, invite.invite_id, id, at).await? {
        return Err(OperatorError::InviteUsed);
    }
    rows::insert_credential(
        &mut tx,
        id,
        passkey.cred_id().as_ref(),
        "first passkey",
        &passkeys::to_stored(passkey)?,
        at,
    )
    .await
    .map_err(unique_credential)?;
    let target = format!("operator:{}", invite.name);
    append(
        &mut tx,
        vault,
        now,
        NewEvent::new(target.clone(), "invite.used", target.clone()),
    )
    .await?;
    let event = NewEvent::new(target.clone(), "operator.registered", target)
        .details(json!({ "roles": roles.to_vec() }));
    append(&mut tx, vault, now, event).await?;
    commit(tx).await?;
    Ok(Operator {
        id,
        name: invite.name.clone(),
        user_handle,
        roles,
        disabled: false,
        created_at: at,
    })
}

fn unique_credential(e: StoreError) -> OperatorError {
    if e.is_unique_violation() {
        OperatorError::CredentialExists
    } else {
        OperatorError::Store(e)
    }
}

/// Records a successful sign-in: the credential's new counter, the audit event and the new
/// session row (the old one, if any, deleted), in one transaction — one durable commit per
/// sign-in, and no session exists unless its sign-in is recorded. `session` is `None` when
/// sessions live apart from the vault's tables (instances sharing PostgreSQL's
/// `transient.sessions`): the session layer writes it once this commits.
pub async fn record_sign_in(
    store: &Store,
    vault: &Vault,
    now: OffsetDateTime,
    operator: &Operator,
    used: &UsedPasskey,
    discoverable: bool,
    session: Option<&crate::store::sessions::SessionRow>,
) -> Result<(), OperatorError> {
    let mut tx = store.begin_write().await?;
    rows::update_credential_use(&mut tx, used.row, &used.stored, now.unix_timestamp()).await?;
    if let Some(session) = session {
        crate::store::sessions::insert(&mut tx, session).await?;
    }
    let event = NewEvent::new(operator.actor(), "auth.sign_in", operator.actor())
        .details(json!({ "credential": used.row, "discoverable": discoverable }));
    append(&mut tx, vault, now, event).await?;
    commit(tx).await?;
    crate::telemetry::sign_in("success");
    Ok(())
}

/// Updates a credential's counter after a step-up assertion (no event of its own: the action
/// it authorised records it), inside that action's transaction, on its held connection (see
/// [`crate::store::WriteTx::inline`]).
pub fn record_credential_use_on(
    c: &Inline<'_>,
    used: &UsedPasskey,
    now: OffsetDateTime,
) -> Result<(), OperatorError> {
    rows::update_credential_use_on(c, used.row, &used.stored, now.unix_timestamp())?;
    Ok(())
}

/// Appends a single event in its own transaction (refusals, sign-out).
pub async fn record(
    store: &Store,
    vault: &Vault,
    now: OffsetDateTime,
    event: NewEvent,
) -> Result<(), OperatorError> {
    let mut tx = store.begin_write().await?;
    append(&mut tx, vault, now, event).await?;
    commit(tx).await
}

/// Adds a further credential (backup key) to a signed-in operator.
pub async fn add_credential(
    store: &Store,
    vault: &Vault,
    now: OffsetDateTime,
    operator: &Operator,
    label: &str,
    passkey: &Passkey,
) -> Result<i64, OperatorError> {
    let label = label.trim();
    let label = if label.is_empty() { "passkey" } else { label };
    let label: String = label.chars().take(64).collect();
    let stored = passkeys::to_stored(passkey)?;
    let mut tx = store.begin_write().await?;
    let id = rows::insert_credential(
        &mut tx,
        operator.id,
        passkey.cred_id().as_ref(),
        &label,
        &stored,
        now.unix_timestamp(),
    )
    .await
    .map_err(unique_credential)?;
    let event = NewEvent::new(operator.actor(), "credential.added", operator.actor())
        .details(json!({ "credential": id, "label": label }));
    append(&mut tx, vault, now, event).await?;
    commit(tx).await?;
    Ok(id)
}

/// Removes one of an operator's credentials, never the last.
pub async fn remove_credential(
    store: &Store,
    vault: &Vault,
    now: OffsetDateTime,
    operator: &Operator,
    credential_row: i64,
) -> Result<(), OperatorError> {
    let mut tx = store.begin_write().await?;
    let creds = rows::credentials_of(&mut tx, operator.id).await?;
    if !creds.iter().any(|c| c.id == credential_row) {
        return Err(OperatorError::UnknownCredential(credential_row));
    }
    if creds.len() == 1 {
        return Err(OperatorError::LastCredential);
    }
    rows::delete_credential(&mut tx, operator.id, credential_row).await?;
    let event = NewEvent::new(operator.actor(), "credential.removed", operator.actor())
        .details(json!({ "credential": credential_row }));
    append(&mut tx, vault, now, event).await?;
    commit(tx).await
}

/// What an admin may change about an operator.
#[derive(Debug, Default)]
pub struct OperatorChange {
    pub roles: Option<Roles>,
    pub disabled: Option<bool>,
}

/// Changes roles and/or the disabled flag; each change is its own audit event.
pub async fn update(
    store: &Store,
    vault: &Vault,
    now: OffsetDateTime,
    actor: &str,
    acting_operator: Option<i64>,
    name: &str,
    change: OperatorChange,
) -> Result<Operator, OperatorError> {
    let mut tx = store.begin_write().await?;
    let row = rows::operator_by_name(&mut tx, name)
        .await?
        .ok_or_else(|| OperatorError::UnknownOperator(name.to_owned()))?;
    let mut operator = Operator::from_row(row)?;
    let target = operator.actor();
    if let Some(roles) = change.roles {
        if roles.is_empty() {
            return Err(OperatorError::NoRoles);
        }
        if acting_operator == Some(operator.id) && !roles.contains(Role::Admin) {
            return Err(OperatorError::SelfLockout);
        }
        if roles != operator.roles {
            rows::set_roles(&mut tx, operator.id, &roles.to_stored()).await?;
            let event = NewEvent::new(actor, "operator.roles_changed", target.clone())
                .details(json!({ "from": operator.roles.to_vec(), "to": roles.to_vec() }));
            append(&mut tx, vault, now, event).await?;
            operator.roles = roles;
        }
    }
    if let Some(disabled) = change.disabled {
        if acting_operator == Some(operator.id) && disabled {
            return Err(OperatorError::SelfLockout);
        }
        if disabled != operator.disabled {
            rows::set_disabled(&mut tx, operator.id, disabled).await?;
            let action = if disabled {
                "operator.disabled"
            } else {
                "operator.enabled"
            };
            append(
                &mut tx,
                vault,
                now,
                NewEvent::new(actor, action, target.clone()),
            )
            .await?;
            operator.disabled = disabled;
        }
    }
    commit(tx).await?;
    Ok(operator)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn invite_tokens_carry_256_bits_url_safe() {
        let token = InviteToken::generate();
        assert_eq!(token.expose().len(), 43);
        assert!(token
            .expose()
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        assert_ne!(token.expose(), InviteToken::generate().expose());
    }

    #[test]
    fn operator_names_are_checked() {
        for ok in ["alice", "bob.smith", "ops@example.org", "a-b_c"] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "has space", "<script>", &"x".repeat(65)] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }
}
