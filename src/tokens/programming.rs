//! Generate and show once (issue #19, DESIGN §11 "Lifecycle"): seedvault makes a 160-bit seed
//! from the OS's random source, seals it, and shows it once — its `otpauth://` URI (as a QR
//! code, drawn by the front end) and its base32 text — for a burner app or an authenticator to
//! program a device with. The token is `programming` until a code from that device is confirmed
//! (the delivery window, the delivery attempt limit) and it becomes `escrowed`; cancelling it
//! abandons it and purges the seed like any cancellation.
//!
//! "Once" is kept in the store (`token_programming.shown_at`): the API's reply shows the seed
//! in the same transaction that creates it; the page shows it on the first visit by the
//! operator who generated it, and every later visit says it was already shown.

use rand::RngCore;
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;
use zeroize::Zeroizing;

use super::lifecycle::{check_device_code, unseal_in, LifecycleError};
use super::{
    clean_field, clean_serial, resolve_policy, target, Env, Token, TokenError, TokenState,
};
use crate::audit::{self, NewEvent};
use crate::otp::TotpSpec;
use crate::secret::{Algorithm, Seed};
use crate::store::tokens::{self as rows, NewTokenRow};

/// 160 bits: RFC 4226 §4 recommends it, and it is HMAC-SHA-1's output length.
pub const GENERATED_SEED_BYTES: usize = 20;

/// A seed to generate — the one input of a generation from the API body, the page form or
/// `seedvault token generate`. Blank `digits`, `period` or `algorithm` mean 6, 30 and SHA1.
pub struct GenerateRequest {
    pub owner: Option<String>,
    pub serial: String,
    pub digits: Option<u32>,
    pub period: Option<u32>,
    pub algorithm: Option<String>,
    /// Shown by the authenticator above the account (otpauth `issuer`); optional.
    pub issuer: Option<String>,
    /// The account name in the authenticator (default: the owner, else the serial).
    pub label: Option<String>,
}

/// Whether the seed is shown in the reply that generates it (API, CLI) or on the generating
/// operator's first visit of its page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Show {
    Now,
    OnFirstVisit,
}

/// The generated seed as shown, once. No `Debug`; zeroized on drop.
pub struct ShownSeed {
    pub serial: String,
    /// `otpauth://totp/…` with the secret, for the QR code.
    pub uri: Zeroizing<String>,
    /// The seed in base32 (RFC 4648, no padding), for typing into a burner app.
    pub base32: Zeroizing<String>,
    pub issuer: Option<String>,
    pub label: String,
    pub algorithm: Algorithm,
    pub digits: u32,
    pub period: u32,
}

/// A token left `programming` by [`confirm`]'s success: now escrowed.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Programmed {
    pub serial: String,
    pub state: TokenState,
    /// Steps between the device's clock and the vault's, as measured by the code.
    pub drift_steps: i64,
}

struct ValidGenerate {
    serial: String,
    owner: Option<String>,
    spec: TotpSpec,
    issuer: Option<String>,
    label: String,
}

impl GenerateRequest {
    fn validate(self) -> Result<ValidGenerate, TokenError> {
        let serial = clean_serial(&self.serial)?;
        let algorithm = match self
            .algorithm
            .as_deref()
            .map(str::trim)
            .filter(|a| !a.is_empty())
        {
            Some(text) => Algorithm::parse(text).map_err(|e| TokenError::Invalid {
                field: "algorithm",
                reason: e.to_string(),
            })?,
            None => Algorithm::Sha1,
        };
        let digits = self.digits.unwrap_or(6);
        let spec = TotpSpec::new(algorithm, digits, self.period.unwrap_or(30)).map_err(|e| {
            TokenError::Invalid {
                field: if digits != 6 && digits != 8 {
                    "digits"
                } else {
                    "period"
                },
                reason: e.to_string(),
            }
        })?;
        let owner = clean_field("owner", self.owner.as_deref())?;
        let issuer = clean_field("issuer", self.issuer.as_deref())?;
        if issuer.as_deref().is_some_and(|i| i.contains(':')) {
            return Err(TokenError::Invalid {
                field: "issuer",
                reason: "must not contain ':' (it separates issuer and account in the QR code)"
                    .into(),
            });
        }
        let label = clean_field("label", self.label.as_deref())?
            .or_else(|| owner.clone())
            .unwrap_or_else(|| serial.clone());
        Ok(ValidGenerate {
            serial,
            owner,
            spec,
            issuer,
            label,
        })
    }
}

/// Percent-encodes a label or issuer for an otpauth URI (RFC 3986 unreserved kept).
fn escape(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'@' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// What the device is programmed with: the Key URI Format (issuer prefix and parameter both,
/// as Google Authenticator recommends) and the base32 text.
fn shown(
    serial: &str,
    seed: &Seed,
    spec: &TotpSpec,
    issuer: Option<&str>,
    label: &str,
) -> ShownSeed {
    let base32 = Zeroizing::new(data_encoding::BASE32_NOPAD.encode(seed.expose()));
    let account = match issuer {
        Some(issuer) => format!("{}:{}", escape(issuer), escape(label)),
        None => escape(label),
    };
    let mut uri = Zeroizing::new(String::with_capacity(160));
    uri.push_str("otpauth://totp/");
    uri.push_str(&account);
    uri.push_str("?secret=");
    uri.push_str(&base32);
    if let Some(issuer) = issuer {
        uri.push_str("&issuer=");
        uri.push_str(&escape(issuer));
    }
    uri.push_str(&format!(
        "&algorithm={}&digits={}&period={}",
        spec.algorithm.as_str(),
        spec.digits,
        spec.period
    ));
    ShownSeed {
        serial: serial.to_owned(),
        uri,
        base32,
        issuer: issuer.map(str::to_owned),
        label: label.to_owned(),
        algorithm: spec.algorithm,
        digits: spec.digits,
        period: spec.period,
    }
}

/// Generates, seals and stores a seed for a token that is then `programming` — one
/// transaction with its `token.generated` event. With [`Show::Now`] the seed comes back (and
/// is recorded as shown); with [`Show::OnFirstVisit`] [`show_once`] shows it later.
pub async fn generate(
    env: &Env<'_>,
    actor: &str,
    request: GenerateRequest,
    show: Show,
) -> Result<Option<ShownSeed>, TokenError> {
    let valid = request.validate()?;
    let policy = resolve_policy(env.policies, None)?;
    let mut bytes = vec![0u8; GENERATED_SEED_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let seed = Seed::from_bytes(bytes).map_err(|e| TokenError::Invalid {
        field: "seed",
        reason: e.to_string(),
    })?;
    let token_id = uuid::Uuid::new_v4().to_string();
    let sealed = env.vault.seal_seed(&token_id, &valid.serial, &seed)?;
    let row = NewTokenRow {
        token_id: &token_id,
        serial: &valid.serial,
        owner: valid.owner.as_deref(),
        display_name: Some(&valid.label),
        manufacturer: valid.issuer.as_deref(),
        model: None,
        algorithm: valid.spec.algorithm.as_str(),
        digits: valid.spec.digits,
        period: valid.spec.period,
        policy: &policy.name,
        sealed_seed: sealed.as_bytes(),
        captured_by: actor,
        captured_at: env.unix(),
        retention_deadline: env.deadline_for(policy),
    };
    let shown_now = show == Show::Now;
    let mut tx = env.store.begin_write().await?;
    if let Err(e) = rows::insert_programming(&mut tx, &row, shown_now.then(|| env.unix())).await {
        return Err(super::serial_taken(env.store, &valid.serial, e).await);
    }
    let event = NewEvent::new(actor, "token.generated", target(&valid.serial)).details(json!({
        "owner": valid.owner,
        "algorithm": valid.spec.algorithm.as_str(),
        "digits": valid.spec.digits,
        "period": valid.spec.period,
        "policy": policy.name,
        "seed_bits": seed.bits(),
        "shown": shown_now,
    }));
    audit::append(&mut tx, env.vault, env.now, event).await?;
    tx.commit().await?;
    Ok(shown_now.then(|| {
        shown(
            &valid.serial,
            &seed,
            &valid.spec,
            valid.issuer.as_deref(),
            &valid.label,
        )
    }))
}

/// Shows a generated seed to the operator who generated it, if it was not shown yet (the page
/// after [`Show::OnFirstVisit`]); `None` for every later visit, and for anyone else.
pub async fn show_once(
    env: &Env<'_>,
    actor: &str,
    serial: &str,
) -> Result<Option<ShownSeed>, TokenError> {
    let mut tx = env.store.begin_write().await?;
    let row = rows::by_serial(&mut tx, serial)
        .await?
        .ok_or_else(|| TokenError::NotFound(serial.to_owned()))?;
    let token = Token::from_row(row)?;
    if token.state != TokenState::Programming
        || !rows::mark_seed_shown(&mut tx, token.row_id, actor, env.unix()).await?
    {
        return Ok(None);
    }
    let seed = unseal_in(env, &mut tx, &token).await?;
    let event = NewEvent::new(actor, "token.seed_shown", token.target());
    audit::append(&mut tx, env.vault, env.now, event).await?;
    tx.commit().await?;
    let label = token
        .display_name
        .clone()
        .unwrap_or_else(|| token.serial.clone());
    Ok(Some(shown(
        &token.serial,
        &seed,
        &token.spec()?,
        token.manufacturer.as_deref(),
        &label,
    )))
}

/// Confirms that the device was programmed: `code` must be one it shows now (within the
/// delivery window); then the token is `escrowed`, with the drift recorded. Wrong codes count
/// against the delivery limit and are audited as `programming.refused`.
pub async fn confirm(
    env: &Env<'_>,
    actor: &str,
    serial: &str,
    code: Zeroizing<String>,
) -> Result<Programmed, LifecycleError> {
    if code.trim().is_empty() {
        return Err(LifecycleError::Invalid(
            "code: enter the code the programmed device shows now".into(),
        ));
    }
    let mut tx = env.store.begin_write().await?;
    let row = rows::by_serial(&mut tx, serial)
        .await?
        .ok_or_else(|| TokenError::NotFound(serial.to_owned()))?;
    let token = Token::from_row(row)?;
    if token.state != TokenState::Programming {
        return Err(TokenError::WrongState {
            serial: token.serial,
            state: token.state.as_str().into(),
            hint: "only a generated token waiting for its device's first code is confirmed here",
        }
        .into());
    }
    let verified =
        match check_device_code(env, &mut tx, &token, actor, &code, "programming.refused").await? {
            Ok(verified) => verified,
            Err(refused) => {
                tx.commit().await?;
                return Err(refused);
            }
        };
    if !rows::finish_programming(&mut tx, token.row_id, verified.drift_steps).await? {
        return Err(TokenError::WrongState {
            serial: token.serial,
            state: "no longer programming".into(),
            hint: "another action changed it meanwhile",
        }
        .into());
    }
    let event = NewEvent::new(actor, "token.programmed", token.target())
        .details(json!({ "drift_steps": verified.drift_steps }));
    audit::append(&mut tx, env.vault, env.now, event).await?;
    tx.commit().await?;
    Ok(Programmed {
        serial: token.serial,
        state: TokenState::Escrowed,
        drift_steps: verified.drift_steps,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn request(serial: &str) -> GenerateRequest {
        GenerateRequest {
            owner: Some("ada@example.org".into()),
            serial: serial.into(),
            digits: None,
            period: None,
            algorithm: None,
            issuer: Some("Contoso IT".into()),
            label: None,
        }
    }

    #[test]
    fn a_generate_request_defaults_to_six_digits_thirty_seconds_sha1_and_the_owner_as_label() {
        let valid = request("T2-1").validate().unwrap();
        assert_eq!(
            (valid.spec.digits, valid.spec.period, valid.spec.algorithm),
            (6, 30, Algorithm::Sha1)
        );
        assert_eq!(valid.label, "ada@example.org");
    }

    #[test]
    fn a_generate_request_names_the_bad_field() {
        let mut bad = request("T2-1");
        bad.digits = Some(7);
        assert!(bad
            .validate()
            .err()
            .unwrap()
            .to_string()
            .starts_with("digits:"));
        let mut bad = request("T2-1");
        bad.algorithm = Some("MD5".into());
        let message = bad.validate().err().unwrap().to_string();
        assert!(message.starts_with("algorithm:"), "{message}");
        let mut bad = request("T2-1");
        bad.issuer = Some("a:b".into());
        assert!(bad
            .validate()
            .err()
            .unwrap()
            .to_string()
            .starts_with("issuer:"));
    }

    #[test]
    fn the_shown_uri_parses_back_to_the_same_seed_and_parameters() {
        let seed = Seed::from_bytes((1..=20).collect()).unwrap();
        let spec = TotpSpec::new(Algorithm::Sha256, 8, 60).unwrap();
        let shown = shown("T2-1", &seed, &spec, Some("Contoso IT"), "ada@example.org");
        let parsed = crate::secret::parse_otpauth(&shown.uri).unwrap();
        assert_eq!(parsed.seed.expose(), seed.expose());
        let params = parsed.otpauth.unwrap();
        assert_eq!(params.issuer.as_deref(), Some("Contoso IT"));
        assert_eq!(params.account.as_deref(), Some("ada@example.org"));
        assert_eq!(
            (params.algorithm, params.digits, params.period),
            (Algorithm::Sha256, 8, 60)
        );
        assert_eq!(shown.base32.len(), 32);
    }
}
