//! Exporting the trail as JSON Lines or CSV, filtered, with constant memory.
//!
//! An export is two steps: [`begin`] records the export in the trail (who, format, filters,
//! how many events, up to which seq) and fixes the snapshot — every event with
//! `seq <= through` that matches — before a byte leaves, so a failed audit write means no
//! export; then [`write`] streams exactly that snapshot, page by page, and ends it with a
//! signed [trailer](super::trailer) (filter, count, digest, head) so that a record cut out of
//! the file is noticed. The export's own event (at `through + 1`) is not part of it; the next
//! export carries it.
//!
//! Each event record carries every hashed field verbatim (`details` is the exact stored JSON
//! text, as a string) plus `prev_hash`, `hash` and `sig` in hex, so it verifies offline
//! (`seedvault audit verify --file`, or the script in docs/AUDIT.md).

use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;

use super::chain::{genesis_hash, ChainHead};
use super::trailer::{strict_hex, ExportDigest, Trailer, EVENT_TYPE, TRAILER_TYPE};
use super::{canonical_json, format_time, AuditError, NewEvent};
use crate::store::audit::{AuditFilter, AuditRowRef, AuditSource};
use crate::store::{Store, StoreError};
use crate::vault::Vault;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("unknown export format '{0}' — use jsonl or csv")]
    UnknownFormat(String),
    #[error("{field} = '{value}' is not a time — use RFC 3339 (2026-11-22T09:30:00Z), a UTC date and time (2026-11-22T09:30) or a date (2026-11-22, meaning midnight UTC)")]
    BadTime { field: &'static str, value: String },
    #[error("--since must be before --until")]
    EmptyRange,
    #[error("outcome = '{0}' is not an outcome — use success, denied or failure")]
    BadOutcome(String),
    #[error("cannot read the audit trail: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error("cannot write the export: {0}")]
    Write(#[from] std::io::Error),
}

/// The two export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// One JSON object per line.
    Jsonl,
    /// RFC 4180 CSV with a header row.
    Csv,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Jsonl => "jsonl",
            Self::Csv => "csv",
        }
    }

    /// The HTTP content type.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Jsonl => "application/x-ndjson",
            Self::Csv => "text/csv; charset=utf-8",
        }
    }
}

impl FromStr for Format {
    type Err = ExportError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim().to_ascii_lowercase().as_str() {
            "jsonl" | "ndjson" | "json-lines" => Ok(Self::Jsonl),
            "csv" => Ok(Self::Csv),
            _ => Err(ExportError::UnknownFormat(text.to_owned())),
        }
    }
}

/// Which events to export; every field is optional and they combine with AND.
#[derive(Debug, Clone, Default)]
pub struct ExportFilter {
    /// Events at or after this time.
    pub since: Option<OffsetDateTime>,
    /// Events before this time.
    pub until: Option<OffsetDateTime>,
    /// Exactly this actor (`operator:alice`, `cli:root`, `system`, …).
    pub actor: Option<String>,
    /// Events about this token serial (target `token:SERIAL`).
    pub token: Option<String>,
    /// Exactly this action (`reveal.granted`, …).
    pub action: Option<String>,
    /// Exactly this outcome (`success`, `denied`, `failure`).
    pub outcome: Option<String>,
}

/// Parses a filter time: RFC 3339 (any offset) or a plain date meaning midnight UTC.
pub fn parse_time(field: &'static str, text: &str) -> Result<OffsetDateTime, ExportError> {
    let text = text.trim();
    let bad = || ExportError::BadTime {
        field,
        value: text.to_owned(),
    };
    if let Ok(at) = OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339) {
        return Ok(at);
    }
    // A browser's date-and-time field sends `2026-11-22T09:30` (no offset): UTC here.
    for format in [
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]"),
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]"),
    ] {
        if let Ok(at) = time::PrimitiveDateTime::parse(text, format) {
            return Ok(at.assume_utc());
        }
    }
    let date = time::Date::parse(
        text,
        time::macros::format_description!("[year]-[month]-[day]"),
    )
    .map_err(|_| bad())?;
    Ok(date.midnight().assume_utc())
}

impl ExportFilter {
    /// The store's filter: times normalised to the stored format so they compare as text.
    pub fn to_store(&self) -> Result<AuditFilter, ExportError> {
        if let (Some(since), Some(until)) = (self.since, self.until) {
            if since >= until {
                return Err(ExportError::EmptyRange);
            }
        }
        if let Some(outcome) = &self.outcome {
            if super::Outcome::parse(outcome).is_none() {
                return Err(ExportError::BadOutcome(outcome.clone()));
            }
        }
        Ok(AuditFilter {
            actor: self.actor.clone(),
            target: self.token.as_ref().map(|serial| format!("token:{serial}")),
            action: self.action.clone(),
            since: self.since.map(format_time).transpose()?,
            until: self.until.map(format_time).transpose()?,
            outcome: self.outcome.clone(),
        })
    }

    /// The filters as recorded in the export's audit event and, as canonical JSON, in its
    /// trailer.
    fn describe(&self) -> Result<serde_json::Value, ExportError> {
        let store = self.to_store()?;
        let mut described = json!({
            "since": store.since,
            "until": store.until,
            "actor": store.actor,
            "token": self.token,
            "action": store.action,
        });
        // Only when set: exports without it keep the filter text of earlier versions.
        if let Some(outcome) = &store.outcome {
            described["outcome"] = json!(outcome);
        }
        Ok(described)
    }
}

/// An export fixed by [`begin`]: what [`write`] streams.
#[derive(Debug, Clone)]
pub struct ExportPlan {
    pub format: Format,
    pub filter: AuditFilter,
    /// The newest seq included (the head when the export began).
    pub through: i64,
    /// The head when the export began (seq `through`), stated in the trailer.
    pub head: ChainHead,
    /// The filter as canonical JSON, stated in the trailer.
    pub filter_text: String,
    /// How many events the export carries.
    pub count: u64,
    /// The seq of the event that records this export.
    pub recorded_as: i64,
}

/// Records the export in the trail and fixes what it contains. Nothing has left the vault
/// yet; if this fails, nothing will.
pub async fn begin(
    store: &Store,
    vault: &Vault,
    now: OffsetDateTime,
    actor: &str,
    format: Format,
    filter: &ExportFilter,
) -> Result<ExportPlan, ExportError> {
    let store_filter = filter.to_store()?;
    let described = filter.describe()?;
    let mut tx = store.begin_write().await?;
    let head = match crate::store::audit::head(&mut tx).await? {
        Some((seq, hash)) => ChainHead {
            seq,
            hash: hash.as_slice().try_into().map_err(|_| {
                AuditError::CorruptHead(format!("event {seq} has a malformed hash"))
            })?,
        },
        None => ChainHead {
            seq: 0,
            hash: genesis_hash(vault.id()),
        },
    };
    let through = head.seq;
    let count = crate::store::audit::count_matching(&mut tx, &store_filter, through).await?;
    let filter_text = canonical_json(&described);
    let event = NewEvent::new(actor, "audit.exported", "audit").details(json!({
        "format": format.as_str(),
        "filters": described,
        "through_seq": through,
        "count": count,
    }));
    let row = super::append(&mut tx, vault, now, event).await?;
    tx.commit().await?;
    Ok(ExportPlan {
        format,
        filter: store_filter,
        through,
        head,
        filter_text,
        count: u64::try_from(count).unwrap_or(0),
        recorded_as: row.seq,
    })
}

/// The CSV header row (with its line ending).
pub const CSV_HEADER: &str =
    "type,seq,time,actor,action,target,outcome,details,prev_hash,hash,sig\r\n";

/// One exported event, as it appears on a JSON line. The text fields are exactly the stored
/// (hashed) text. A reader refuses a record with any other key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExportRecord {
    /// Always `event` (the last record of an export is the trailer, `export-trailer`).
    #[serde(rename = "type")]
    pub kind: String,
    pub seq: i64,
    /// RFC 3339, UTC.
    pub time: String,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub outcome: String,
    /// The event's details: JSON text, exactly as stored and hashed.
    pub details: String,
    /// Hex.
    pub prev_hash: String,
    /// Hex SHA-256.
    pub hash: String,
    /// Hex Ed25519 signature over `seq || hash`.
    pub sig: String,
}

/// The binary fields of an [`ExportRecord`].
pub struct DecodedHashes {
    pub prev_hash: Vec<u8>,
    pub hash: Vec<u8>,
    pub sig: Vec<u8>,
}

impl ExportRecord {
    pub fn of(event: &AuditRowRef<'_>) -> Self {
        let hex = |b: &[u8]| data_encoding::HEXLOWER.encode(b);
        Self {
            kind: EVENT_TYPE.to_owned(),
            seq: event.seq,
            time: event.time.to_owned(),
            actor: event.actor.to_owned(),
            action: event.action.to_owned(),
            target: event.target.to_owned(),
            outcome: event.outcome.to_owned(),
            details: event.details.to_owned(),
            prev_hash: hex(event.prev_hash),
            hash: hex(event.hash),
            sig: hex(event.sig),
        }
    }

    /// Checks the record's form and decodes the hex fields (lower case only, exact lengths);
    /// the error names the field.
    pub fn decode(&self) -> Result<DecodedHashes, String> {
        if self.kind != EVENT_TYPE {
            return Err(format!("type is '{}', not '{EVENT_TYPE}'", self.kind));
        }
        if self.seq < 1 {
            return Err(format!("seq {} is not a position in the chain", self.seq));
        }
        Ok(DecodedHashes {
            prev_hash: strict_hex("prev_hash", &self.prev_hash, 32)?,
            hash: strict_hex("hash", &self.hash, 32)?,
            sig: strict_hex("sig", &self.sig, 64)?,
        })
    }
}

/// Appends `text` as a JSON string (RFC 8259 §7). Quotes and backslashes are escaped by
/// copying the runs between them; text with control characters (never in practice) goes
/// through serde_json's escaping.
fn json_string(text: &str, out: &mut Vec<u8>) {
    let bytes = text.as_bytes();
    // A fold without early exit, so the compiler vectorises the scan.
    if bytes.iter().fold(false, |control, &b| control | (b < 0x20)) {
        // Writing into a Vec cannot fail; escaping a &str cannot fail either.
        let _ = serde_json::to_writer(&mut *out, text);
        return;
    }
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut rest = bytes;
    while let Some(at) = memchr::memchr2(b'"', b'\\', rest) {
        out.extend_from_slice(&rest[..at]);
        out.push(b'\\');
        out.push(rest[at]);
        rest = &rest[at + 1..];
    }
    out.extend_from_slice(rest);
    out.push(b'"');
}

/// Appends `bytes` as lower-case hex.
fn hex(bytes: &[u8], out: &mut Vec<u8>) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut buffer = [0u8; 128];
    for chunk in bytes.chunks(64) {
        for (i, byte) in chunk.iter().enumerate() {
            buffer[2 * i] = DIGITS[usize::from(byte >> 4)];
            buffer[2 * i + 1] = DIGITS[usize::from(byte & 0x0f)];
        }
        out.extend_from_slice(&buffer[..2 * chunk.len()]);
    }
}

/// Appends one event as a JSON line (with `\n`): the fields of [`ExportRecord`], in its
/// order. Written by hand rather than through serde because a million-event export spends
/// most of its time here; `a_jsonl_line_round_trips_to_the_same_record` holds it to serde's
/// reading of the same line.
pub fn write_jsonl(event: &AuditRowRef<'_>, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"type\":\"event\",\"seq\":");
    out.extend_from_slice(event.seq.to_string().as_bytes());
    for (name, text) in [
        (&b",\"time\":"[..], event.time),
        (b",\"actor\":", event.actor),
        (b",\"action\":", event.action),
        (b",\"target\":", event.target),
        (b",\"outcome\":", event.outcome),
        (b",\"details\":", event.details),
    ] {
        out.extend_from_slice(name);
        json_string(text, out);
    }
    for (name, bytes) in [
        (&b",\"prev_hash\":\""[..], event.prev_hash),
        (b"\",\"hash\":\"", event.hash),
        (b"\",\"sig\":\"", event.sig),
    ] {
        out.extend_from_slice(name);
        hex(bytes, out);
    }
    out.extend_from_slice(b"\"}\n");
}

/// Appends one CSV field, quoted when it holds a comma, quote, CR or LF (RFC 4180 §2.6).
/// The text is never altered otherwise (no formula-escaping prefix): it is the hashed text.
fn csv_field(text: &str, out: &mut Vec<u8>) {
    let needs_quotes = text
        .bytes()
        .any(|b| matches!(b, b',' | b'"' | b'\r' | b'\n'));
    if !needs_quotes {
        out.extend_from_slice(text.as_bytes());
        return;
    }
    out.push(b'"');
    for part in text.split_inclusive('"') {
        out.extend_from_slice(part.as_bytes());
        if part.ends_with('"') {
            out.push(b'"');
        }
    }
    out.push(b'"');
}

/// Appends one event as a CSV row (with `\r\n`, RFC 4180).
pub fn write_csv(event: &AuditRowRef<'_>, out: &mut Vec<u8>) {
    out.extend_from_slice(b"event,");
    out.extend_from_slice(event.seq.to_string().as_bytes());
    for field in [
        event.time,
        event.actor,
        event.action,
        event.target,
        event.outcome,
        event.details,
    ] {
        out.push(b',');
        csv_field(field, out);
    }
    for bytes in [event.prev_hash, event.hash, event.sig] {
        out.push(b',');
        hex(bytes, out);
    }
    out.extend_from_slice(b"\r\n");
}

/// Bytes buffered before each hand-over to the sink.
const CHUNK: usize = 64 * 1024;

/// Appends the trailer record: a JSON line, or a CSV row whose `type` column says
/// `export-trailer` and whose `details` column holds the same JSON object (every other column
/// empty).
pub fn write_trailer(format: Format, trailer: &Trailer, sig: &[u8; 64], out: &mut Vec<u8>) {
    // Serialising a struct of strings and integers into a Vec cannot fail.
    let json = serde_json::to_string(&trailer.to_record(sig)).unwrap_or_default();
    match format {
        Format::Jsonl => {
            out.extend_from_slice(json.as_bytes());
            out.push(b'\n');
        }
        Format::Csv => {
            out.extend_from_slice(TRAILER_TYPE.as_bytes());
            out.extend_from_slice(b",,,,,,,");
            csv_field(&json, out);
            out.extend_from_slice(b",,,\r\n");
        }
    }
}

/// Streams `plan`'s events from the trail `source` ([`crate::store::Store::audit_source`]) to `sink` in chunks of about
/// 64 KiB (handed over, not copied), then the trailer signed with `vault`'s audit key, calling
/// `progress` with the number of events written so far after each chunk. Blocking; memory
/// stays constant whatever the size of the trail. A sink error (a closed pipe, a client gone)
/// stops the export, and a stopped export has no trailer, so it fails verification.
pub fn write(
    source: &AuditSource,
    plan: &ExportPlan,
    vault: &Vault,
    mut sink: impl FnMut(Vec<u8>) -> std::io::Result<()>,
    mut progress: impl FnMut(u64),
) -> Result<u64, ExportError> {
    let reader = source.reader()?;
    let fresh = || Vec::with_capacity(CHUNK + 4096);
    let mut buffer = fresh();
    if plan.format == Format::Csv {
        buffer.extend_from_slice(CSV_HEADER.as_bytes());
    }
    let mut digest = ExportDigest::default();
    let mut failure: Option<std::io::Error> = None;
    reader.scan(&plan.filter, 1, plan.through, |event| {
        match plan.format {
            Format::Jsonl => write_jsonl(event, &mut buffer),
            Format::Csv => write_csv(event, &mut buffer),
        }
        digest.push(event.seq, event.hash);
        if buffer.len() >= CHUNK {
            if let Err(e) = sink(std::mem::replace(&mut buffer, fresh())) {
                failure = Some(e);
                return false;
            }
            progress(digest.count);
        }
        true
    })?;
    if let Some(e) = failure {
        return Err(e.into());
    }
    let written = digest.count;
    let trailer = Trailer {
        vault_id: vault.id().to_owned(),
        filter: plan.filter_text.clone(),
        first_seq: digest.first_seq,
        last_seq: digest.last_seq,
        count: written,
        head: plan.head.clone(),
        digest: digest.finish(),
    };
    let sig = vault.sign_audit(&trailer.canonical_bytes());
    write_trailer(plan.format, &trailer, &sig, &mut buffer);
    sink(buffer)?;
    progress(written);
    Ok(written)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_only_when_rfc_4180_needs_it() {
        for (text, expected) in [
            ("plain", "plain"),
            ("a,b", "\"a,b\""),
            ("say \"hi\"", "\"say \"\"hi\"\"\""),
            ("two\nlines", "\"two\nlines\""),
            ("=1+1", "=1+1"),
            ("", ""),
        ] {
            let mut out = Vec::new();
            csv_field(text, &mut out);
            assert_eq!(String::from_utf8(out).unwrap(), expected, "{text}");
        }
    }

    #[test]
    fn filter_times_accept_rfc_3339_or_a_date_and_normalise_to_the_stored_form() {
        let filter = ExportFilter {
            since: Some(parse_time("--since", "2026-11-22").unwrap()),
            until: Some(parse_time("--until", "2026-11-23T01:30:00+01:00").unwrap()),
            token: Some("T-1".into()),
            ..Default::default()
        };
        let store = filter.to_store().unwrap();
        assert_eq!(store.since.as_deref(), Some("2026-11-22T00:00:00.000Z"));
        assert_eq!(store.until.as_deref(), Some("2026-11-23T00:30:00.000Z"));
        assert_eq!(store.target.as_deref(), Some("token:T-1"));
        let err = parse_time("--since", "yesterday").unwrap_err().to_string();
        assert!(err.contains("RFC 3339"), "{err}");
        let backwards = ExportFilter {
            since: filter.until,
            until: filter.since,
            ..Default::default()
        };
        assert!(matches!(backwards.to_store(), Err(ExportError::EmptyRange)));
        assert!(matches!(
            "xml".parse::<Format>(),
            Err(ExportError::UnknownFormat(_))
        ));
    }

    #[test]
    fn a_jsonl_line_round_trips_to_the_same_record() {
        let event = AuditRowRef {
            seq: 7,
            time: "2026-11-22T00:00:00.000Z",
            actor: "operator:a\"b",
            action: "x.y",
            target: "token:T,1\t\u{7f}",
            outcome: "success",
            details: r#"{"a":"é\n","b\\":"\"q\""}"#,
            prev_hash: &[1; 32],
            hash: &[2; 32],
            sig: &[3; 64],
        };
        let mut out = Vec::new();
        write_jsonl(&event, &mut out);
        let parsed: ExportRecord = serde_json::from_slice(&out).unwrap();
        assert_eq!(parsed, ExportRecord::of(&event));
        assert_eq!(parsed.details, event.details);
        assert!(out.ends_with(b"\n"));
    }

    #[test]
    fn json_strings_escape_exactly_what_json_needs() {
        for text in [
            "",
            "plain",
            "a\"b",
            "back\\slash",
            "\"\"",
            "end\\",
            "ctl\u{1}x",
            "tab\t",
            "é€😀",
        ] {
            let mut out = Vec::new();
            json_string(text, &mut out);
            let back: String = serde_json::from_slice(&out).unwrap();
            assert_eq!(back, text);
        }
        let mut out = Vec::new();
        hex(&[0, 0xab, 0xff], &mut out);
        assert_eq!(out, b"00abff");
        let mut long = Vec::new();
        hex(&[0x5a; 100], &mut long);
        assert_eq!(long, "5a".repeat(100).as_bytes());
    }
}
