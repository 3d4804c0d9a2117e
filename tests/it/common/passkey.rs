//! An operator driven over HTTP with a software passkey (webauthn-authenticator-rs), its own
//! cookie jar, and the `Origin` header a browser would send.

use reqwest::{Method, StatusCode};
use serde_json::Value;
use url::Url;
use webauthn_authenticator_rs::softpasskey::SoftPasskey;
use webauthn_authenticator_rs::WebauthnAuthenticator;
use webauthn_rs::prelude::{CreationChallengeResponse, RequestChallengeResponse};

use super::TestServer;

pub struct Operator {
    pub name: String,
    pub http: reqwest::Client,
    pub authenticator: WebauthnAuthenticator<SoftPasskey>,
    pub base: String,
    pub origin: Url,
    pub canary: std::sync::Arc<super::Canary>,
}

pub fn new_authenticator() -> WebauthnAuthenticator<SoftPasskey> {
    // `true`: the soft key claims user verification, as a passkey with a PIN or biometric does.
    WebauthnAuthenticator::new(SoftPasskey::new(true))
}

impl Operator {
    fn client() -> reqwest::Client {
        reqwest::Client::builder()
            .cookie_store(true)
            .build()
            .unwrap()
    }

    /// Registers a new passkey through an invite: start, authenticator, finish.
    pub async fn register(
        srv: &TestServer,
        name: &str,
        token: &str,
    ) -> Result<Self, (StatusCode, Value)> {
        let mut op = Self {
            name: name.to_owned(),
            http: Self::client(),
            authenticator: new_authenticator(),
            base: srv.base.clone(),
            origin: Url::parse(&srv.base).unwrap(),
            canary: srv.canary.clone(),
        };
        let (status, challenge) = op
            .post(
                "/api/v1/auth/register/start",
                serde_json::json!({ "invite": token }),
            )
            .await;
        if status != StatusCode::OK {
            return Err((status, challenge));
        }
        let challenge: CreationChallengeResponse = serde_json::from_value(challenge).unwrap();
        let credential = op
            .authenticator
            .do_registration(op.origin.clone(), challenge)
            .unwrap();
        let (status, body) = op
            .post(
                "/api/v1/auth/register/finish",
                serde_json::to_value(&credential).unwrap(),
            )
            .await;
        if status != StatusCode::OK {
            return Err((status, body));
        }
        assert_eq!(body["name"], name);
        Ok(op)
    }

    /// Starts a named sign-in and returns the request challenge.
    pub async fn login_start(&self) -> (StatusCode, Value) {
        self.post(
            "/api/v1/auth/login/start",
            serde_json::json!({ "username": self.name }),
        )
        .await
    }

    /// Answers a request challenge with this operator's authenticator.
    pub fn assert(&mut self, challenge: Value) -> Value {
        let challenge: RequestChallengeResponse = serde_json::from_value(challenge).unwrap();
        serde_json::to_value(
            self.authenticator
                .do_authentication(self.origin.clone(), challenge)
                .unwrap(),
        )
        .unwrap()
    }

    /// Signs in again on a fresh cookie jar.
    pub async fn sign_in_fresh(&mut self) -> (StatusCode, Value) {
        self.http = Self::client();
        let (status, challenge) = self.login_start().await;
        assert_eq!(status, StatusCode::OK, "{challenge}");
        let assertion = self.assert(challenge);
        self.post("/api/v1/auth/login/finish", assertion).await
    }

    /// Start + passkey + finish of a reveal. A granted code is returned unrecorded (it is the
    /// one response allowed to carry it) and put on the canary's watch list from then on.
    pub async fn reveal(
        &mut self,
        serial: &str,
        checks: &[&str],
        ticket: Option<&str>,
    ) -> (StatusCode, Value) {
        let body = serde_json::json!({ "checks": checks, "ticket": ticket });
        let (status, challenge) = self
            .post(&format!("/api/v1/tokens/{serial}/reveal/start"), body)
            .await;
        if status != StatusCode::OK {
            return (status, challenge);
        }
        let assertion = self.assert(challenge);
        let (status, body) = self
            .send(
                Method::POST,
                &format!("/api/v1/tokens/{serial}/reveal/finish"),
                Some(assertion),
            )
            .await;
        if status == StatusCode::OK {
            self.canary.watch_code(
                &format!("code revealed for {serial}"),
                body["code"].as_str().unwrap(),
            );
            if let Some(next) = body["next_code"].as_str() {
                self.canary
                    .watch_code(&format!("next code revealed for {serial}"), next);
            }
        } else {
            self.canary
                .record_response("reveal finish", body.to_string().as_bytes());
        }
        (status, body)
    }

    /// Sends a request as a browser would (with `Origin` on state-changing methods).
    async fn raw(&self, method: &Method, path: &str, body: Option<Value>) -> (StatusCode, Vec<u8>) {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.base));
        if *method != Method::GET {
            request = request.header("Origin", self.origin.origin().ascii_serialization());
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        (status, response.bytes().await.unwrap().to_vec())
    }

    /// A request whose response is not recorded by the canary (only for the reveal itself).
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let (status, bytes) = self.raw(&method, path, body).await;
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let (status, bytes) = self.raw(&method, path, body).await;
        self.canary
            .record_response(&format!("{method} {path}"), &bytes);
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// A page (or any reply) as text, recorded by the canary.
    pub async fn get_text(&self, path: &str) -> (StatusCode, String) {
        let (status, bytes) = self.raw(&Method::GET, path, None).await;
        self.canary.record_response(&format!("GET {path}"), &bytes);
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    /// A POST whose reply is a download (bytes, not JSON), recorded by the canary.
    pub async fn raw_response(&self, path: &str, body: Value) -> (StatusCode, Vec<u8>) {
        let (status, bytes) = self.raw(&Method::POST, path, Some(body)).await;
        self.canary.record_response(&format!("POST {path}"), &bytes);
        (status, bytes)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.request(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.request(Method::POST, path, Some(body)).await
    }
}
