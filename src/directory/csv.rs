//! The directory as a CSV file (an HR export): one row per owner, columns found by name in the
//! header (any case, spaces, `_` or `-`), `,` `;` or tab as the delimiter, read with the same
//! line and cell reader as seed imports (`import::text`). Every bad row is reported by line.

use crate::import::text;
use crate::import::RowError;

use super::phone;
use super::Entry;

/// A column of the directory file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Column {
    Owner,
    DisplayName,
    Phone,
    Mobile,
    Manager,
    ManagerPhone,
    Department,
    Mail,
}

impl Column {
    const fn name(self) -> &'static str {
        match self {
            Self::Owner => "owner",
            Self::DisplayName => "display_name",
            Self::Phone => "phone",
            Self::Mobile => "mobile",
            Self::Manager => "manager",
            Self::ManagerPhone => "manager_phone",
            Self::Department => "department",
            Self::Mail => "mail",
        }
    }
}

/// Header spellings (lower case, without spaces, `_`, `-` or `.`) and their columns.
const HEADER_NAMES: &[(&str, Column)] = &[
    ("owner", Column::Owner),
    ("upn", Column::Owner),
    ("userprincipalname", Column::Owner),
    ("uid", Column::Owner),
    ("displayname", Column::DisplayName),
    ("name", Column::DisplayName),
    ("cn", Column::DisplayName),
    ("phone", Column::Phone),
    ("phones", Column::Phone),
    ("telephonenumber", Column::Phone),
    ("telephone", Column::Phone),
    ("mobile", Column::Mobile),
    ("mobilephone", Column::Mobile),
    ("manager", Column::Manager),
    ("managerphone", Column::ManagerPhone),
    ("department", Column::Department),
    ("departmentnumber", Column::Department),
    ("mail", Column::Mail),
    ("email", Column::Mail),
];

/// The header a file should start with; errors about the header suggest it.
pub const HEADER_HINT: &str =
    "owner,display_name,phone,mobile,manager,manager_phone,department,mail";

/// Several numbers in one cell are separated by `|`.
const PHONE_SEPARATOR: char = '|';

fn column(cell: &str) -> Option<Column> {
    let normalized: String = cell
        .chars()
        .filter(|c| !c.is_whitespace() && !matches!(c, '_' | '-' | '.' | '"'))
        .flat_map(char::to_lowercase)
        .collect();
    HEADER_NAMES
        .iter()
        .find(|(name, _)| *name == normalized)
        .map(|(_, c)| *c)
}

/// A row that parsed, with its line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvRow {
    pub line: usize,
    pub entry: Entry,
}

/// The rows that parsed and the errors of the others (by line).
#[derive(Debug, Default)]
pub struct ParsedCsv {
    pub rows: Vec<CsvRow>,
    pub errors: Vec<RowError>,
}

fn error(line: usize, column: &str, reason: String, fix: &str) -> RowError {
    RowError {
        line,
        column: column.to_owned(),
        reason,
        fix: fix.to_owned(),
    }
}

/// Reads a directory CSV. Manager references are checked later, against the file and the
/// directory together ([`super::resolve_managers`]).
pub fn parse(bytes: &[u8]) -> ParsedCsv {
    let mut parsed = ParsedCsv::default();
    let decoded = match text::decode(bytes) {
        Ok(decoded) => decoded,
        Err(e) => {
            parsed.errors.push(e);
            return parsed;
        }
    };
    let mut lines = text::lines(&decoded).filter(|l| !l.text.trim().is_empty());
    let Some(mut header) = lines.next() else {
        return parsed;
    };
    let mut delimiter = text::detect_delimiter(header.text);
    if let Some(sep) = text::sep_directive(header.text) {
        delimiter = sep;
        let Some(next) = lines.next() else {
            return parsed;
        };
        header = next;
    }
    let cells = match text::split_cells(header.text, delimiter) {
        Ok(cells) => cells,
        Err(e) => {
            parsed
                .errors
                .push(error(header.number, "header", e.reason().into(), e.fix()));
            return parsed;
        }
    };
    let layout: Vec<Option<Column>> = cells.iter().map(|c| column(c)).collect();
    if !layout.contains(&Some(Column::Owner)) {
        parsed.errors.push(error(
            header.number,
            "header",
            "the header has no owner column (owner, upn or uid)".into(),
            &format!("start the file with a header such as {HEADER_HINT}"),
        ));
        return parsed;
    }
    for (i, c) in layout.iter().enumerate() {
        if let Some(c) = c {
            if layout[..i].contains(&Some(*c)) {
                parsed.errors.push(error(
                    header.number,
                    "header",
                    format!("two columns mean {}", c.name()),
                    "keep one of them",
                ));
                return parsed;
            }
        }
    }
    for line in lines {
        let cells = match text::split_cells(line.text, delimiter) {
            Ok(cells) => cells,
            Err(e) => {
                parsed
                    .errors
                    .push(error(line.number, "row", e.reason().into(), e.fix()));
                continue;
            }
        };
        if text::all_blank(&cells) {
            continue;
        }
        if let Some(row) = read_row(line.number, &cells, &layout, &mut parsed) {
            parsed.rows.push(row);
        }
    }
    parsed
}

fn read_row(
    line: usize,
    cells: &[text::ZStr<'_>],
    layout: &[Option<Column>],
    parsed: &mut ParsedCsv,
) -> Option<CsvRow> {
    let cell = |wanted: Column| -> Option<String> {
        layout
            .iter()
            .position(|c| *c == Some(wanted))
            .and_then(|i| cells.get(i))
            .map(|c| c.trim().to_owned())
            .filter(|c| !c.is_empty())
    };
    let before = parsed.errors.len();
    let owner = cell(Column::Owner);
    match &owner {
        None => parsed.errors.push(error(
            line,
            "owner",
            "the owner is empty".into(),
            "give the owner's id (the UPN the tokens are assigned to)",
        )),
        Some(owner) => {
            if let Some(first) = parsed
                .rows
                .iter()
                .find(|r| r.entry.owner.eq_ignore_ascii_case(owner))
            {
                parsed.errors.push(error(
                    line,
                    "owner",
                    format!("'{owner}' is also on line {}", first.line),
                    "keep one row per owner (put several numbers in one cell, separated by |)",
                ));
            }
        }
    }
    let mut numbers = |column: Column| -> Vec<String> {
        let Some(text) = cell(column) else {
            return Vec::new();
        };
        text.split(PHONE_SEPARATOR)
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .filter_map(|t| match phone::normalise(t) {
                Ok(n) => Some(n),
                Err(e) => {
                    parsed
                        .errors
                        .push(error(line, column.name(), e.to_string(), ""));
                    None
                }
            })
            .collect()
    };
    let mut phones = numbers(Column::Phone);
    for mobile in numbers(Column::Mobile) {
        if !phones.contains(&mobile) {
            phones.push(mobile);
        }
    }
    let manager_phone = numbers(Column::ManagerPhone).into_iter().next();
    if parsed.errors.len() > before {
        return None;
    }
    Some(CsvRow {
        line,
        entry: Entry {
            owner: owner?,
            display_name: cell(Column::DisplayName),
            phones,
            manager: cell(Column::Manager),
            manager_phone,
            department: cell(Column::Department),
            mail: cell(Column::Mail),
        },
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn a_headed_file_reads_into_entries_with_normalised_numbers() {
        let text = "UPN;Display Name;telephoneNumber;Mobile;Manager;Department\n\
                    alice@example.org;Alice;+1 (555) 010-0001 | +1 555 010 0002;+1 555 010 0003;bob@example.org;Finance\n\
                    \n\
                    bob@example.org;Bob;0044 20 7946 0000;;;Finance\n";
        let parsed = parse(text.as_bytes());
        assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
        assert_eq!(parsed.rows.len(), 2);
        let alice = &parsed.rows[0].entry;
        assert_eq!(
            alice.phones,
            ["+15550100001", "+15550100002", "+15550100003"]
        );
        assert_eq!(alice.manager.as_deref(), Some("bob@example.org"));
        assert_eq!(parsed.rows[1].line, 4);
        assert_eq!(parsed.rows[1].entry.phones, ["+442079460000"]);
        assert_eq!(parsed.rows[1].entry.manager, None);
    }

    #[test]
    fn bad_rows_are_named_by_line_and_column() {
        let text = "owner,phone,mobile\n\
                    alice@example.org,+1 555 010 0001,\n\
                    ALICE@example.org,+1 555 010 0009,\n\
                    carol@example.org,+1 555 CALL-NOW,\n\
                    dave@example.org,,555-0100\n\
                    ,+1 555 010 0004,\n";
        let errors: Vec<String> = parse(text.as_bytes())
            .errors
            .iter()
            .map(RowError::to_line)
            .collect();
        assert_eq!(errors.len(), 4, "{errors:?}");
        assert!(errors[0].starts_with("line 3, owner: 'ALICE@example.org' is also on line 2"));
        assert!(errors[1].starts_with("line 4, phone: '+1 555 CALL-NOW' holds letters"));
        assert!(errors[2].starts_with("line 5, mobile: '555-0100' has no country code"));
        assert!(errors[3].starts_with("line 6, owner: the owner is empty"));
    }

    #[test]
    fn a_file_without_an_owner_column_says_which_header_to_use() {
        let parsed = parse(b"name,phone\nAlice,+15550100001\n");
        assert_eq!(parsed.errors.len(), 1);
        assert!(parsed.errors[0].to_line().contains(HEADER_HINT));
        assert!(parse(b"").rows.is_empty() && parse(b"").errors.is_empty());
    }
}
