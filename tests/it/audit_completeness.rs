//! Completeness of the audit trail (DESIGN §7): every state-changing API route and every form a
//! page posts to appends at least one event when it succeeds, and no event carries a seed, a
//! one-time code, an invite token or a WebAuthn challenge. The API routes come from the OpenAPI
//! document and the page forms from crawling every page, so a route added without an audit
//! event — or without a step in this walk — fails here. (The CLI counterpart is in `cli.rs`.)

use crate::common;

use std::collections::{BTreeMap, BTreeSet};

use common::passkey::new_authenticator;
use common::{Operator, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// T2-100001 and T2-100002 from tests/data/entra-oath.csv (codes at T0 from
/// expected-codes.csv).
const SEED_1: &str = "7GIYCPFAMKVZ2CIPUBR42BBLN573O7R2";
const SEED_2: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

/// Ceremony starts hold a challenge in the caller's session and change nothing in the vault;
/// the finish that completes each one is what the trail records (and must record).
const CEREMONY_STARTS: &[(&str, &str)] = &[
    ("post", "/api/v1/auth/register/start"),
    ("post", "/api/v1/auth/login/start"),
    ("post", "/api/v1/me/credentials/start"),
    ("post", "/api/v1/tokens/{serial}/reveal/start"),
    ("post", "/api/v1/approvals/{id}/approve/start"),
];

/// Posts that only read what their body holds and store nothing (the QR preview): walked, and
/// they must append nothing.
const PREVIEWS: &[(&str, &str)] = &[("post", "/api/v1/tokens/qr-preview")];

/// Reads that are themselves evidence (an export of the trail) and so are audited.
const AUDITED_READS: &[(&str, &str)] = &[("get", "/api/v1/audit")];

/// Walks the routes, remembering what each successful call appended.
struct Walk {
    srv: TestServer,
    seen: i64,
    /// (method, route template) → the actions its successful calls appended.
    appended: BTreeMap<(String, String), Vec<String>>,
    /// Texts no audit event may contain: (what, text).
    forbidden: Vec<(String, String)>,
}

impl Walk {
    /// The actions appended since the last look.
    async fn new_actions(&mut self) -> Vec<String> {
        let rows = seedvault::store::audit::page_after(&self.srv.state.store, self.seen, 1000)
            .await
            .unwrap();
        if let Some(last) = rows.last() {
            self.seen = last.seq;
        }
        rows.into_iter().map(|r| r.action).collect()
    }

    fn forbid(&mut self, what: &str, text: &str) {
        self.forbidden.push((what.to_owned(), text.to_owned()));
    }

    /// Records what a call to `template` appended and checks it is exactly `expect`.
    async fn settle(&mut self, method: &str, template: &str, expect: &[&str]) {
        let actions = self.new_actions().await;
        assert_eq!(
            actions, expect,
            "{method} {template} appended {actions:?}, expected {expect:?}"
        );
        self.appended
            .entry((method.to_owned(), template.to_owned()))
            .or_default()
            .extend(actions);
    }

    /// An API call that must succeed and append exactly `expect`.
    async fn api(
        &mut self,
        op: &Operator,
        method: Method,
        template: &str,
        concrete: &str,
        body: Option<Value>,
        expect: &[&str],
    ) -> Value {
        let (status, reply) = op.request(method.clone(), concrete, body).await;
        assert!(
            status.is_success(),
            "{method} {concrete} → {status}: {reply}"
        );
        self.settle(&method.as_str().to_lowercase(), template, expect)
            .await;
        reply
    }

    /// A ceremony start: succeeds, its challenge is remembered as forbidden audit content.
    async fn start(&mut self, op: &Operator, template: &str, concrete: &str, body: Value) -> Value {
        let challenge = self
            .api(op, Method::POST, template, concrete, Some(body), &[])
            .await;
        let text = challenge["publicKey"]["challenge"].as_str().unwrap();
        self.forbid(&format!("challenge of {concrete}"), text);
        challenge
    }

    /// Captures a token over the API.
    async fn capture(&mut self, op: &Operator, serial: &str, seed: &str, owner: &str) {
        let body = json!({ "serial": serial, "secret": seed, "owner": owner });
        let path = "/api/v1/tokens";
        self.api(
            op,
            Method::POST,
            path,
            path,
            Some(body),
            &["token.captured"],
        )
        .await;
    }

    /// Adds a passkey to `op`'s account (start + a new authenticator + finish); its id.
    async fn add_passkey(&mut self, op: &Operator, label: &str) -> i64 {
        let path = "/api/v1/me/credentials/start";
        let challenge = self.start(op, path, path, json!({ "label": label })).await;
        let credential = new_authenticator()
            .do_registration(
                op.origin.clone(),
                serde_json::from_value(challenge).unwrap(),
            )
            .unwrap();
        let path = "/api/v1/me/credentials/finish";
        let body = serde_json::to_value(credential).unwrap();
        self.api(
            op,
            Method::POST,
            path,
            path,
            Some(body),
            &["credential.added"],
        )
        .await;
        let (_, me) = op.get("/api/v1/me").await;
        me["credentials"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["label"] == label)
            .unwrap()["id"]
            .as_i64()
            .unwrap()
    }

    /// A page form post (as a browser sends it) that must append exactly `expect`.
    async fn form(
        &mut self,
        op: &Operator,
        template: &str,
        concrete: &str,
        content_type: &str,
        body: Vec<u8>,
        expect: &[&str],
    ) {
        let response = op
            .http
            .post(self.srv.url(concrete))
            .header("Origin", &self.srv.base)
            .header("Content-Type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let bytes = response.bytes().await.unwrap();
        self.srv.canary.record_response(concrete, &bytes);
        assert!(status.is_success(), "POST {concrete} → {status}");
        self.settle("post", template, expect).await;
    }

    async fn urlencoded(
        &mut self,
        op: &Operator,
        template: &str,
        concrete: &str,
        fields: &[(&str, &str)],
        expect: &[&str],
    ) {
        let body = fields
            .iter()
            .map(|(k, v)| format!("{}={}", urlencode(k), urlencode(v)))
            .collect::<Vec<_>>()
            .join("&");
        self.form(
            op,
            template,
            concrete,
            "application/x-www-form-urlencoded",
            body.into_bytes(),
            expect,
        )
        .await;
    }
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn seed_bytes(b32: &str) -> Vec<u8> {
    data_encoding::BASE32_NOPAD.decode(b32.as_bytes()).unwrap()
}

fn code_at(seed: &str, unix: i64) -> String {
    common::totp::totp(&seed_bytes(seed), "SHA1", 6, 30, unix)
}

/// Whether a concrete path matches a template whose `{…}` segments stand for any segment.
fn matches(template: &str, path: &str) -> bool {
    let (t, p): (Vec<_>, Vec<_>) = (template.split('/').collect(), path.split('/').collect());
    t.len() == p.len()
        && t.iter()
            .zip(&p)
            .all(|(t, p)| t == p || (t.starts_with('{') && !p.is_empty()))
}

/// The value of `name="…"` inside one tag's text.
fn attribute<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let start = tag.find(&format!(" {name}=\""))? + name.len() + 3;
    let len = tag[start..].find('"')?;
    Some(&tag[start..start + len])
}

/// Every page reachable by links from `/` (as `op`), and the actions of the forms on them
/// that post.
async fn crawl_post_forms(op: &Operator) -> BTreeSet<String> {
    let mut queue = vec!["/".to_owned()];
    let mut visited = BTreeSet::new();
    let mut actions = BTreeSet::new();
    while let Some(path) = queue.pop() {
        if !visited.insert(path.clone()) || visited.len() > 200 {
            continue;
        }
        let response = op
            .http
            .get(format!("{}{path}", op.base))
            .send()
            .await
            .unwrap();
        let html = response.text().await.unwrap();
        op.canary.record_response(&path, html.as_bytes());
        for tag in html.split('<').skip(1) {
            let tag = &tag[..tag.find('>').unwrap_or(tag.len())];
            if tag.starts_with("a ") {
                if let Some(href) = attribute(tag, "href") {
                    let href = href.split(['?', '#']).next().unwrap_or_default();
                    let internal = href.starts_with('/')
                        && !href.starts_with("/api/")
                        && !href.starts_with("/static/")
                        && !href.starts_with("//");
                    if internal {
                        queue.push(href.to_owned());
                    }
                }
            } else if tag.starts_with("form ") && attribute(tag, "method") == Some("post") {
                actions.insert(attribute(tag, "action").unwrap().to_owned());
            }
        }
    }
    actions
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_state_changing_route_and_page_form_appends_an_event_without_secrets() {
    let srv = TestServer::start().await;
    let admin = srv.operator("ada", "admin").await;
    let mut walk = Walk {
        srv,
        seen: 0,
        appended: BTreeMap::new(),
        forbidden: Vec::new(),
    };
    walk.new_actions().await;
    for (what, seed) in [("seed 1", SEED_1), ("seed 2", SEED_2)] {
        walk.srv.canary.watch_seed(what, &seed_bytes(seed));
        walk.forbid(what, seed);
        walk.forbid(what, &data_encoding::HEXLOWER.encode(&seed_bytes(seed)));
    }

    // Operators: invite, register (start + finish), sign in again, change roles.
    // The one response allowed to carry the invite token is not recorded by the canary.
    let path = "/api/v1/operators/invites";
    let body = json!({ "name": "desk", "roles": ["helpdesk", "provisioner", "auditor"] });
    let (status, invite) = admin.send(Method::POST, path, Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{invite}");
    walk.settle("post", path, &["invite.created"]).await;
    let token = invite["url"].as_str().unwrap().rsplit('/').next().unwrap();
    walk.srv.canary.watch_text("invite token", token);
    walk.forbid("invite token", token);
    let mut desk = Operator {
        name: "desk".into(),
        http: reqwest::Client::builder()
            .cookie_store(true)
            .build()
            .unwrap(),
        authenticator: new_authenticator(),
        base: walk.srv.base.clone(),
        origin: url::Url::parse(&walk.srv.base).unwrap(),
        canary: walk.srv.canary.clone(),
    };
    let path = "/api/v1/auth/register/start";
    let challenge = walk
        .start(&desk, path, path, json!({ "invite": token }))
        .await;
    let credential = desk
        .authenticator
        .do_registration(
            desk.origin.clone(),
            serde_json::from_value(challenge).unwrap(),
        )
        .unwrap();
    let path = "/api/v1/auth/register/finish";
    walk.api(
        &desk,
        Method::POST,
        path,
        path,
        Some(serde_json::to_value(credential).unwrap()),
        &["invite.used", "operator.registered"],
    )
    .await;
    let path = "/api/v1/auth/login/start";
    desk.http = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap();
    let challenge = walk
        .start(&desk, path, path, json!({ "username": "desk" }))
        .await;
    let assertion = desk.assert(challenge);
    let path = "/api/v1/auth/login/finish";
    walk.api(
        &desk,
        Method::POST,
        path,
        path,
        Some(assertion),
        &["auth.sign_in"],
    )
    .await;
    walk.api(
        &admin,
        Method::PATCH,
        "/api/v1/operators/{name}",
        "/api/v1/operators/desk",
        Some(json!({ "roles": ["helpdesk", "provisioner", "auditor", "admin"] })),
        &["operator.roles_changed"],
    )
    .await;

    // A backup passkey, then its removal.
    let backup_id = walk.add_passkey(&desk, "backup").await;
    walk.api(
        &desk,
        Method::DELETE,
        "/api/v1/me/credentials/{id}",
        &format!("/api/v1/me/credentials/{backup_id}"),
        None,
        &["credential.removed"],
    )
    .await;

    // Tokens: capture, assign, reveal (start + finish), deliver, cancel, import.
    walk.capture(&desk, "WALK-1", SEED_1, "first@example.org")
        .await;
    walk.api(
        &desk,
        Method::PATCH,
        "/api/v1/tokens/{serial}",
        "/api/v1/tokens/WALK-1",
        Some(json!({ "owner": "caller@example.org" })),
        &["token.updated"],
    )
    .await;
    let challenge = walk
        .start(
            &desk,
            "/api/v1/tokens/{serial}/reveal/start",
            "/api/v1/tokens/WALK-1/reveal/start",
            json!({ "checks": ["callback", "video-id"], "ticket": "INC-7" }),
        )
        .await;
    let assertion = desk.assert(challenge);
    let code = code_at(SEED_1, common::T0);
    walk.srv.canary.watch_code("revealed code", &code);
    walk.forbid("revealed code", &code);
    // The one response allowed to carry a code is not recorded by the canary.
    let (status, revealed) = desk
        .send(
            Method::POST,
            "/api/v1/tokens/WALK-1/reveal/finish",
            Some(assertion),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{revealed}");
    assert_eq!(revealed["code"], code.as_str());
    if let Some(next) = revealed["next_code"].as_str() {
        walk.srv.canary.watch_code("next code", next);
        walk.forbid("next code", next);
    }
    walk.settle(
        "post",
        "/api/v1/tokens/{serial}/reveal/finish",
        &["reveal.granted"],
    )
    .await;
    let typed = code_at(SEED_1, common::T0 + 30);
    walk.srv
        .canary
        .watch_code("code read from the token", &typed);
    walk.forbid("code read from the token", &typed);
    walk.api(
        &desk,
        Method::POST,
        "/api/v1/tokens/{serial}/delivery",
        "/api/v1/tokens/WALK-1/delivery",
        Some(json!({ "code": typed })),
        &["token.delivered"],
    )
    .await;
    walk.capture(&desk, "WALK-2", SEED_2, "b@example.org").await;
    walk.api(
        &desk,
        Method::POST,
        "/api/v1/tokens/{serial}/cancel",
        "/api/v1/tokens/WALK-2/cancel",
        Some(json!({ "reason": "lost in the post" })),
        &["token.cancelled"],
    )
    .await;
    // Shipping: verify against the device, one shipment, a batch of shipments.
    walk.capture(&desk, "WALK-8", SEED_2, "h@example.org").await;
    let device_code = code_at(SEED_2, common::T0);
    walk.srv.canary.watch_code("code verified", &device_code);
    walk.forbid("code verified", &device_code);
    walk.api(
        &desk,
        Method::POST,
        "/api/v1/tokens/{serial}/verify",
        "/api/v1/tokens/WALK-8/verify",
        Some(json!({ "code": device_code })),
        &["token.verified"],
    )
    .await;
    walk.api(
        &desk,
        Method::POST,
        "/api/v1/tokens/{serial}/shipment",
        "/api/v1/tokens/WALK-8/shipment",
        Some(json!({ "carrier": "DHL", "tracking": "JJD1", "expected": "2025-11-27" })),
        &["token.shipped"],
    )
    .await;
    walk.api(
        &desk,
        Method::POST,
        "/api/v1/tokens/shipments",
        "/api/v1/tokens/shipments",
        Some(json!({ "csv": "serial\nWALK-8\n" })),
        &["token.shipped"],
    )
    .await;
    // A self-service delivery link, and the owner confirming through it. The one response
    // allowed to carry the link is not recorded by the canary.
    walk.capture(&desk, "WALK-7", SEED_1, "g@example.org").await;
    let path = "/api/v1/tokens/WALK-7/delivery-link";
    let (status, link) = desk.send(Method::POST, path, Some(json!({}))).await;
    assert_eq!(status, StatusCode::CREATED, "{link}");
    walk.settle(
        "post",
        "/api/v1/tokens/{serial}/delivery-link",
        &["delivery_link.created"],
    )
    .await;
    let link_token = link["url"].as_str().unwrap().rsplit('/').next().unwrap();
    walk.srv.canary.watch_text("delivery link", link_token);
    walk.forbid("delivery link", link_token);
    walk.urlencoded(
        &desk,
        "/deliver/{token}",
        &format!("/deliver/{link_token}"),
        &[("code", &typed)],
        &["token.delivered"],
    )
    .await;
    // Provisioning by QR: a preview stores nothing; generation, then the device's code.
    let qr_uri = format!("otpauth://totp/Walk:q@example.org?secret={SEED_2}&issuer=Walk");
    let qr_png = common::qr::screenshot(&qr_uri);
    let qr_b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &qr_png);
    walk.api(
        &desk,
        Method::POST,
        "/api/v1/tokens/qr-preview",
        "/api/v1/tokens/qr-preview",
        Some(json!({ "qr_image": qr_b64 })),
        &[],
    )
    .await;
    let mut generated = Vec::new();
    for serial in ["WALK-G1", "WALK-G2"] {
        // The one response allowed to carry the generated seed is not recorded.
        let (status, shown) = desk
            .send(
                Method::POST,
                "/api/v1/tokens/generate",
                Some(json!({ "serial": serial, "owner": "g@example.org" })),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{shown}");
        walk.settle("post", "/api/v1/tokens/generate", &["token.generated"])
            .await;
        let b32 = shown["secret_base32"].as_str().unwrap().to_owned();
        walk.srv.canary.watch_seed(serial, &seed_bytes(&b32));
        walk.forbid(serial, &b32);
        generated.push(b32);
    }
    let programmed = code_at(&generated[0], common::T0);
    walk.api(
        &desk,
        Method::POST,
        "/api/v1/tokens/{serial}/programming",
        "/api/v1/tokens/WALK-G1/programming",
        Some(json!({ "code": programmed })),
        &["token.programmed"],
    )
    .await;
    let file = format!(
        "upn,serial number,secret key,time interval,manufacturer,model\n\
         c@example.org,WALK-3,{SEED_2},30,Token2,C202\n"
    );
    let response = desk
        .http
        .post(walk.srv.url("/api/v1/imports?name=walk.csv"))
        .header("Origin", &walk.srv.base)
        .body(file)
        .send()
        .await
        .unwrap();
    let (status, report) = walk.srv.finish("import", response).await;
    assert_eq!(status, StatusCode::CREATED, "{report}");
    walk.settle("post", "/api/v1/imports", &["token.imported"])
        .await;

    // Four-eyes (high-risk): reveal/start records a request; a second operator approves it
    // (start + finish) and the requester reveals with it; another request is denied.
    let start = "/api/v1/tokens/{serial}/reveal/start";
    let checks = json!({ "checks": ["callback", "manager", "video-id"], "ticket": "INC-8" });
    let mut approver = walk.srv.operator("bob", "helpdesk").await;
    // high-risk's callback and manager checks rely on the directory of record (synced here
    // directly; the walk posts the Directory page's own form further down).
    let env = seedvault::directory::SyncEnv {
        store: &walk.srv.state.store,
        vault: &walk.srv.state.vault,
        now: seedvault::clock::Clock::now(&*walk.srv.state.clock),
    };
    seedvault::directory::sync_csv(
        &env,
        "cli:test",
        "directory.csv",
        b"owner,phone,manager\nvip@example.org,+1 555 010 0900,boss@example.org\nboss@example.org,+1 555 010 0901,\n",
        false,
    )
    .await
    .unwrap();
    walk.new_actions().await;
    let mut ids = Vec::new();
    for (serial, seed) in [("WALK-HR1", SEED_1), ("WALK-HR2", SEED_2)] {
        let body = json!({ "serial": serial, "secret": seed, "owner": "vip@example.org", "policy": "high-risk" });
        let path = "/api/v1/tokens";
        walk.api(
            &desk,
            Method::POST,
            path,
            path,
            Some(body),
            &["token.captured"],
        )
        .await;
        let concrete = format!("/api/v1/tokens/{serial}/reveal/start");
        let requested = walk
            .api(
                &desk,
                Method::POST,
                start,
                &concrete,
                Some(checks.clone()),
                &["approval.requested"],
            )
            .await;
        ids.push(requested["approval"]["id"].as_i64().unwrap());
    }
    let challenge = walk
        .start(
            &approver,
            "/api/v1/approvals/{id}/approve/start",
            &format!("/api/v1/approvals/{}/approve/start", ids[0]),
            json!({}),
        )
        .await;
    let assertion = approver.assert(challenge);
    walk.api(
        &approver,
        Method::POST,
        "/api/v1/approvals/{id}/approve/finish",
        &format!("/api/v1/approvals/{}/approve/finish", ids[0]),
        Some(assertion),
        &["approval.approved"],
    )
    .await;
    let challenge = walk
        .start(
            &desk,
            start,
            "/api/v1/tokens/WALK-HR1/reveal/start",
            json!({ "approval": ids[0] }),
        )
        .await;
    let assertion = desk.assert(challenge);
    let code = code_at(SEED_1, walk.srv.clock_unix());
    walk.srv.canary.watch_code("four-eyes code", &code);
    walk.forbid("four-eyes code", &code);
    let (status, revealed) = desk
        .send(
            Method::POST,
            "/api/v1/tokens/WALK-HR1/reveal/finish",
            Some(assertion),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{revealed}");
    assert_eq!(revealed["code"], code.as_str());
    walk.settle(
        "post",
        "/api/v1/tokens/{serial}/reveal/finish",
        &["approval.used", "reveal.granted"],
    )
    .await;
    walk.api(
        &approver,
        Method::POST,
        "/api/v1/approvals/{id}/deny",
        &format!("/api/v1/approvals/{}/deny", ids[1]),
        Some(json!({ "reason": "the manager did not confirm" })),
        &["approval.denied"],
    )
    .await;

    // Exporting the trail is itself recorded.
    let response = desk
        .http
        .get(walk.srv.url("/api/v1/audit?format=jsonl"))
        .send()
        .await
        .unwrap();
    let (status, _) = walk.srv.finish("export", response).await;
    assert_eq!(status, StatusCode::OK);
    walk.settle("get", "/api/v1/audit", &["audit.exported"])
        .await;

    // A backup download is recorded before its first byte.
    let recipient = age::x25519::Identity::generate().to_public().to_string();
    let response = desk
        .http
        .post(walk.srv.url("/api/v1/backups"))
        .header("Origin", &walk.srv.base)
        .json(&json!({ "recipients": [recipient] }))
        .send()
        .await
        .unwrap();
    let (status, _) = walk.srv.finish("backup", response).await;
    if crate::common::on_postgres() {
        // pg_dump's job there: refused, and nothing to record.
        assert_eq!(status, StatusCode::CONFLICT);
        walk.settle("post", "/api/v1/backups", &[]).await;
    } else {
        assert_eq!(status, StatusCode::OK);
        walk.settle("post", "/api/v1/backups", &["backup.created"])
            .await;
    }

    // The pages: crawl every page the all-role operator reaches while a token is escrowed and
    // two passkeys exist, so that every kind of form is on show.
    walk.capture(&desk, "WALK-4", SEED_1, "d@example.org").await;
    let second_id = walk.add_passkey(&desk, "second").await;
    let page_forms = crawl_post_forms(&desk).await;
    walk.new_actions().await;

    // Each kind of page form, as the browser posts it.
    let page_routes: &[&str] = &[
        "/operators",
        "/operators/{name}",
        "/me/credentials/{id}/remove",
        "/tokens/new",
        "/tokens/new/qr",
        "/tokens/generate",
        "/tokens/{serial}/programming",
        "/tokens/{serial}/delivery",
        "/tokens/{serial}/delivery-link",
        "/tokens/{serial}/cancel",
        "/tokens/{serial}/verify",
        "/tokens/{serial}/shipment",
        "/tokens/bulk",
        "/tokens/batch",
        "/import",
        "/directory",
        "/logout",
    ];
    for route in page_routes {
        assert!(
            page_forms.iter().any(|action| matches(route, action)),
            "no page shows a form posting to {route}: {page_forms:?}"
        );
    }
    for action in &page_forms {
        assert!(
            page_routes.iter().any(|t| matches(t, action)),
            "a page posts to {action}, which this walk does not exercise — add it below"
        );
    }
    walk.urlencoded(
        &desk,
        "/operators",
        "/operators",
        &[("name", "eve"), ("roles", "auditor")],
        &["invite.created"],
    )
    .await;
    walk.urlencoded(
        &desk,
        "/operators/{name}",
        "/operators/ada",
        &[("roles", "admin"), ("roles", "auditor")],
        &["operator.roles_changed"],
    )
    .await;
    walk.urlencoded(
        &desk,
        "/me/credentials/{id}/remove",
        &format!("/me/credentials/{second_id}/remove"),
        &[],
        &["credential.removed"],
    )
    .await;
    walk.urlencoded(
        &desk,
        "/tokens/new",
        "/tokens/new",
        &[
            ("owner", "e@example.org"),
            ("serial", "WALK-5"),
            ("secret", SEED_2),
            ("format", "auto"),
            ("algorithm", "SHA1"),
            ("digits", "6"),
            ("period", "30"),
            ("manufacturer", ""),
            ("model", ""),
            ("policy", "standard"),
        ],
        &["token.captured"],
    )
    .await;
    let (content_type, body) = common::multipart(
        "shot.png",
        &[
            ("owner", b"h@example.org"),
            ("serial", b"WALK-Q"),
            ("policy", b"standard"),
            ("step", b"capture"),
            ("qr_image", &qr_png),
        ],
    );
    walk.form(
        &desk,
        "/tokens/new/qr",
        "/tokens/new/qr",
        &content_type,
        body,
        &["token.captured"],
    )
    .await;
    // The form redirects to the page that shows the seed once, to its generator.
    walk.urlencoded(
        &desk,
        "/tokens/generate",
        "/tokens/generate",
        &[
            ("owner", "g@example.org"),
            ("serial", "WALK-G3"),
            ("issuer", "Walk"),
            ("label", ""),
            ("algorithm", "SHA1"),
            ("digits", "6"),
            ("period", "30"),
        ],
        &["token.generated", "token.seed_shown"],
    )
    .await;
    let programmed = code_at(&generated[1], common::T0);
    walk.urlencoded(
        &desk,
        "/tokens/{serial}/programming",
        "/tokens/WALK-G2/programming",
        &[("code", &programmed)],
        &["token.programmed"],
    )
    .await;
    walk.urlencoded(
        &desk,
        "/tokens/{serial}/verify",
        "/tokens/WALK-4/verify",
        &[("code", &typed)],
        &["token.verified"],
    )
    .await;
    walk.urlencoded(
        &desk,
        "/tokens/{serial}/shipment",
        "/tokens/WALK-4/shipment",
        &[("carrier", "DHL"), ("tracking", "JJD2"), ("expected", "")],
        &["token.shipped"],
    )
    .await;
    let (content_type, body) = common::multipart(
        "serials.csv",
        &[
            ("action", b"ship"),
            ("file", b"serial\nWALK-4\n"),
            ("carrier", b"UPS"),
        ],
    );
    walk.form(
        &desk,
        "/tokens/batch",
        "/tokens/batch",
        &content_type,
        body,
        &["token.shipped"],
    )
    .await;
    // The slip's link is on the slip only (its response is not a page the canary may
    // object to: it is no-store and shown once).
    walk.urlencoded(
        &desk,
        "/tokens/bulk",
        "/tokens/bulk",
        &[("action", "slips"), ("serials", "WALK-4"), ("paper", "a4")],
        &["delivery_link.created"],
    )
    .await;
    walk.urlencoded(
        &desk,
        "/tokens/{serial}/delivery-link",
        "/tokens/WALK-4/delivery-link",
        &[],
        &["delivery_link.created"],
    )
    .await;
    walk.urlencoded(
        &desk,
        "/tokens/{serial}/delivery",
        "/tokens/WALK-4/delivery",
        &[("code", &typed)],
        &["token.delivered"],
    )
    .await;
    walk.urlencoded(
        &desk,
        "/tokens/{serial}/cancel",
        "/tokens/WALK-5/cancel",
        &[("reason", "wrong user")],
        &["token.cancelled"],
    )
    .await;
    let boundary = "walkboundary7MA4YWxkTrZu0gW";
    let multipart = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"page.csv\"\r\n\
         Content-Type: text/csv\r\n\r\n\
         upn,serial number,secret key,time interval,manufacturer,model\n\
         f@example.org,WALK-6,{SEED_1},30,Token2,C202\n\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"dry_run\"\r\n\r\nfalse\r\n\
         --{boundary}--\r\n"
    );
    walk.form(
        &desk,
        "/import",
        "/import",
        &format!("multipart/form-data; boundary={boundary}"),
        multipart.into_bytes(),
        &["token.imported"],
    )
    .await;
    let multipart = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"people.csv\"\r\n\
         Content-Type: text/csv\r\n\r\n\
         owner,phone\n\
         d@example.org,+1 555 010 0001\n\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"dry_run\"\r\n\r\nfalse\r\n\
         --{boundary}--\r\n"
    );
    walk.form(
        &desk,
        "/directory",
        "/directory",
        &format!("multipart/form-data; boundary={boundary}"),
        multipart.into_bytes(),
        &["directory.synced"],
    )
    .await;
    walk.urlencoded(&desk, "/logout", "/logout", &[], &["auth.sign_out"])
        .await;
    let path = "/api/v1/auth/logout";
    walk.api(&admin, Method::POST, path, path, None, &["auth.sign_out"])
        .await;

    // The route table: every state-changing route was walked and appended events (ceremony
    // starts through their finish).
    let (_, doc) = walk.srv.get("/api/v1/openapi.json").await;
    let mut state_changing = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let route = (method.as_str(), path.as_str());
            if method != "get" || AUDITED_READS.contains(&route) {
                state_changing.push((method.clone(), path.clone()));
            }
        }
    }
    assert!(state_changing.len() >= 17, "{state_changing:?}");
    for route in page_routes {
        state_changing.push(("post".into(), (*route).into()));
    }
    // The owner's page, reached from a delivery link rather than from an operator's page.
    state_changing.push(("post".into(), "/deliver/{token}".into()));
    for (method, path) in &state_changing {
        let key = (method.clone(), path.clone());
        let appended = walk.appended.get(&key);
        assert!(
            appended.is_some(),
            "{method} {path} changes state but the completeness walk never calls it"
        );
        if PREVIEWS.contains(&(method.as_str(), path.as_str())) {
            assert!(
                appended.unwrap().is_empty(),
                "{method} {path} is a preview but appended events"
            );
        } else if CEREMONY_STARTS.contains(&(method.as_str(), path.as_str())) {
            let finish = (method.clone(), path.replace("/start", "/finish"));
            assert!(
                walk.appended.get(&finish).is_some_and(|a| !a.is_empty()),
                "{method} {path}: its finish appends nothing"
            );
        } else if crate::common::on_postgres()
            && (method.as_str(), path.as_str()) == ("post", "/api/v1/backups")
        {
            // Refused on PostgreSQL (pg_dump's job): it changes nothing there.
        } else {
            assert!(
                !appended.unwrap().is_empty(),
                "{method} {path} changes state but appends no audit event"
            );
        }
    }

    // Every action is documented for auditors.
    let doc = include_str!("../../docs/AUDIT.md");
    for action in walk.appended.values().flatten() {
        assert!(
            doc.contains(&format!("`{action}`")),
            "docs/AUDIT.md does not list the action {action}"
        );
    }

    // No event carries a seed, a code, an invite token or a challenge.
    let rows = seedvault::store::audit::page_after(&walk.srv.state.store, 0, 100_000)
        .await
        .unwrap();
    for row in &rows {
        let text = format!(
            "{} {} {} {}",
            row.actor, row.action, row.target, row.details
        );
        for (what, secret) in &walk.forbidden {
            assert!(
                !text.contains(secret.as_str()),
                "audit event {} ({}) contains the {what}",
                row.seq,
                row.action
            );
        }
    }
    walk.srv.stop_and_check().await;
}

#[test]
fn a_template_matches_only_paths_of_its_shape() {
    assert!(matches("/tokens/{serial}/cancel", "/tokens/T-1/cancel"));
    assert!(!matches("/tokens/{serial}/cancel", "/tokens/T-1/delivery"));
    assert!(!matches("/tokens/{serial}", "/tokens/T-1/cancel"));
    assert!(!matches("/tokens/{serial}", "/tokens/"));
    assert_eq!(
        attribute(r#"form method="post" action="/x""#, "action"),
        Some("/x")
    );
}
