//! Shipping (issue #23): between capture and delivery a token travels for days. Before it
//! leaves, a provisioner checks the escrowed seed against a code read from the physical token
//! ([`verify`]): the drift found is recorded and applied to later reveals, and a policy may
//! refuse reveals until this happened (`require_verified`). While it travels, the token records
//! its shipment ([`ship`]); a printed delivery slip ([`slips`]) carries the owner's one-time
//! self-service delivery link as a QR code. Batches ([`ship_batch`], [`verify_batch`],
//! [`cancel_batch`]) run each token in its own transaction with its own audit event and report
//! per line what succeeded and what did not.

use serde::Serialize;
use serde_json::json;
use time::Date;
use utoipa::ToSchema;
use zeroize::Zeroizing;

use super::lifecycle::{self, check_device_code, require_escrowed, CancelRequest, LifecycleError};
use super::{delivery_link, Env, Token, TokenError};
use crate::audit::{self, NewEvent};
use crate::store::tokens::{self as rows, ShipmentRow};

/// Longest carrier name or tracking reference accepted.
pub const MAX_SHIPPING_FIELD: usize = 128;
/// Most rows a batch (CSV or a list selection) may hold.
pub const MAX_BATCH: usize = 10_000;

/// A seed checked against its device.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Verified {
    pub serial: String,
    /// Steps between the vault's clock and the token's, now applied to every later code.
    pub drift_steps: i64,
    pub verified_at: i64,
    pub verified_by: String,
}

/// Checks a code read from the physical token against the escrowed seed within the delivery
/// window (±[`DELIVERY_WINDOW`] steps around the recorded drift) and records the drift and who
/// verified; the token stays escrowed. Wrong codes count against the same hourly limit as
/// delivery codes and are audited (`verify.refused`).
pub async fn verify(
    env: &Env<'_>,
    actor: &str,
    serial: &str,
    code: Zeroizing<String>,
) -> Result<Verified, LifecycleError> {
    if code.trim().is_empty() {
        return Err(LifecycleError::Invalid(
            "code: enter the code the physical token shows now".into(),
        ));
    }
    let now = env.unix();
    let mut tx = env.store.begin_write().await?;
    let token = token_in(&mut tx, serial).await?;
    require_escrowed(&token)?;
    let found =
        match check_device_code(env, &mut tx, &token, actor, &code, "verify.refused").await? {
            Ok(found) => found,
            Err(refused) => {
                tx.commit().await?;
                return Err(refused);
            }
        };
    if !rows::record_verified(&mut tx, token.row_id, found.drift_steps, now, actor).await? {
        return Err(changed_meanwhile(&token).into());
    }
    let event = NewEvent::new(actor, "token.verified", token.target()).details(json!({
        "drift_steps": found.drift_steps,
        "previous_drift_steps": token.drift_steps,
    }));
    audit::append(&mut tx, env.vault, env.now, event).await?;
    tx.commit().await?;
    Ok(Verified {
        serial: token.serial,
        drift_steps: found.drift_steps,
        verified_at: now,
        verified_by: actor.to_owned(),
    })
}

async fn token_in(tx: &mut crate::store::WriteTx, serial: &str) -> Result<Token, TokenError> {
    let row = rows::by_serial(&mut *tx, serial)
        .await?
        .ok_or_else(|| TokenError::NotFound(serial.to_owned()))?;
    Token::from_row(row)
}

fn changed_meanwhile(token: &Token) -> TokenError {
    TokenError::WrongState {
        serial: token.serial.clone(),
        state: "no longer escrowed".into(),
        hint: "another action changed it meanwhile",
    }
}

/// A shipment to record — the one input of `ship` from the API body, the token page, the
/// batch upload and `seedvault token ship`. Build it with [`ShipmentRequest::new`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShipmentRequest {
    carrier: Option<String>,
    tracking: Option<String>,
    expected: Option<Date>,
}

impl ShipmentRequest {
    /// All fields are optional; blank means not given. `carrier` and `tracking` are at most
    /// [`MAX_SHIPPING_FIELD`] characters of text; `expected` is a date `YYYY-MM-DD`, `today`
    /// or later (a parcel is not expected in the past).
    pub fn new(
        carrier: Option<&str>,
        tracking: Option<&str>,
        expected: Option<&str>,
        today: Date,
    ) -> Result<Self, LifecycleError> {
        let expected = match expected.map(str::trim).filter(|e| !e.is_empty()) {
            None => None,
            Some(text) => {
                let format = time::macros::format_description!("[year]-[month]-[day]");
                let date = Date::parse(text, format).map_err(|_| {
                    LifecycleError::Invalid(format!(
                        "expected: '{}' is not a date — write the expected delivery date as YYYY-MM-DD",
                        text.chars().take(40).collect::<String>()
                    ))
                })?;
                if date < today {
                    return Err(LifecycleError::Invalid(format!(
                        "expected: {text} is in the past — give the date the carrier expects to deliver, today ({today}) or later"
                    )));
                }
                Some(date)
            }
        };
        Ok(Self {
            carrier: text_field("carrier", carrier)?,
            tracking: text_field("tracking", tracking)?,
            expected,
        })
    }

    /// The expected date as stored and shown, `YYYY-MM-DD`.
    fn expected_text(&self) -> Option<String> {
        self.expected.map(|d| d.to_string())
    }
}

fn text_field(field: &'static str, value: Option<&str>) -> Result<Option<String>, LifecycleError> {
    let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    if value.chars().count() > MAX_SHIPPING_FIELD {
        return Err(LifecycleError::Invalid(format!(
            "{field}: longer than {MAX_SHIPPING_FIELD} characters"
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(LifecycleError::Invalid(format!(
            "{field}: contains a control character — type it on one line"
        )));
    }
    Ok(Some(value.to_owned()))
}

/// A shipment recorded on a token.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Shipped {
    pub serial: String,
    pub shipped_at: i64,
    pub carrier: Option<String>,
    pub tracking: Option<String>,
    /// `YYYY-MM-DD`.
    #[schema(format = Date)]
    pub expected: Option<String>,
}

/// Records that an escrowed token left for its owner (`token.shipped`). Shipping again
/// replaces the earlier record (a corrected tracking reference, a second parcel); the event
/// says so.
pub async fn ship(
    env: &Env<'_>,
    actor: &str,
    serial: &str,
    request: &ShipmentRequest,
) -> Result<Shipped, LifecycleError> {
    let now = env.unix();
    let expected = request.expected_text();
    let mut tx = env.store.begin_write().await?;
    let token = token_in(&mut tx, serial).await?;
    require_escrowed(&token)?;
    let row = ShipmentRow {
        id: token.row_id,
        at: now,
        by: actor,
        carrier: request.carrier.as_deref(),
        tracking: request.tracking.as_deref(),
        expected: expected.as_deref(),
    };
    if !rows::record_shipment(&mut tx, &row).await? {
        return Err(changed_meanwhile(&token).into());
    }
    let event = NewEvent::new(actor, "token.shipped", token.target()).details(json!({
        "carrier": request.carrier,
        "tracking": request.tracking,
        "expected": expected,
        "verified": token.verified_at.is_some(),
        "replaced_earlier_shipment": token.shipped_at.is_some(),
    }));
    audit::append(&mut tx, env.vault, env.now, event).await?;
    tx.commit().await?;
    Ok(Shipped {
        serial: token.serial,
        shipped_at: now,
        carrier: request.carrier.clone(),
        tracking: request.tracking.clone(),
        expected,
    })
}

/// One line of a batch and how it ended.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BatchLine {
    /// The line of the CSV file (1-based), or the position in the selection.
    pub line: usize,
    pub serial: String,
    /// What was done, or why not and what to do.
    pub message: String,
}

/// What a batch did: each token its own transaction and audit event.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct BatchReport {
    pub succeeded: Vec<BatchLine>,
    pub failed: Vec<BatchLine>,
}

impl BatchReport {
    fn refuse(&mut self, line: usize, serial: &str, message: impl Into<String>) {
        self.failed.push(BatchLine {
            line,
            serial: serial.to_owned(),
            message: message.into(),
        });
    }

    /// Records `outcome` for the line; a failure of the vault itself (store, audit, keys)
    /// stops the batch instead, since the next token would fail the same way.
    fn record<T>(
        &mut self,
        line: usize,
        serial: &str,
        outcome: Result<T, LifecycleError>,
        done: impl FnOnce(T) -> String,
    ) -> Result<(), LifecycleError> {
        match outcome {
            Ok(value) => self.succeeded.push(BatchLine {
                line,
                serial: serial.to_owned(),
                message: done(value),
            }),
            Err(error) if is_vault_failure(&error) => return Err(error),
            Err(error) => self.refuse(line, serial, error.to_string()),
        }
        Ok(())
    }
}

fn is_vault_failure(error: &LifecycleError) -> bool {
    matches!(
        error,
        LifecycleError::Token(TokenError::Store(_) | TokenError::Audit(_) | TokenError::Vault(_))
    )
}

/// One data row of a batch file: its line number and cells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvRow {
    pub line: usize,
    pub cells: Vec<String>,
}

/// Reads a small CSV (comma, semicolon or tab separated; cells may be double-quoted without
/// embedded separators): blank lines and `#` comments are skipped, and a first row whose first
/// cell is `serial` is taken for a header. Serials and codes hold no separators, so this is
/// all a batch file needs.
pub fn read_csv(text: &str) -> Result<Vec<CsvRow>, LifecycleError> {
    let mut rows = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let trimmed = line.trim().trim_start_matches('\u{feff}');
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let cells: Vec<String> = trimmed
            .split([',', ';', '\t'])
            .map(|c| c.trim().trim_matches('"').trim().to_owned())
            .collect();
        if rows.is_empty() && cells[0].eq_ignore_ascii_case("serial") {
            continue;
        }
        rows.push(CsvRow {
            line: index + 1,
            cells,
        });
    }
    if rows.len() > MAX_BATCH {
        return Err(LifecycleError::Invalid(format!(
            "file: {} rows — a batch holds at most {MAX_BATCH}; split the file",
            rows.len()
        )));
    }
    Ok(rows)
}

/// Records the same shipment for every serial of `rows` (first column), each in its own
/// transaction; an unknown or settled serial is reported by line and the rest proceed.
pub async fn ship_batch(
    env: &Env<'_>,
    actor: &str,
    rows: &[CsvRow],
    request: &ShipmentRequest,
) -> Result<BatchReport, LifecycleError> {
    let mut report = BatchReport::default();
    for row in rows {
        let serial = row.cells.first().map(String::as_str).unwrap_or_default();
        if serial.is_empty() {
            report.refuse(row.line, serial, "serial: the first column is empty");
            continue;
        }
        let outcome = ship(env, actor, serial, request).await;
        report.record(row.line, serial, outcome, |_| "shipped".into())?;
    }
    Ok(report)
}

/// Verifies each `serial,code` row against its token, each in its own transaction.
pub async fn verify_batch(
    env: &Env<'_>,
    actor: &str,
    rows: &[CsvRow],
) -> Result<BatchReport, LifecycleError> {
    let mut report = BatchReport::default();
    for row in rows {
        let serial = row.cells.first().map(String::as_str).unwrap_or_default();
        let code = row.cells.get(1).map(String::as_str).unwrap_or_default();
        if serial.is_empty() || code.is_empty() {
            report.refuse(
                row.line,
                serial,
                "each row needs a serial and the code its token shows: serial,code",
            );
            continue;
        }
        let outcome = verify(env, actor, serial, Zeroizing::new(code.to_owned())).await;
        report.record(row.line, serial, outcome, |v| match v.drift_steps {
            0 => "verified".into(),
            d => format!("verified (drift {d} steps)"),
        })?;
    }
    Ok(report)
}

/// Cancels each serial (its seed destroyed), each in its own transaction.
pub async fn cancel_batch(
    env: &Env<'_>,
    actor: &str,
    serials: &[String],
    reason: &str,
) -> Result<BatchReport, LifecycleError> {
    CancelRequest::new(reason)?;
    let mut report = BatchReport::default();
    for (index, serial) in serials.iter().enumerate() {
        let outcome = lifecycle::cancel(env, actor, serial, CancelRequest::new(reason)?).await;
        report.record(index + 1, serial, outcome, |_| {
            "cancelled; its seed is destroyed".into()
        })?;
    }
    Ok(report)
}

/// A delivery slip: what goes into the parcel. Holds the one-time link, shown only on the
/// slip; no `Debug`.
pub struct Slip {
    pub serial: String,
    pub owner: String,
    /// The owner's name: of record (the directory), else as captured with the token.
    pub owner_name: Option<String>,
    /// What the token is for.
    pub purpose: String,
    pub digits: u32,
    pub carrier: Option<String>,
    pub tracking: Option<String>,
    pub expected: Option<String>,
    /// `<origin>/deliver/<TOKEN>`: what the QR code holds.
    pub url: Zeroizing<String>,
    pub link_expires_at: i64,
}

/// Makes a slip per serial: each gets a fresh one-time delivery link (voiding an earlier one;
/// `delivery_link.created` with `shown_on: slip`). A token without an owner, or no longer
/// escrowed, gets no slip and is reported; the others proceed.
pub async fn slips(
    env: &Env<'_>,
    actor: &str,
    serials: &[String],
    origin: &str,
) -> Result<(Vec<Slip>, BatchReport), LifecycleError> {
    let mut made = Vec::new();
    let mut report = BatchReport::default();
    for (index, serial) in serials.iter().enumerate() {
        let line = index + 1;
        let token = match super::get(env.store, serial).await {
            Ok(token) => token,
            Err(TokenError::NotFound(_)) => {
                report.refuse(
                    line,
                    serial,
                    TokenError::NotFound(serial.clone()).to_string(),
                );
                continue;
            }
            Err(other) => return Err(other.into()),
        };
        if token.owner.is_none() {
            report.refuse(
                line,
                serial,
                format!(
                    "owner: token '{serial}' has no owner, so a slip cannot say whose it is or let them confirm its arrival — assign it first (the token's page, or `seedvault token assign`)"
                ),
            );
            continue;
        }
        let created = delivery_link::create_for_slip(env, actor, serial, origin).await;
        let created = match created {
            Ok(created) => created,
            Err(error) if is_vault_failure(&error) => return Err(error),
            Err(error) => {
                report.refuse(line, serial, error.to_string());
                continue;
            }
        };
        let owner = token.owner.clone().unwrap_or_default();
        // The name of record first; else the name captured with the token.
        let owner_name = crate::directory::lookup(env.store, &owner)
            .await
            .map_err(TokenError::from)?
            .display_name
            .or_else(|| token.display_name.clone());
        report.succeeded.push(BatchLine {
            line,
            serial: serial.clone(),
            message: "slip made with a new delivery link".into(),
        });
        made.push(Slip {
            purpose: purpose(&token),
            serial: token.serial,
            owner,
            owner_name,
            digits: token.digits,
            carrier: token.carrier,
            tracking: token.tracking,
            expected: token.expected,
            url: created.url,
            link_expires_at: created.expires_at,
        });
    }
    Ok((made, report))
}

/// What the token is for, in the owner's words.
fn purpose(token: &Token) -> String {
    let device = [token.manufacturer.as_deref(), token.model.as_deref()]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ");
    let device = if device.is_empty() {
        String::new()
    } else {
        format!(" ({device})")
    };
    format!(
        "This parcel holds your hardware sign-in token{device} for your work account: it shows the one-time codes you sign in with."
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn today() -> Date {
        Date::from_calendar_date(2026, time::Month::November, 30).unwrap()
    }

    fn refusal(result: Result<ShipmentRequest, LifecycleError>) -> String {
        result
            .expect_err("the shipment should be refused")
            .to_string()
    }

    #[test]
    fn a_shipment_takes_optional_carrier_tracking_and_a_date_from_today_on() {
        let request =
            ShipmentRequest::new(Some(" DHL "), Some("JJD0001"), Some("2026-11-30"), today())
                .unwrap();
        assert_eq!(request.carrier.as_deref(), Some("DHL"));
        assert_eq!(request.expected_text().as_deref(), Some("2026-11-30"));
        assert_eq!(
            ShipmentRequest::new(Some(""), None, Some(" "), today()).unwrap(),
            ShipmentRequest::default()
        );
    }

    #[test]
    fn an_expected_date_in_the_past_or_not_a_date_names_the_field_and_the_format() {
        let err = refusal(ShipmentRequest::new(
            None,
            None,
            Some("2026-11-29"),
            today(),
        ));
        assert!(
            err.starts_with("expected: ") && err.contains("in the past"),
            "{err}"
        );
        for bad in ["30.11.2026", "2026-13-01", "tomorrow"] {
            let err = refusal(ShipmentRequest::new(None, None, Some(bad), today()));
            assert!(
                err.starts_with("expected: ") && err.contains("YYYY-MM-DD"),
                "{err}"
            );
        }
        let err = refusal(ShipmentRequest::new(
            Some(&"x".repeat(129)),
            None,
            None,
            today(),
        ));
        assert!(err.starts_with("carrier: "), "{err}");
        let err = refusal(ShipmentRequest::new(None, Some("a\nb"), None, today()));
        assert!(err.starts_with("tracking: "), "{err}");
    }

    #[test]
    fn a_batch_file_skips_its_header_blank_lines_and_comments_and_keeps_line_numbers() {
        let rows = read_csv("serial,code\n\nT-1, 123456\n# note\n\"T-2\";654321\n").unwrap();
        assert_eq!(
            rows,
            vec![
                CsvRow {
                    line: 3,
                    cells: vec!["T-1".into(), "123456".into()]
                },
                CsvRow {
                    line: 5,
                    cells: vec!["T-2".into(), "654321".into()]
                },
            ]
        );
        assert_eq!(read_csv("T-9\n").unwrap()[0].line, 1, "no header");
    }
}
