//! Verifying an export file, JSON Lines or CSV (docs/AUDIT.md §5): every record's form, hash,
//! link and signature, then the signed trailer that proves nothing the export selected was
//! removed. Names the first record that breaks by line (and seq, when it has one).
//!
//! The trailer is the last record, but whether the export is complete (and so must run from
//! seq 1 without gaps) is only known once it is read. So the walk notes the first place where
//! the file stops looking complete, goes on, and decides at the end: a gap is a break only in
//! an export whose trailer says it selected everything.

use std::io::BufRead;

use ed25519_dalek::VerifyingKey;
use serde::Deserialize;

use super::chain::{check_event, genesis_hash, signature_valid_for, ChainHead, BAD_SIGNATURE};
use super::export::{ExportRecord, CSV_HEADER};
use super::handover::{HandOver, KeySchedule};
use super::trailer::{ExportDigest, Trailer, TrailerRecord, EVENT_TYPE, TRAILER_TYPE};
use super::verify::{AnchoredHead, VerifyError};
use crate::store::audit::AuditRowRef;

/// What to hold an export to, beyond its own trailer.
#[derive(Debug, Clone, Default)]
pub struct ExportOptions {
    /// The vault the export must come from (its trailer names one; this must match).
    pub vault_id: Option<String>,
    /// A head anchored earlier (`seedvault audit head`, or an older export's trailer): the
    /// export must reach it, and hold it unchanged where it holds that event.
    pub expect_head: Option<AnchoredHead>,
}

/// The first place an export fails: a line of the file and, when the record has one, a seq
/// (for a removed record, the seq that is missing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportBreak {
    pub line: u64,
    pub seq: Option<i64>,
    pub reason: String,
}

impl std::fmt::Display for ExportBreak {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.seq {
            Some(seq) => write!(f, "line {} (seq {seq}): {}", self.line, self.reason),
            None => write!(f, "line {}: {}", self.line, self.reason),
        }
    }
}

/// The outcome of verifying an export file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportVerification {
    /// Events verified: all of them when sound, those before the first break otherwise.
    pub events: u64,
    /// The verified trailer (`None` when the export is broken).
    pub trailer: Option<Trailer>,
    /// Whether the trailer's filter selects everything: the export runs from the genesis to
    /// the head at export time.
    pub complete: bool,
    pub broken: Option<ExportBreak>,
}

impl ExportVerification {
    pub fn ok(&self) -> bool {
        self.broken.is_none()
    }

    fn broken(events: u64, at: Found) -> Self {
        Self {
            events: events.min(at.before),
            trailer: None,
            complete: false,
            broken: Some(ExportBreak {
                line: at.line,
                seq: at.seq,
                reason: at.reason,
            }),
        }
    }
}

/// A break found, with the number of events verified before it.
#[derive(Debug)]
struct Found {
    line: u64,
    seq: Option<i64>,
    reason: String,
    before: u64,
}

fn found(line: u64, seq: Option<i64>, reason: impl Into<String>, before: u64) -> Found {
    Found {
        line,
        seq,
        reason: reason.into(),
        before,
    }
}

enum Parsed {
    Event(ExportRecord),
    Trailer(TrailerRecord),
}

/// A record and the line it starts on, or why that line is not a record.
type NumberedRecord = (u64, Result<Parsed, String>);

#[derive(Clone, Copy, PartialEq, Eq)]
enum FileFormat {
    Jsonl,
    Csv,
}

/// Reads records one by one (constant memory), numbering the lines of the file.
struct Records<R> {
    input: R,
    format: FileFormat,
    /// Lines consumed so far.
    line: u64,
    /// The current record's bytes (checked for UTF-8 per record, so that bad bytes are a
    /// break at their line rather than a read error).
    bytes: Vec<u8>,
}

const CSV_COLUMNS: usize = 11;

impl<R: BufRead> Records<R> {
    /// Detects the format (a JSON object on the first line, or the CSV header) and consumes
    /// the CSV header.
    fn open(mut input: R) -> Result<Result<Self, Found>, VerifyError> {
        let first = input.fill_buf()?;
        if first.is_empty() {
            return Ok(Err(found(
                1,
                None,
                "the file is empty: an export always ends with its signed trailer",
                0,
            )));
        }
        let format = if first[0] == b'{' {
            FileFormat::Jsonl
        } else {
            FileFormat::Csv
        };
        let mut records = Self {
            input,
            format,
            line: 0,
            bytes: Vec::new(),
        };
        if format == FileFormat::Csv {
            records.input.read_until(b'\n', &mut records.bytes)?;
            records.line = 1;
            let header = records.bytes.strip_suffix(b"\n").unwrap_or(&records.bytes);
            let header = header.strip_suffix(b"\r").unwrap_or(header);
            if header != CSV_HEADER.trim_end().as_bytes() {
                return Ok(Err(found(
                    1,
                    None,
                    format!(
                        "neither JSON Lines nor a seedvault CSV export (whose header is {})",
                        CSV_HEADER.trim_end()
                    ),
                    0,
                )));
            }
        }
        Ok(Ok(records))
    }

    /// The next record and the line it starts on; blank lines are skipped.
    fn next(&mut self) -> Result<Option<NumberedRecord>, VerifyError> {
        loop {
            self.bytes.clear();
            if self.input.read_until(b'\n', &mut self.bytes)? == 0 {
                return Ok(None);
            }
            self.line += 1;
            let start = self.line;
            if self.bytes.trim_ascii().is_empty() {
                continue;
            }
            if self.format == FileFormat::Csv {
                // A quoted field may hold line breaks: read on until the quotes balance.
                while self.bytes.iter().filter(|&&b| b == b'"').count() % 2 == 1 {
                    if self.input.read_until(b'\n', &mut self.bytes)? == 0 {
                        break;
                    }
                    self.line += 1;
                }
            }
            let Ok(text) = std::str::from_utf8(&self.bytes) else {
                return Ok(Some((start, Err("it is not UTF-8 text".into()))));
            };
            let text = text.trim_end_matches(['\r', '\n']);
            let parsed = match self.format {
                FileFormat::Jsonl => parse_json(text),
                FileFormat::Csv => split_csv(text).and_then(parse_csv_row),
            };
            return Ok(Some((start, parsed)));
        }
    }
}

fn parse_json(line: &str) -> Result<Parsed, String> {
    #[derive(Deserialize)]
    struct Kind {
        #[serde(rename = "type")]
        kind: Option<String>,
    }
    let kind: Kind = serde_json::from_str(line).map_err(|e| format!("not a JSON object: {e}"))?;
    match kind.kind.as_deref() {
        Some(EVENT_TYPE) => serde_json::from_str(line)
            .map(Parsed::Event)
            .map_err(|e| e.to_string()),
        Some(TRAILER_TYPE) => serde_json::from_str(line)
            .map(Parsed::Trailer)
            .map_err(|e| format!("a malformed trailer: {e}")),
        Some(other) => Err(format!("unknown record type '{other}'")),
        None => Err("it has no \"type\"".into()),
    }
}

/// Splits one RFC 4180 record (without its line ending) into fields.
fn split_csv(record: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::with_capacity(CSV_COLUMNS);
    let mut rest = record;
    loop {
        if let Some(quoted) = rest.strip_prefix('"') {
            let mut field = String::new();
            let mut tail = quoted;
            loop {
                let at = tail.find('"').ok_or("a quoted field is not closed")?;
                field.push_str(&tail[..at]);
                tail = &tail[at + 1..];
                match tail.strip_prefix('"') {
                    Some(after) => {
                        field.push('"');
                        tail = after;
                    }
                    None => break,
                }
            }
            fields.push(field);
            match tail.strip_prefix(',') {
                Some(after) => rest = after,
                None if tail.is_empty() => return Ok(fields),
                None => return Err("text after a closing quote".into()),
            }
        } else {
            let end = rest.find(',').unwrap_or(rest.len());
            let field = &rest[..end];
            if field.contains(['"', '\r', '\n']) {
                return Err("a quote or line break in an unquoted field".into());
            }
            fields.push(field.to_owned());
            if end == rest.len() {
                return Ok(fields);
            }
            rest = &rest[end + 1..];
        }
    }
}

fn parse_csv_row(mut fields: Vec<String>) -> Result<Parsed, String> {
    if fields.len() != CSV_COLUMNS {
        return Err(format!(
            "{} columns, not the header's {CSV_COLUMNS}",
            fields.len()
        ));
    }
    let take = |fields: &mut Vec<String>, i: usize| std::mem::take(&mut fields[i]);
    match fields[0].as_str() {
        EVENT_TYPE => {
            let seq = &fields[1];
            if seq.is_empty() || !seq.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("seq '{seq}' is not a number"));
            }
            let seq = seq.parse().map_err(|_| "seq is out of range")?;
            Ok(Parsed::Event(ExportRecord {
                kind: take(&mut fields, 0),
                seq,
                time: take(&mut fields, 2),
                actor: take(&mut fields, 3),
                action: take(&mut fields, 4),
                target: take(&mut fields, 5),
                outcome: take(&mut fields, 6),
                details: take(&mut fields, 7),
                prev_hash: take(&mut fields, 8),
                hash: take(&mut fields, 9),
                sig: take(&mut fields, 10),
            }))
        }
        TRAILER_TYPE => {
            if fields
                .iter()
                .enumerate()
                .any(|(i, f)| i != 0 && i != 7 && !f.is_empty())
            {
                return Err("a trailer row has text outside its type and details columns".into());
            }
            serde_json::from_str(&fields[7])
                .map(Parsed::Trailer)
                .map_err(|e| format!("a malformed trailer: {e}"))
        }
        other => Err(format!("unknown record type '{other}'")),
    }
}

/// Signatures are checked in batches spread over the cores.
const SIGNATURE_BATCH: usize = 4_096;

/// An event waiting for its signature check: seq, hash, signature, line.
type Signed = (i64, [u8; 32], Vec<u8>, u64);

/// The index of the first event in `batch` whose signature fails, checking on every core.
fn first_bad_signature(keys: &KeySchedule, batch: &[Signed]) -> Option<usize> {
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let chunk = batch.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = batch
            .chunks(chunk)
            .enumerate()
            .map(|(n, part)| {
                scope.spawn(move || {
                    part.iter()
                        .position(|(seq, hash, sig, _)| {
                            !signature_valid_for(keys.key_for(*seq), *seq, hash, sig)
                        })
                        .map(|i| n * chunk + i)
                })
            })
            .collect();
        handles
            .into_iter()
            .filter_map(|h| h.join().ok().flatten())
            .min()
    })
}

/// The walk over the event records, in file order.
struct Walk<'k> {
    keys: &'k KeySchedule,
    known_genesis: Option<[u8; 32]>,
    anchor: Option<AnchoredHead>,
    digest: ExportDigest,
    last: Option<ChainHead>,
    /// Line of the first event, and its prev_hash when its seq is 1 (checked against the
    /// trailer's vault once that is read).
    first: Option<(u64, Option<[u8; 32]>)>,
    /// The first place the file stops looking like a complete export.
    gap: Option<Found>,
    batch: Vec<Signed>,
    signed_before_batch: u64,
}

impl Walk<'_> {
    fn push(&mut self, line: u64, record: &ExportRecord) -> Result<(), Found> {
        let before = self.digest.count;
        let decoded = record
            .decode()
            .map_err(|why| found(line, None, format!("not an audit record: {why}"), before))?;
        let event = AuditRowRef {
            seq: record.seq,
            time: &record.time,
            actor: &record.actor,
            action: &record.action,
            target: &record.target,
            outcome: &record.outcome,
            details: &record.details,
            prev_hash: &decoded.prev_hash,
            hash: &decoded.hash,
            sig: &decoded.sig,
        };
        if let Some(last) = self.last.as_ref().filter(|last| event.seq <= last.seq) {
            return Err(found(
                line,
                Some(event.seq),
                format!(
                    "event {} comes after event {} (records reordered or duplicated)",
                    event.seq, last.seq
                ),
                before,
            ));
        }
        let expected_next = self.last.as_ref().map_or(1, |last| last.seq + 1);
        if event.seq != expected_next && self.gap.is_none() {
            let reason = if expected_next + 1 == event.seq {
                format!(
                    "event {expected_next} is missing (the next record is {})",
                    event.seq
                )
            } else {
                format!(
                    "events {expected_next}..={} are missing (the next record is {})",
                    event.seq - 1,
                    event.seq
                )
            };
            self.gap = Some(found(line, Some(expected_next), reason, before));
        }
        let expected_prev: Option<&[u8]> = match &self.last {
            Some(last) if last.seq + 1 == event.seq => Some(&last.hash),
            None if event.seq == 1 => self.known_genesis.as_ref().map(|g| g.as_slice()),
            _ => None,
        };
        let hash = check_event(&event, event.seq, expected_prev).map_err(|b| {
            let reason = if b.reason.starts_with("prev_hash") && event.seq == 1 {
                "prev_hash is not this vault's genesis (an export of another vault?)".into()
            } else {
                b.reason
            };
            found(line, Some(b.seq), reason, before)
        })?;
        if self.first.is_none() {
            let genesis_to_check = (event.seq == 1)
                .then(|| decoded.prev_hash.as_slice().try_into().ok())
                .flatten();
            self.first = Some((line, genesis_to_check));
        }
        if let Some(anchor) = self.anchor.filter(|a| a.seq == event.seq) {
            if anchor.hash != hash {
                return Err(found(
                    line,
                    Some(event.seq),
                    "hash differs from the anchored head: the trail was rewritten at or before this event",
                    before,
                ));
            }
        }
        self.digest.push(event.seq, &hash);
        self.last = Some(ChainHead {
            seq: event.seq,
            hash,
        });
        self.batch.push((event.seq, hash, decoded.sig, line));
        if self.batch.len() == SIGNATURE_BATCH {
            self.check_signatures()?;
        }
        Ok(())
    }

    /// Checks the waiting signatures; the first bad one is the break.
    fn check_signatures(&mut self) -> Result<(), Found> {
        let bad = first_bad_signature(self.keys, &self.batch).map(|i| {
            let (seq, _, _, line) = self.batch[i];
            found(
                line,
                Some(seq),
                BAD_SIGNATURE,
                self.signed_before_batch + i as u64,
            )
        });
        self.signed_before_batch += self.batch.len() as u64;
        self.batch.clear();
        bad.map_or(Ok(()), Err)
    }
}

/// The keys an export is signed with: a first read of the file collects its signing key
/// hand-overs (proofs checked) and anchors them at `trusted`; [`verify_export`] then reads it
/// again and checks every signature against the key in force at its seq. A filtered export
/// that leaves the hand-overs out cannot be followed across them.
pub fn export_schedule(
    input: impl BufRead,
    trusted: &VerifyingKey,
) -> Result<Result<KeySchedule, ExportBreak>, VerifyError> {
    let mut records = match Records::open(input)? {
        Ok(records) => records,
        Err(_) => return Ok(Ok(KeySchedule::single(*trusted))),
    };
    let mut handovers = Vec::new();
    let mut lines = Vec::new();
    let mut init_details = None;
    while let Some((line, parsed)) = records.next()? {
        let Ok(Parsed::Event(record)) = parsed else {
            continue;
        };
        let Ok(decoded) = record.decode() else {
            continue;
        };
        if record.seq == 1 && record.action == "vault.init" {
            init_details = Some(record.details.clone());
        }
        if let Some(handover) = HandOver::from_event(
            record.seq,
            &record.action,
            &record.details,
            &decoded.prev_hash,
        ) {
            match handover {
                Ok(handover) => {
                    handovers.push(handover);
                    lines.push(line);
                }
                Err(broken) => {
                    return Ok(Err(ExportBreak {
                        line,
                        seq: Some(broken.seq),
                        reason: broken.reason,
                    }))
                }
            }
        }
    }
    let at = |seq: i64, reason: String| {
        let line = handovers
            .iter()
            .zip(&lines)
            .find(|(h, _)| h.seq == seq)
            .map_or(0, |(_, line)| *line);
        ExportBreak {
            line,
            seq: Some(seq),
            reason,
        }
    };
    let schedule = match KeySchedule::build(trusted, &handovers) {
        Ok(schedule) => schedule,
        Err(broken) => return Ok(Err(at(broken.seq, broken.reason))),
    };
    if let (Some(first), Some(details)) = (handovers.first(), init_details) {
        if let Err(reason) = schedule.check_genesis_key(&details) {
            return Ok(Err(at(first.seq, reason)));
        }
    }
    Ok(Ok(schedule))
}

/// Verifies an export (JSON Lines or CSV, told apart by the first byte) read line by line
/// with constant memory: every record's form, hash and signature, the links between records
/// with consecutive seqs, and the signed trailer — the count and digest over the events, the
/// first and last seq and, for a complete export, every event from the genesis to the head at
/// export time. Reports the first break in file order.
pub fn verify_export(
    input: impl BufRead,
    keys: &KeySchedule,
    options: &ExportOptions,
) -> Result<ExportVerification, VerifyError> {
    let mut records = match Records::open(input)? {
        Ok(records) => records,
        Err(at) => return Ok(ExportVerification::broken(0, at)),
    };
    let mut walk = Walk {
        keys,
        known_genesis: options.vault_id.as_deref().map(genesis_hash),
        anchor: options.expect_head,
        digest: ExportDigest::default(),
        last: None,
        first: None,
        gap: None,
        batch: Vec::with_capacity(SIGNATURE_BATCH),
        signed_before_batch: 0,
    };
    let mut stop: Option<Found> = None;
    let mut trailer: Option<(u64, TrailerRecord)> = None;
    while let Some((line, parsed)) = records.next()? {
        if let Some((at, _)) = &trailer {
            let reason =
                format!("a record after the trailer (line {at}): the trailer must come last");
            stop = Some(found(line, None, reason, walk.digest.count));
            break;
        }
        match parsed {
            Err(why) => {
                let reason = format!("not an audit record: {why}");
                stop = Some(found(line, None, reason, walk.digest.count));
                break;
            }
            Ok(Parsed::Trailer(record)) => trailer = Some((line, record)),
            Ok(Parsed::Event(record)) => {
                if let Err(at) = walk.push(line, &record) {
                    stop = Some(at);
                    break;
                }
            }
        }
    }
    // Signatures still waiting belong to records before any break found so far.
    if let Err(bad) = walk.check_signatures() {
        stop = Some(bad);
    }
    if stop.is_some() {
        // The trailer decides whether an earlier gap is a break too: skim to the last record.
        let mut last = None;
        while let Some((line, parsed)) = records.next()? {
            last = Some((line, parsed));
        }
        trailer = match last {
            Some((line, Ok(Parsed::Trailer(record)))) => Some((line, record)),
            _ => None,
        };
    }
    let end = records.line + 1;
    let events = walk.digest.count;

    // The trailer: present, well-formed, signed, of the expected vault.
    let checked = match trailer {
        None => Err(found(
            end,
            None,
            if walk.last.is_none() && stop.is_none() {
                "no records and no trailer: an export always ends with its signed trailer"
            } else {
                "no trailer: the export does not end with its signed trailer (cut short, or the trailer removed)"
            },
            events,
        )),
        Some((line, record)) => match record.decode() {
            Err(why) => Err(found(line, None, format!("a malformed trailer: {why}"), events)),
            Ok((trailer, sig)) if !trailer.signature_valid(&keys.newest(), &sig) => Err(found(
                line,
                None,
                "the trailer's signature is not valid for this key (the trailer was altered or forged)",
                events,
            )),
            Ok((trailer, _)) => match &options.vault_id {
                Some(id) if *id != trailer.vault_id => Err(found(
                    line,
                    None,
                    format!("the export is of vault {}, not {id}", trailer.vault_id),
                    events,
                )),
                _ => Ok((line, trailer)),
            },
        },
    };
    let (trailer_line, trailer) = match checked {
        Err(at) => {
            let first = match stop {
                Some(stop) if stop.line <= at.line => stop,
                _ => at,
            };
            return Ok(ExportVerification::broken(events, first));
        }
        Ok(checked) => checked,
    };
    let complete = trailer.selects_everything().unwrap_or(false);

    // Breaks at a record: the walk's own, the link of seq 1 to the trailer's vault, a gap in
    // a complete export, and a first record other than the trailer's.
    let mut at_records: Vec<Found> = stop.into_iter().collect();
    if let Some((line, Some(prev_hash))) = walk.first {
        if prev_hash != genesis_hash(&trailer.vault_id) {
            at_records.push(found(
                line,
                Some(1),
                format!("prev_hash is not the genesis of vault {}", trailer.vault_id),
                0,
            ));
        }
    }
    if complete {
        at_records.extend(walk.gap.take());
    }
    if let (Some((line, _)), true) = (walk.first, trailer.count > 0) {
        let first_seq = walk.digest.first_seq;
        if first_seq > trailer.first_seq {
            let reason = format!(
                "event {} is missing: the trailer says the export starts there",
                trailer.first_seq
            );
            at_records.push(found(line, Some(trailer.first_seq), reason, 0));
        } else if first_seq < trailer.first_seq {
            let reason = format!(
                "the trailer says the export starts at seq {}: this record was added",
                trailer.first_seq
            );
            at_records.push(found(line, Some(first_seq), reason, 0));
        }
    }
    if let Some(first) = at_records.into_iter().min_by_key(|f| f.line) {
        return Ok(ExportVerification::broken(events, first));
    }

    // Breaks at the trailer: what it states against what the file holds.
    let at_trailer = |seq: Option<i64>, reason: String| {
        Ok(ExportVerification::broken(
            events,
            found(trailer_line, seq, reason, events),
        ))
    };
    let last = walk.last.clone();
    let last_seq = last.as_ref().map_or(0, |l| l.seq);
    if trailer.count > 0 && last_seq < trailer.last_seq {
        let missing = if complete {
            last_seq + 1
        } else {
            trailer.last_seq
        };
        return at_trailer(
            Some(missing),
            format!(
                "the trailer says the export ends at seq {}, the last record is {last_seq}: the end was cut off",
                trailer.last_seq
            ),
        );
    }
    if last_seq > trailer.last_seq {
        return at_trailer(
            Some(last_seq),
            format!(
                "the trailer says the export ends at seq {}: records after it were added",
                trailer.last_seq
            ),
        );
    }
    if events != trailer.count {
        return at_trailer(
            None,
            format!(
                "the trailer counts {} events, the file holds {events}: a record was removed or added",
                trailer.count
            ),
        );
    }
    if walk.digest.finish() != trailer.digest {
        return at_trailer(
            None,
            "the digest over the events' hashes differs from the trailer's: a record was removed, added or replaced".into(),
        );
    }
    let head = &trailer.head;
    let ends_at_head = last.as_ref().is_some_and(|l| l.seq == head.seq);
    if last_seq > head.seq || (ends_at_head && last.as_ref().is_some_and(|l| l.hash != head.hash)) {
        return at_trailer(
            Some(last_seq),
            "the last record does not match the head the trailer states".into(),
        );
    }
    if complete && !ends_at_head {
        return at_trailer(
            Some(last_seq + 1),
            format!(
                "a complete export must end at the head at export time, {}",
                head.seq
            ),
        );
    }
    if let Some(anchor) = options.expect_head {
        if anchor.seq > head.seq {
            return at_trailer(
                Some(head.seq + 1),
                format!(
                    "the export reaches event {}, but the anchored head is event {}: it is older than the anchor, or cut short before it",
                    head.seq, anchor.seq
                ),
            );
        }
        if anchor.seq == head.seq && anchor.hash != head.hash {
            return at_trailer(
                Some(head.seq),
                "the head at export time differs from the anchored head: the trail was rewritten at or before it".into(),
            );
        }
    }
    Ok(ExportVerification {
        events,
        trailer: Some(trailer),
        complete,
        broken: None,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::audit::chain::{signed_message, EventFields};
    use crate::audit::export::{write_csv, write_jsonl, write_trailer, Format};
    use crate::store::audit::AuditRow;
    use ed25519_dalek::{Signer, SigningKey};

    const VAULT: &str = "6f1c2d3e-0000-4000-8000-000000000001";
    const EVERYTHING: &str =
        r#"{"action":null,"actor":null,"since":null,"token":null,"until":null}"#;

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[7u8; 32])
    }

    /// A signed chain of `n` events, as the vault appends them.
    fn chain(n: i64) -> Vec<AuditRow> {
        let key = key();
        let mut prev = genesis_hash(VAULT).to_vec();
        (1..=n)
            .map(|seq| {
                let mut row = AuditRow {
                    seq,
                    time: "2026-11-22T09:30:00.000Z".into(),
                    actor: match seq {
                        // A line break inside a quoted CSV field: the record spans two lines.
                        2 => "import:two\nlines",
                        _ if seq % 3 == 0 => "operator:bob",
                        _ => "system",
                    }
                    .into(),
                    action: "token.captured".into(),
                    target: format!("token:T,{seq}"),
                    outcome: "success".into(),
                    details: r#"{"a":"b"}"#.into(),
                    prev_hash: prev.clone(),
                    hash: Vec::new(),
                    sig: Vec::new(),
                };
                row.hash = EventFields::of(&row).hash(&row.prev_hash).to_vec();
                row.sig = key
                    .sign(&signed_message(seq, &row.hash))
                    .to_bytes()
                    .to_vec();
                prev = row.hash.clone();
                row
            })
            .collect()
    }

    /// `rows` exported with a trailer for `filter`, the head being the chain's last event.
    fn export(format: Format, rows: &[AuditRow], head: &AuditRow, filter: &str) -> String {
        let mut out = Vec::new();
        if format == Format::Csv {
            out.extend_from_slice(CSV_HEADER.as_bytes());
        }
        let mut digest = ExportDigest::default();
        for row in rows {
            match format {
                Format::Jsonl => write_jsonl(&row.as_ref(), &mut out),
                Format::Csv => write_csv(&row.as_ref(), &mut out),
            }
            digest.push(row.seq, &row.hash);
        }
        let trailer = Trailer {
            vault_id: VAULT.into(),
            filter: filter.into(),
            first_seq: digest.first_seq,
            last_seq: digest.last_seq,
            count: digest.count,
            head: ChainHead {
                seq: head.seq,
                hash: head.hash.as_slice().try_into().unwrap(),
            },
            digest: digest.finish(),
        };
        let sig = key().sign(&trailer.canonical_bytes()).to_bytes();
        write_trailer(format, &trailer, &sig, &mut out);
        String::from_utf8(out).unwrap()
    }

    fn verify(text: &str, options: &ExportOptions) -> ExportVerification {
        verify_export(
            text.as_bytes(),
            &KeySchedule::single(key().verifying_key()),
            options,
        )
        .unwrap()
    }

    #[test]
    fn complete_and_filtered_exports_verify_in_both_formats_across_signature_batches() {
        let rows = chain(SIGNATURE_BATCH as i64 + 50);
        let head = rows.last().unwrap();
        let bob =
            r#"{"action":null,"actor":"operator:bob","since":null,"token":null,"until":null}"#;
        let selected: Vec<AuditRow> = rows
            .iter()
            .filter(|r| r.actor == "operator:bob")
            .cloned()
            .collect();
        for format in [Format::Jsonl, Format::Csv] {
            let result = verify(
                &export(format, &rows, head, EVERYTHING),
                &ExportOptions {
                    vault_id: Some(VAULT.into()),
                    expect_head: Some(AnchoredHead {
                        seq: head.seq,
                        hash: head.hash.as_slice().try_into().unwrap(),
                    }),
                },
            );
            assert!(result.ok() && result.complete, "{:?}", result.broken);
            assert_eq!(result.events, rows.len() as u64);
            let result = verify(
                &export(format, &selected, head, bob),
                &ExportOptions::default(),
            );
            assert!(result.ok() && !result.complete, "{:?}", result.broken);
            assert_eq!(result.events, selected.len() as u64);
        }
    }

    #[test]
    fn a_malformed_record_is_a_break_at_its_line_not_an_error() {
        let rows = chain(5);
        let good = export(Format::Jsonl, &rows, &rows[4], EVERYTHING);
        let lines: Vec<&str> = good.lines().collect();
        let with = |at: usize, line: &str| {
            let mut copy = lines.clone();
            copy[at] = line;
            copy.join("\n") + "\n"
        };
        let extra_key = lines[2].replacen('{', r#"{"note":"x","#, 1);
        let upper = lines[2].replace(
            &data_encoding::HEXLOWER.encode(&rows[2].hash),
            &data_encoding::HEXUPPER.encode(&rows[2].hash),
        );
        let duplicate = lines[2].replacen('{', r#"{"seq":1,"#, 1);
        for (bad, why) in [
            (with(2, "{not json"), "not a JSON object"),
            (with(2, &extra_key), "unknown field"),
            (with(2, &upper), "lower-case hex"),
            (with(2, &duplicate), "duplicate field"),
            (with(2, r#"{"type":"note"}"#), "unknown record type"),
        ] {
            let broken = verify(&bad, &ExportOptions::default()).broken.unwrap();
            assert_eq!(broken.line, 3, "{why}: {broken}");
            assert!(broken.reason.contains(why), "{why}: {broken}");
        }
    }

    #[test]
    fn a_csv_break_is_reported_at_the_physical_line_its_record_starts_on() {
        let rows = chain(5);
        let good = export(Format::Csv, &rows, &rows[4], EVERYTHING);
        assert!(verify(&good, &ExportOptions::default()).ok());
        // Header, event 1, event 2 over two lines: event 3 starts on line 5.
        let edited = good.replacen("token:T,3", "token:T,9", 1);
        let broken = verify(&edited, &ExportOptions::default()).broken.unwrap();
        assert_eq!((broken.line, broken.seq), (5, Some(3)), "{broken}");
    }

    #[test]
    fn an_export_that_does_not_reach_the_anchored_head_fails() {
        let rows = chain(6);
        let older = export(Format::Jsonl, &rows[..4], &rows[3], EVERYTHING);
        let anchor = |row: &AuditRow| ExportOptions {
            vault_id: None,
            expect_head: Some(AnchoredHead {
                seq: row.seq,
                hash: row.hash.as_slice().try_into().unwrap(),
            }),
        };
        assert!(verify(&older, &anchor(&rows[3])).ok());
        assert!(verify(&older, &anchor(&rows[1])).ok());
        let broken = verify(&older, &anchor(&rows[5])).broken.unwrap();
        assert_eq!((broken.line, broken.seq), (5, Some(5)), "{broken}");
        let mut rewritten = anchor(&rows[1]);
        if let Some(head) = rewritten.expect_head.as_mut() {
            head.hash[0] ^= 1;
        }
        let broken = verify(&older, &rewritten).broken.unwrap();
        assert_eq!((broken.line, broken.seq), (2, Some(2)), "{broken}");
    }
}
