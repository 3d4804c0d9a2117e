//! `/api/v1/audit`: the streamed export and the chain check (roles auditor or admin).

use crate::web::extract::Query;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::audit::export::{self, ExportFilter, Format};
use crate::audit::verify::{self, AnchoredHead, VerifyOptions};
use crate::web::session::{AuditorOrAdmin, Authorized};
use crate::web::{AppError, AppState};

/// Chunks in flight between the reader thread and the socket (each about 64 KiB).
const IN_FLIGHT: usize = 4;

#[derive(Deserialize, IntoParams)]
pub struct ExportQuery {
    /// jsonl (default) or csv.
    #[param(inline)]
    format: Option<Format>,
    /// Events at or after this time (RFC 3339, or a date meaning midnight UTC).
    since: Option<String>,
    /// Events before this time.
    until: Option<String>,
    /// Exactly this actor, e.g. `operator:alice`.
    actor: Option<String>,
    /// Events about this token serial.
    token: Option<String>,
    /// Exactly this action, e.g. `reveal.granted`.
    action: Option<String>,
    /// Exactly this outcome: success, denied or failure.
    outcome: Option<String>,
}

fn parse_filter(query: &ExportQuery) -> Result<(Format, ExportFilter), AppError> {
    let format = query.format.unwrap_or(Format::Jsonl);
    let time = |field, value: &Option<String>| {
        value
            .as_deref()
            .filter(|v| !v.is_empty())
            .map(|v| export::parse_time(field, v))
            .transpose()
    };
    let text = |value: &Option<String>| value.clone().filter(|v| !v.is_empty());
    Ok((
        format,
        ExportFilter {
            since: time("since", &query.since)?,
            until: time("until", &query.until)?,
            actor: text(&query.actor),
            token: text(&query.token),
            action: text(&query.action),
            outcome: text(&query.outcome),
        },
    ))
}

/// Export the trail, filtered, as JSON Lines or CSV (auditor or admin). Streamed with
/// constant memory; each record carries `prev_hash`, `hash` and `sig`, and the last record is
/// a signed trailer (filter, count, digest, head), so the file verifies offline and a record
/// removed from it is noticed. The export is recorded in the trail (who, filters, count)
/// before the first byte is sent; it covers every matching event up to the head at that
/// moment (`X-Audit-Through-Seq`).
#[utoipa::path(get, path = "/audit", tag = "audit", params(ExportQuery),
    responses((status = 200, description = "one record per line (JSON Lines: ExportRecord objects, then one TrailerRecord; CSV: header row, then the same fields, then a row of type export-trailer whose details column holds the TrailerRecord)",
               content((export::ExportRecord = "application/x-ndjson"), (String = "text/csv"))),
              (status = 401), (status = 403),
              (status = 422, description = "a filter or the format is invalid; the message names it")))]
pub async fn export(
    State(state): State<AppState>,
    auth: Authorized<AuditorOrAdmin>,
    Query(query): Query<ExportQuery>,
) -> Result<Response, AppError> {
    let (format, filter) = parse_filter(&query)?;
    let plan = export::begin(
        &state.store,
        &state.vault,
        state.clock.now(),
        &auth.operator().actor(),
        format,
        &filter,
    )
    .await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(IN_FLIGHT);
    let source = state.store.audit_source()?;
    let job = plan.clone();
    let vault = state.vault.clone();
    tokio::task::spawn_blocking(move || {
        let gone = || std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away");
        let result = export::write(
            &source,
            &job,
            &vault,
            |chunk| tx.blocking_send(Ok(Bytes::from(chunk))).map_err(|_| gone()),
            |_| {},
        );
        match result {
            Ok(_) => {}
            Err(export::ExportError::Write(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                tracing::info!(
                    recorded_as = job.recorded_as,
                    "audit export abandoned by the client"
                );
            }
            Err(e) => {
                tracing::error!(error = %e, "audit export failed part-way");
                // An error item aborts the response, so the client sees a broken transfer
                // rather than a silently short file.
                let _ = tx.blocking_send(Err(std::io::Error::other("export failed")));
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let mut response = Body::from_stream(stream).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    let disposition = format!(
        "attachment; filename=\"seedvault-audit-{}.{}\"",
        plan.through,
        format.as_str()
    );
    for (name, value) in [
        (header::CONTENT_DISPOSITION.as_str(), disposition),
        ("x-audit-through-seq", plan.through.to_string()),
        ("x-audit-count", plan.count.to_string()),
        ("x-audit-recorded-as", plan.recorded_as.to_string()),
    ] {
        if let (Ok(name), Ok(value)) = (
            header::HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            headers.insert(name, value);
        }
    }
    Ok(response)
}

#[derive(Deserialize, IntoParams)]
pub struct VerifyQuery {
    /// Check every signature instead of the newest (which vouches for the rest).
    all_signatures: Option<bool>,
    /// An anchored head `SEQ:HASH` (from `seedvault audit head`) that must still be there.
    expect_head: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct HeadView {
    seq: i64,
    /// Hex SHA-256.
    hash: String,
}

#[derive(Serialize, ToSchema)]
pub struct BrokenView {
    /// The first broken event.
    seq: i64,
    reason: String,
}

#[derive(Serialize, ToSchema)]
pub struct VerifyReport {
    ok: bool,
    /// Events verified (those before the first break, when broken).
    events: u64,
    /// The newest stored event.
    head: Option<HeadView>,
    broken: Option<BrokenView>,
}

/// Walk the chain and report the first broken event, if any (auditor or admin).
#[utoipa::path(get, path = "/audit/verify", tag = "audit", params(VerifyQuery),
    responses((status = 200, body = VerifyReport), (status = 401), (status = 403),
              (status = 422, description = "expect_head is not SEQ:HASH")))]
pub async fn verify(
    State(state): State<AppState>,
    _auth: Authorized<AuditorOrAdmin>,
    Query(query): Query<VerifyQuery>,
) -> Result<Json<VerifyReport>, AppError> {
    let options = VerifyOptions {
        all_signatures: query.all_signatures.unwrap_or(false),
        expect_head: query
            .expect_head
            .as_deref()
            .filter(|v| !v.is_empty())
            .map(str::parse::<AnchoredHead>)
            .transpose()
            .map_err(|e| AppError::Unprocessable(format!("expect_head: {e}")))?,
        threads: 0,
    };
    let source = state.store.audit_source()?;
    let vault_id = state.vault.id().to_owned();
    let key = state.vault.audit_public_key();
    let result = tokio::task::spawn_blocking(move || {
        verify::verify_live(&source, &vault_id, &key, &options)
    })
    .await
    .map_err(|e| AppError::Internal(e.to_string()))?
    .map_err(|e| AppError::Internal(e.to_string()))?;
    Ok(Json(VerifyReport {
        ok: result.ok(),
        events: result.events,
        head: result.head.map(|h| HeadView {
            seq: h.seq,
            hash: data_encoding::HEXLOWER.encode(&h.hash),
        }),
        broken: result.broken.map(|b| BrokenView {
            seq: b.seq,
            reason: b.reason,
        }),
    }))
}
