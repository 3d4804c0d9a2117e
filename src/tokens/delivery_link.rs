//! Delivery confirmed by the owner (issue 17): a provisioner or helpdesk operator makes a
//! one-time link `<origin>/deliver/<TOKEN>`; the owner opens it without an account and types
//! the code their physical token shows. A correct code purges the seed through the same path as
//! a helpdesk-confirmed delivery ([`lifecycle::deliver_in`]), audited with actor `owner:<id>`.
//!
//! The link's token is 256 bits from the operating system's generator, base64url; only its
//! SHA-256 is stored. A link works once, until the seed's retention deadline; a new link for
//! the same token voids the old one, and [`WRONG_CODES_BEFORE_LOCK`] wrong codes lock it.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use serde_json::json;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::lifecycle::{self, Attempted, DeliveryRequest, LifecycleError, Purged};
use super::{Env, Token, TokenError, TokenState};
use crate::audit::{self, NewEvent, Outcome};
use crate::notices::{self, Kind, Notice};
use crate::store::delivery_links::{self as links, LinkRow};
use crate::store::tokens as rows;

/// Wrong codes after which a link is locked.
pub const WRONG_CODES_BEFORE_LOCK: i64 = 5;
/// Bytes of randomness in a link's token.
const LINK_BYTES: usize = 32;

/// Why a link cannot be used; each says what the owner can do.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("this delivery link is not valid — check that you opened the whole link from the message, or ask your helpdesk for a new one")]
    Unknown,
    #[error("this delivery link has expired — ask your helpdesk for a new one")]
    Expired,
    #[error("this delivery link was already used: the delivery of your token is confirmed")]
    Used,
    #[error("this delivery link was replaced by a newer one — use the newest link you received")]
    Replaced,
    #[error("this delivery link is locked after {WRONG_CODES_BEFORE_LOCK} wrong codes — ask your helpdesk for a new one")]
    Locked,
    #[error("nothing is left to confirm for this token: its delivery was already settled")]
    Settled,
    #[error("code: type the digits your token shows")]
    NoCode,
    #[error(
        "the code does not match — type the code your token shows right now ({left} tries left)"
    )]
    WrongCode { left: i64 },
    #[error(transparent)]
    Lifecycle(#[from] LifecycleError),
}

impl From<crate::store::StoreError> for LinkError {
    fn from(e: crate::store::StoreError) -> Self {
        Self::Lifecycle(e.into())
    }
}

impl From<audit::AuditError> for LinkError {
    fn from(e: audit::AuditError) -> Self {
        Self::Lifecycle(e.into())
    }
}

/// A link just made. The URL is shown once and never stored. No `Debug`.
pub struct CreatedLink {
    pub url: Zeroizing<String>,
    pub serial: String,
    pub expires_at: i64,
    /// Whether the link was also queued for the owner by email.
    pub emailed: bool,
}

fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Makes a link for `serial` (escrowed, with an owner), voiding any open one. With `email`
/// (an SMTP server is configured) and an address for the owner, the link is also queued for
/// them, in the same transaction; otherwise it is only returned.
pub async fn create(
    env: &Env<'_>,
    actor: &str,
    serial: &str,
    origin: &str,
    email: bool,
) -> Result<CreatedLink, LifecycleError> {
    create_for(env, actor, serial, origin, email, "operator").await
}

/// [`create`] for a printed delivery slip (`tokens::shipping::slips`): never emailed, and the
/// event says the link went onto a slip.
pub(crate) async fn create_for_slip(
    env: &Env<'_>,
    actor: &str,
    serial: &str,
    origin: &str,
) -> Result<CreatedLink, LifecycleError> {
    create_for(env, actor, serial, origin, false, "slip").await
}

/// `shown_on`: where the link is shown once — `operator` (the reply or page of its maker) or
/// `slip` (a printed delivery slip).
async fn create_for(
    env: &Env<'_>,
    actor: &str,
    serial: &str,
    origin: &str,
    email: bool,
    shown_on: &str,
) -> Result<CreatedLink, LifecycleError> {
    let mut bytes = Zeroizing::new([0_u8; LINK_BYTES]);
    rand::rngs::OsRng.fill_bytes(&mut bytes[..]);
    let token = Zeroizing::new(URL_SAFE_NO_PAD.encode(&bytes[..]));
    let url = Zeroizing::new(format!(
        "{}/deliver/{}",
        origin.trim_end_matches('/'),
        *token
    ));
    let now = env.unix();
    let mut tx = env.store.begin_write().await?;
    let row = rows::by_serial(&mut tx, serial)
        .await?
        .ok_or_else(|| TokenError::NotFound(serial.to_owned()))?;
    let token_row = Token::from_row(row)?;
    if token_row.state != TokenState::Escrowed {
        return Err(TokenError::WrongState {
            serial: token_row.serial.clone(),
            state: token_row.state.as_str().into(),
            hint: "its delivery is already settled",
        }
        .into());
    }
    let Some(owner) = token_row.owner.clone() else {
        return Err(LifecycleError::Invalid(format!(
            "owner: token '{}' has no owner to confirm its delivery — assign it first",
            token_row.serial
        )));
    };
    let expires_at = token_row.retention_deadline;
    let email = email
        && notices::notice_recipient(env.store, &owner)
            .await?
            .is_some();
    let voided = links::replace(
        &mut tx,
        token_row.row_id,
        &hash(&token),
        actor,
        now,
        expires_at,
    )
    .await?;
    let event = NewEvent::new(actor, "delivery_link.created", token_row.target()).details(json!({
        "owner": owner,
        "expires_at": expires_at,
        "replaced_open_link": voided > 0,
        "emailed": email,
        "shown_on": shown_on,
    }));
    audit::append(&mut tx, env.vault, env.now, event).await?;
    if email {
        let notice = Notice {
            kind: Kind::DeliveryLink,
            serial: &token_row.serial,
            owner: &owner,
            notify_manager: false,
            operator: actor.strip_prefix("operator:").unwrap_or(actor),
            ticket: None,
            link: Some(&url),
            expires_at: Some(expires_at),
            at: now,
        };
        notices::record(&mut tx, &notice).await?;
    }
    tx.commit().await?;
    Ok(CreatedLink {
        url,
        serial: token_row.serial,
        expires_at,
        emailed: email,
    })
}

/// What the owner sees on the link's page: never the serial in full, a seed or a code.
pub struct LinkView {
    pub display_name: Option<String>,
    /// The serial's last four characters.
    pub serial_hint: String,
    pub digits: u32,
}

/// Checks that `link` is usable now and returns it with its token.
fn usable(
    env: &Env<'_>,
    link: Option<LinkRow>,
    token: Option<Token>,
) -> Result<(LinkRow, Token), LinkError> {
    let link = link.ok_or(LinkError::Unknown)?;
    match link.state.as_str() {
        "used" => return Err(LinkError::Used),
        "void" => return Err(LinkError::Replaced),
        "locked" => return Err(LinkError::Locked),
        _ => {}
    }
    if env.unix() >= link.expires_at {
        return Err(LinkError::Expired);
    }
    let token = token.ok_or(LinkError::Unknown)?;
    if token.state != TokenState::Escrowed {
        return Err(LinkError::Settled);
    }
    Ok((link, token))
}

async fn token_of(
    db: impl Into<crate::store::Db<'_>>,
    link: &Option<LinkRow>,
) -> Result<Option<Token>, LinkError> {
    let Some(link) = link else { return Ok(None) };
    match rows::by_id(db, link.token).await? {
        Some(row) => Ok(Some(Token::from_row(row).map_err(LifecycleError::from)?)),
        None => Ok(None),
    }
}

/// The link's page: whose token it is, if the link is usable.
pub async fn open(env: &Env<'_>, link_token: &str) -> Result<LinkView, LinkError> {
    let link = links::by_hash(env.store, &hash(link_token)).await?;
    let token = token_of(env.store, &link).await?;
    let (_, token) = usable(env, link, token)?;
    Ok(LinkView {
        display_name: token.display_name.clone(),
        serial_hint: serial_hint(&token.serial),
        digits: token.digits,
    })
}

/// The last four characters of a serial, so the owner can tell which token is meant.
pub fn serial_hint(serial: &str) -> String {
    let chars: Vec<char> = serial.chars().collect();
    let tail: String = chars[chars.len().saturating_sub(4)..].iter().collect();
    format!("…{tail}")
}

/// The owner confirms delivery with the code their token shows: the seed is purged as for a
/// helpdesk-confirmed delivery. A wrong code is counted on the link (and on the token, as any
/// wrong delivery code); the fifth locks the link.
pub async fn confirm(
    env: &Env<'_>,
    link_token: &str,
    code: Zeroizing<String>,
) -> Result<Purged, LinkError> {
    if code.trim().is_empty() {
        return Err(LinkError::NoCode);
    }
    let request = DeliveryRequest::new(Some(code), false, None)?;
    let mut tx = env.store.begin_write().await?;
    let link = links::by_hash(&mut tx, &hash(link_token)).await?;
    let token = token_of(&mut tx, &link).await?;
    let (link, token) = usable(env, link, token)?;
    let owner = token.owner.clone().unwrap_or_default();
    let actor = format!("owner:{owner}");
    let target = token.target();
    let attempted = lifecycle::deliver_in(env, &mut tx, &actor, token, request).await?;
    let metrics = attempted.metric();
    let outcome = match attempted {
        Attempted::Purged(purged) => {
            links::mark_used(&mut tx, link.id).await?;
            Ok(purged)
        }
        Attempted::Refused(LifecycleError::WrongCode(_)) => {
            let wrong = links::count_wrong_code(&mut tx, link.id, WRONG_CODES_BEFORE_LOCK).await?;
            if wrong >= WRONG_CODES_BEFORE_LOCK {
                let event = NewEvent::new(&actor, "delivery_link.locked", target)
                    .outcome(Outcome::Denied)
                    .details(json!({ "wrong_codes": wrong }));
                audit::append(&mut tx, env.vault, env.now, event).await?;
                Err(LinkError::Locked)
            } else {
                Err(LinkError::WrongCode {
                    left: WRONG_CODES_BEFORE_LOCK - wrong,
                })
            }
        }
        Attempted::Refused(other) => Err(other.into()),
    };
    tx.commit().await?;
    metrics.count();
    if outcome.is_ok() {
        lifecycle::scrub(env).await;
    }
    outcome
}
