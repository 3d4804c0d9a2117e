//! The secret-leak canary: remembers every secret a test handles (seeds, codes, invite
//! tokens, keys) and fails if any form of one shows up in the server's logs, an HTTP response
//! body, or a file the server wrote.

use std::io::Write;
use std::path::Path;
use std::sync::{Mutex, Once, OnceLock};

use data_encoding::{BASE32, BASE32_NOPAD, HEXLOWER, HEXUPPER};

/// Everything the in-process server logged (all tests of this binary share it; a secret of
/// one test showing up anywhere is a leak all the same).
static LOGS: OnceLock<Mutex<Vec<u8>>> = OnceLock::new();
static INSTALL: Once = Once::new();

fn logs() -> &'static Mutex<Vec<u8>> {
    LOGS.get_or_init(|| Mutex::new(Vec::new()))
}

struct CaptureWriter;

impl Write for CaptureWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        logs().lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Routes the `tracing` output of this test binary, at TRACE level, into the capture buffer:
/// everything but the test's own browser driver (thirtyfour logs the keys a test types, such as
/// a seed into the capture form: that is the simulated user, not the server).
pub fn capture_logs() {
    INSTALL.call_once(|| {
        // Without timestamps: every line's six-digit microseconds would match a six-digit
        // code as a whole number about once per million lines, failing a clean run.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("trace,thirtyfour=off"))
            .with_writer(|| CaptureWriter)
            .with_ansi(false)
            .without_time()
            .try_init();
    });
}

/// A copy of the logs captured so far.
pub fn captured_logs() -> Vec<u8> {
    logs().lock().unwrap().clone()
}

struct Needle {
    label: String,
    bytes: Vec<u8>,
    /// Match only when not part of a longer run of digits (codes are short numbers).
    whole_number: bool,
}

#[derive(Default)]
pub struct Canary {
    needles: Mutex<Vec<Needle>>,
    responses: Mutex<Vec<(String, Vec<u8>)>>,
}

impl Canary {
    pub fn new() -> Self {
        capture_logs();
        Self::default()
    }

    fn add(&self, label: String, bytes: Vec<u8>, whole_number: bool) {
        if !bytes.is_empty() {
            self.needles.lock().unwrap().push(Needle {
                label,
                bytes,
                whole_number,
            });
        }
    }

    /// A seed in every form it could leak in: raw bytes, hex and base32 in either case.
    pub fn watch_seed(&self, label: &str, seed: &[u8]) {
        self.add(format!("{label} (raw)"), seed.to_vec(), false);
        for (form, text) in [
            ("hex", HEXLOWER.encode(seed)),
            ("HEX", HEXUPPER.encode(seed)),
            ("base32", BASE32_NOPAD.encode(seed)),
            ("base32 lower", BASE32_NOPAD.encode(seed).to_lowercase()),
            ("base32 padded", BASE32.encode(seed)),
        ] {
            self.add(format!("{label} ({form})"), text.into_bytes(), false);
        }
    }

    /// A secret string (invite token, passphrase, key) exactly as issued.
    pub fn watch_text(&self, label: &str, text: &str) {
        self.add(label.to_owned(), text.as_bytes().to_vec(), false);
    }

    /// A one-time code: it may only appear in the one response that reveals it, which the
    /// caller does not record.
    pub fn watch_code(&self, label: &str, code: &str) {
        self.add(label.to_owned(), code.as_bytes().to_vec(), true);
    }

    /// Keeps a response body to check at the end.
    pub fn record_response(&self, what: &str, body: &[u8]) {
        self.responses
            .lock()
            .unwrap()
            .push((what.to_owned(), body.to_vec()));
    }

    fn find(&self, haystack: &[u8]) -> Option<String> {
        let needles = self.needles.lock().unwrap();
        needles
            .iter()
            .find(|n| contains(haystack, &n.bytes, n.whole_number))
            .map(|n| n.label.clone())
    }

    /// Fails if a watched secret appears in the logs, a recorded response, or any file under
    /// `dirs` (recursively, byte by byte).
    pub fn assert_clean(&self, dirs: &[&Path]) {
        if let Some(label) = self.find(&captured_logs()) {
            panic!("secret leak: {label} appears in the server log");
        }
        for (what, body) in self.responses.lock().unwrap().iter() {
            if let Some(label) = self.find(body) {
                panic!("secret leak: {label} appears in the response to {what}");
            }
        }
        for dir in dirs {
            scan_dir(self, dir);
        }
    }

    /// How many secrets are watched (so a test can prove the canary was armed).
    pub fn watched(&self) -> usize {
        self.needles.lock().unwrap().len()
    }
}

fn scan_dir(canary: &Canary, dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            scan_dir(canary, &path);
        } else if let Ok(bytes) = std::fs::read(&path) {
            if let Some(label) = canary.find(&bytes) {
                panic!("secret leak: {label} appears in file {}", path.display());
            }
        }
    }
}

/// Whether `needle` occurs in `haystack`; with `whole_number`, only where it is not flanked by
/// other ASCII digits.
pub fn contains(haystack: &[u8], needle: &[u8], whole_number: bool) -> bool {
    if needle.len() > haystack.len() {
        return false;
    }
    // A digit, or a decimal point joined to digits: `1.091009ms` (a timing in a trace line)
    // holds the number 1.091009, not the code 091009.
    let is_digit = |at: Option<&u8>| at.is_some_and(u8::is_ascii_digit);
    let joins_number_before = |i: usize| {
        i > 0
            && (haystack[i - 1].is_ascii_digit()
                || (haystack[i - 1] == b'.'
                    && is_digit(i.checked_sub(2).and_then(|j| haystack.get(j)))))
    };
    let joins_number_after = |end: usize| {
        is_digit(haystack.get(end))
            || (haystack.get(end) == Some(&b'.') && is_digit(haystack.get(end + 1)))
    };
    haystack
        .windows(needle.len())
        .enumerate()
        .any(|(i, window)| {
            window == needle
                && (!whole_number
                    || (!joins_number_before(i) && !joins_number_after(i + needle.len())))
        })
}
