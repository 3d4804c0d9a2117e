//! Tokens (DESIGN §3, §6, §8): capture of one seed, the token model and its lifecycle, search,
//! reassignment, and (in submodules) reveal, delivery and purge. Every change is one
//! transaction with its audit event; seeds are sealed before they touch the store and never
//! leave this module except as one-time codes.

pub mod approval;
pub mod delivery_link;
pub mod import;
pub mod lifecycle;
pub mod reveal;

use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;
use utoipa::ToSchema;
use zeroize::Zeroizing;

use crate::audit::{self, NewEvent};
use crate::otp::TotpSpec;
use crate::policy::{Policy, PolicySet};
use crate::secret::{self, Algorithm, SecretFormat};
use crate::store::tokens::{self as rows, NewTokenRow, TokenFilter, TokenRow};
use crate::store::{Store, StoreError, WriteTx};
use crate::vault::{Vault, VaultError};

/// Longest serial, owner, display name, manufacturer or model accepted.
pub const MAX_FIELD_LEN: usize = 128;

/// What a token-level action needs from the running vault.
pub struct Env<'a> {
    pub store: &'a Store,
    pub vault: &'a Vault,
    pub policies: &'a PolicySet,
    /// Configured retention in days (a policy may shorten it).
    pub retention_days: u32,
    /// Configured spans of the policies' reveal limits.
    pub reveal_windows: reveal::RevealWindows,
    pub now: OffsetDateTime,
}

impl Env<'_> {
    pub fn unix(&self) -> i64 {
        self.now.unix_timestamp()
    }

    /// The retention deadline for a seed captured now under `policy`.
    pub fn deadline_for(&self, policy: &Policy) -> i64 {
        let days = policy
            .retention_days
            .map_or(self.retention_days, |d| d.min(self.retention_days));
        self.unix() + i64::from(days) * 86_400
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("no token has serial '{0}'")]
    NotFound(String),
    #[error("a token with serial '{0}' already exists — serials are unique; cancel the old token first if it is being replaced")]
    Duplicate(String),
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("token '{serial}' is {state}, not escrowed — {hint}")]
    WrongState {
        serial: String,
        state: String,
        hint: &'static str,
    },
    #[error("policy '{0}' is not loaded — `GET /api/v1/policies` lists the policies")]
    UnknownPolicy(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Audit(#[from] audit::AuditError),
    #[error(transparent)]
    Vault(#[from] VaultError),
}

/// Lifecycle state (DESIGN §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TokenState {
    Escrowed,
    Delivered,
    Cancelled,
    Expired,
    Purged,
}

impl TokenState {
    pub const ALL: [TokenState; 5] = [
        Self::Escrowed,
        Self::Delivered,
        Self::Cancelled,
        Self::Expired,
        Self::Purged,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Escrowed => "escrowed",
            Self::Delivered => "delivered",
            Self::Cancelled => "cancelled",
            Self::Expired => "expired",
            Self::Purged => "purged",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|s| s.as_str().eq_ignore_ascii_case(text.trim()))
    }
}

/// A token's metadata as shown to operators: never secret material.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Token {
    pub serial: String,
    pub owner: Option<String>,
    pub display_name: Option<String>,
    pub manufacturer: Option<String>,
    pub model: Option<String>,
    #[schema(value_type = String, example = "SHA1")]
    pub algorithm: Algorithm,
    pub digits: u32,
    pub period: u32,
    pub drift_steps: i64,
    pub policy: String,
    pub state: TokenState,
    pub captured_by: String,
    pub captured_at: i64,
    pub retention_deadline: i64,
    pub delivered_at: Option<i64>,
    pub delivered_by: Option<String>,
    pub purged_at: Option<i64>,
    pub purge_reason: Option<String>,
    #[serde(skip)]
    pub(crate) row_id: i64,
    #[serde(skip)]
    pub(crate) token_id: String,
    #[serde(skip)]
    pub(crate) t0: i64,
}

impl Token {
    pub(crate) fn from_row(row: TokenRow) -> Result<Self, TokenError> {
        let corrupt = |what: &str| StoreError::Corrupt(format!("token {} has {what}", row.serial));
        Ok(Self {
            algorithm: Algorithm::parse(&row.algorithm)
                .map_err(|_| corrupt("an unknown algorithm"))?,
            digits: u32::try_from(row.digits).map_err(|_| corrupt("bad digits"))?,
            period: u32::try_from(row.period).map_err(|_| corrupt("a bad period"))?,
            state: TokenState::parse(&row.state).ok_or_else(|| corrupt("an unknown state"))?,
            serial: row.serial,
            owner: row.owner,
            display_name: row.display_name,
            manufacturer: row.manufacturer,
            model: row.model,
            drift_steps: row.drift_steps,
            policy: row.policy,
            captured_by: row.captured_by,
            captured_at: row.captured_at,
            retention_deadline: row.retention_deadline,
            delivered_at: row.delivered_at,
            delivered_by: row.delivered_by,
            purged_at: row.purged_at,
            purge_reason: row.purge_reason,
            row_id: row.id,
            token_id: row.token_id,
            t0: row.t0,
        })
    }

    /// The TOTP parameters of this token.
    pub fn spec(&self) -> Result<TotpSpec, TokenError> {
        let mut spec = TotpSpec::new(self.algorithm, self.digits, self.period)
            .map_err(|e| StoreError::Corrupt(format!("token {}: {e}", self.serial)))?;
        spec.t0 = self.t0;
        Ok(spec)
    }

    /// The audit target naming this token.
    pub fn target(&self) -> String {
        target(&self.serial)
    }
}

/// The audit target for a serial.
pub fn target(serial: &str) -> String {
    format!("token:{serial}")
}

/// One seed as a provisioner submits it — the one input of a capture, whichever front end
/// (API body, capture page, `seedvault token add`) it came from. Options arrive as the text
/// the user gave and [`CaptureRequest::validate`] holds every rule, so the front ends cannot
/// disagree about what they accept:
/// - `owner` is optional: a token may be escrowed unassigned (as import does for vendor files
///   without an owner column) and assigned later (`token assign`, `PATCH`, …); no code can be
///   revealed until it is, and capture warns.
/// - a missing or blank `format`, `algorithm`, `digits`, `period` or `policy` means the default.
pub struct CaptureRequest {
    pub owner: Option<String>,
    pub serial: String,
    /// base32, hex or an otpauth:// URI; zeroized on drop.
    pub secret: Zeroizing<String>,
    /// auto (default), base32, hex or otpauth.
    pub format: Option<String>,
    pub display_name: Option<String>,
    pub manufacturer: Option<String>,
    pub model: Option<String>,
    /// SHA1 (default), SHA256 or SHA512; an otpauth URI brings its own.
    pub algorithm: Option<String>,
    /// 6 (default) or 8.
    pub digits: Option<u32>,
    /// Seconds per step (default 30).
    pub period: Option<u32>,
    pub policy: Option<String>,
}

/// Reads a whole number typed into a form field; blank means "not given".
pub fn number_field(field: &'static str, text: &str) -> Result<Option<u32>, TokenError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|_| TokenError::Invalid {
        field,
        reason: match field {
            "digits" => "expected 6 or 8".into(),
            _ => "expected a whole number, e.g. 30".into(),
        },
    })
}

/// What capture reports back: never the seed.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Captured {
    pub serial: String,
    pub state: TokenState,
    pub warnings: Vec<String>,
}

/// Trims a free-text field and checks its length; empty becomes `None`.
pub fn clean_field(field: &'static str, value: Option<&str>) -> Result<Option<String>, TokenError> {
    let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    if value.chars().count() > MAX_FIELD_LEN {
        return Err(TokenError::Invalid {
            field,
            reason: format!("longer than {MAX_FIELD_LEN} characters"),
        });
    }
    if value.chars().any(char::is_control) {
        return Err(TokenError::Invalid {
            field,
            reason: "contains control characters".into(),
        });
    }
    Ok(Some(value.to_owned()))
}

/// Validates a serial: required, printable, no spaces.
pub fn clean_serial(serial: &str) -> Result<String, TokenError> {
    let serial = clean_field("serial", Some(serial))?.ok_or(TokenError::Invalid {
        field: "serial",
        reason: "is required — give the serial printed on the token".into(),
    })?;
    if serial.contains(char::is_whitespace) || serial.contains('/') {
        return Err(TokenError::Invalid {
            field: "serial",
            reason: "must not contain spaces or '/'".into(),
        });
    }
    Ok(serial)
}

/// Resolves a policy name (or the default).
pub fn resolve_policy<'p>(
    policies: &'p PolicySet,
    name: Option<&str>,
) -> Result<&'p Policy, TokenError> {
    match name.map(str::trim).filter(|n| !n.is_empty()) {
        Some(name) => policies
            .get(name)
            .ok_or_else(|| TokenError::UnknownPolicy(name.to_owned())),
        None => Ok(policies.default_policy()),
    }
}

/// A parsed, validated token ready to seal and store.
pub struct ValidToken {
    pub serial: String,
    pub owner: Option<String>,
    pub display_name: Option<String>,
    pub manufacturer: Option<String>,
    pub model: Option<String>,
    pub spec: TotpSpec,
    pub seed: secret::Seed,
    pub policy: String,
    pub warnings: Vec<String>,
}

impl CaptureRequest {
    /// Parses and checks every field; nothing is stored.
    pub fn validate(self, policies: &PolicySet) -> Result<ValidToken, TokenError> {
        let serial = clean_serial(&self.serial)?;
        let given = |v: &Option<String>| {
            v.as_deref()
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        let format = match given(&self.format) {
            Some(text) => text
                .parse::<SecretFormat>()
                .map_err(|e| TokenError::Invalid {
                    field: "format",
                    reason: e.to_string(),
                })?,
            None => SecretFormat::Auto,
        };
        let chosen_algorithm = given(&self.algorithm)
            .map(|text| Algorithm::parse(&text))
            .transpose()
            .map_err(|e| TokenError::Invalid {
                field: "algorithm",
                reason: e.to_string(),
            })?;
        let parsed =
            secret::parse_secret(&self.secret, format).map_err(|e| TokenError::Invalid {
                field: "secret",
                reason: e.to_string(),
            })?;
        let from_uri = parsed.otpauth.as_ref();
        let algorithm = from_uri
            .map(|p| p.algorithm)
            .or(chosen_algorithm)
            .unwrap_or(Algorithm::Sha1);
        let digits = from_uri.map(|p| p.digits).or(self.digits).unwrap_or(6);
        let period = from_uri.map(|p| p.period).or(self.period).unwrap_or(30);
        let spec = TotpSpec::new(algorithm, digits, period).map_err(|e| TokenError::Invalid {
            field: if digits != 6 && digits != 8 {
                "digits"
            } else {
                "period"
            },
            reason: e.to_string(),
        })?;
        let owner = clean_field("owner", self.owner.as_deref())?;
        let mut warnings = parsed.warnings;
        if owner.is_none() {
            warnings.push(
                "no owner: the token is escrowed unassigned, and no code can be revealed until \
                 it is assigned (`seedvault token assign`, PATCH /api/v1/tokens/{serial})"
                    .into(),
            );
        }
        let display_name = clean_field("display_name", self.display_name.as_deref())?
            .or_else(|| from_uri.and_then(|p| p.account.clone()));
        let manufacturer = clean_field("manufacturer", self.manufacturer.as_deref())?
            .or_else(|| from_uri.and_then(|p| p.issuer.clone()));
        let policy = resolve_policy(policies, self.policy.as_deref())?
            .name
            .clone();
        Ok(ValidToken {
            serial,
            owner,
            display_name,
            manufacturer,
            model: clean_field("model", self.model.as_deref())?,
            spec,
            seed: parsed.seed,
            policy,
            warnings,
        })
    }
}

/// Seals and inserts a validated token inside `tx` (with no audit event: the caller appends
/// one per capture or per import).
pub async fn insert_sealed(
    env: &Env<'_>,
    tx: &mut WriteTx,
    actor: &str,
    token: &ValidToken,
) -> Result<(), TokenError> {
    let token_id = uuid::Uuid::new_v4().to_string();
    let sealed = env.vault.seal_seed(&token_id, &token.serial, &token.seed)?;
    let policy = resolve_policy(env.policies, Some(&token.policy))?;
    let row = NewTokenRow {
        token_id: &token_id,
        serial: &token.serial,
        owner: token.owner.as_deref(),
        display_name: token.display_name.as_deref(),
        manufacturer: token.manufacturer.as_deref(),
        model: token.model.as_deref(),
        algorithm: token.spec.algorithm.as_str(),
        digits: token.spec.digits,
        period: token.spec.period,
        policy: &policy.name,
        sealed_seed: sealed.as_bytes(),
        captured_by: actor,
        captured_at: env.unix(),
        retention_deadline: env.deadline_for(policy),
    };
    rows::insert(&mut *tx, &row).await.map_err(|e| {
        if e.is_unique_violation() {
            TokenError::Duplicate(token.serial.clone())
        } else {
            TokenError::Store(e)
        }
    })?;
    Ok(())
}

/// Captures one seed: validate, seal, store, audit — one transaction.
pub async fn capture(
    env: &Env<'_>,
    actor: &str,
    input: CaptureRequest,
) -> Result<Captured, TokenError> {
    let token = input.validate(env.policies)?;
    let mut tx = env.store.begin_write().await?;
    insert_sealed(env, &mut tx, actor, &token).await?;
    let event = NewEvent::new(actor, "token.captured", target(&token.serial)).details(json!({
        "owner": token.owner,
        "algorithm": token.spec.algorithm.as_str(),
        "digits": token.spec.digits,
        "period": token.spec.period,
        "policy": token.policy,
        "seed_bits": token.seed.bits(),
    }));
    audit::append(&mut tx, env.vault, env.now, event).await?;
    tx.commit().await?;
    Ok(Captured {
        serial: token.serial,
        state: TokenState::Escrowed,
        warnings: token.warnings,
    })
}

pub async fn get(store: &Store, serial: &str) -> Result<Token, TokenError> {
    let row = rows::by_serial(store, serial)
        .await?
        .ok_or_else(|| TokenError::NotFound(serial.to_owned()))?;
    Token::from_row(row)
}

pub async fn search(store: &Store, filter: &TokenFilter) -> Result<Vec<Token>, TokenError> {
    rows::search(store, filter)
        .await?
        .into_iter()
        .map(Token::from_row)
        .collect()
}

/// One page of the token list (see `store::token_pages`).
pub struct TokenListPage {
    pub tokens: Vec<Token>,
    pub has_previous: bool,
    pub has_next: bool,
}

pub async fn list_page(
    store: &Store,
    request: &crate::store::token_pages::PageRequest,
) -> Result<TokenListPage, TokenError> {
    let page = crate::store::token_pages::page(store, request).await?;
    Ok(TokenListPage {
        tokens: page
            .rows
            .into_iter()
            .map(Token::from_row)
            .collect::<Result<_, _>>()?,
        has_previous: page.has_previous,
        has_next: page.has_next,
    })
}

/// Tokens per (state, policy).
pub async fn counts(store: &Store) -> Result<Vec<(String, String, i64)>, TokenError> {
    Ok(crate::store::token_pages::counts(store).await?)
}

/// Changes to a token's assignment (provisioner). `Some("")` clears a text field.
#[derive(Debug, Default)]
pub struct TokenChange {
    pub owner: Option<String>,
    pub display_name: Option<String>,
    pub policy: Option<String>,
}

pub async fn update(
    env: &Env<'_>,
    actor: &str,
    serial: &str,
    change: TokenChange,
) -> Result<Token, TokenError> {
    let mut tx = env.store.begin_write().await?;
    let row = rows::by_serial(&mut tx, serial)
        .await?
        .ok_or_else(|| TokenError::NotFound(serial.to_owned()))?;
    let mut token = Token::from_row(row)?;
    if token.state != TokenState::Escrowed {
        return Err(TokenError::WrongState {
            serial: token.serial,
            state: token.state.as_str().into(),
            hint: "a purged token's assignment is history and cannot change",
        });
    }
    let before =
        json!({ "owner": token.owner, "display_name": token.display_name, "policy": token.policy });
    if let Some(owner) = change.owner {
        token.owner = clean_field("owner", Some(&owner))?;
    }
    if let Some(name) = change.display_name {
        token.display_name = clean_field("display_name", Some(&name))?;
    }
    if let Some(policy) = change.policy {
        token.policy = resolve_policy(env.policies, Some(&policy))?.name.clone();
    }
    rows::update_fields(
        &mut tx,
        token.row_id,
        token.owner.as_deref(),
        token.display_name.as_deref(),
        &token.policy,
    )
    .await?;
    let after =
        json!({ "owner": token.owner, "display_name": token.display_name, "policy": token.policy });
    let event = NewEvent::new(actor, "token.updated", token.target())
        .details(json!({ "from": before, "to": after }));
    audit::append(&mut tx, env.vault, env.now, event).await?;
    tx.commit().await?;
    Ok(token)
}
