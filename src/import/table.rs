//! The header-driven CSV reader behind the Entra and vendor formats: columns are found by
//! name (any case, any spacing, `timeinterval` or `time interval`, in any order), the
//! delimiter by the header, and each row is checked cell by cell so one bad row reports
//! every bad cell it has.

use super::rows::{self, Encoding, Report, RowCheck};
use super::text::{self, Line, ZStr};
use super::{ImportOptions, ImportRow, SecretEncoding};
use crate::otp::TotpSpec;

/// A column the reader understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Column {
    Upn,
    Serial,
    Secret,
    Interval,
    Manufacturer,
    Model,
    Digits,
    Algorithm,
    DisplayName,
}

impl Column {
    /// The name errors use (Microsoft's spelling).
    pub(crate) const fn name(self) -> &'static str {
        match self {
            Self::Upn => "upn",
            Self::Serial => "serial number",
            Self::Secret => "secret key",
            Self::Interval => "time interval",
            Self::Manufacturer => "manufacturer",
            Self::Model => "model",
            Self::Digits => "digits",
            Self::Algorithm => "algorithm",
            Self::DisplayName => "display name",
        }
    }

    /// Recognises a header cell: case, spaces, `_`, `-` and `.` do not matter. Compares
    /// without copying the cell, which in a file without a header may be a secret.
    pub(crate) fn from_header(cell: &str) -> Option<Self> {
        let normalized = || {
            cell.chars()
                .filter(|c| !c.is_whitespace() && !matches!(c, '_' | '-' | '.' | '"'))
                .flat_map(char::to_lowercase)
        };
        HEADER_NAMES
            .iter()
            .find(|(name, _)| normalized().eq(name.chars()))
            .map(|(_, column)| *column)
    }
}

/// Header spellings (normalized: lower case, no spaces or punctuation) and their columns.
const HEADER_NAMES: &[(&str, Column)] = &[
    ("upn", Column::Upn),
    ("userprincipalname", Column::Upn),
    ("serialnumber", Column::Serial),
    ("serial", Column::Serial),
    ("serialno", Column::Serial),
    ("secretkey", Column::Secret),
    ("secret", Column::Secret),
    ("seed", Column::Secret),
    ("timeinterval", Column::Interval),
    ("interval", Column::Interval),
    ("period", Column::Interval),
    ("timestep", Column::Interval),
    ("manufacturer", Column::Manufacturer),
    ("vendor", Column::Manufacturer),
    ("model", Column::Model),
    ("digits", Column::Digits),
    ("otplength", Column::Digits),
    ("otplen", Column::Digits),
    ("algorithm", Column::Algorithm),
    ("hashalgorithm", Column::Algorithm),
    ("hash", Column::Algorithm),
    ("displayname", Column::DisplayName),
];

/// The header cells of `line` as columns (unknown cells are `None`).
pub(crate) fn header_columns(line: &str) -> Option<Vec<Option<Column>>> {
    let delimiter = text::detect_delimiter(line);
    let cells = text::split_cells(line, delimiter).ok()?;
    Some(cells.iter().map(|c| Column::from_header(c)).collect())
}

/// What distinguishes the Entra file from the vendor file.
pub(crate) struct Flavor {
    /// The `upn` column must be present.
    pub upn_required: bool,
    /// Only 30 and 60 s steps.
    pub entra_periods: bool,
    /// What `--secret-encoding auto` means for this format.
    pub auto_encoding: Encoding,
    /// The header to suggest when it is missing or incomplete.
    pub header_hint: &'static str,
}

fn first_content_line<'a>(lines: &mut impl Iterator<Item = Line<'a>>) -> Option<Line<'a>> {
    lines.find(|l| !l.text.trim().is_empty())
}

/// Reads a headed CSV into `report`.
pub(crate) fn parse(text: &str, options: &ImportOptions, flavor: &Flavor, report: &mut Report) {
    let mut lines = text::lines(text);
    let Some(mut header) = first_content_line(&mut lines) else {
        return;
    };
    let mut delimiter = text::detect_delimiter(header.text);
    if let Some(sep) = text::sep_directive(header.text) {
        delimiter = sep;
        let Some(next) = first_content_line(&mut lines) else {
            return;
        };
        header = next;
    }
    let Some(layout) = read_header(header, delimiter, flavor, report) else {
        return;
    };
    let encoding = match options.secret_encoding {
        SecretEncoding::Auto => flavor.auto_encoding,
        SecretEncoding::Base32 => Encoding::Base32,
        SecretEncoding::Hex => Encoding::Hex,
    };
    rows::each_csv_row(lines, delimiter, report, |line, cells, report| {
        read_row(line, cells, &layout, flavor, encoding, report);
    });
}

/// Where each known column sits.
struct Layout {
    width: usize,
    index: Vec<(Column, usize)>,
    delimiter: u8,
}

impl Layout {
    fn cell<'c>(&self, cells: &'c [ZStr<'_>], column: Column) -> Option<&'c str> {
        let (_, at) = self.index.iter().find(|(c, _)| *c == column)?;
        Some(cells.get(*at).map_or("", |c| &**c))
    }
}

fn read_header(
    header: Line<'_>,
    delimiter: u8,
    flavor: &Flavor,
    report: &mut Report,
) -> Option<Layout> {
    let fix = format!("the first line must be the header `{}`", flavor.header_hint);
    let cells = match text::split_cells(header.text, delimiter) {
        Ok(cells) => cells,
        Err(e) => {
            report.error(header.number, "header", e.reason(), fix);
            return None;
        }
    };
    let mut index: Vec<(Column, usize)> = Vec::new();
    let mut unknown = Vec::new();
    for (at, cell) in cells.iter().enumerate() {
        match Column::from_header(cell) {
            Some(column) if index.iter().any(|(c, _)| *c == column) => {
                report.error(
                    header.number,
                    "header",
                    format!("the '{}' column appears twice", column.name()),
                    "remove one of the two columns",
                );
                return None;
            }
            Some(column) => index.push((column, at)),
            None if cell.trim().is_empty() => {}
            None => unknown.push(at),
        }
    }
    let mut required = vec![Column::Serial, Column::Secret];
    if flavor.upn_required {
        required.insert(0, Column::Upn);
    }
    let missing: Vec<&str> = required
        .iter()
        .filter(|r| !index.iter().any(|(c, _)| c == *r))
        .map(|c| c.name())
        .collect();
    if !missing.is_empty() {
        // The cells are not quoted back: a file without a header starts with a secret.
        report.error(
            header.number,
            "header",
            format!(
                "the header has no {} column",
                missing
                    .iter()
                    .map(|m| format!("'{m}'"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            fix,
        );
        return None;
    }
    // Named by position only: a header line that lost its line break carries a secret.
    for at in unknown {
        report.warn(
            header.number,
            format!(
                "column {} of the header is not one seedvault reads; it was ignored",
                at + 1
            ),
        );
    }
    if !index.iter().any(|(c, _)| *c == Column::Interval) {
        report.warn(
            header.number,
            "there is no time interval column; every token is read as a 30-second token",
        );
    }
    Some(Layout {
        width: cells.len(),
        index,
        delimiter,
    })
}

fn read_row(
    line: usize,
    cells: &[ZStr<'_>],
    layout: &Layout,
    flavor: &Flavor,
    encoding: Encoding,
    report: &mut Report,
) {
    if cells.len() > layout.width && !text::all_blank(&cells[layout.width..]) {
        report.error(
            line,
            "row",
            format!(
                "the row has {} values but the header names {} columns",
                cells.len(),
                layout.width
            ),
            format!(
                "remove the extra values, or quote a value that contains '{}'",
                char::from(layout.delimiter).escape_default()
            ),
        );
        return;
    }
    let mut check = RowCheck::new(line, report);
    let owner = match layout.cell(cells, Column::Upn) {
        Some(upn) => check
            .take(Column::Upn.name(), rows::check_upn(upn))
            .flatten(),
        None => None,
    };
    let cell = |column: Column| layout.cell(cells, column).unwrap_or("");
    let serial = check.take(
        Column::Serial.name(),
        rows::check_serial(cell(Column::Serial)),
    );
    let secret = check.take(
        Column::Secret.name(),
        rows::check_secret(cell(Column::Secret), encoding),
    );
    let period = match layout.cell(cells, Column::Interval) {
        Some(raw) => check.take(
            Column::Interval.name(),
            rows::check_period(raw, flavor.entra_periods),
        ),
        None => Some(30),
    };
    let digits = check.take(
        Column::Digits.name(),
        rows::check_digits(cell(Column::Digits)),
    );
    let algorithm = check.take(
        Column::Algorithm.name(),
        rows::check_algorithm(cell(Column::Algorithm)),
    );
    let mut text_of = |column: Column| {
        check
            .take(column.name(), rows::check_text(column.name(), cell(column)))
            .flatten()
    };
    let manufacturer = text_of(Column::Manufacturer);
    let model = text_of(Column::Model);
    let display_name = text_of(Column::DisplayName);
    let (Some(serial), Some(secret), Some(period), Some(digits), Some(algorithm), true) =
        (serial, secret, period, digits, algorithm, check.passed())
    else {
        return;
    };
    if let Err(e) = TotpSpec::new(algorithm, digits, period) {
        report.error(line, Column::Interval.name(), e.to_string(), "");
        return;
    }
    if owner.is_none() && flavor.upn_required {
        report.warn(
            line,
            format!("serial {serial}: the upn is empty; the token is escrowed unassigned"),
        );
    }
    report.add_row(
        ImportRow {
            line,
            serial,
            owner,
            seed: secret.seed,
            algorithm,
            digits,
            period,
            manufacturer,
            model,
            display_name,
        },
        Column::Serial.name(),
        secret.warnings,
    );
}
