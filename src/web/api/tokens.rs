//! `/api/v1/tokens`: capture, list, detail with audit timeline, reassignment, and the reveal
//! ceremony (checklist → passkey assertion → code).

use crate::web::extract::Json;
use crate::web::extract::Path;
use crate::web::extract::Query;
use crate::web::extract::{JsonOrForm, Upload};
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use webauthn_rs::prelude::PublicKeyCredential;
use zeroize::Zeroizing;

use super::auth::to_json;
use super::webauthn::AssertionCredential;
use crate::store::tokens::TokenFilter;
use crate::tokens::lifecycle::{self, Purged};
use crate::tokens::programming::{self, GenerateRequest, Programmed, Show, ShownSeed};
use crate::tokens::reveal::{self, RevealRequest, RevealedCode};
use crate::tokens::shipping::{self, BatchReport, Shipped, Verified};
use crate::tokens::{self, Captured, QrPreview, SecretInput, Token, TokenChange, TokenState};
use crate::web::session::{
    Authorized, CurrentOperator, HelpdeskOnly, ProvisionerOnly, ProvisionerOrHelpdesk,
};
use crate::web::{AppError, AppState};

/// A seed to escrow: typed (`secret`) or as a QR image (`qr_image`), exactly one. The secret
/// is accepted here and never returned by any route.
#[derive(Deserialize, ToSchema)]
pub struct CaptureRequest {
    /// The user the token is for (UPN, e.g. user@example.org). Optional: without one the
    /// token is escrowed unassigned (with a warning) and no code can be revealed until a
    /// `PATCH` assigns it.
    #[serde(default)]
    owner: Option<String>,
    serial: String,
    /// base32, hex or an `otpauth://totp/…` URI; or send `qr_image` instead.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    secret: Option<Zeroizing<String>>,
    /// A PNG or JPEG screenshot of the `otpauth://totp/` QR code, base64 (standard alphabet; a
    /// `data:image/…;base64,` prefix is accepted); instead of `secret`. Read server-side,
    /// never stored, logged or echoed.
    #[serde(default)]
    #[schema(value_type = Option<String>, format = Byte)]
    qr_image: Option<Zeroizing<String>>,
    /// auto (default), base32, hex or otpauth.
    #[serde(default)]
    format: Option<String>,
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    manufacturer: Option<String>,
    #[serde(default)]
    model: Option<String>,
    /// SHA1 (default), SHA256 or SHA512.
    #[serde(default)]
    algorithm: Option<String>,
    /// 6 (default) or 8.
    #[serde(default)]
    digits: Option<u32>,
    /// Seconds per step (default 30).
    #[serde(default)]
    period: Option<u32>,
    /// Policy name (default: the default policy).
    #[serde(default)]
    policy: Option<String>,
}

#[derive(Deserialize, IntoParams)]
pub struct ListQuery {
    /// Substring of serial, owner or display name.
    q: Option<String>,
    /// Only tokens in this state.
    #[param(inline)]
    state: Option<TokenState>,
    owner: Option<String>,
    /// Escrowed tokens whose retention deadline falls within this span, e.g. `7d` or `12h`.
    due_within: Option<String>,
    /// At most this many (default 100, max 1000).
    limit: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct TimelineEvent {
    seq: i64,
    time: String,
    actor: String,
    action: String,
    outcome: String,
    details: serde_json::Value,
}

#[derive(Serialize, ToSchema)]
pub struct TokenDetail {
    #[serde(flatten)]
    token: Token,
    timeline: Vec<TimelineEvent>,
}

#[derive(Deserialize, ToSchema)]
pub struct TokenPatch {
    #[serde(default)]
    owner: Option<String>,
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    policy: Option<String>,
}

#[derive(Deserialize, ToSchema)]
pub struct RevealStart {
    /// Ids of the policy's checks the operator ticked. May be left out together with `ticket`
    /// and `note` when `approval` is given: the approved request's answers are used.
    #[serde(default)]
    checks: Vec<String>,
    ticket: Option<String>,
    note: Option<String>,
    /// Under a four-eyes policy: the id of the approved request this reveal carries out.
    #[serde(default)]
    approval: Option<i64>,
}

/// The answer to a four-eyes `reveal/start` without an approval: the request a second
/// operator must decide (`GET /api/v1/approvals/{id}` follows it).
#[derive(Serialize, ToSchema)]
pub struct ApprovalRequested {
    approval: crate::tokens::approval::Approval,
}

/// The one place a code leaves the vault. Borrows the zeroizing code, so the digits are
/// written straight from it into the response body, with no copy left behind.
#[derive(Serialize, ToSchema)]
pub struct RevealedCodeView<'a> {
    #[schema(value_type = String)]
    code: &'a str,
    period: u32,
    valid_for_seconds: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    next_code: Option<&'a str>,
}

impl<'a> From<&'a RevealedCode> for RevealedCodeView<'a> {
    fn from(revealed: &'a RevealedCode) -> Self {
        Self {
            code: revealed.code.expose(),
            period: revealed.period,
            valid_for_seconds: revealed.valid_for_seconds,
            next_code: revealed.next_code.as_ref().map(|c| c.expose()),
        }
    }
}

fn invalid(field: &'static str, reason: impl Into<String>) -> AppError {
    AppError::Unprocessable(format!("{field}: {}", reason.into()))
}

/// The same capture as a `multipart/form-data` form (for the document only): the image in the
/// part `qr_image` (or the typed `secret`), the other fields as text; a field of another name
/// is refused.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct CaptureForm {
    owner: Option<String>,
    serial: String,
    secret: Option<String>,
    /// The PNG or JPEG screenshot of the QR code.
    #[schema(value_type = Option<String>, format = Binary)]
    qr_image: Option<Vec<u8>>,
    format: Option<String>,
    display_name: Option<String>,
    manufacturer: Option<String>,
    model: Option<String>,
    algorithm: Option<String>,
    digits: Option<String>,
    period: Option<String>,
    policy: Option<String>,
}

/// A QR image to preview: base64 in JSON, or the part `qr_image` of a form.
#[derive(Deserialize, ToSchema)]
pub struct QrPreviewRequest {
    /// The PNG or JPEG screenshot, base64.
    #[schema(value_type = String, format = Byte)]
    qr_image: Zeroizing<String>,
}

/// A QR image for a form preview (for the document only); no other field is accepted.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct QrPreviewForm {
    #[schema(value_type = String, format = Binary)]
    qr_image: Vec<u8>,
}

/// Reads base64 image bytes (a `data:…;base64,` URL as a browser makes one is accepted too).
fn image_from_base64(text: &str) -> Result<Image, AppError> {
    use base64::Engine;
    let text = text.trim();
    let text = match text.strip_prefix("data:") {
        Some(url) => url.split_once(',').map_or(url, |(_, data)| data),
        None => text,
    };
    let compact: Zeroizing<String> =
        Zeroizing::new(text.chars().filter(|c| !c.is_whitespace()).collect());
    base64::engine::general_purpose::STANDARD
        .decode(compact.as_bytes())
        .map(Zeroizing::new)
        .map_err(|_| {
            invalid(
                "qr_image",
                "is not valid base64 — send the PNG or JPEG file's bytes base64-encoded (or as \
                 the part qr_image of a multipart/form-data form)",
            )
        })
}

/// Image bytes read from a request, zeroized on drop.
type Image = Zeroizing<Vec<u8>>;

/// Refuses a form field the form does not have, as the document declares (no additional
/// properties): a typo such as `seriall` would otherwise be dropped silently.
fn only_fields(upload: &Upload, allowed: &[&str]) -> Result<(), AppError> {
    match upload
        .fields
        .keys()
        .find(|name| !allowed.contains(&name.as_str()))
    {
        Some(name) => Err(AppError::Unprocessable(format!(
            "{}: not a field of this form — the fields are {}",
            name.chars()
                .filter(|c| !c.is_control())
                .take(40)
                .collect::<String>(),
            allowed.join(", ")
        ))),
        None => Ok(()),
    }
}

const CAPTURE_FIELDS: &[&str] = &[
    "owner",
    "serial",
    "secret",
    "qr_image",
    "format",
    "display_name",
    "manufacturer",
    "model",
    "algorithm",
    "digits",
    "period",
    "policy",
];

impl CaptureRequest {
    /// The form's fields as the JSON body would carry them, and its image part.
    fn from_form(mut upload: Upload) -> Result<(Self, Option<Image>), AppError> {
        only_fields(&upload, CAPTURE_FIELDS)?;
        let text = |name: &str| upload.field(name).map(str::to_owned);
        let number =
            |name: &'static str| tokens::number_field(name, upload.field(name).unwrap_or_default());
        let body = Self {
            owner: text("owner"),
            serial: text("serial").unwrap_or_default(),
            secret: upload.field("secret").map(|s| Zeroizing::new(s.to_owned())),
            qr_image: None,
            format: text("format"),
            display_name: text("display_name"),
            manufacturer: text("manufacturer"),
            model: text("model"),
            algorithm: text("algorithm"),
            digits: number("digits")?,
            period: number("period")?,
            policy: text("policy"),
        };
        Ok((body, upload.qr_image.take()))
    }
}

/// Escrow one seed (provisioner), typed or read from a QR image.
#[utoipa::path(post, path = "/tokens", tag = "tokens", operation_id = "capture",
    request_body(content((CaptureRequest = "application/json"), (CaptureForm = "multipart/form-data"))),
    responses((status = 201, body = Captured,
               links(("get_token" = (operation_id = "get_token", parameters(("serial" = "$response.body#/serial")))),
                     ("update_token" = (operation_id = "update_token", parameters(("serial" = "$response.body#/serial")))),
                     ("reveal_start" = (operation_id = "reveal_start", parameters(("serial" = "$response.body#/serial")))),
                     ("deliver" = (operation_id = "deliver", parameters(("serial" = "$response.body#/serial")))),
                     ("cancel" = (operation_id = "cancel", parameters(("serial" = "$response.body#/serial")))))), (status = 401), (status = 403), (status = 409, description = "duplicate serial"),
              (status = 413, description = "the body, or the QR image, is over its size limit"),
              (status = 422, description = "a field is invalid, or the QR image holds no usable otpauth://totp/ QR code; the message names it and the fix")))]
pub async fn capture(
    State(state): State<AppState>,
    auth: Authorized<ProvisionerOnly>,
    body: JsonOrForm<CaptureRequest>,
) -> Result<(StatusCode, Json<Captured>), AppError> {
    let (body, image) = match body {
        JsonOrForm::Json(mut body) => {
            let image = body
                .qr_image
                .take()
                .map(|text| image_from_base64(&text))
                .transpose()?;
            (body, image)
        }
        JsonOrForm::Form(upload) => CaptureRequest::from_form(upload)?,
    };
    let (secret, qr_format) = SecretInput::new(body.secret, image)?.read().await?;
    let input = tokens::CaptureRequest {
        owner: body.owner,
        serial: body.serial,
        secret,
        format: qr_format.or(body.format),
        display_name: body.display_name,
        manufacturer: body.manufacturer,
        model: body.model,
        algorithm: body.algorithm,
        digits: body.digits,
        period: body.period,
        policy: body.policy,
    };
    let captured = tokens::capture(&state.env(), &auth.operator().actor(), input).await?;
    Ok((StatusCode::CREATED, Json(captured)))
}

/// What a QR image holds, before capturing it (provisioner): issuer, account, algorithm,
/// digits, period and the seed's length — never the secret. Nothing is stored.
#[utoipa::path(post, path = "/tokens/qr-preview", tag = "tokens", operation_id = "qr_preview",
    request_body(content((QrPreviewRequest = "application/json"), (QrPreviewForm = "multipart/form-data"))),
    responses((status = 200, body = QrPreview), (status = 401), (status = 403),
              (status = 413, description = "the image is over its size limit"),
              (status = 422, description = "no usable otpauth://totp/ QR code; the message says what to do")))]
pub async fn qr_preview(
    _auth: Authorized<ProvisionerOnly>,
    body: JsonOrForm<QrPreviewRequest>,
) -> Result<Response, AppError> {
    let image = match body {
        JsonOrForm::Json(body) => image_from_base64(&body.qr_image)?,
        JsonOrForm::Form(mut upload) => {
            only_fields(&upload, &["qr_image"])?;
            upload.qr_image.take().unwrap_or_default()
        }
    };
    let SecretInput::QrImage(image) = SecretInput::new(None, Some(image)).map_err(|_| {
        invalid(
            "qr_image",
            "choose a PNG or JPEG image, or paste a screenshot",
        )
    })?
    else {
        return Err(invalid("qr_image", "choose a PNG or JPEG image"));
    };
    let uri = tokens::secret_from_qr(image).await?;
    let preview = tokens::preview_otpauth(&uri)?;
    drop(uri);
    let mut response = Json(preview).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// A seed for seedvault to generate (provisioner).
#[derive(Deserialize, ToSchema)]
pub struct GenerateBody {
    #[serde(default)]
    owner: Option<String>,
    serial: String,
    /// 6 (default) or 8.
    #[serde(default)]
    digits: Option<u32>,
    /// Seconds per step (default 30).
    #[serde(default)]
    period: Option<u32>,
    /// SHA1 (default), SHA256 or SHA512.
    #[serde(default)]
    algorithm: Option<String>,
    /// Shown by the authenticator app (otpauth `issuer`).
    #[serde(default)]
    issuer: Option<String>,
    /// The account name in the authenticator app (default: the owner, else the serial).
    #[serde(default)]
    label: Option<String>,
}

/// The generated seed, shown in this reply only (`Cache-Control: no-store`); it is never shown
/// again by any route.
#[derive(Serialize, ToSchema)]
pub struct GeneratedView<'a> {
    serial: &'a str,
    #[schema(inline)]
    state: TokenState,
    /// `otpauth://totp/…` with the secret: what the QR code holds.
    #[schema(value_type = String)]
    otpauth_uri: &'a str,
    /// The seed in base32 (no padding), for typing into a burner app.
    #[schema(value_type = String)]
    secret_base32: &'a str,
    /// The QR code as an SVG document.
    #[schema(value_type = String)]
    qr_svg: &'a str,
    issuer: Option<&'a str>,
    label: &'a str,
    #[schema(value_type = String, example = "SHA1")]
    algorithm: &'a str,
    digits: u32,
    period: u32,
}

/// Generate a 160-bit seed for a programmable token or an authenticator (provisioner). The
/// token is `programming` until a code from the programmed device is confirmed.
#[utoipa::path(post, path = "/tokens/generate", tag = "tokens", operation_id = "generate", request_body = GenerateBody,
    responses((status = 201, body = GeneratedView,
               links(("confirm_programming" = (operation_id = "confirm_programming", parameters(("serial" = "$response.body#/serial")))),
                     ("get_token" = (operation_id = "get_token", parameters(("serial" = "$response.body#/serial")))))),
              (status = 401), (status = 403), (status = 409, description = "a token with this serial exists"),
              (status = 422, description = "a field is invalid; the message names it and the fix")))]
pub async fn generate(
    State(state): State<AppState>,
    auth: Authorized<ProvisionerOnly>,
    Json(body): Json<GenerateBody>,
) -> Result<Response, AppError> {
    let request = GenerateRequest {
        owner: body.owner,
        serial: body.serial,
        digits: body.digits,
        period: body.period,
        algorithm: body.algorithm,
        issuer: body.issuer,
        label: body.label,
    };
    let shown = programming::generate(&state.env(), &auth.operator().actor(), request, Show::Now)
        .await?
        .ok_or_else(|| AppError::Internal("a seed generated to be shown now was not".into()))?;
    shown_response(&shown)
}

fn shown_response(shown: &ShownSeed) -> Result<Response, AppError> {
    let svg = crate::qr::svg(&shown.uri)
        .map_err(|e| AppError::Internal(format!("drawing the QR code: {e}")))?;
    let view = GeneratedView {
        serial: &shown.serial,
        state: TokenState::Programming,
        otpauth_uri: &shown.uri,
        secret_base32: &shown.base32,
        qr_svg: &svg,
        issuer: shown.issuer.as_deref(),
        label: &shown.label,
        algorithm: shown.algorithm.as_str(),
        digits: shown.digits,
        period: shown.period,
    };
    let mut response = (StatusCode::CREATED, Json(view)).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

#[derive(Deserialize, ToSchema)]
pub struct ProgrammingRequest {
    /// The code the programmed device shows now.
    #[serde(default)]
    #[schema(value_type = String)]
    code: Zeroizing<String>,
}

/// Confirm a generated token's device (provisioner): the code is checked within the delivery
/// window, the drift recorded, and the token becomes `escrowed`. Five wrong codes in an hour
/// stop further attempts, as for delivery. To abandon it instead, cancel it.
#[utoipa::path(post, path = "/tokens/{serial}/programming", tag = "tokens", operation_id = "confirm_programming", params(("serial" = String, Path)), request_body = ProgrammingRequest,
    responses((status = 200, body = Programmed), (status = 401), (status = 403), (status = 404),
              (status = 409, description = "the token is not being programmed"),
              (status = 422, description = "wrong or missing code"), (status = 429, description = "too many wrong codes")))]
pub async fn confirm_programming(
    State(state): State<AppState>,
    auth: Authorized<ProvisionerOnly>,
    Path(serial): Path<String>,
    Json(body): Json<ProgrammingRequest>,
) -> Result<Json<Programmed>, AppError> {
    Ok(Json(
        programming::confirm(&state.env(), &auth.operator().actor(), &serial, body.code).await?,
    ))
}

/// Parses `7d`, `12h`, `30m` or a plain number of days into seconds.
fn parse_span(text: &str) -> Result<i64, AppError> {
    let text = text.trim();
    let (number, unit) = match text.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&text[..i], c),
        _ => (text, 'd'),
    };
    let value: i64 = number
        .parse()
        .map_err(|_| invalid("due_within", "expected a span such as 7d, 12h or 30m"))?;
    let unit = match unit {
        'd' => 86_400,
        'h' => 3_600,
        'm' => 60,
        _ => return Err(invalid("due_within", "the unit must be d, h or m")),
    };
    match value.checked_mul(unit) {
        Some(span) if (0..=3650 * 86_400).contains(&span) => Ok(span),
        _ => Err(invalid("due_within", "out of range (at most 3650 days)")),
    }
}

/// Search tokens (any signed-in role). Never secret material.
#[utoipa::path(get, path = "/tokens", tag = "tokens", operation_id = "list_tokens", params(ListQuery),
    responses((status = 200, body = [Token],
               links(("get_token" = (operation_id = "get_token", parameters(("serial" = "$response.body#/0/serial")))),
                     ("update_token" = (operation_id = "update_token", parameters(("serial" = "$response.body#/0/serial")))),
                     ("reveal_start" = (operation_id = "reveal_start", parameters(("serial" = "$response.body#/0/serial")))),
                     ("deliver" = (operation_id = "deliver", parameters(("serial" = "$response.body#/0/serial")))),
                     ("cancel" = (operation_id = "cancel", parameters(("serial" = "$response.body#/0/serial")))))),
              (status = 401)))]
pub async fn list(
    State(state): State<AppState>,
    _current: CurrentOperator,
    Query(query): Query<ListQuery>,
) -> Result<Json<Vec<Token>>, AppError> {
    let state_filter = query.state.map(|s| s.as_str().to_owned());
    let due_before = query
        .due_within
        .as_deref()
        .map(parse_span)
        .transpose()?
        .map(|span| state.clock.unix() + span);
    let filter = TokenFilter {
        query: query
            .q
            .map(|q| q.trim().to_owned())
            .filter(|q| !q.is_empty()),
        state: state_filter,
        owner: query
            .owner
            .map(|o| o.trim().to_owned())
            .filter(|o| !o.is_empty()),
        due_before,
        limit: query.limit.unwrap_or(100).clamp(1, 1000),
    };
    Ok(Json(tokens::search(&state.store, &filter).await?))
}

/// One token with its audit timeline (any signed-in role).
#[utoipa::path(get, path = "/tokens/{serial}", tag = "tokens", operation_id = "get_token", params(("serial" = String, Path)),
    responses((status = 200, body = TokenDetail), (status = 401), (status = 404)))]
pub async fn detail(
    State(state): State<AppState>,
    _current: CurrentOperator,
    Path(serial): Path<String>,
) -> Result<Json<TokenDetail>, AppError> {
    let token = tokens::get(&state.store, &serial).await?;
    let timeline = crate::store::audit::for_target(&state.store, &token.target())
        .await?
        .into_iter()
        .map(|e| TimelineEvent {
            seq: e.seq,
            time: e.time,
            actor: e.actor,
            action: e.action,
            outcome: e.outcome,
            details: serde_json::from_str(&e.details).unwrap_or(serde_json::Value::Null),
        })
        .collect();
    Ok(Json(TokenDetail { token, timeline }))
}

/// Reassign a token: owner, display name, policy (provisioner).
#[utoipa::path(patch, path = "/tokens/{serial}", tag = "tokens", operation_id = "update_token", params(("serial" = String, Path)), request_body = TokenPatch,
    responses((status = 200, body = Token), (status = 401), (status = 403), (status = 404), (status = 409), (status = 422)))]
pub async fn update(
    State(state): State<AppState>,
    auth: Authorized<ProvisionerOnly>,
    Path(serial): Path<String>,
    Json(body): Json<TokenPatch>,
) -> Result<Json<Token>, AppError> {
    let change = TokenChange {
        owner: body.owner,
        display_name: body.display_name,
        policy: body.policy,
    };
    Ok(Json(
        tokens::update(&state.env(), &auth.operator().actor(), &serial, change).await?,
    ))
}

/// A reveal's passkey challenge, with the owner's directory record to verify the caller
/// against while the passkey signs.
#[derive(ToSchema)]
pub struct RevealChallenge {
    /// Hand to `navigator.credentials.get()` (WebAuthn's `PublicKeyCredentialRequestOptionsJSON`).
    #[schema(rename = "publicKey", value_type = Object)]
    pub public_key: (),
    /// The numbers and manager of record with the sync time, or `found: false` with a message.
    pub directory: crate::directory::OfRecord,
}

/// Start a reveal (helpdesk): the checklist is checked and a passkey challenge returned, with
/// the owner's numbers and manager of record. Under a four-eyes policy, without an approved
/// `approval`, a request for a second operator's approval is recorded instead (202).
#[utoipa::path(post, path = "/tokens/{serial}/reveal/start", tag = "reveal", params(("serial" = String, Path)), request_body = RevealStart,
    responses((status = 200, description = "WebAuthn request challenge signing this reveal, and the directory record", body = RevealChallenge),
              (status = 202, description = "the policy needs a second operator: the request waits for their approval", body = ApprovalRequested,
               links(("get_approval" = (operation_id = "get_approval", parameters(("id" = "$response.body#/approval/id")))))),
              (status = 401), (status = 403, description = "not helpdesk, or the approval is another operator's"), (status = 404),
              (status = 409, description = "token not escrowed or without owner; a check with source = \"directory\" lacks the owner's record; the approval is pending, denied, used or void (it no longer matches the reveal)"),
              (status = 410, description = "the approval expired"),
              (status = 422, description = "checklist, ticket or note falls short of the policy"), (status = 429, description = "a reveal limit was hit")))]
pub async fn reveal_start(
    State(state): State<AppState>,
    auth: Authorized<HelpdeskOnly>,
    Path(serial): Path<String>,
    Json(body): Json<RevealStart>,
) -> Result<Response, AppError> {
    let operator = auth.operator();
    let env = state.env();
    let request = RevealRequest {
        checks: &body.checks,
        ticket: body.ticket.as_deref(),
        note: body.note.as_deref(),
        approval: body.approval,
    };
    match reveal::start(&env, &state.webauthn, operator, &serial, &request).await? {
        reveal::Started::Challenge(challenge, started) => {
            let session = signed_in_session_id(&auth)?;
            let mut body = to_json(&challenge)?;
            if let Some(fields) = body.as_object_mut() {
                fields.insert("directory".into(), to_json(&started.of_record)?);
            }
            state.reveals.put(session, *started, env.unix()).await?;
            Ok(Json(body).into_response())
        }
        reveal::Started::AwaitingApproval(approval) => {
            Ok((StatusCode::ACCEPTED, Json(ApprovalRequested { approval })).into_response())
        }
    }
}

/// The id of the signed-in session a reveal ceremony is bound to.
fn signed_in_session_id(
    auth: &Authorized<HelpdeskOnly>,
) -> Result<tower_sessions::session::Id, AppError> {
    auth.current
        .session
        .id()
        .ok_or_else(|| AppError::Internal("a signed-in session has no id".into()))
}

/// Finish a reveal with the passkey assertion: the code, once.
#[utoipa::path(post, path = "/tokens/{serial}/reveal/finish", tag = "reveal", params(("serial" = String, Path)), request_body = AssertionCredential,
    responses((status = 200, body = RevealedCodeView), (status = 400, description = "no reveal in progress, or started for another token"),
              (status = 401, description = "not signed in, or the assertion was refused"), (status = 403), (status = 404), (status = 409), (status = 429)))]
pub async fn reveal_finish(
    State(state): State<AppState>,
    auth: Authorized<HelpdeskOnly>,
    Path(serial): Path<String>,
    Json(credential): Json<PublicKeyCredential>,
) -> Result<Response, AppError> {
    let operator = auth.operator();
    let Some(started) = state
        .reveals
        .take(signed_in_session_id(&auth)?)
        .await?
        .filter(|c| c.pending.operator_id == operator.id)
    else {
        return Err(AppError::BadRequest(
            "no reveal is in progress in this session — start it again".into(),
        ));
    };
    let revealed = reveal::finish(
        &state.env(),
        &state.webauthn,
        operator,
        started,
        &serial,
        &credential,
    )
    .await?;
    let mut response = Json(RevealedCodeView::from(&revealed)).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

#[derive(Deserialize, ToSchema)]
pub struct DeliveryRequest {
    /// The code the user reads from the physical token.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    code: Option<Zeroizing<String>>,
    /// Confirm without a code (then `reason` is required).
    #[serde(default)]
    unverified: bool,
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Deserialize, ToSchema)]
pub struct CancelRequest {
    /// Why (recorded in the audit trail); required.
    #[serde(default)]
    reason: String,
}

/// Confirm delivery (helpdesk): the code is checked, drift recorded, the seed destroyed.
#[utoipa::path(post, path = "/tokens/{serial}/delivery", tag = "tokens", params(("serial" = String, Path)), request_body = DeliveryRequest,
    responses((status = 200, body = Purged), (status = 401), (status = 403), (status = 404), (status = 409, description = "not escrowed"),
              (status = 422, description = "wrong code, or no reason for an unverified delivery"), (status = 429, description = "too many wrong codes")))]
pub async fn deliver(
    State(state): State<AppState>,
    auth: Authorized<HelpdeskOnly>,
    Path(serial): Path<String>,
    Json(body): Json<DeliveryRequest>,
) -> Result<Json<Purged>, AppError> {
    let request =
        lifecycle::DeliveryRequest::new(body.code, body.unverified, body.reason.as_deref())?;
    Ok(Json(
        lifecycle::deliver(&state.env(), &auth.operator().actor(), &serial, request).await?,
    ))
}

/// Cancel an escrowed token (provisioner): lost in transit, wrong user; or abandon a token
/// still being programmed. The seed is destroyed.
#[utoipa::path(post, path = "/tokens/{serial}/cancel", tag = "tokens", params(("serial" = String, Path)), request_body = CancelRequest,
    responses((status = 200, body = Purged), (status = 401), (status = 403), (status = 404), (status = 409), (status = 422)))]
pub async fn cancel(
    State(state): State<AppState>,
    auth: Authorized<ProvisionerOnly>,
    Path(serial): Path<String>,
    Json(body): Json<CancelRequest>,
) -> Result<Json<Purged>, AppError> {
    Ok(Json(
        lifecycle::cancel(
            &state.env(),
            &auth.operator().actor(),
            &serial,
            lifecycle::CancelRequest::new(&body.reason)?,
        )
        .await?,
    ))
}

/// A delivery link, shown once: the vault keeps only its hash.
#[derive(Serialize, ToSchema)]
pub struct DeliveryLinkView<'a> {
    /// `<origin>/deliver/<TOKEN>`: the owner opens it and types the code their token shows.
    #[schema(value_type = String)]
    url: &'a str,
    serial: &'a str,
    /// Unix time after which the link no longer works (the seed's retention deadline).
    expires_at: i64,
    /// Whether the link was also queued to the owner by email (an SMTP server is configured).
    emailed: bool,
}

/// Make a one-time self-service delivery link for the token's owner (provisioner or helpdesk).
/// A new link voids the token's previous one.
#[utoipa::path(post, path = "/tokens/{serial}/delivery-link", tag = "tokens", operation_id = "create_delivery_link", params(("serial" = String, Path)),
    responses((status = 201, body = DeliveryLinkView), (status = 401), (status = 403), (status = 404),
              (status = 409, description = "not escrowed"), (status = 422, description = "the token has no owner")))]
pub async fn delivery_link(
    State(state): State<AppState>,
    auth: Authorized<ProvisionerOrHelpdesk>,
    Path(serial): Path<String>,
) -> Result<Response, AppError> {
    let created = tokens::delivery_link::create(
        &state.env(),
        &auth.operator().actor(),
        &serial,
        &state.config.origin_header(),
        state.config.smtp_host.is_some(),
    )
    .await?;
    let view = DeliveryLinkView {
        url: &created.url,
        serial: &created.serial,
        expires_at: created.expires_at,
        emailed: created.emailed,
    };
    let mut response = (StatusCode::CREATED, Json(view)).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// A code read from the physical token, to check the escrowed seed before shipping.
#[derive(Deserialize, ToSchema)]
pub struct VerifyRequest {
    /// The code the token shows now.
    #[serde(default)]
    #[schema(value_type = String)]
    code: Option<Zeroizing<String>>,
}

/// Verify the seed against the device before it ships (provisioner): the code is checked
/// within ±15 steps, the drift recorded (later reveals apply it) with `verified_at` and
/// `verified_by`; the token stays escrowed.
#[utoipa::path(post, path = "/tokens/{serial}/verify", tag = "tokens", operation_id = "verify_token", params(("serial" = String, Path)), request_body = VerifyRequest,
    responses((status = 200, body = Verified), (status = 401), (status = 403), (status = 404),
              (status = 409, description = "not escrowed (purged, cancelled, or still being programmed)"),
              (status = 422, description = "no code, or the code does not match"), (status = 429, description = "too many wrong codes in the last hour")))]
pub async fn verify(
    State(state): State<AppState>,
    auth: Authorized<ProvisionerOnly>,
    Path(serial): Path<String>,
    Json(body): Json<VerifyRequest>,
) -> Result<Json<Verified>, AppError> {
    let code = body.code.unwrap_or_default();
    Ok(Json(
        shipping::verify(&state.env(), &auth.operator().actor(), &serial, code).await?,
    ))
}

/// A shipment: every field optional.
#[derive(Deserialize, ToSchema)]
pub struct ShipmentRequest {
    /// Who carries the parcel, e.g. `DHL`.
    #[serde(default)]
    carrier: Option<String>,
    /// The carrier's tracking reference.
    #[serde(default)]
    tracking: Option<String>,
    /// The expected delivery date, `YYYY-MM-DD`, today or later.
    #[serde(default)]
    #[schema(format = Date)]
    expected: Option<String>,
}

impl ShipmentRequest {
    fn read(&self, state: &AppState) -> Result<shipping::ShipmentRequest, AppError> {
        Ok(shipping::ShipmentRequest::new(
            self.carrier.as_deref(),
            self.tracking.as_deref(),
            self.expected.as_deref(),
            state.clock.now().date(),
        )?)
    }
}

/// Record that the token left for its owner (provisioner): carrier, tracking reference and
/// expected delivery date. Shipping again replaces the earlier record.
#[utoipa::path(post, path = "/tokens/{serial}/shipment", tag = "tokens", operation_id = "ship_token", params(("serial" = String, Path)), request_body = ShipmentRequest,
    responses((status = 200, body = Shipped), (status = 401), (status = 403), (status = 404), (status = 409, description = "not escrowed"),
              (status = 422, description = "a field is invalid (an expected date in the past or not YYYY-MM-DD); the message names it")))]
pub async fn ship(
    State(state): State<AppState>,
    auth: Authorized<ProvisionerOnly>,
    Path(serial): Path<String>,
    Json(body): Json<ShipmentRequest>,
) -> Result<Json<Shipped>, AppError> {
    let request = body.read(&state)?;
    Ok(Json(
        shipping::ship(&state.env(), &auth.operator().actor(), &serial, &request).await?,
    ))
}

/// A batch of shipments: the serials as CSV text, one per line (first column; a `serial`
/// header, blank lines and `#` comments are skipped), and the shipment they share.
#[derive(Deserialize, ToSchema)]
pub struct ShipmentBatch {
    /// The CSV file's text.
    csv: String,
    #[serde(default)]
    carrier: Option<String>,
    #[serde(default)]
    tracking: Option<String>,
    /// `YYYY-MM-DD`, today or later.
    #[serde(default)]
    #[schema(format = Date)]
    expected: Option<String>,
}

/// Record one shipment for a batch of tokens (provisioner): each token in its own transaction
/// and audit event; an unknown or settled serial is reported by line and the rest proceed.
#[utoipa::path(post, path = "/tokens/shipments", tag = "tokens", operation_id = "ship_batch", request_body = ShipmentBatch,
    responses((status = 200, body = BatchReport, description = "what was shipped and which lines were refused, and why"), (status = 401), (status = 403),
              (status = 422, description = "a shared field is invalid or the file has too many rows; nothing was shipped")))]
pub async fn ship_batch(
    State(state): State<AppState>,
    auth: Authorized<ProvisionerOnly>,
    Json(body): Json<ShipmentBatch>,
) -> Result<Json<BatchReport>, AppError> {
    let request = ShipmentRequest {
        carrier: body.carrier,
        tracking: body.tracking,
        expected: body.expected,
    }
    .read(&state)?;
    let rows = shipping::read_csv(&body.csv)?;
    Ok(Json(
        shipping::ship_batch(&state.env(), &auth.operator().actor(), &rows, &request).await?,
    ))
}
