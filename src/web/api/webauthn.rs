//! OpenAPI schemas of the WebAuthn JSON the ceremony routes exchange. webauthn-rs's types
//! carry no OpenAPI description, so these mirror their serde shape (webauthn-rs-proto 0.5) for
//! the document only; the handlers still parse and answer with webauthn-rs's own types.
//! Shapes: <https://www.w3.org/TR/webauthn-3/#sctn-parseCreationOptionsFromJSON> and
//! `PublicKeyCredential.toJSON()` (<https://www.w3.org/TR/webauthn-3/#dom-publickeycredential-tojson>).

use std::borrow::Cow;

use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::{PartialSchema, ToSchema};

/// Bytes as base64url, as webauthn-rs reads them: unpadded or padded, and with the unused
/// low bits of the last character zero (the decoder refuses anything else).
pub struct Base64Url;

/// A whole number of 4-character groups, then 2 characters whose last leaves 4 bits unused
/// or 3 whose last leaves 2, then optional padding.
const BASE64URL: &str =
    "^(?:[A-Za-z0-9_-]{4})*(?:[A-Za-z0-9_-][AQgw](?:==)?|[A-Za-z0-9_-]{2}[AEIMQUYcgkosw048]=?)?$";

impl PartialSchema for Base64Url {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(BASE64URL))
            .description(Some("bytes, base64url-encoded (padding optional)"))
            .into()
    }
}

impl ToSchema for Base64Url {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Base64Url")
    }
}

/// `navigator.credentials.create()`'s result, as sent to a registration `/finish`.
#[derive(ToSchema)]
pub struct RegistrationCredential {
    /// The credential id, base64url.
    pub id: String,
    #[schema(rename = "rawId")]
    pub raw_id: Base64Url,
    pub response: AttestationResponse,
    /// `public-key`.
    #[schema(rename = "type")]
    pub type_: String,
    /// The client extension outputs (also accepted under the name `extensions`).
    #[schema(rename = "clientExtensionResults", nullable = false)]
    pub client_extension_results: Option<RegistrationExtensions>,
}

#[derive(ToSchema)]
pub struct AttestationResponse {
    #[schema(rename = "attestationObject")]
    pub attestation_object: Base64Url,
    #[schema(rename = "clientDataJSON")]
    pub client_data_json: Base64Url,
    /// As the authenticator reports them (`usb`, `nfc`, `ble`, `internal`, `hybrid`, …).
    pub transports: Option<Vec<String>>,
}

#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct RegistrationExtensions {
    pub appid: Option<bool>,
    pub cred_props: Option<CredProps>,
    pub hmac_secret: Option<bool>,
    pub cred_protect: Option<CredProtect>,
    #[schema(maximum = 4294967295.0)]
    pub min_pin_length: Option<u32>,
}

#[derive(ToSchema)]
pub struct CredProps {
    /// Whether the credential is discoverable (resident).
    pub rk: Option<bool>,
}

#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub enum CredProtect {
    UserVerificationOptional,
    #[schema(rename = "userVerificationOptionalWithCredentialIDList")]
    UserVerificationOptionalWithCredentialIdList,
    UserVerificationRequired,
}

/// `navigator.credentials.get()`'s result, as sent to a sign-in or reveal `/finish`.
#[derive(ToSchema)]
pub struct AssertionCredential {
    /// The credential id, base64url.
    pub id: String,
    #[schema(rename = "rawId")]
    pub raw_id: Base64Url,
    pub response: AssertionResponse,
    /// `public-key`.
    #[schema(rename = "type")]
    pub type_: String,
    /// The client extension outputs.
    #[schema(rename = "clientExtensionResults", nullable = false)]
    pub client_extension_results: Option<AuthenticationExtensions>,
}

#[derive(ToSchema)]
pub struct AssertionResponse {
    #[schema(rename = "authenticatorData")]
    pub authenticator_data: Base64Url,
    #[schema(rename = "clientDataJSON")]
    pub client_data_json: Base64Url,
    pub signature: Base64Url,
    /// The operator's user handle; present when the credential is discoverable.
    #[schema(rename = "userHandle")]
    pub user_handle: Option<Base64Url>,
}

#[derive(ToSchema)]
pub struct AuthenticationExtensions {
    pub appid: Option<bool>,
    pub hmac_get_secret: Option<HmacGetSecret>,
}

#[derive(ToSchema)]
pub struct HmacGetSecret {
    pub output1: Base64Url,
    pub output2: Option<Base64Url>,
}

/// A registration challenge: hand `publicKey` to `navigator.credentials.create()` (after
/// decoding its base64url fields). Its members are WebAuthn's
/// `PublicKeyCredentialCreationOptionsJSON`.
#[derive(ToSchema)]
pub struct CreationChallenge {
    #[schema(rename = "publicKey", value_type = Object)]
    pub public_key: (),
}

/// A sign-in or reveal challenge: hand `publicKey` to `navigator.credentials.get()`. Its
/// members are WebAuthn's `PublicKeyCredentialRequestOptionsJSON`.
#[derive(ToSchema)]
pub struct RequestChallenge {
    #[schema(rename = "publicKey", value_type = Object)]
    pub public_key: (),
    /// `conditional` for a passkey-autofill sign-in.
    #[schema(nullable = false)]
    pub mediation: Option<String>,
}
