//! Prometheus metrics: the recorder, the names, and the one place each is counted.
//!
//! Counters are counted where the action commits (after its transaction, so a refused commit
//! counts nothing); gauges that describe the vault (escrowed seeds, overdue purges, the audit
//! head, SIEM lag) are read from the store when `/metrics` is scraped, so they are right
//! whichever process wrote. Every label value is a `&'static str` chosen here or by the caller
//! from a fixed set — never an owner, serial, operator name, ticket or code — except the route
//! *template* (`/api/v1/tokens/{serial}`, from axum's `MatchedPath`) and the configured SIEM
//! sink name.
//!
//! The `metrics` facade is global: with no recorder installed (the CLI) every call is a no-op.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Request latency buckets in seconds: a reveal takes a few ms, an import of 100,000 rows
/// some seconds.
const LATENCY_BUCKETS: [f64; 14] = [
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Jobs per group-commit batch.
const BATCH_BUCKETS: [f64; 9] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

/// Installs the process-wide recorder (once; later calls return the same handle) and returns
/// what renders it.
pub fn install() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        // Only fails on an empty bucket list, which these are not; summaries would be the
        // fallback.
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full("seedvault_http_request_duration_seconds".into()),
                &LATENCY_BUCKETS,
            )
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full("seedvault_group_commit_batch_size".into()),
                    &BATCH_BUCKETS,
                )
            })
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // Fails only when another recorder was installed first (a test harness): the metrics
        // then go there, and this handle renders an empty page.
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics stays empty");
        }
        describe();
        handle
    })
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        "seedvault_reveals_total",
        "Reveals by outcome (granted, refused) and refusal reason."
    );
    describe_counter!(
        "seedvault_deliveries_total",
        "Delivery confirmations by outcome."
    );
    describe_counter!("seedvault_purges_total", "Seeds purged, by reason.");
    describe_counter!("seedvault_imports_total", "Seed files imported.");
    describe_counter!(
        "seedvault_import_rows_total",
        "Tokens escrowed by file imports."
    );
    describe_counter!("seedvault_sign_ins_total", "Passkey sign-ins by outcome.");
    describe_gauge!(
        "seedvault_escrowed_tokens",
        "Tokens holding a sealed seed now."
    );
    describe_gauge!(
        "seedvault_seeds_overdue_for_purge",
        "Escrowed seeds past their retention deadline, waiting for the sweeper."
    );
    describe_gauge!("seedvault_audit_head_seq", "Seq of the newest audit event.");
    describe_gauge!(
        "seedvault_siem_lag_events",
        "Audit events a SIEM sink has not acknowledged yet."
    );
    describe_gauge!(
        "seedvault_siem_lag_seconds",
        Unit::Seconds,
        "Age of the oldest audit event a SIEM sink has not acknowledged yet."
    );
    describe_histogram!(
        "seedvault_http_request_duration_seconds",
        Unit::Seconds,
        "HTTP request latency by method, route template and status."
    );
    describe_histogram!(
        "seedvault_group_commit_batch_size",
        "Write jobs sharing one group-commit transaction."
    );
}

/// A reveal granted (its code left in the response).
pub fn reveal_granted() {
    metrics::counter!("seedvault_reveals_total", "outcome" => "granted").increment(1);
}

/// A reveal refused for `reason` (a fixed code such as `checklist`, `limit`).
pub fn reveal_refused(reason: &'static str) {
    metrics::counter!("seedvault_reveals_total", "outcome" => "refused", "reason" => reason)
        .increment(1);
}

/// A delivery confirmation: `delivered`, `delivered-unverified`, `wrong-code` or
/// `too-many-attempts`.
pub fn delivery(outcome: &'static str) {
    metrics::counter!("seedvault_deliveries_total", "outcome" => outcome).increment(1);
}

/// `count` seeds purged for `reason` (`delivered`, `delivered-unverified`, `cancelled`,
/// `expired`).
pub fn purged(reason: &'static str, count: usize) {
    metrics::counter!("seedvault_purges_total", "reason" => reason).increment(count as u64);
}

/// A file import that escrowed `rows` tokens.
pub fn imported(rows: usize) {
    metrics::counter!("seedvault_imports_total").increment(1);
    metrics::counter!("seedvault_import_rows_total").increment(rows as u64);
}

/// A sign-in: `success` or `refused`.
pub fn sign_in(outcome: &'static str) {
    metrics::counter!("seedvault_sign_ins_total", "outcome" => outcome).increment(1);
}

/// A group-commit batch of `jobs` committed together.
pub fn group_commit_batch(jobs: usize) {
    metrics::histogram!("seedvault_group_commit_batch_size").record(jobs as f64);
}

/// One HTTP request: `route` is the matched template, never the concrete path.
pub fn http_request(method: &str, route: &str, status: u16, seconds: f64) {
    let method = match method {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    };
    metrics::histogram!(
        "seedvault_http_request_duration_seconds",
        "method" => method,
        "route" => route.to_owned(),
        "status" => status.to_string(),
    )
    .record(seconds);
}

/// The vault's state as gauges, read when scraped.
#[derive(Debug, Default, Clone)]
pub struct Gauges {
    pub escrowed_tokens: i64,
    pub overdue_for_purge: i64,
    pub audit_head_seq: i64,
    /// Per configured sink: (name, events behind, seconds behind).
    pub siem_lag: Vec<(String, i64, f64)>,
}

/// Sets the gauges and renders every metric in the Prometheus text format (version 0.0.4).
pub fn render(gauges: &Gauges) -> String {
    let handle = install();
    metrics::gauge!("seedvault_escrowed_tokens").set(gauges.escrowed_tokens as f64);
    metrics::gauge!("seedvault_seeds_overdue_for_purge").set(gauges.overdue_for_purge as f64);
    metrics::gauge!("seedvault_audit_head_seq").set(gauges.audit_head_seq as f64);
    for (sink, events, seconds) in &gauges.siem_lag {
        metrics::gauge!("seedvault_siem_lag_events", "sink" => sink.clone()).set(*events as f64);
        metrics::gauge!("seedvault_siem_lag_seconds", "sink" => sink.clone()).set(*seconds);
    }
    handle.render()
}

/// Drains the histograms' sample buffers into their buckets; `serve` calls it every few
/// seconds so that memory stays flat between scrapes.
pub fn upkeep() {
    install().run_upkeep();
}
