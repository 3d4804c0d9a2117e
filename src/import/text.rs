//! Bytes → text → lines → cells, tolerant of what spreadsheets and Windows do to files:
//! a UTF-8 BOM, UTF-16 (LE/BE, with or without BOM), CRLF or bare CR line ends, quoted
//! cells, and `;` or tab instead of `,`.
//!
//! Text that may hold secrets is either borrowed from the caller's bytes or kept in a
//! `Zeroizing<String>` sized up front, so no growing buffer leaves a stale copy behind.

use std::ops::Deref;

use zeroize::Zeroizing;

use super::RowError;

/// A string that is either borrowed or owned and zeroized on drop.
pub(crate) enum ZStr<'a> {
    Borrowed(&'a str),
    Owned(Zeroizing<String>),
}

impl Deref for ZStr<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        match self {
            Self::Borrowed(s) => s,
            Self::Owned(s) => s.as_str(),
        }
    }
}

fn file_error(line: usize, reason: String, fix: &str) -> RowError {
    RowError {
        line,
        column: "file".into(),
        reason,
        fix: fix.into(),
    }
}

/// Decodes the file: UTF-8 (BOM stripped) is borrowed; UTF-16 is converted into a zeroizing
/// buffer. Anything else is a file-level error that says how to re-save the file.
pub(crate) fn decode(bytes: &[u8]) -> Result<ZStr<'_>, RowError> {
    if bytes.starts_with(&[0x00, 0x00, 0xFE, 0xFF]) || bytes.starts_with(&[0xFF, 0xFE, 0x00, 0x00])
    {
        return Err(file_error(
            1,
            "the file is UTF-32, which is not supported".into(),
            "save it as UTF-8 (in Excel: 'CSV UTF-8') and import that",
        ));
    }
    if let Some(rest) = bytes.strip_prefix(&[0xEF, 0xBB, 0xBF]) {
        return utf8(rest);
    }
    if let Some(rest) = bytes.strip_prefix(&[0xFF, 0xFE]) {
        return utf16(rest, u16::from_le_bytes);
    }
    if let Some(rest) = bytes.strip_prefix(&[0xFE, 0xFF]) {
        return utf16(rest, u16::from_be_bytes);
    }
    // UTF-16 without a BOM: ASCII text then shows a zero byte in every other position.
    if bytes.len() >= 4 && bytes.len() % 2 == 0 {
        let (a, b, c, d) = (bytes[0], bytes[1], bytes[2], bytes[3]);
        if a != 0 && b == 0 && c != 0 && d == 0 {
            return utf16(bytes, u16::from_le_bytes);
        }
        if a == 0 && b != 0 && c == 0 && d != 0 {
            return utf16(bytes, u16::from_be_bytes);
        }
    }
    utf8(bytes)
}

fn line_at(bytes: &[u8], offset: usize) -> usize {
    1 + bytes[..offset.min(bytes.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
}

fn utf8(bytes: &[u8]) -> Result<ZStr<'_>, RowError> {
    match std::str::from_utf8(bytes) {
        Ok(text) => Ok(ZStr::Borrowed(text)),
        Err(e) => {
            let at = e.valid_up_to();
            let byte = bytes.get(at).copied().unwrap_or(0);
            Err(file_error(
                line_at(bytes, at),
                format!("byte 0x{byte:02X} is not UTF-8 (the file was probably saved in a legacy encoding such as Windows-1252)"),
                "save the file as UTF-8 (in Excel: 'CSV UTF-8 (Comma delimited)') and import it again",
            ))
        }
    }
}

fn utf16(bytes: &[u8], unit: fn([u8; 2]) -> u16) -> Result<ZStr<'static>, RowError> {
    if bytes.len() % 2 != 0 {
        return Err(file_error(
            0,
            "the file looks like UTF-16 but has an odd number of bytes (it is truncated, or not UTF-16)".into(),
            "save the file as UTF-8 (in Excel: 'CSV UTF-8') and import it again",
        ));
    }
    let units = bytes.chunks_exact(2).map(|pair| unit([pair[0], pair[1]]));
    // At most 3 UTF-8 bytes per UTF-16 unit, so this never reallocates (which would leave an
    // unzeroized copy behind).
    let mut text = Zeroizing::new(String::with_capacity(bytes.len() / 2 * 3));
    let mut line = 1;
    for decoded in char::decode_utf16(units) {
        match decoded {
            Ok(c) => {
                if c == '\n' {
                    line += 1;
                }
                text.push(c);
            }
            Err(_) => {
                return Err(file_error(
                    line,
                    "the file is UTF-16 but holds an unpaired surrogate, so it is damaged".into(),
                    "export the file again, preferably as UTF-8 (in Excel: 'CSV UTF-8')",
                ));
            }
        }
    }
    Ok(ZStr::Owned(text))
}

/// One physical line of the file (line end removed).
#[derive(Clone, Copy)]
pub(crate) struct Line<'a> {
    /// 1-based.
    pub number: usize,
    pub text: &'a str,
}

/// The physical lines of `text`. Line ends may be `\n`, `\r\n`, or a bare `\r` (old Mac
/// spreadsheet exports) when the file has no `\n` at all.
pub(crate) fn lines(text: &str) -> impl Iterator<Item = Line<'_>> {
    let separator = if !text.contains('\n') && text.contains('\r') {
        '\r'
    } else {
        '\n'
    };
    text.split(separator).enumerate().map(|(i, raw)| Line {
        number: i + 1,
        text: raw.strip_suffix('\r').unwrap_or(raw),
    })
}

/// Counts `delimiter` outside double quotes.
fn count_unquoted(line: &str, delimiter: u8) -> usize {
    let mut quoted = false;
    let mut count = 0;
    for &b in line.as_bytes() {
        if b == b'"' {
            quoted = !quoted;
        } else if b == delimiter && !quoted {
            count += 1;
        }
    }
    count
}

/// The delimiter of a CSV file judged from one line (the header, or the first row of a file
/// without one): the most frequent of `,`, `;` and tab; `,` on a tie. European spreadsheet
/// exports use `;`.
pub(crate) fn detect_delimiter(line: &str) -> u8 {
    let mut best = (b',', count_unquoted(line, b','));
    for candidate in [b';', b'\t'] {
        let n = count_unquoted(line, candidate);
        if n > best.1 {
            best = (candidate, n);
        }
    }
    best.0
}

/// Excel's `sep=;` first line, which names the delimiter of the lines after it.
pub(crate) fn sep_directive(line: &str) -> Option<u8> {
    let value = line.trim().strip_prefix("sep=")?;
    match value.as_bytes() {
        [b] if matches!(b, b',' | b';' | b'\t' | b'|') => Some(*b),
        _ => None,
    }
}

/// Why a line could not be split into cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CellError {
    /// A quoted cell does not end on this line.
    Unterminated,
    /// Something other than the delimiter follows a closing quote.
    AfterQuote,
}

impl CellError {
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Self::Unterminated => "a quoted value does not end on this line: a cell holds a line break or an unmatched '\"'",
            Self::AfterQuote => "text follows a closing '\"' in the same cell",
        }
    }
    pub(crate) fn fix(self) -> &'static str {
        "remove line breaks and stray quotes from the cells, or re-export the file from the spreadsheet"
    }
}

fn is_blank(b: u8, delimiter: u8) -> bool {
    b == b' ' || (b == b'\t' && delimiter != b'\t')
}

/// Splits one line into cells (RFC 4180 quoting within the line: `"a ""b"""` → `a "b"`).
/// Cells are not trimmed; quoted cells lose their quotes.
pub(crate) fn split_cells(line: &str, delimiter: u8) -> Result<Vec<ZStr<'_>>, CellError> {
    let bytes = line.as_bytes();
    let mut cells = Vec::new();
    let mut start = 0;
    loop {
        let mut i = start;
        while i < bytes.len() && is_blank(bytes[i], delimiter) {
            i += 1;
        }
        let next = if bytes.get(i) == Some(&b'"') {
            let (cell, after) = quoted_cell(line, i + 1)?;
            cells.push(cell);
            let mut j = after;
            while j < bytes.len() && is_blank(bytes[j], delimiter) {
                j += 1;
            }
            match bytes.get(j) {
                None => None,
                Some(&b) if b == delimiter => Some(j + 1),
                Some(_) => return Err(CellError::AfterQuote),
            }
        } else {
            let end = bytes[start..]
                .iter()
                .position(|&b| b == delimiter)
                .map_or(bytes.len(), |p| start + p);
            cells.push(ZStr::Borrowed(&line[start..end]));
            (end < bytes.len()).then_some(end + 1)
        };
        match next {
            Some(n) => start = n,
            None => return Ok(cells),
        }
    }
}

/// Reads a quoted cell whose content starts at `from`; returns it and the index after the
/// closing quote.
fn quoted_cell(line: &str, from: usize) -> Result<(ZStr<'_>, usize), CellError> {
    let bytes = line.as_bytes();
    let mut i = from;
    let mut escapes = 0;
    let close = loop {
        match bytes.get(i) {
            None => return Err(CellError::Unterminated),
            Some(b'"') if bytes.get(i + 1) == Some(&b'"') => {
                escapes += 1;
                i += 2;
            }
            Some(b'"') => break i,
            Some(_) => i += 1,
        }
    };
    let raw = &line[from..close];
    if escapes == 0 {
        return Ok((ZStr::Borrowed(raw), close + 1));
    }
    let mut owned = Zeroizing::new(String::with_capacity(raw.len()));
    let mut rest = raw;
    while let Some(at) = rest.find("\"\"") {
        owned.push_str(&rest[..=at]);
        rest = &rest[at + 2..];
    }
    owned.push_str(rest);
    Ok((ZStr::Owned(owned), close + 1))
}

/// True when every cell is empty or blank (spreadsheets leave rows like `,,,,`).
pub(crate) fn all_blank(cells: &[ZStr<'_>]) -> bool {
    cells.iter().all(|c| c.trim().is_empty())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn cells(line: &str, delimiter: u8) -> Vec<String> {
        split_cells(line, delimiter)
            .unwrap()
            .iter()
            .map(|c| c.to_string())
            .collect()
    }

    #[test]
    fn cells_split_on_the_delimiter_and_keep_empty_ones() {
        assert_eq!(cells("a,b,,d,", b','), ["a", "b", "", "d", ""]);
        assert_eq!(cells("a;b", b';'), ["a", "b"]);
        assert_eq!(cells("a\tb c", b'\t'), ["a", "b c"]);
        assert_eq!(cells("", b','), [""]);
    }

    #[test]
    fn quoted_cells_lose_their_quotes_and_may_hold_delimiters() {
        assert_eq!(
            cells(r#""a,b", "say ""hi""" ,c"#, b','),
            ["a,b", r#"say "hi""#, "c"]
        );
        assert!(matches!(
            split_cells(r#""open,b"#, b','),
            Err(CellError::Unterminated)
        ));
        assert!(matches!(
            split_cells(r#""a"x,b"#, b','),
            Err(CellError::AfterQuote)
        ));
    }

    #[test]
    fn delimiter_is_the_most_frequent_unquoted_one() {
        assert_eq!(detect_delimiter("upn,serial number,secret key"), b',');
        assert_eq!(detect_delimiter("upn;serial number;secret key"), b';');
        assert_eq!(detect_delimiter("\"a;b\",c"), b',');
        assert_eq!(detect_delimiter("a\tb\tc"), b'\t');
        assert_eq!(detect_delimiter("nothing"), b',');
    }

    #[test]
    fn excel_sep_lines_are_recognised() {
        assert_eq!(sep_directive("sep=;"), Some(b';'));
        assert_eq!(sep_directive("sep=,\r"), Some(b','));
        assert_eq!(sep_directive("sep=ab"), None);
        assert_eq!(sep_directive("upn,serial"), None);
    }

    #[test]
    fn lines_handle_crlf_lf_and_bare_cr() {
        let crlf: Vec<_> = lines("a\r\nb\r\n").map(|l| (l.number, l.text)).collect();
        assert_eq!(crlf, [(1, "a"), (2, "b"), (3, "")]);
        let cr: Vec<_> = lines("a\rb").map(|l| (l.number, l.text)).collect();
        assert_eq!(cr, [(1, "a"), (2, "b")]);
    }

    #[test]
    fn utf8_bom_is_stripped() {
        assert_eq!(&*decode(b"\xEF\xBB\xBFupn").unwrap(), "upn");
    }

    #[test]
    fn utf16_with_and_without_bom_is_decoded() {
        let text = "upn,serial\r\nä,1\r\n";
        let le: Vec<u8> = text.encode_utf16().flat_map(u16::to_le_bytes).collect();
        let be: Vec<u8> = text.encode_utf16().flat_map(u16::to_be_bytes).collect();
        for bytes in [
            [&[0xFF, 0xFE][..], &le].concat(),
            [&[0xFE, 0xFF][..], &be].concat(),
            le.clone(),
            be.clone(),
        ] {
            assert_eq!(&*decode(&bytes).unwrap(), text);
        }
    }

    #[test]
    fn damaged_encodings_are_file_errors_with_a_fix() {
        let latin1 = b"upn,serial\nJos\xE9,1\n";
        let e = decode(latin1).err().unwrap();
        assert_eq!(e.line, 2);
        assert!(e.reason.contains("0xE9"), "{e}");
        assert!(e.fix.contains("UTF-8"), "{e}");
        let odd = decode(&[0xFF, 0xFE, b'a', 0, b'b']).err().unwrap();
        assert!(odd.reason.contains("odd number"), "{odd}");
        let surrogate = decode(&[0xFF, 0xFE, 0x00, 0xD8, b'a', 0]).err().unwrap();
        assert!(surrogate.reason.contains("surrogate"), "{surrogate}");
        assert!(decode(&[0xFF, 0xFE, 0, 0, b'a', 0, 0, 0]).is_err());
    }
}
