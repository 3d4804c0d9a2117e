//! `/api/v1/auth/*`: passkey registration from an invite, sign-in (named and discoverable),
//! sign-out. Registration state lives in the server-side session; sign-in state in memory
//! (`web::ceremony::PendingSignIns`) under a random id in its own cookie, so that starting a
//! sign-in writes nothing to disk. Both are taken out (single use) by the matching `/finish`.

use super::webauthn::{
    AssertionCredential, CreationChallenge, RegistrationCredential, RequestChallenge,
};
use crate::web::extract::{Json, OptionalJson};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tower_sessions::Session;
use utoipa::ToSchema;
use uuid::Uuid;
use webauthn_rs::prelude::{
    CreationChallengeResponse, CredentialID, DiscoverableAuthentication, DiscoverableKey, Passkey,
    PasskeyAuthentication, PasskeyRegistration, PublicKeyCredential, RegisterPublicKeyCredential,
};
use webauthn_rs::Webauthn;
use webauthn_rs_proto::{AllowCredentials, RequestChallengeResponse, ResidentKeyRequirement};

use crate::audit::{NewEvent, Outcome};
use crate::operators::{self, Operator, PendingInvite, Role};
use crate::web::ceremony::{Full, SignInId};
use crate::web::session::{session_error, ClientAddr, SignedIn, SIGNED_IN};
use crate::web::{AppError, AppState};

const REGISTRATION: &str = "ceremony.registration";
/// The cookie holding the id of the caller's sign-in in flight (see [`login_start`]).
const SIGN_IN_COOKIE: &str = "seedvault_sign_in";
/// How long a sign-in challenge can be answered (webauthn-rs's own timeout is 5 minutes).
const SIGN_IN_SECONDS: i64 = 300;
/// Sign-ins in flight at most: anyone can start one, so memory stays bounded.
const MAX_PENDING_SIGN_INS: usize = 10_000;
/// Sign-ins in flight at most from one client (an IPv4 address or an IPv6 /64, see
/// [`sign_in_client`]): far more than an office behind one NAT has unfinished at once (a
/// finished or failed ceremony no longer counts), far fewer than the server-wide limit, so
/// one client's flood leaves room for everyone else.
const MAX_PENDING_SIGN_INS_PER_CLIENT: usize = 100;

/// A sign-in between `login/start` and `login/finish` (serialisable for instances on
/// PostgreSQL, `web::ceremony`; no `Debug`).
#[derive(Serialize, Deserialize)]
pub struct StartedSignIn {
    state: SignInState,
    pub(crate) expires_at: i64,
    /// Who started it ([`sign_in_client`]), for the per-client limit.
    client: String,
}

/// The client a sign-in counts against: its address ([`ClientAddr`]: behind a trusted proxy,
/// the one the proxy reports), an IPv6 address by its /64, since one host commonly holds a
/// whole /64 and could otherwise start each sign-in from a fresh address.
fn sign_in_client(addr: &str) -> String {
    match addr.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(v6)) if v6.to_ipv4_mapped().is_none() => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        _ => addr.to_owned(),
    }
}

#[derive(Serialize, Deserialize)]
struct RegistrationState {
    ceremony: PasskeyRegistration,
    invite: PendingInvite,
    user_handle: Uuid,
}

#[derive(Serialize, Deserialize)]
enum SignInState {
    Named {
        operator_id: i64,
        ceremony: PasskeyAuthentication,
    },
    Discoverable {
        ceremony: DiscoverableAuthentication,
    },
    /// A name that cannot sign in (unknown, disabled, or without a passkey) got a challenge
    /// that looks like a real one and can never succeed, so that answers do not tell which
    /// operator names exist.
    Decoy { name: String },
}

#[derive(Deserialize, ToSchema)]
pub struct RegisterStart {
    /// The token from the invite URL (`/invite/<TOKEN>`).
    invite: String,
}

/// Who is signed in.
#[derive(Serialize, ToSchema)]
pub struct SignedInOperator {
    name: String,
    roles: Vec<Role>,
}

impl From<&Operator> for SignedInOperator {
    fn from(op: &Operator) -> Self {
        Self {
            name: op.name.clone(),
            roles: op.roles.to_vec(),
        }
    }
}

#[derive(Deserialize, ToSchema, Default)]
pub struct SignInStart {
    /// Operator name; omit for a discoverable-credential sign-in (passkey autofill, or the
    /// button with the name left empty), which only credentials registered as discoverable answer.
    #[serde(default)]
    username: Option<String>,
}

/// Start registering a passkey for an invite.
#[utoipa::path(post, path = "/auth/register/start", tag = "auth", request_body = RegisterStart,
    responses((status = 200, description = "WebAuthn creation challenge", body = CreationChallenge),
              (status = 404, description = "unknown invite"), (status = 409, description = "an operator with this name exists"),
              (status = 410, description = "invite expired or used")))]
pub async fn register_start(
    State(state): State<AppState>,
    session: Session,
    Json(body): Json<RegisterStart>,
) -> Result<Json<serde_json::Value>, AppError> {
    let invite = operators::open_invite(
        &state.store,
        &state.vault,
        state.clock.now(),
        body.invite.trim(),
    )
    .await?;
    let user_handle = Uuid::new_v4();
    let (challenge, ceremony) =
        start_registration(&state.webauthn, user_handle, &invite.name, None)?;
    session
        .insert(
            REGISTRATION,
            RegistrationState {
                ceremony,
                invite,
                user_handle,
            },
        )
        .await
        .map_err(session_error)?;
    Ok(Json(to_json(&challenge)?))
}

/// Starts registering a passkey, asking for a discoverable credential where the authenticator
/// has room for one, so that its operator can sign in without typing a name.
///
/// webauthn-rs asks for `residentKey: "discouraged"` (security keys hold few discoverable
/// credentials); with that, a security key makes a credential that a nameless sign-in (empty
/// `allowCredentials`) cannot find. `preferred` still lets a full or older key fall back to a
/// non-discoverable credential, which the named sign-in keeps working for; verification at
/// finish does not depend on it. <https://www.w3.org/TR/webauthn-3/#enum-residentKeyRequirement>
pub fn start_registration(
    webauthn: &Webauthn,
    user_handle: Uuid,
    name: &str,
    exclude: Option<Vec<CredentialID>>,
) -> Result<(CreationChallengeResponse, PasskeyRegistration), AppError> {
    let (mut challenge, ceremony) =
        webauthn.start_passkey_registration(user_handle, name, name, exclude)?;
    // webauthn-rs always fills the selection in (user verification required).
    if let Some(selection) = challenge.public_key.authenticator_selection.as_mut() {
        selection.resident_key = Some(ResidentKeyRequirement::Preferred);
        // Level 1 clients read only this flag; `true` would refuse keys without room.
        selection.require_resident_key = false;
    }
    Ok((challenge, ceremony))
}

/// Finish registration: the operator is created, the invite consumed, and the session signed in.
#[utoipa::path(post, path = "/auth/register/finish", tag = "auth", request_body = RegistrationCredential,
    responses((status = 200, body = SignedInOperator), (status = 400, description = "no registration in progress or credential refused"),
              (status = 409, description = "the name was taken meanwhile, or the passkey is already registered")))]
pub async fn register_finish(
    State(state): State<AppState>,
    session: Session,
    credential: Result<Json<RegisterPublicKeyCredential>, AppError>,
) -> Result<Json<SignedInOperator>, AppError> {
    let Some(pending) = session
        .remove::<RegistrationState>(REGISTRATION)
        .await
        .map_err(session_error)?
    else {
        return Err(AppError::BadRequest(
            "no registration is in progress in this session — open the invite link again".into(),
        ));
    };
    let credential = match credential {
        Ok(Json(credential)) => credential,
        Err(error) => {
            let target = format!("operator:{}", pending.invite.name);
            let event = NewEvent::new(target.clone(), "operator.registration_refused", target)
                .outcome(Outcome::Denied)
                .details(json!({ "reason": "malformed credential" }));
            operators::record(&state.store, &state.vault, state.clock.now(), event).await?;
            return Err(error);
        }
    };
    let now = state.clock.now();
    let passkey = match state
        .webauthn
        .finish_passkey_registration(&credential, &pending.ceremony)
    {
        Ok(passkey) => passkey,
        Err(e) => {
            let target = format!("operator:{}", pending.invite.name);
            let event = NewEvent::new(target.clone(), "operator.registration_refused", target)
                .outcome(Outcome::Denied)
                .details(json!({ "reason": e.to_string() }));
            operators::record(&state.store, &state.vault, now, event).await?;
            return Err(e.into());
        }
    };
    let operator = operators::register(
        &state.store,
        &state.vault,
        now,
        &pending.invite,
        pending.user_handle,
        &passkey,
    )
    .await?;
    sign_in_session(&session, &operator, now.unix_timestamp()).await?;
    Ok(Json(SignedInOperator::from(&operator)))
}

/// Start signing in: with a name, or without for a discoverable credential.
#[utoipa::path(post, path = "/auth/login/start", tag = "auth", request_body = Option<SignInStart>,
    responses((status = 200, description = "WebAuthn request challenge; a name that cannot sign in gets one no passkey can answer", body = RequestChallenge),
              (status = 429, description = "too many failed sign-ins from this client, or too many sign-ins in progress from it or on the server (Retry-After)")))]
pub async fn login_start(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    OptionalJson(body): OptionalJson<SignInStart>,
) -> Result<impl IntoResponse, AppError> {
    let username = body
        .and_then(|b| b.username)
        .map(|u| u.trim().to_owned())
        .filter(|u| !u.is_empty());
    let now = state.clock.now();
    // Per client only: a limit per operator name would let anyone lock that operator out.
    check_sign_in_limit(&state, &addr, now.unix_timestamp()).await?;
    let (challenge, pending) = match &username {
        Some(name) => {
            let operator = operators::by_name(&state.store, name)
                .await?
                .filter(|op| !op.disabled);
            let passkeys: Vec<Passkey> = match &operator {
                Some(op) => operators::passkeys::of(&state.store, op.id)
                    .await?
                    .into_iter()
                    .map(|stored| stored.passkey)
                    .collect(),
                None => Vec::new(),
            };
            match operator.filter(|_| !passkeys.is_empty()) {
                Some(operator) => {
                    let (challenge, ceremony) =
                        state.webauthn.start_passkey_authentication(&passkeys)?;
                    (
                        challenge,
                        SignInState::Named {
                            operator_id: operator.id,
                            ceremony,
                        },
                    )
                }
                None => decoy_challenge(&state, name)?,
            }
        }
        None => {
            let (challenge, ceremony) = state.webauthn.start_discoverable_authentication()?;
            (challenge, SignInState::Discoverable { ceremony })
        }
    };
    let id: SignInId = rand::random();
    let started = StartedSignIn {
        state: pending,
        expires_at: now.unix_timestamp() + SIGN_IN_SECONDS,
        client: sign_in_client(&addr),
    };
    match state.sign_ins.put_within_per_client(
        id,
        started,
        now.unix_timestamp(),
        MAX_PENDING_SIGN_INS,
        MAX_PENDING_SIGN_INS_PER_CLIENT,
        |s| &s.client,
    )
    .await?
    {
        Ok(()) => {}
        Err(Full::Server) => {
            return Err(AppError::TooManyRequests {
                message: "too many sign-ins are in progress on this server; try again in a minute"
                    .into(),
                retry_after_seconds: 60,
            })
        }
        Err(Full::Client {
            retry_after_seconds,
        }) => {
            return Err(AppError::TooManyRequests {
                message: format!(
                    "too many sign-ins are in progress from this client ({MAX_PENDING_SIGN_INS_PER_CLIENT} unfinished) — finish one, or try again in {retry_after_seconds} seconds"
                ),
                retry_after_seconds,
            })
        }
    }
    let cookie = sign_in_cookie(&state, data_encoding::HEXLOWER.encode(&id), SIGN_IN_SECONDS);
    Ok(([(header::SET_COOKIE, cookie)], Json(to_json(&challenge)?)))
}

/// The sign-in cookie: `value` for `max_age` seconds (0 removes it). Scoped to the sign-in
/// routes, with the session cookie's attributes.
fn sign_in_cookie(state: &AppState, value: String, max_age: i64) -> String {
    tower_sessions::cookie::Cookie::build((SIGN_IN_COOKIE, value))
        .path("/api/v1/auth/login")
        .http_only(true)
        .same_site(tower_sessions::cookie::SameSite::Strict)
        .secure(state.config.origin_is_https())
        .max_age(time::Duration::seconds(max_age))
        .build()
        .to_string()
}

/// The id of the caller's sign-in in flight, from its cookie.
fn sign_in_id(headers: &HeaderMap) -> Option<SignInId> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SIGN_IN_COOKIE)
        .and_then(|(_, value)| data_encoding::HEXLOWER.decode(value.as_bytes()).ok())
        .and_then(|bytes| SignInId::try_from(bytes.as_slice()).ok())
}

/// Finish signing in with the passkey's assertion.
#[utoipa::path(post, path = "/auth/login/finish", tag = "auth", request_body = AssertionCredential,
    responses((status = 200, body = SignedInOperator), (status = 400, description = "no sign-in in progress"),
              (status = 401, description = "assertion refused"), (status = 429, description = "too many failed sign-ins")))]
pub async fn login_finish(
    State(state): State<AppState>,
    session: Session,
    ClientAddr(addr): ClientAddr,
    headers: HeaderMap,
    credential: Result<Json<PublicKeyCredential>, AppError>,
) -> Result<impl IntoResponse, AppError> {
    let now = state.clock.now();
    let taken = match sign_in_id(&headers) {
        Some(id) => state.sign_ins.take(id).await?,
        None => None,
    };
    let Some(pending) = taken
        .filter(|started| started.expires_at >= now.unix_timestamp())
        .map(|started| started.state)
    else {
        return Err(AppError::BadRequest(
            "no sign-in is in progress in this session — start again".into(),
        ));
    };
    let credential = match credential {
        Ok(Json(credential)) => credential,
        Err(error) => {
            sign_in_failed(&state, None, &addr, "malformed assertion").await?;
            return Err(error);
        }
    };
    let operator = match &pending {
        SignInState::Decoy { name } => {
            sign_in_failed(
                &state,
                Some(name),
                &addr,
                "no enabled operator with a passkey has this name",
            )
            .await?;
            return Err(not_accepted());
        }
        SignInState::Named { operator_id, .. } => {
            operators::by_id(&state.store, *operator_id).await?
        }
        SignInState::Discoverable { .. } => match state
            .webauthn
            .identify_discoverable_authentication(&credential)
        {
            Ok((handle, _)) => operators::by_handle(&state.store, &handle).await?,
            Err(_) => None,
        },
    };
    let Some(operator) = operator.filter(|op| !op.disabled) else {
        sign_in_failed(
            &state,
            None,
            &addr,
            "the passkey belongs to no enabled operator",
        )
        .await?;
        return Err(not_accepted());
    };
    // No limit is checked here: a valid assertion signs in whatever others failed meanwhile;
    // the per-client limit stops new challenges at `login/start`.
    let passkeys = operators::passkeys::of(&state.store, operator.id).await?;
    let result = match pending {
        SignInState::Named { ceremony, .. } => state
            .webauthn
            .finish_passkey_authentication(&credential, &ceremony),
        SignInState::Decoy { .. } => return Err(not_accepted()),
        SignInState::Discoverable { ceremony } => {
            let keys: Vec<DiscoverableKey> = passkeys
                .iter()
                .map(|stored| DiscoverableKey::from(&stored.passkey))
                .collect();
            state
                .webauthn
                .finish_discoverable_authentication(&credential, ceremony, &keys)
        }
    };
    let result = match result {
        Ok(result) => result,
        Err(e) => {
            sign_in_failed(&state, Some(&operator.name), &addr, &e.to_string()).await?;
            return Err(not_accepted());
        }
    };
    let Some(signer) = passkeys
        .into_iter()
        .find(|stored| stored.passkey.cred_id() == result.cred_id())
    else {
        sign_in_failed(
            &state,
            Some(&operator.name),
            &addr,
            "credential not registered to this operator",
        )
        .await?;
        return Err(not_accepted());
    };
    let discoverable = credential.get_user_unique_id().is_some();
    let signed_in = SignedIn {
        operator_id: operator.id,
        signed_in_at: now.unix_timestamp(),
        last_seen: now.unix_timestamp(),
    };
    let idle = time::Duration::minutes(i64::from(state.config.session_idle_minutes));
    let (id, row) = state.sessions.sign_in_row(&session, &signed_in, idle)?;
    operators::record_sign_in(
        &state.store,
        &state.vault,
        now,
        &operator,
        &signer.used(&result)?,
        discoverable,
        // Shared sessions are written by the session layer after the commit (`adopt`).
        (!state.sessions.is_shared()).then_some(&row),
    )
    .await?;
    state.sessions.adopt(&session, id, &signed_in).await?;
    Ok((
        [(header::SET_COOKIE, sign_in_cookie(&state, String::new(), 0))],
        Json(SignedInOperator::from(&operator)),
    ))
}

/// Sign out: the session is deleted server-side.
#[utoipa::path(post, path = "/auth/logout", tag = "auth", responses((status = 204, description = "signed out")))]
pub async fn logout(
    State(state): State<AppState>,
    session: Session,
) -> Result<StatusCode, AppError> {
    if let Some(signed_in) = session
        .get::<SignedIn>(SIGNED_IN)
        .await
        .map_err(session_error)?
    {
        if let Some(op) = operators::by_id(&state.store, signed_in.operator_id).await? {
            operators::record(
                &state.store,
                &state.vault,
                state.clock.now(),
                NewEvent::new(op.actor(), "auth.sign_out", op.actor()),
            )
            .await?;
        }
    }
    session.flush().await.map_err(session_error)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Marks the session signed in, under a fresh session id (no fixation).
pub async fn sign_in_session(
    session: &Session,
    operator: &Operator,
    now: i64,
) -> Result<(), AppError> {
    session.cycle_id().await.map_err(session_error)?;
    session
        .insert(
            SIGNED_IN,
            SignedIn {
                operator_id: operator.id,
                signed_in_at: now,
                last_seen: now,
            },
        )
        .await
        .map_err(session_error)
}

/// Every refused sign-in gets the same answer, so that it tells nothing about which names,
/// operators or passkeys exist; the audit trail keeps the reason.
fn not_accepted() -> AppError {
    AppError::Unauthorized(
        "the passkey was not accepted — check the operator name, or use a passkey registered for it".into(),
    )
}

/// A challenge for a name that cannot sign in, shaped like a named one: one allowed
/// credential whose id is derived from the name (the same name gets the same id, as a real
/// operator's passkey would), which no authenticator holds.
fn decoy_challenge(
    state: &AppState,
    name: &str,
) -> Result<(RequestChallengeResponse, SignInState), AppError> {
    use hmac::{Hmac, Mac};
    let (mut challenge, _) = state.webauthn.start_discoverable_authentication()?;
    // As a named challenge has them: no conditional mediation, no extensions.
    challenge.mediation = None;
    challenge.public_key.extensions = None;
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&state.limits.decoy_key)
        .map_err(|e| AppError::Internal(format!("decoy key: {e}")))?;
    mac.update(name.as_bytes());
    let id = mac.finalize().into_bytes()[..16].to_vec();
    challenge.public_key.allow_credentials = vec![AllowCredentials {
        type_: "public-key".into(),
        id: id.into(),
        transports: None,
    }];
    Ok((
        challenge,
        SignInState::Decoy {
            name: name.to_owned(),
        },
    ))
}

async fn check_sign_in_limit(state: &AppState, addr: &str, now: i64) -> Result<(), AppError> {
    state
        .limits
        .sign_in_by_addr
        .check(addr, now)
        .await?
        .map_err(|retry_after_seconds| AppError::TooManyRequests {
            message: format!(
                "too many failed sign-ins from this client; try again in {retry_after_seconds} seconds"
            ),
            retry_after_seconds,
        })
}

async fn sign_in_failed(
    state: &AppState,
    name: Option<&str>,
    addr: &str,
    reason: &str,
) -> Result<(), AppError> {
    let now = state.clock.now();
    state
        .limits
        .sign_in_by_addr
        .record(addr, now.unix_timestamp())
        .await?;
    let target = name.map_or_else(
        || "operator:unknown".to_owned(),
        |n| format!("operator:{n}"),
    );
    let event = NewEvent::new("anonymous", "auth.sign_in", target)
        .outcome(Outcome::Denied)
        .details(json!({ "reason": reason, "client": addr }));
    operators::record(&state.store, &state.vault, now, event).await?;
    crate::telemetry::sign_in("refused");
    Ok(())
}

pub fn to_json<T: Serialize>(value: &T) -> Result<serde_json::Value, AppError> {
    serde_json::to_value(value)
        .map_err(|e| AppError::Internal(format!("cannot encode challenge: {e}")))
}

#[cfg(test)]
mod shared_tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use webauthn_authenticator_rs::softpasskey::SoftPasskey;
    use webauthn_authenticator_rs::WebauthnAuthenticator;

    use super::*;

    /// The WebAuthn state survives its trip through PostgreSQL: a passkey answers the
    /// challenge of a sign-in started on another instance.
    #[tokio::test]
    async fn a_sign_in_started_on_one_instance_is_finished_with_its_passkey_on_the_other() {
        let origin = url::Url::parse("http://localhost:8080").unwrap();
        let webauthn = webauthn_rs::WebauthnBuilder::new("localhost", &origin)
            .unwrap()
            .build()
            .unwrap();
        let mut authenticator = WebauthnAuthenticator::new(SoftPasskey::new(true));
        let (creation, registration) = webauthn
            .start_passkey_registration(Uuid::new_v4(), "op", "op", None)
            .unwrap();
        let credential = authenticator
            .do_registration(origin.clone(), creation)
            .unwrap();
        let passkey = webauthn
            .finish_passkey_registration(&credential, &registration)
            .unwrap();
        let (request, ceremony) = webauthn.start_passkey_authentication(&[passkey]).unwrap();

        let (a, b) = crate::shared::two_instances().await;
        let started_on = crate::web::ceremony::PendingSignIns::postgres(a, "sign_in");
        let finished_on = crate::web::ceremony::PendingSignIns::postgres(b, "sign_in");
        let started = StartedSignIn {
            state: SignInState::Named {
                operator_id: 1,
                ceremony,
            },
            expires_at: 200,
            client: "198.51.100.7".into(),
        };
        assert!(started_on
            .put_within([7; 16], started, 100, 10)
            .await
            .unwrap());
        let taken = finished_on.take([7; 16]).await.unwrap().unwrap();
        let SignInState::Named {
            operator_id,
            ceremony,
        } = taken.state
        else {
            panic!("a named sign-in came back as another kind");
        };
        assert_eq!(operator_id, 1);
        let assertion = authenticator.do_authentication(origin, request).unwrap();
        assert!(webauthn
            .finish_passkey_authentication(&assertion, &ceremony)
            .is_ok());
    }
}

#[cfg(test)]
mod sign_in_client_tests {
    use super::sign_in_client;

    #[test]
    fn an_ipv6_client_counts_by_its_64_and_an_ipv4_client_by_its_address() {
        assert_eq!(
            sign_in_client("2001:db8:1:2:aaaa::1"),
            sign_in_client("2001:db8:1:2:ffff::9")
        );
        assert_ne!(
            sign_in_client("2001:db8:1:2::1"),
            sign_in_client("2001:db8:1:3::1")
        );
        assert_eq!(sign_in_client("198.51.100.7"), "198.51.100.7");
        assert_ne!(
            sign_in_client("198.51.100.7"),
            sign_in_client("198.51.100.8")
        );
        assert_eq!(sign_in_client("unknown"), "unknown");
    }
}
