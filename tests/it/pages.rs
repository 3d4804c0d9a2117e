//! The HTML pages over HTTP: who may open which page, real error pages, security headers, and
//! that no page ever shows a seed.

use crate::common;

use common::TestServer;
use reqwest::StatusCode;
use serde_json::json;

const SEED_B32: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_page_opens_for_its_roles_and_is_a_real_error_page_for_others() {
    let srv = TestServer::start().await;
    srv.canary.watch_seed(
        "page seed",
        &data_encoding::BASE32_NOPAD
            .decode(SEED_B32.as_bytes())
            .unwrap(),
    );
    let provisioner = srv.operator("pp", "provisioner").await;
    let (status, _) = provisioner
        .post(
            "/api/v1/tokens",
            json!({ "owner": "u@example.org", "serial": "P-1", "secret": SEED_B32 }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let mut callers = vec![("anonymous", None)];
    for role in ["admin", "provisioner", "helpdesk", "auditor"] {
        callers.push((
            role,
            Some(srv.operator(&format!("page-{role}"), role).await),
        ));
    }
    // (path, roles that may open it; everyone signed in when empty)
    let table: &[(&str, &[&str])] = &[
        ("/tokens", &[]),
        ("/tokens/P-1", &[]),
        ("/policies", &[]),
        ("/me", &[]),
        ("/approvals", &[]),
        ("/tokens/new", &["provisioner"]),
        ("/tokens/P-1/reveal", &["helpdesk"]),
        ("/audit", &["auditor", "admin"]),
        ("/operators", &["admin"]),
        ("/directory", &["admin"]),
    ];
    for (path, allowed) in table {
        for (who, caller) in &callers {
            let (status, body) = match caller {
                Some(op) => {
                    let response = op.http.get(srv.url(path)).send().await.unwrap();
                    let status = response.status();
                    (status, response.text().await.unwrap())
                }
                None => {
                    let response = reqwest::get(srv.url(path)).await.unwrap();
                    (response.status(), response.text().await.unwrap())
                }
            };
            srv.canary
                .record_response(&format!("page {path} as {who}"), body.as_bytes());
            let expected = match caller {
                None => StatusCode::UNAUTHORIZED,
                Some(_) if allowed.is_empty() || allowed.contains(who) => StatusCode::OK,
                Some(_) => StatusCode::FORBIDDEN,
            };
            assert_eq!(status, expected, "{who} GET {path}");
            assert!(
                body.starts_with("<!DOCTYPE html>"),
                "{who} GET {path} is a page"
            );
            if status == StatusCode::UNAUTHORIZED {
                assert!(body.contains("Sign in with a passkey"), "{body}");
            }
        }
    }
    let response = reqwest::get(srv.url("/no/such/page")).await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let headers = response.headers().clone();
    assert!(headers["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("script-src 'self'"));
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["referrer-policy"], "no-referrer");
    assert_eq!(headers["cache-control"], "no-store");
    assert!(response.text().await.unwrap().contains("Not found"));
    // Anonymous visitors to the root land on sign-in.
    let response = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(srv.url("/"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    srv.stop_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_form_post_from_another_origin_is_refused_and_changes_nothing() {
    let srv = TestServer::start().await;
    let provisioner = srv.operator("pq", "provisioner").await;
    let response = provisioner
        .http
        .post(srv.url("/tokens/new"))
        .header("Origin", "http://evil.example")
        .form(&[
            ("owner", "u@example.org"),
            ("serial", "X-1"),
            ("secret", SEED_B32),
            ("format", "auto"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let response = provisioner
        .http
        .post(srv.url("/tokens/new"))
        .header("Origin", "null")
        .header("Sec-Fetch-Site", "cross-site")
        .form(&[
            ("owner", "u@example.org"),
            ("serial", "X-1"),
            ("secret", SEED_B32),
            ("format", "auto"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(provisioner.get("/api/v1/tokens").await.1, json!([]));
    // The same form from the vault's own origin works, and the page never echoes the secret.
    let response = provisioner
        .http
        .post(srv.url("/tokens/new"))
        .header("Origin", &srv.base)
        .form(&[
            ("owner", "u@example.org"),
            ("serial", "X-1"),
            ("secret", "JBSWY3DPEHPK3PX1"),
            ("format", "auto"),
            ("algorithm", "SHA1"),
            ("digits", "6"),
            ("period", "30"),
            ("policy", "standard"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body = response.text().await.unwrap();
    assert!(
        body.contains("&#39;1&#39; is not a base32 character")
            || body.contains("'1' is not a base32 character"),
        "{body}"
    );
    assert!(
        !body.contains("JBSWY3DPEHPK3PX1"),
        "the secret is not echoed back"
    );
    srv.stop_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_captured_without_an_owner_is_escrowed_unassigned_from_the_api_and_the_page_alike()
{
    let srv = TestServer::start().await;
    srv.canary.watch_seed(
        "page seed",
        &data_encoding::BASE32_NOPAD
            .decode(SEED_B32.as_bytes())
            .unwrap(),
    );
    let provisioner = srv.operator("po", "provisioner").await;
    let (status, body) = provisioner
        .post(
            "/api/v1/tokens",
            json!({ "serial": "U-1", "secret": SEED_B32 }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let warning = body["warnings"][0].as_str().unwrap().to_owned();
    assert!(warning.starts_with("no owner: "), "{body}");
    let response = provisioner
        .http
        .post(srv.url("/tokens/new"))
        .header("Origin", &srv.base)
        .form(&[
            ("owner", " "),
            ("serial", "U-2"),
            ("secret", SEED_B32),
            ("format", "auto"),
            ("algorithm", "SHA1"),
            ("digits", "6"),
            ("period", ""),
            ("policy", "standard"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let page = response.text().await.unwrap();
    srv.canary.record_response("capture page", page.as_bytes());
    assert!(page.contains(&warning), "{page}");
    for serial in ["U-1", "U-2"] {
        let (_, token) = provisioner.get(&format!("/api/v1/tokens/{serial}")).await;
        assert_eq!(token["state"], "escrowed", "{token}");
        assert_eq!(token["owner"], serde_json::Value::Null, "{token}");
        assert_eq!(token["period"], 30, "a blank period means the default");
    }
    // An unassigned token's code cannot be revealed until it is assigned.
    let helpdesk = srv.operator("ph", "helpdesk").await;
    let (status, body) = helpdesk
        .post(
            "/api/v1/tokens/U-1/reveal/start",
            json!({ "checks": [], "ticket": "T-1" }),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    srv.stop_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_form_post_without_the_pages_role_gets_the_403_page_and_changes_nothing() {
    let srv = TestServer::start().await;
    let helpdesk = srv.operator("pw", "helpdesk").await;
    for (path, form) in [
        (
            "/tokens/new",
            &[("serial", "W-1"), ("secret", SEED_B32)][..],
        ),
        ("/operators", &[("name", "mallory"), ("roles", "admin")][..]),
        (
            "/directory",
            &[
                ("csv", "owner,phone\nx@example.org,+15550100001\n"),
                ("dry_run", "false"),
            ][..],
        ),
    ] {
        let response = helpdesk
            .http
            .post(srv.url(path))
            .header("Origin", &srv.base)
            .form(form)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{path}");
        let page = response.text().await.unwrap();
        assert!(page.starts_with("<!DOCTYPE html>"), "{path}: {page}");
        assert!(page.contains("Not allowed"), "{path}: {page}");
        // The refusal page keeps the operator's navigation.
        assert!(page.contains("pw"), "{path}: {page}");
    }
    assert_eq!(helpdesk.get("/api/v1/tokens").await.1, json!([]));
    srv.stop_and_check().await;
}
