//! PSKC 1.0 (RFC 6030): `KeyContainer/KeyPackage*`, each with `DeviceInfo` (`SerialNo`,
//! `Manufacturer`, `Model`, `UserId`) and one `Key` whose `Data/Secret` is a base64
//! `PlainValue` or an `EncryptedValue`.
//!
//! Encryption (RFC 6030 §6): the key is pre-shared (`--psk-hex`/`--psk-file`) or derived from
//! a password with PBKDF2 (`EncryptionKey/DerivedKey`, §6.2). Every `Data` element — `Secret`,
//! `Time`, `TimeInterval`, `Counter` — may be an `EncryptedValue`, opened the same way with
//! any cipher of §6.1 (see `xmlenc`). A `ValueMAC` (HMAC over the `CipherValue`, keyed by the
//! `MACMethod/MACKey` decrypted under the file's key, or by the file's key itself when there
//! is no `MACKey`) is checked in constant time whenever present, before anything is
//! decrypted; a CBC value without one is refused, since CBC alone cannot tell a wrong key
//! from a right one (key wraps carry their own check). A wrong key or password, a failed MAC,
//! truncated ciphertext or bad padding is an error on the `KeyPackage`'s line naming what to
//! check, never a garbage seed. Asymmetric key transport is not supported.
//!
//! Keys: TOTP keys are read; HOTP, OCRA and vendor keys are errors, or — with
//! `skip_unsupported` — warnings counted as skipped, so the TOTP keys of a mixed delivery
//! import. A `Key` without `Algorithm` is an error. Pre-RFC draft files (keys in `Device`
//! elements) are refused naming the draft; a draft namespace with RFC 6030's structure is
//! read with a warning.
//!
//! Other fields: `ResponseFormat@Length` → digits (6 when absent), `Suite` → hash (SHA1
//! when absent), `TimeInterval` → period (30 when absent); a non-zero `Time` (T0) is refused
//! because a token starting elsewhere than the epoch cannot be represented. The serial is
//! `DeviceInfo/SerialNo`, or the `Key@Id` when there is none.
//!
//! The XML is read with quick-xml into a small tree (element depth limited; no DTD, no
//! entities beyond the five predefined ones and character references, so no entity bombs or
//! external entities); element text is kept in zeroizing buffers.

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use quick_xml::events::{BytesStart, Event};
use quick_xml::XmlVersion;
use zeroize::Zeroizing;

use super::rows::{self, Report, RowCheck};
use super::xmlenc::{Cipher, MacAlgorithm, OpenError};
use super::{ImportOptions, ImportRow, RowError};
use crate::otp::TotpSpec;
use crate::secret::Seed;

/// Deeper than any PSKC file needs; bounds recursion over the tree.
const MAX_DEPTH: usize = 32;

/// Accepts base64 with or without padding (producers differ).
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

const PSK_FIX: &str =
    "check that --psk-hex / --psk-file is the key the vendor sent for this file (it is usually sent separately), and that the file was not altered";

/// One element: local name (namespace prefixes dropped), attributes, children, text.
struct Node {
    name: String,
    attrs: Vec<(String, String)>,
    children: Vec<Node>,
    text: Zeroizing<String>,
    line: usize,
}

impl Node {
    fn child(&self, name: &str) -> Option<&Node> {
        self.children.iter().find(|c| c.name == name)
    }

    fn children_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Node> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }

    fn path(&self, names: &[&str]) -> Option<&Node> {
        names.iter().try_fold(self, |node, name| node.child(name))
    }

    fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> &str {
        self.text.trim()
    }

    /// The first descendant (or self) named `name`, depth first.
    fn find(&self, name: &str) -> Option<&Node> {
        if self.name == name {
            return Some(self);
        }
        self.children.iter().find_map(|c| c.find(name))
    }
}

/// Appends without ever leaving a copy of the old contents in a freed buffer. Leading
/// whitespace is dropped (values are trimmed anyway), which keeps the indentation between
/// elements out of container nodes.
fn append(text: &mut Zeroizing<String>, more: &str) {
    if text.is_empty() && more.trim().is_empty() {
        return;
    }
    if text.capacity() - text.len() < more.len() {
        let mut bigger = Zeroizing::new(String::with_capacity((text.len() + more.len()) * 2));
        bigger.push_str(text);
        *text = bigger;
    }
    text.push_str(more);
}

fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    1 + text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
}

fn xml_error(line: usize, reason: String) -> RowError {
    RowError {
        line,
        column: "XML".into(),
        reason,
        fix: "export the PSKC file again; it must be well-formed XML".into(),
    }
}

/// Describes a quick-xml error without quoting the document: its messages name tags and
/// entities, and in a damaged file a "tag" can be a piece of a secret.
fn describe(error: &quick_xml::Error) -> String {
    use quick_xml::errors::IllFormedError;
    let what = match error {
        quick_xml::Error::Syntax(syntax) => {
            return format!("the file is not well-formed XML: {syntax}")
        }
        quick_xml::Error::IllFormed(IllFormedError::MismatchedEndTag { .. }) => {
            "an end tag does not match the element it closes"
        }
        quick_xml::Error::IllFormed(IllFormedError::UnmatchedEndTag(_)) => {
            "an end tag closes an element that was never opened"
        }
        quick_xml::Error::IllFormed(IllFormedError::MissingEndTag(_)) => "an element is not closed",
        quick_xml::Error::IllFormed(_) => "the document is not well-formed",
        quick_xml::Error::InvalidAttr(_) => "an attribute is malformed",
        quick_xml::Error::Encoding(_) => "text that is not UTF-8",
        quick_xml::Error::Escape(_) => "a malformed entity or character reference",
        quick_xml::Error::Namespace(_) => "a malformed namespace declaration",
        quick_xml::Error::Io(_) => "the document could not be read",
    };
    format!("the file is not well-formed XML: {what}")
}

/// A URI from an `Algorithm` attribute, quoted only when it looks like one (in a damaged
/// file an attribute could hold anything).
fn show_uri(uri: &str) -> String {
    let uri = uri.trim();
    if ["urn:", "http://", "https://"]
        .iter()
        .any(|p| uri.starts_with(p))
    {
        format!("'{}'", uri.chars().take(100).collect::<String>())
    } else {
        "an unknown algorithm".to_owned()
    }
}

const MALFORMED_ATTRIBUTE: &str = "the file is not well-formed XML: an attribute is malformed";

fn element(start: &BytesStart<'_>, line: usize) -> Result<Node, RowError> {
    let name = String::from_utf8_lossy(start.local_name().as_ref()).into_owned();
    let mut attrs = Vec::new();
    for attr in start.attributes() {
        let attr = attr.map_err(|_| xml_error(line, MALFORMED_ATTRIBUTE.into()))?;
        let key = String::from_utf8_lossy(attr.key.local_name().as_ref()).into_owned();
        let value = attr
            .normalized_value(XmlVersion::Implicit1_0)
            .map_err(|_| xml_error(line, MALFORMED_ATTRIBUTE.into()))?;
        attrs.push((key, value.into_owned()));
    }
    Ok(Node {
        name,
        attrs,
        children: Vec::new(),
        text: Zeroizing::new(String::new()),
        line,
    })
}

/// Line numbers for offsets that only grow, counted incrementally so a large file is not
/// rescanned from the top for every element.
struct Lines<'t> {
    text: &'t [u8],
    offset: usize,
    line: usize,
}

impl<'t> Lines<'t> {
    fn new(text: &'t str) -> Self {
        Self {
            text: text.as_bytes(),
            offset: 0,
            line: 1,
        }
    }

    fn at(&mut self, offset: usize) -> usize {
        let offset = offset.min(self.text.len());
        if offset < self.offset {
            self.offset = 0;
            self.line = 1;
        }
        self.line += self.text[self.offset..offset]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        self.offset = offset;
        self.line
    }
}

/// Parses the XML into a tree.
fn read_tree(text: &str) -> Result<Node, RowError> {
    // No `trim_text`: it trims each text event, and text is split around `&amp;`-style
    // references, so it would eat the spaces next to them. Values are trimmed when read.
    let mut reader = quick_xml::Reader::from_str(text);
    let mut stack: Vec<Node> = Vec::new();
    let mut root: Option<Node> = None;
    let mut lines = Lines::new(text);
    loop {
        let before = usize::try_from(reader.buffer_position()).unwrap_or(usize::MAX);
        let event = reader.read_event().map_err(|e| {
            let at = usize::try_from(reader.error_position()).unwrap_or(usize::MAX);
            xml_error(line_of(text, at), describe(&e))
        })?;
        // The event starts at the first non-blank byte after the previous one.
        let start = text.get(before..).map_or(before, |rest| {
            before + (rest.len() - rest.trim_start().len())
        });
        let line = lines.at(start);
        let mut finished = None;
        match event {
            Event::Start(e) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(xml_error(
                        line,
                        format!("elements are nested deeper than {MAX_DEPTH} levels"),
                    ));
                }
                stack.push(element(&e, line)?);
            }
            Event::Empty(e) => finished = Some(element(&e, line)?),
            Event::End(_) => finished = stack.pop(),
            Event::Text(t) => {
                if let Some(top) = stack.last_mut() {
                    let decoded = t
                        .decode()
                        .map_err(|_| xml_error(line, "text that is not UTF-8".into()))?;
                    append(&mut top.text, &decoded);
                }
            }
            Event::CData(t) => {
                if let Some(top) = stack.last_mut() {
                    let decoded = t
                        .decode()
                        .map_err(|_| xml_error(line, "text that is not UTF-8".into()))?;
                    append(&mut top.text, &decoded);
                }
            }
            Event::GeneralRef(r) => {
                // Encoded on the stack: a secret may be written as character references.
                let mut utf8 = [0u8; 4];
                let resolved = match r.resolve_char_ref() {
                    Ok(Some(c)) => Some(&*c.encode_utf8(&mut utf8)),
                    Ok(None) => r
                        .decode()
                        .ok()
                        .and_then(|name| quick_xml::escape::resolve_predefined_entity(&name)),
                    Err(_) => None,
                };
                let Some(resolved) = resolved else {
                    return Err(xml_error(
                        line,
                        "an entity reference other than &amp; &lt; &gt; &quot; &apos; or a character reference".into(),
                    ));
                };
                if let Some(top) = stack.last_mut() {
                    append(&mut top.text, resolved);
                }
            }
            Event::Eof => break,
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) | Event::DocType(_) => {}
        }
        if let Some(node) = finished {
            match stack.last_mut() {
                Some(parent) => parent.children.push(node),
                None if root.is_none() => root = Some(node),
                None => {
                    return Err(xml_error(
                        line,
                        "there is more than one top-level element".into(),
                    ))
                }
            }
        }
    }
    if !stack.is_empty() {
        return Err(xml_error(
            line_of(text, text.len()),
            "the file ends before every element is closed (it is truncated)".into(),
        ));
    }
    root.ok_or_else(|| xml_error(1, "the file has no XML element".into()))
}

/// Base64 with any whitespace inside, into a zeroizing buffer.
fn base64_decode(text: &str) -> Option<Zeroizing<Vec<u8>>> {
    let mut compact = Zeroizing::new(String::with_capacity(text.len()));
    compact.extend(text.chars().filter(|c| !c.is_whitespace()));
    BASE64.decode(compact.as_bytes()).ok().map(Zeroizing::new)
}

/// The largest PBKDF2 iteration count read: far above what producers use (1,000–100,000),
/// low enough that a hostile file cannot hold an import for minutes.
const MAX_ITERATIONS: u32 = 2_000_000;

/// The namespace of RFC 6030; the drafts before it used others.
const PSKC_NAMESPACE: &str = "urn:ietf:params:xml:ns:keyprov:pskc";

const PASSWORD_FIX: &str = "check the password the vendor sent for this file (--password-file FILE or the prompt; the password field on the import page or in the API), and that the file was not altered";

const PASSWORD_NEEDED: &str = "give the password the vendor sent for this file: --password-file FILE, or type it when seedvault asks on a terminal; on the import page or in the API, the password field";

const RFC_FILE_FIX: &str = "ask the vendor for the same tokens as an RFC 6030 PSKC file (KeyContainer/KeyPackage, namespace urn:ietf:params:xml:ns:keyprov:pskc), or as a seed CSV";

/// Where the file's encryption key comes from; it decides what a failure tells the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeySource {
    Psk,
    Password,
}

impl KeySource {
    const fn name(self) -> &'static str {
        match self {
            Self::Psk => "the pre-shared key",
            Self::Password => "the password",
        }
    }

    const fn fix(self) -> &'static str {
        match self {
            Self::Psk => PSK_FIX,
            Self::Password => PASSWORD_FIX,
        }
    }
}

/// Why an encrypted value could not be opened.
enum Sealed {
    Unsupported(String),
    Missing(&'static str),
    Open(OpenError),
}

impl Sealed {
    fn problem(&self, what: &str, source: KeySource) -> rows::Problem {
        match self {
            Self::Unsupported(uri) => rows::Problem::new(
                format!("{what} is encrypted with {uri}, which seedvault does not read"),
                "ask the vendor for a file encrypted with one of RFC 6030's algorithms (AES, TripleDES or Camellia, in CBC mode or as a key wrap)",
            ),
            Self::Missing(why) => rows::Problem::new(
                format!("{what} is malformed: {why}"),
                "export the PSKC file again",
            ),
            Self::Open(OpenError::KeyLength { cipher, len, want }) => rows::Problem::new(
                match source {
                    KeySource::Psk => format!(
                        "the file uses {cipher} but the pre-shared key is {len} bytes, not {want}"
                    ),
                    KeySource::Password => format!(
                        "the file uses {cipher} but its DerivedKey makes a {len}-byte key, not {want}"
                    ),
                },
                source.fix(),
            ),
            Self::Open(OpenError::Malformed(why)) => rows::Problem::new(
                format!("{what} is malformed: {why}"),
                "export the PSKC file again; a truncated or damaged file cannot be read",
            ),
            Self::Open(OpenError::WrongKey(why)) => rows::Problem::new(
                format!("{} does not decrypt {what} ({why})", source.name()),
                source.fix(),
            ),
        }
    }
}

/// An `EncryptedValue` (or `MACKey`): its cipher and `CipherValue` bytes.
fn sealed_value(node: &Node) -> Result<(Cipher, Zeroizing<Vec<u8>>), Sealed> {
    let uri = node
        .path(&["EncryptionMethod"])
        .and_then(|m| m.attr("Algorithm"))
        .ok_or(Sealed::Missing("it has no EncryptionMethod Algorithm"))?;
    let cipher = Cipher::from_uri(uri).ok_or_else(|| Sealed::Unsupported(show_uri(uri)))?;
    let value = node
        .path(&["CipherData", "CipherValue"])
        .ok_or(Sealed::Missing("it has no CipherData/CipherValue"))?;
    let bytes =
        base64_decode(value.text()).ok_or(Sealed::Missing("the CipherValue is not base64"))?;
    Ok((cipher, bytes))
}

/// The keys an encrypted file needs, opened once.
struct Keys {
    /// The pre-shared or password-derived key; `None` when nothing in the file is encrypted.
    key: Option<Zeroizing<Vec<u8>>>,
    source: KeySource,
    /// From `MACMethod`: the algorithm and the (decrypted) MAC key.
    mac: Option<(MacAlgorithm, Zeroizing<Vec<u8>>)>,
}

/// A problem with the file's `EncryptionKey`: line, element, reason, fix.
type KeyProblem = (usize, &'static str, String, String);

fn key_problem(
    node: &Node,
    element: &'static str,
    reason: impl Into<String>,
    fix: impl Into<String>,
) -> KeyProblem {
    (node.line, element, reason.into(), fix.into())
}

/// PBKDF2 (RFC 6030 §6.2, RFC 8018): the key from `EncryptionKey/DerivedKey` and the password.
fn derive_key(
    root: &Node,
    derived: &Node,
    password: &str,
) -> Result<Zeroizing<Vec<u8>>, KeyProblem> {
    const EXPORT_AGAIN: &str =
        "export the PSKC file again; RFC 6030 §6.2 lists the PBKDF2 parameters it needs";
    let method = derived.child("KeyDerivationMethod").ok_or_else(|| {
        key_problem(
            derived,
            "KeyDerivationMethod",
            "the DerivedKey has no KeyDerivationMethod",
            EXPORT_AGAIN,
        )
    })?;
    let uri = method.attr("Algorithm").unwrap_or("");
    if !uri.trim().ends_with("#pbkdf2") {
        return Err(key_problem(
            method,
            "KeyDerivationMethod",
            format!("the key is derived with {}, which seedvault does not read (it reads PBKDF2)", show_uri(uri)),
            "ask the vendor for the file protected with PBKDF2 (RFC 6030 §6.2) or with a pre-shared key",
        ));
    }
    let params = method.child("PBKDF2-params").ok_or_else(|| {
        key_problem(
            method,
            "PBKDF2-params",
            "the KeyDerivationMethod has no PBKDF2-params",
            EXPORT_AGAIN,
        )
    })?;
    let salt = params
        .path(&["Salt", "Specified"])
        .and_then(|s| base64_decode(s.text()))
        .ok_or_else(|| {
            key_problem(
                params,
                "Salt",
                "the PBKDF2-params have no base64 Salt/Specified",
                EXPORT_AGAIN,
            )
        })?;
    let iterations = params
        .child("IterationCount")
        .and_then(|c| c.text().parse::<u32>().ok())
        .filter(|n| (1..=MAX_ITERATIONS).contains(n))
        .ok_or_else(|| {
            key_problem(
                params,
                "IterationCount",
                format!("the PBKDF2 IterationCount is missing or not a whole number from 1 to {MAX_ITERATIONS}"),
                EXPORT_AGAIN,
            )
        })?;
    let prf_uri = params
        .child("PRF")
        .and_then(|p| p.attr("Algorithm"))
        .unwrap_or("");
    let prf = MacAlgorithm::from_prf_uri(prf_uri).ok_or_else(|| {
        key_problem(
            params,
            "PRF",
            format!("the PBKDF2 PRF {} is not supported", show_uri(prf_uri)),
            "ask the vendor for PBKDF2 with HMAC-SHA1 or HMAC-SHA2",
        )
    })?;
    // Without a KeyLength the key is as long as the cipher it is used with needs.
    let length = match params.child("KeyLength") {
        Some(length) => length
            .text()
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=64).contains(n))
            .ok_or_else(|| {
                key_problem(
                    length,
                    "KeyLength",
                    "the PBKDF2 KeyLength is not a whole number from 1 to 64",
                    EXPORT_AGAIN,
                )
            })?,
        None => root
            .find("EncryptionMethod")
            .and_then(|m| m.attr("Algorithm"))
            .and_then(Cipher::from_uri)
            .map_or(16, Cipher::key_len),
    };
    let mut key = Zeroizing::new(vec![0u8; length]);
    prf.pbkdf2(password.as_bytes(), &salt, iterations, &mut key);
    Ok(key)
}

impl Keys {
    /// Checks what the file needs against what the caller gave; errors go to `report`.
    fn open(root: &Node, options: &ImportOptions, report: &mut Report) -> Option<Self> {
        let Some(encrypted) = root.find("EncryptedValue") else {
            if options.psk.is_some() || options.password.is_some() {
                report.warn(
                    root.line,
                    "a pre-shared key or password was given but the secrets in this file are not encrypted; it was ignored",
                );
            }
            return Some(Keys {
                key: None,
                source: KeySource::Psk,
                mac: None,
            });
        };
        let (key, source) = if let Some(derived) = root.path(&["EncryptionKey", "DerivedKey"]) {
            let Some(password) = options.password.as_deref() else {
                let fix = if options.psk.is_some() {
                    format!("this file is protected with a password, not a pre-shared key; {PASSWORD_NEEDED}")
                } else {
                    PASSWORD_NEEDED.to_owned()
                };
                report.error(
                    derived.line,
                    "DerivedKey",
                    "the secrets are encrypted with a key derived from a password (PBKDF2, RFC 6030 §6.2)",
                    fix,
                );
                return None;
            };
            if options.psk.is_some() {
                report.warn(
                    derived.line,
                    "a pre-shared key was given but this file's key is derived from a password; the pre-shared key was ignored",
                );
            }
            match derive_key(root, derived, password) {
                Ok(key) => (key, KeySource::Password),
                Err((line, element, reason, fix)) => {
                    report.error(line, element, reason, fix);
                    return None;
                }
            }
        } else {
            let Some(psk) = options.psk.as_deref() else {
                let fix = if options.password.is_some() {
                    "this file is protected with a pre-shared key, not a password: pass the key the vendor sent with --psk-hex HEX or --psk-file FILE"
                } else {
                    "pass the key the vendor sent with --psk-hex HEX or --psk-file FILE"
                };
                report.error(
                    encrypted.line,
                    "EncryptedValue",
                    "the secrets in this file are encrypted with a pre-shared key",
                    fix,
                );
                return None;
            };
            if options.password.is_some() {
                report.warn(
                    root.line,
                    "a password was given but this file is protected with a pre-shared key; the password was ignored",
                );
            }
            (Zeroizing::new(psk.to_vec()), KeySource::Psk)
        };
        let mac = match root.child("MACMethod") {
            None => None,
            Some(method) => {
                let uri = method.attr("Algorithm").unwrap_or("");
                let Some(algorithm) = MacAlgorithm::from_uri(uri) else {
                    report.error(
                        method.line,
                        "MACMethod",
                        format!("the MAC algorithm {} is not supported", show_uri(uri)),
                        "seedvault checks HMAC-SHA1, HMAC-SHA224, HMAC-SHA256, HMAC-SHA384 and HMAC-SHA512 ValueMACs; ask the vendor for one of them",
                    );
                    return None;
                };
                let mac_key = match method.child("MACKey") {
                    // Older producers leave the MAC key out: the file's key is the MAC key.
                    None => key.clone(),
                    Some(mac_key) => {
                        let opened = sealed_value(mac_key).and_then(|(cipher, sealed)| {
                            cipher.open(&key, &sealed).map_err(Sealed::Open)
                        });
                        match opened {
                            Ok(opened) => opened,
                            Err(e) => {
                                report.problem(
                                    mac_key.line,
                                    "MACKey",
                                    e.problem("the MAC key", source),
                                );
                                return None;
                            }
                        }
                    }
                };
                Some((algorithm, mac_key))
            }
        };
        Some(Keys {
            key: Some(key),
            source,
            mac,
        })
    }

    /// Checks a `ValueMAC` over the `CipherValue` (IV || ciphertext, RFC 6030 §6.1.1).
    fn mac_matches(&self, sealed: &[u8], value_mac: &[u8]) -> bool {
        match (&self.mac, &self.key) {
            (Some((algorithm, key)), _) => algorithm.verify(key, sealed, value_mac),
            (None, Some(key)) => MacAlgorithm::from_len(value_mac.len())
                .is_some_and(|a| a.verify(key, sealed, value_mac)),
            (None, None) => false,
        }
    }

    /// The plaintext of the `EncryptedValue` in `holder` (a `Secret`, `Time`, …), its
    /// `ValueMAC` checked first: nothing is decrypted that did not authenticate.
    fn open_value(
        &self,
        holder: &Node,
        encrypted: &Node,
        what: &str,
    ) -> Result<Zeroizing<Vec<u8>>, (&'static str, rows::Problem)> {
        let Some(key) = self.key.as_deref() else {
            return Err((
                "EncryptedValue",
                rows::Problem::new(
                    format!("{what} is encrypted but the file names no key"),
                    "export the PSKC file again",
                ),
            ));
        };
        let (cipher, sealed) = sealed_value(encrypted)
            .map_err(|e| ("EncryptedValue", e.problem(what, self.source)))?;
        match holder.child("ValueMAC") {
            Some(value_mac) => {
                let mac = base64_decode(value_mac.text()).ok_or((
                    "ValueMAC",
                    rows::Problem::new(
                        format!("the ValueMAC of {what} is not base64"),
                        "export the PSKC file again",
                    ),
                ))?;
                if !self.mac_matches(&sealed, &mac) {
                    return Err((
                        "ValueMAC",
                        rows::Problem::new(
                            format!(
                                "the ValueMAC of {what} does not match: {} is wrong or the file was altered",
                                self.source.name()
                            ),
                            self.source.fix(),
                        ),
                    ));
                }
            }
            // CBC has no integrity of its own: without a MAC a wrong key can yield a wrong seed.
            None if cipher.is_cbc() => {
                return Err((
                    "ValueMAC",
                    rows::Problem::new(
                        format!("{what} is encrypted with {} but has no ValueMAC, so a wrong key could not be detected", cipher.name()),
                        "ask the vendor for the file with MACMethod and ValueMAC (RFC 6030 §6.1.1)",
                    ),
                ));
            }
            // Key wraps check their own integrity.
            None => {}
        }
        cipher
            .open(key, &sealed)
            .map_err(|e| ("EncryptedValue", Sealed::Open(e).problem(what, self.source)))
    }
}

/// The draft namespace the root declares, if it is not RFC 6030's.
fn draft_namespace(root: &Node) -> Option<&str> {
    let declared: Vec<&str> = root
        .attrs
        .iter()
        .map(|(_, v)| v.trim())
        .filter(|v| v.starts_with("urn:ietf:params:xml:ns:keyprov:"))
        .collect();
    if declared.contains(&PSKC_NAMESPACE) {
        None
    } else {
        declared.first().copied()
    }
}

pub(crate) fn parse(text: &str, options: &ImportOptions, report: &mut Report) {
    let root = match read_tree(text) {
        Ok(root) => root,
        Err(e) => {
            report.push_error(e);
            return;
        }
    };
    if root.name != "KeyContainer" {
        report.error(
            root.line,
            "KeyContainer",
            "the top-level element is not a PSKC <KeyContainer>",
            "import the vendor's PSKC (RFC 6030) file",
        );
        return;
    }
    let draft = draft_namespace(&root);
    if root.child("KeyPackage").is_none() {
        // The drafts before RFC 6030 put keys in `Device` elements (`Key@KeyAlgorithm`,
        // `Usage`, `Data Name=…`): a different structure, refused rather than guessed at.
        if root.child("Device").is_some() || draft.is_some() {
            let ns = draft.map_or_else(String::new, |ns| {
                format!(", namespace '{}'", ns.chars().take(80).collect::<String>())
            });
            report.error(
                root.line,
                "KeyContainer",
                format!("this is a pre-RFC draft PSKC file (keys in Device elements{ns}), not RFC 6030 PSKC, and seedvault does not read it"),
                RFC_FILE_FIX,
            );
        } else {
            report.error(
                root.line,
                "KeyContainer",
                "the KeyContainer holds no KeyPackage, so there are no keys to import",
                "check that this is the vendor's seed file and not an empty export",
            );
        }
        return;
    }
    if let Some(ns) = draft {
        report.warn(
            root.line,
            format!(
                "the KeyContainer uses the pre-RFC namespace '{}'; its structure is RFC 6030's (KeyPackage/Key), so it was read as PSKC 1.0",
                ns.chars().take(80).collect::<String>()
            ),
        );
    }
    if root.attr("Version").is_some_and(|v| v.trim() != "1.0") {
        report.warn(
            root.line,
            "the KeyContainer is not Version=\"1.0\"; it was read as PSKC 1.0",
        );
    }
    let Some(keys) = Keys::open(&root, options, report) else {
        return;
    };
    for package in root.children_named("KeyPackage") {
        read_package(package, &keys, options.skip_unsupported, report);
    }
    if report.skipped() > 0 && report.is_empty() {
        report.error(
            root.line,
            "KeyContainer",
            format!(
                "none of the {} keys in the file is TOTP, so nothing can be escrowed",
                report.skipped()
            ),
            "seedvault escrows TOTP tokens only; ask the vendor for the TOTP tokens' file",
        );
    }
}

/// The first `DeviceInfo` child (or `Key` child) named `name`, trimmed, if any.
fn field<'n>(package: &'n Node, key: &'n Node, name: &str) -> Option<&'n str> {
    package
        .path(&["DeviceInfo", name])
        .or_else(|| key.child(name))
        .map(Node::text)
}

/// What a `Key@Algorithm` names, for the keys seedvault does not escrow.
fn unsupported_kind(uri: &str) -> Option<String> {
    let kind = uri
        .rsplit([':', '#'])
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    match kind.as_str() {
        "totp" => None,
        "hotp" => Some("an HOTP (counter-based) key".to_owned()),
        _ if uri.to_ascii_lowercase().contains("ocra") => {
            Some("an OCRA (challenge-response) key".to_owned())
        }
        _ => Some(format!("a key of algorithm {}", show_uri(uri))),
    }
}

/// A whole number from a `Data` element (`Time`, `TimeInterval`, `Counter`): a `PlainValue`,
/// or an `EncryptedValue` holding it as an 8-byte big-endian integer (RFC 6030 §4.3.3).
fn read_number(
    node: &Node,
    keys: &Keys,
    name: &'static str,
) -> Result<u64, (&'static str, rows::Problem)> {
    if let Some(plain) = node.child("PlainValue") {
        return plain.text().parse::<u64>().map_err(|_| {
            (
                name,
                rows::Problem::new(
                    format!("the {name} PlainValue is not a whole number"),
                    "export the PSKC file again",
                ),
            )
        });
    }
    let Some(encrypted) = node.child("EncryptedValue") else {
        return Err((
            name,
            rows::Problem::new(
                format!("the {name} has neither a PlainValue nor an EncryptedValue"),
                "export the PSKC file again",
            ),
        ));
    };
    let bytes = keys.open_value(node, encrypted, &format!("the {name} value"))?;
    if bytes.is_empty() || bytes.len() > 8 {
        return Err((
            name,
            rows::Problem::new(
                format!("the decrypted {name} is not an integer of 1 to 8 bytes"),
                "export the PSKC file again",
            ),
        ));
    }
    Ok(bytes.iter().fold(0u64, |n, b| (n << 8) | u64::from(*b)))
}

fn read_package(package: &Node, keys: &Keys, skip_unsupported: bool, report: &mut Report) {
    let line = package.line;
    let mut key_nodes = package.children_named("Key");
    let (Some(key), None) = (key_nodes.next(), key_nodes.next()) else {
        report.error(
            line,
            "Key",
            "a KeyPackage must hold exactly one Key",
            "export the PSKC file again",
        );
        return;
    };
    let Some(algorithm_uri) = key.attr("Algorithm").map(str::trim) else {
        let reason = if key.attr("KeyAlgorithm").is_some() {
            "the Key has a KeyAlgorithm attribute (a pre-RFC draft name) but no Algorithm attribute, so seedvault cannot tell whether it is a TOTP key"
        } else {
            "the Key has no Algorithm attribute, so seedvault cannot tell whether it is a TOTP key"
        };
        report.error(
            line,
            "Algorithm",
            reason,
            "ask the vendor for an export that names each key's algorithm (Algorithm=\"urn:ietf:params:xml:ns:keyprov:pskc:totp\" for TOTP tokens)",
        );
        return;
    };
    let serial_text = package
        .path(&["DeviceInfo", "SerialNo"])
        .map(Node::text)
        .or_else(|| key.attr("Id"))
        .unwrap_or("");
    if let Some(kind) = unsupported_kind(algorithm_uri) {
        let which = rows::check_serial(serial_text)
            .map_or_else(|_| String::new(), |s| format!(" (serial {s})"));
        if skip_unsupported {
            report.skip(
                line,
                format!("{kind}{which} was not escrowed: seedvault escrows TOTP tokens only"),
            );
        } else {
            report.error(
                line,
                "Algorithm",
                format!("{kind}{which}: seedvault escrows TOTP tokens only"),
                "to import the file's TOTP keys and list the others as not escrowed, pass --skip-unsupported (on the import page: \"Skip keys that are not TOTP\"; in the API: skip_unsupported=true); or ask the vendor for a file with the TOTP keys only",
            );
        }
        return;
    }
    let mut check = RowCheck::new(line, report);
    let serial = check.take("SerialNo", rows::check_serial(serial_text));
    let mut text_of = |name: &'static str| {
        let raw = field(package, key, name).unwrap_or("");
        check.take(name, rows::check_text(name, raw)).flatten()
    };
    let manufacturer = text_of("Manufacturer");
    let model = text_of("Model");
    let display_name = text_of("FriendlyName");
    let user = text_of("UserId");
    let format = key.path(&["AlgorithmParameters", "ResponseFormat"]);
    let length = format.and_then(|f| f.attr("Length")).unwrap_or("");
    let digits = check.take("ResponseFormat", rows::check_digits(length));
    if format
        .and_then(|f| f.attr("Encoding"))
        .is_some_and(|e| !e.trim().eq_ignore_ascii_case("DECIMAL"))
    {
        check.fail(
            "ResponseFormat",
            rows::Problem::new(
                "the token's codes are not DECIMAL",
                "seedvault escrows tokens that show decimal codes",
            ),
        );
    }
    let suite = key
        .path(&["AlgorithmParameters", "Suite"])
        .map_or("", Node::text);
    let algorithm = check.take("Suite", rows::check_algorithm(suite));
    let data = key.child("Data");
    // `None`: absent; `Some(None)`: present but unreadable (reported).
    let number = |check: &mut RowCheck<'_>, name: &'static str| -> Option<Option<u64>> {
        let node = data.and_then(|d| d.child(name))?;
        match read_number(node, keys, name) {
            Ok(n) => Some(Some(n)),
            Err((column, problem)) => {
                check.fail(column, problem);
                Some(None)
            }
        }
    };
    let period = match number(&mut check, "TimeInterval") {
        None => Some(30),
        Some(None) => None,
        Some(Some(n)) => check.take("TimeInterval", rows::check_period(&n.to_string(), false)),
    };
    if let Some(Some(time)) = number(&mut check, "Time") {
        if time != 0 {
            check.fail(
                "Time",
                rows::Problem::new(
                    "the key counts time steps from a start time (T0) other than 0, which seedvault cannot represent",
                    "ask the vendor for the token's data with T0 = 0",
                ),
            );
        }
    }
    // A TOTP key has no use for a counter, but its ValueMAC is still checked.
    let _ = number(&mut check, "Counter");
    let seed = match data.and_then(|d| d.child("Secret")) {
        None => {
            check.fail(
                "Secret",
                rows::Problem::new(
                    "the key has no Data/Secret",
                    "export the PSKC file again, with the secrets",
                ),
            );
            None
        }
        Some(secret) => match open_secret(secret, keys) {
            Ok(seed) => Some(seed),
            Err((column, problem)) => {
                check.fail(column, problem);
                None
            }
        },
    };
    let (Some(serial), Some(seed), Some(digits), Some(algorithm), Some(period), true) =
        (serial, seed, digits, algorithm, period, check.passed())
    else {
        return;
    };
    if let Err(e) = TotpSpec::new(algorithm, digits, period) {
        report.error(line, "TimeInterval", e.to_string(), "");
        return;
    }
    let owner = match user {
        Some(user) if rows::looks_like_upn(&user) => Some(user),
        Some(_) => {
            report.warn(
                line,
                format!("serial {serial}: the UserId is not a UPN (name@domain); the token is escrowed unassigned"),
            );
            None
        }
        None => None,
    };
    let warnings = rows::seed_warnings(&seed);
    report.add_row(
        ImportRow {
            line,
            serial,
            owner,
            seed,
            algorithm,
            digits,
            period,
            manufacturer,
            model,
            display_name,
        },
        "SerialNo",
        warnings,
    );
}

/// The seed in `Data/Secret`: plain, or checked against its `ValueMAC` and decrypted.
fn open_secret(secret: &Node, keys: &Keys) -> Result<Seed, (&'static str, rows::Problem)> {
    let mut bytes = if let Some(plain) = secret.child("PlainValue") {
        base64_decode(plain.text()).ok_or((
            "Secret",
            rows::Problem::new("the PlainValue is not base64", "export the PSKC file again"),
        ))?
    } else if let Some(encrypted) = secret.child("EncryptedValue") {
        keys.open_value(secret, encrypted, "the secret")?
    } else {
        return Err((
            "Secret",
            rows::Problem::new(
                "the Secret has neither a PlainValue nor an EncryptedValue",
                "export the PSKC file again, with the secrets",
            ),
        ));
    };
    Seed::from_bytes(std::mem::take(&mut *bytes)).map_err(|e| ("Secret", rows::secret_problem(&e)))
}

/// True when `text` is a PSKC file whose key is derived from a password, so a caller can ask
/// for one before importing.
pub(crate) fn needs_password(text: &str) -> bool {
    read_tree(text).is_ok_and(|root| {
        root.name == "KeyContainer" && root.path(&["EncryptionKey", "DerivedKey"]).is_some()
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use zeroize::Zeroizing;

    use hmac::{Hmac, Mac};

    use super::super::testutil::*;
    use super::super::{parse, ImportFormat, ImportOptions, ParsedFile};
    use super::*;
    use crate::secret::Algorithm;

    fn pskc(text: &str, psk: Option<&[u8]>) -> ParsedFile {
        parse(
            text.as_bytes(),
            &ImportOptions {
                psk: psk.map(|k| Zeroizing::new(k.to_vec())),
                ..ImportOptions::default()
            },
        )
    }

    fn encrypted_sample() -> String {
        sample_text("pskc-encrypted.xml")
    }

    fn rfc_seed() -> &'static [u8] {
        b"12345678901234567890"
    }

    /// The `CipherValue` a producer writes for `plain`.
    fn seal(cipher: Cipher, key: &[u8], plain: &[u8]) -> Vec<u8> {
        super::super::xmlenc::seal::seal(cipher, key, plain)
    }

    fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
        let mut mac = <Hmac<sha2::Sha256> as hmac::digest::KeyInit>::new_from_slice(key).unwrap();
        mac.update(data);
        mac.finalize().into_bytes().to_vec()
    }

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    /// A one-key AES-256-CBC + HMAC-SHA256 file, built the RFC 6030 §6.1.1 way.
    fn aes256_file(
        psk: &[u8],
        mac_key: &[u8],
        with_mac_method: bool,
        with_value_mac: bool,
    ) -> String {
        let sealed_mac_key = seal(Cipher::Aes256Cbc, psk, mac_key);
        let sealed_secret = seal(Cipher::Aes256Cbc, psk, rfc_seed());
        let mac_method = if with_mac_method {
            format!(
                r#"<pskc:MACMethod Algorithm="http://www.w3.org/2001/04/xmldsig-more#hmac-sha256"><pskc:MACKey><xenc:EncryptionMethod Algorithm="http://www.w3.org/2001/04/xmlenc#aes256-cbc"/><xenc:CipherData><xenc:CipherValue>{}</xenc:CipherValue></xenc:CipherData></pskc:MACKey></pskc:MACMethod>"#,
                b64(&sealed_mac_key)
            )
        } else {
            String::new()
        };
        let value_mac = if with_value_mac {
            format!(
                "<pskc:ValueMAC>{}</pskc:ValueMAC>",
                b64(&hmac_sha256(mac_key, &sealed_secret))
            )
        } else {
            String::new()
        };
        format!(
            r#"<?xml version="1.0"?>
<pskc:KeyContainer Version="1.0" xmlns:pskc="urn:ietf:params:xml:ns:keyprov:pskc" xmlns:ds="http://www.w3.org/2000/09/xmldsig#" xmlns:xenc="http://www.w3.org/2001/04/xmlenc#">
<pskc:EncryptionKey><ds:KeyName>PSK</ds:KeyName></pskc:EncryptionKey>
{mac_method}
<pskc:KeyPackage>
  <pskc:DeviceInfo><pskc:Manufacturer>Acme &amp; Co</pskc:Manufacturer><pskc:SerialNo>A256-1</pskc:SerialNo></pskc:DeviceInfo>
  <pskc:Key Id="k1" Algorithm="urn:ietf:params:xml:ns:keyprov:pskc:totp">
    <pskc:AlgorithmParameters><pskc:ResponseFormat Length="8" Encoding="DECIMAL"/></pskc:AlgorithmParameters>
    <pskc:Data>
      <pskc:Secret><pskc:EncryptedValue><xenc:EncryptionMethod Algorithm="http://www.w3.org/2001/04/xmlenc#aes256-cbc"/><xenc:CipherData><xenc:CipherValue>
        {}
      </xenc:CipherValue></xenc:CipherData></pskc:EncryptedValue>{value_mac}</pskc:Secret>
      <pskc:Time><pskc:PlainValue>0</pskc:PlainValue></pskc:Time>
    </pskc:Data>
    <pskc:UserId>alice@example.org</pskc:UserId>
  </pskc:Key>
</pskc:KeyPackage>
</pskc:KeyContainer>
"#,
            b64(&sealed_secret)
        )
    }

    fn plain_package(serial: &str, key_attrs: &str, data: &str) -> String {
        format!(
            r#"<KeyPackage><DeviceInfo><SerialNo>{serial}</SerialNo></DeviceInfo>
<Key Id="{serial}" {key_attrs}><Data><Secret><PlainValue>MTIzNDU2Nzg5MDEyMzQ1Njc4OTA=</PlainValue></Secret>{data}</Data></Key></KeyPackage>
"#
        )
    }

    fn container(body: &str) -> String {
        format!("<KeyContainer Version=\"1.0\" xmlns=\"urn:ietf:params:xml:ns:keyprov:pskc\">\n{body}</KeyContainer>\n")
    }

    const TOTP: &str = r#"Algorithm="urn:ietf:params:xml:ns:keyprov:pskc:totp""#;

    #[test]
    fn the_plain_sample_reads_device_info() {
        let parsed = pskc(&sample_text("pskc-plain.xml"), None);
        assert_eq!(parsed.format, ImportFormat::Pskc);
        assert!(parsed.errors.is_empty(), "{:?}", errors_of(&parsed));
        assert_eq!(serials(&parsed), ["PSKC-P1", "PSKC-P2"]);
        let row = &parsed.rows[0];
        assert_eq!(row.line, 3);
        assert_eq!(row.manufacturer.as_deref(), Some("Token2"));
        assert_eq!(row.model.as_deref(), Some("C302"));
        assert_eq!(
            (row.algorithm, row.digits, row.period),
            (Algorithm::Sha1, 6, 30)
        );
        assert_eq!(row.owner, None);
    }

    #[test]
    fn the_encrypted_sample_opens_with_its_key_and_checks_its_macs() {
        let expected = expected_codes();
        let parsed = pskc(&encrypted_sample(), Some(&sample_psk()));
        assert!(parsed.errors.is_empty(), "{:?}", errors_of(&parsed));
        assert_eq!(serials(&parsed), ["PSKC-E1", "PSKC-E2"]);
        assert_eq!(parsed.rows[1].line, 9);
        for row in &parsed.rows {
            assert_eq!(&code_of(row), &expected[&row.serial]);
        }
    }

    #[test]
    fn an_encrypted_file_without_a_key_names_both_key_options() {
        let parsed = pskc(&encrypted_sample(), None);
        assert!(parsed.rows.is_empty());
        assert_eq!(parsed.errors.len(), 1, "{:?}", errors_of(&parsed));
        let e = &parsed.errors[0];
        assert_eq!(e.line, 7);
        assert!(
            e.fix.contains("--psk-hex") && e.fix.contains("--psk-file"),
            "{e}"
        );
    }

    #[test]
    fn a_wrong_key_is_refused_and_yields_no_seed() {
        for wrong in [[0u8; 16], [0x12; 16], {
            let mut k = [0u8; 16];
            k.copy_from_slice(&sample_psk());
            k[15] ^= 1;
            k
        }] {
            let parsed = pskc(&encrypted_sample(), Some(&wrong));
            assert!(parsed.rows.is_empty());
            assert!(!parsed.errors.is_empty());
            for e in &parsed.errors {
                assert!(e.fix.contains("--psk-hex"), "{e}");
                assert!([4, 5, 9].contains(&e.line), "{e}");
            }
        }
        let long = pskc(&encrypted_sample(), Some(&[0x12; 32]));
        assert!(
            long.errors[0]
                .reason
                .contains("AES-128-CBC but the pre-shared key is 32 bytes"),
            "{:?}",
            errors_of(&long)
        );
    }

    #[test]
    fn a_tampered_value_mac_or_ciphertext_fails_on_its_key_package() {
        let psk = sample_psk();
        let bad_mac = encrypted_sample().replace(
            "MKjwxHO7oU4DUbHRAoYDBpHR9kg=",
            "NKjwxHO7oU4DUbHRAoYDBpHR9kg=",
        );
        let parsed = pskc(&bad_mac, Some(&psk));
        assert_eq!(errors_of(&parsed).len(), 1, "{:?}", errors_of(&parsed));
        let e = &parsed.errors[0];
        assert_eq!((e.line, e.column.as_str()), (5, "ValueMAC"));
        assert!(e.reason.contains("does not match"), "{e}");
        let bad_ct = encrypted_sample().replace("kxeXJoPta9I3", "kxeXJoPta9I4");
        let parsed = pskc(&bad_ct, Some(&psk));
        assert_eq!(parsed.errors[0].column, "ValueMAC");
        assert!(!parsed.is_importable());
    }

    #[test]
    fn aes_256_with_an_hmac_sha256_mac_key_decrypts() {
        let psk = [0x42u8; 32];
        let text = aes256_file(&psk, &[0x5A; 32], true, true);
        let parsed = pskc(&text, Some(&psk));
        assert!(parsed.errors.is_empty(), "{:?}", errors_of(&parsed));
        let row = &parsed.rows[0];
        assert_eq!(row.seed.expose(), rfc_seed());
        assert_eq!(row.digits, 8);
        assert_eq!(row.owner.as_deref(), Some("alice@example.org"));
        assert_eq!(row.manufacturer.as_deref(), Some("Acme & Co"));
        // RFC 6238 Appendix B, SHA1, T = 59.
        let spec = TotpSpec::new(row.algorithm, 8, 30).unwrap();
        assert_eq!(
            crate::otp::code_at(&row.seed, &spec, 59, 0).expose(),
            "94287082"
        );
        let wrong = pskc(&text, Some(&[0x43; 32]));
        assert!(wrong.rows.is_empty() && !wrong.errors.is_empty());
    }

    #[test]
    fn without_a_mac_method_the_psk_keys_the_value_mac() {
        let psk = [0x42u8; 32];
        let text = aes256_file(&psk, &psk, false, true);
        let parsed = pskc(&text, Some(&psk));
        assert!(parsed.errors.is_empty(), "{:?}", errors_of(&parsed));
        assert_eq!(parsed.rows[0].seed.expose(), rfc_seed());
    }

    #[test]
    fn an_encrypted_secret_without_a_value_mac_is_refused() {
        let psk = [0x42u8; 32];
        let parsed = pskc(&aes256_file(&psk, &[0x5A; 32], true, false), Some(&psk));
        assert!(parsed.rows.is_empty());
        assert_eq!(parsed.errors[0].column, "ValueMAC");
        assert_eq!(parsed.errors[0].line, 5);
    }

    #[test]
    fn hotp_keys_are_refused_naming_the_line() {
        let text = container(&format!(
            "{}{}",
            plain_package("T1", TOTP, ""),
            plain_package(
                "H1",
                r#"Algorithm="urn:ietf:params:xml:ns:keyprov:pskc:hotp""#,
                "<Counter><PlainValue>0</PlainValue></Counter>"
            )
        ));
        let parsed = pskc(&text, None);
        assert_eq!(serials(&parsed), ["T1"]);
        assert_eq!(parsed.errors.len(), 1);
        let e = &parsed.errors[0];
        assert_eq!((e.line, e.column.as_str()), (4, "Algorithm"));
        assert!(e.reason.contains("HOTP"), "{e}");
    }

    #[test]
    fn parameters_are_read_and_impossible_ones_refused() {
        let text = container(&format!(
            "{}{}{}",
            plain_package(
                "P60",
                TOTP,
                "<TimeInterval><PlainValue>60</PlainValue></TimeInterval>"
            ),
            plain_package("T0", TOTP, "<Time><PlainValue>1000</PlainValue></Time>"),
            plain_package("P60", TOTP, ""),
        ))
        .replacen(
            "<Key Id=\"P60\" Algorithm=\"urn:ietf:params:xml:ns:keyprov:pskc:totp\">",
            "<Key Id=\"P60\" Algorithm=\"urn:ietf:params:xml:ns:keyprov:pskc:totp\"><AlgorithmParameters><Suite>HMAC-SHA256</Suite><ResponseFormat Length=\"8\" Encoding=\"DECIMAL\"/></AlgorithmParameters>",
            1,
        );
        let parsed = pskc(&text, None);
        let row = &parsed.rows[0];
        assert_eq!(
            (row.algorithm, row.digits, row.period),
            (Algorithm::Sha256, 8, 60)
        );
        let found = places(&parsed);
        assert_eq!(
            found,
            [(4, "Time"), (6, "SerialNo")],
            "{:?}",
            errors_of(&parsed)
        );
        assert!(parsed.errors[1].reason.contains("already on line 2"));
    }

    #[test]
    fn the_key_id_stands_in_for_a_missing_serial() {
        let text =
            container(&plain_package("K-9", TOTP, "").replace("<SerialNo>K-9</SerialNo>", ""));
        let parsed = pskc(&text, None);
        assert!(parsed.errors.is_empty(), "{:?}", errors_of(&parsed));
        assert_eq!(serials(&parsed), ["K-9"]);
    }

    #[test]
    fn password_derived_keys_are_refused() {
        let text = encrypted_sample().replace(
            "<EncryptionKey><ds:KeyName>Pre-shared-key</ds:KeyName></EncryptionKey>",
            "<EncryptionKey><DerivedKey><KeyDerivationMethod Algorithm=\"http://www.rsasecurity.com/rsalabs/pkcs/schemas/pkcs-5v2-0#pbkdf2\"/></DerivedKey></EncryptionKey>",
        );
        let parsed = pskc(&text, Some(&sample_psk()));
        assert!(
            parsed.errors[0].reason.contains("PBKDF2"),
            "{:?}",
            errors_of(&parsed)
        );
    }

    #[test]
    fn malformed_xml_is_an_error_with_a_line() {
        let truncated: String = sample_text("pskc-plain.xml")
            .lines()
            .take(5)
            .collect::<Vec<_>>()
            .join("\n");
        let parsed = pskc(&truncated, None);
        assert!(!parsed.errors.is_empty());
        assert_eq!(parsed.errors[0].column, "XML");
        let mismatched = sample_text("pskc-plain.xml").replacen("</Model>", "</Modle>", 1);
        let parsed = pskc(&mismatched, None);
        assert_eq!(parsed.errors[0].line, 3, "{:?}", errors_of(&parsed));
        let bad_b64 = sample_text("pskc-plain.xml").replace(
            "TA37+A3zahgPM8fYSwFS4UV4e+w=",
            "TA37+A3zahgPM8f!SwFS4UV4e+w=",
        );
        let parsed = pskc(&bad_b64, None);
        assert_eq!(
            (parsed.errors[0].line, parsed.errors[0].column.as_str()),
            (3, "Secret")
        );
        assert_secret_absent(&parsed, "TA37+A3zahgPM8f!SwFS4UV4e+w=");
    }

    #[test]
    fn entity_bombs_and_deep_nesting_are_refused_quickly() {
        let bomb = r#"<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>
<KeyContainer><KeyPackage><DeviceInfo><SerialNo>&lol2;</SerialNo></DeviceInfo></KeyPackage></KeyContainer>"#;
        let parsed = pskc(bomb, None);
        assert!(
            parsed.errors[0].reason.contains("entity"),
            "{:?}",
            errors_of(&parsed)
        );
        let deep = format!("<KeyContainer>{}", "<a>".repeat(10_000));
        let parsed = pskc(&deep, None);
        assert!(
            parsed.errors[0].reason.contains("nested deeper"),
            "{:?}",
            errors_of(&parsed)
        );
    }

    #[test]
    fn a_large_file_is_read_in_one_pass_with_right_lines() {
        let packages: String = (0..5000)
            .map(|i| plain_package(&format!("S{i:05}"), TOTP, ""))
            .collect();
        let start = std::time::Instant::now();
        let parsed = pskc(&container(&packages), None);
        assert!(parsed.errors.is_empty(), "{:?}", errors_of(&parsed));
        assert_eq!(parsed.rows.len(), 5000);
        // Each package is two lines after the KeyContainer's.
        assert_eq!(parsed.rows[4999].line, 2 + 2 * 4999);
        assert!(start.elapsed().as_secs() < 20, "{:?}", start.elapsed());
    }

    #[test]
    fn non_pskc_xml_is_refused() {
        let parsed = parse_as(ImportFormat::Pskc, "<Tokens><Token serial=\"1\"/></Tokens>");
        assert_eq!(parsed.errors[0].column, "KeyContainer");
    }

    use super::super::xmlenc::seal::mac as mac_of;
    use super::super::xmlenc::tests::ALL as ALL_CIPHERS;

    const MAC_URIS: [(&str, MacAlgorithm); 5] = [
        (
            "http://www.w3.org/2000/09/xmldsig#hmac-sha1",
            MacAlgorithm::Sha1,
        ),
        (
            "http://www.w3.org/2001/04/xmldsig-more#hmac-sha224",
            MacAlgorithm::Sha224,
        ),
        (
            "http://www.w3.org/2001/04/xmldsig-more#hmac-sha256",
            MacAlgorithm::Sha256,
        ),
        (
            "http://www.w3.org/2001/04/xmldsig-more#hmac-sha384",
            MacAlgorithm::Sha384,
        ),
        (
            "http://www.w3.org/2001/04/xmldsig-more#hmac-sha512",
            MacAlgorithm::Sha512,
        ),
    ];

    /// RFC 6238's SHA-256 seed: 32 bytes, whole 8-byte blocks for every key wrap.
    const SEED32: &[u8] = b"12345678901234567890123456789012";

    fn uri_of(cipher: Cipher) -> String {
        let (base, name) = match cipher {
            Cipher::Aes128Cbc => ("2001/04/xmlenc", "aes128-cbc"),
            Cipher::Aes192Cbc => ("2001/04/xmlenc", "aes192-cbc"),
            Cipher::Aes256Cbc => ("2001/04/xmlenc", "aes256-cbc"),
            Cipher::TdesCbc => ("2001/04/xmlenc", "tripledes-cbc"),
            Cipher::Camellia128Cbc => ("2001/04/xmldsig-more", "camellia128-cbc"),
            Cipher::Camellia192Cbc => ("2001/04/xmldsig-more", "camellia192-cbc"),
            Cipher::Camellia256Cbc => ("2001/04/xmldsig-more", "camellia256-cbc"),
            Cipher::KwAes128 => ("2001/04/xmlenc", "kw-aes128"),
            Cipher::KwAes192 => ("2001/04/xmlenc", "kw-aes192"),
            Cipher::KwAes256 => ("2001/04/xmlenc", "kw-aes256"),
            Cipher::KwAes128Pad => ("2009/xmlenc11", "kw-aes-128-pad"),
            Cipher::KwAes192Pad => ("2009/xmlenc11", "kw-aes-192-pad"),
            Cipher::KwAes256Pad => ("2009/xmlenc11", "kw-aes-256-pad"),
            Cipher::KwTdes => ("2001/04/xmlenc", "kw-tripledes"),
            Cipher::KwCamellia128 => ("2001/04/xmldsig-more", "kw-camellia128"),
            Cipher::KwCamellia192 => ("2001/04/xmldsig-more", "kw-camellia192"),
            Cipher::KwCamellia256 => ("2001/04/xmldsig-more", "kw-camellia256"),
        };
        let uri = format!("http://www.w3.org/{base}#{name}");
        assert_eq!(Cipher::from_uri(&uri), Some(cipher));
        uri
    }

    /// How a built file protects its values.
    struct Protect {
        cipher: Cipher,
        /// `MACMethod` (with a `MACKey` sealed like the values); `None`: the file's key keys
        /// the `ValueMAC`s.
        mac: Option<(&'static str, MacAlgorithm)>,
        value_mac: bool,
        /// `Some`: the key is PBKDF2(password) with `prf`; otherwise `key` is pre-shared.
        password: Option<(&'static str, &'static str)>,
        key: Vec<u8>,
        /// `TimeInterval` and `Time` as `EncryptedValue`s too.
        params: Option<(u64, u64)>,
    }

    impl Protect {
        fn psk(cipher: Cipher) -> Self {
            Protect {
                cipher,
                mac: Some(MAC_URIS[2]),
                value_mac: true,
                password: None,
                key: (1..=cipher.key_len() as u8).collect(),
                params: None,
            }
        }

        /// The file's key: pre-shared, or derived as a producer would.
        fn file_key(&self) -> Vec<u8> {
            match self.password {
                None => self.key.clone(),
                Some((password, prf)) => {
                    let mut key = vec![0u8; self.cipher.key_len()];
                    MacAlgorithm::from_prf_uri(prf).unwrap().pbkdf2(
                        password.as_bytes(),
                        b"salt-123",
                        1000,
                        &mut key,
                    );
                    key
                }
            }
        }

        fn encrypted(&self, holder: &str, plain: &[u8]) -> String {
            let key = self.file_key();
            let mac_key = if self.mac.is_some() {
                vec![0x5Au8; 32]
            } else {
                key.clone()
            };
            let sealed = seal(self.cipher, &key, plain);
            let value_mac = if self.value_mac {
                let algorithm = self.mac.map_or(MacAlgorithm::Sha1, |(_, a)| a);
                format!(
                    "<ValueMAC>{}</ValueMAC>",
                    b64(&mac_of(algorithm, &mac_key, &sealed))
                )
            } else {
                String::new()
            };
            format!(
                r#"<{holder}><EncryptedValue><xenc:EncryptionMethod Algorithm="{}"/><xenc:CipherData><xenc:CipherValue>{}</xenc:CipherValue></xenc:CipherData></EncryptedValue>{value_mac}</{holder}>"#,
                uri_of(self.cipher),
                b64(&sealed)
            )
        }

        /// A file with one KeyPackage per `(serial, algorithm kind)`, on lines 3, 4, ….
        fn file(&self, seed: &[u8], keys: &[(&str, &str)]) -> String {
            let key = self.file_key();
            let encryption_key = match self.password {
                None => "<EncryptionKey><ds:KeyName>PSK</ds:KeyName></EncryptionKey>".to_owned(),
                Some((_, prf)) => format!(
                    r#"<EncryptionKey><xenc11:DerivedKey><xenc11:KeyDerivationMethod Algorithm="http://www.rsasecurity.com/rsalabs/pkcs/schemas/pkcs-5v2-0#pbkdf2"><pkcs5:PBKDF2-params><Salt><Specified>{}</Specified></Salt><IterationCount>1000</IterationCount><PRF Algorithm="{prf}"/></pkcs5:PBKDF2-params></xenc11:KeyDerivationMethod></xenc11:DerivedKey></EncryptionKey>"#,
                    b64(b"salt-123")
                ),
            };
            let mac_method = match self.mac {
                None => String::new(),
                Some((uri, _)) => format!(
                    r#"<MACMethod Algorithm="{uri}"><MACKey><xenc:EncryptionMethod Algorithm="{}"/><xenc:CipherData><xenc:CipherValue>{}</xenc:CipherValue></xenc:CipherData></MACKey></MACMethod>"#,
                    uri_of(self.cipher),
                    b64(&seal(self.cipher, &key, &[0x5A; 32]))
                ),
            };
            let params = self.params.map_or_else(String::new, |(interval, time)| {
                format!(
                    "{}{}",
                    self.encrypted("TimeInterval", &interval.to_be_bytes()),
                    self.encrypted("Time", &time.to_be_bytes())
                )
            });
            let packages: String = keys
                .iter()
                .map(|(serial, kind)| {
                    format!(
                        "<KeyPackage><DeviceInfo><SerialNo>{serial}</SerialNo></DeviceInfo><Key Id=\"{serial}\" Algorithm=\"urn:ietf:params:xml:ns:keyprov:pskc:{kind}\"><Data>{}{params}</Data></Key></KeyPackage>\n",
                        self.encrypted("Secret", seed)
                    )
                })
                .collect();
            format!(
                r#"<KeyContainer Version="1.0" xmlns="urn:ietf:params:xml:ns:keyprov:pskc" xmlns:ds="http://www.w3.org/2000/09/xmldsig#" xmlns:xenc="http://www.w3.org/2001/04/xmlenc#" xmlns:xenc11="http://www.w3.org/2009/xmlenc11#" xmlns:pkcs5="http://www.rsasecurity.com/rsalabs/pkcs/schemas/pkcs-5v2-0#">
{encryption_key}{mac_method}
{packages}</KeyContainer>
"#
            )
        }
    }

    fn with(psk: Option<&[u8]>, password: Option<&str>, skip: bool) -> ImportOptions {
        ImportOptions {
            psk: psk.map(|k| Zeroizing::new(k.to_vec())),
            password: password.map(|p| Zeroizing::new(p.to_owned())),
            skip_unsupported: skip,
            ..ImportOptions::default()
        }
    }

    fn read(text: &str, options: &ImportOptions) -> ParsedFile {
        parse(text.as_bytes(), options)
    }

    #[test]
    fn every_rfc_6030_cipher_opens_under_every_hmac() {
        for cipher in ALL_CIPHERS {
            for mac in MAC_URIS {
                let protect = Protect {
                    mac: Some(mac),
                    ..Protect::psk(cipher)
                };
                let text = protect.file(SEED32, &[("S1", "totp")]);
                let parsed = read(&text, &with(Some(&protect.key), None, false));
                assert!(
                    parsed.errors.is_empty(),
                    "{cipher:?} {mac:?}: {:?}",
                    errors_of(&parsed)
                );
                assert_eq!(parsed.rows[0].seed.expose(), SEED32, "{cipher:?}");
            }
        }
    }

    #[test]
    fn padded_key_wraps_carry_a_20_byte_seed_and_need_no_value_mac() {
        for cipher in [
            Cipher::KwAes128Pad,
            Cipher::KwAes192Pad,
            Cipher::KwAes256Pad,
        ] {
            let protect = Protect {
                mac: None,
                value_mac: false,
                ..Protect::psk(cipher)
            };
            let text = protect.file(rfc_seed(), &[("S1", "totp")]);
            let parsed = read(&text, &with(Some(&protect.key), None, false));
            assert!(
                parsed.errors.is_empty(),
                "{cipher:?}: {:?}",
                errors_of(&parsed)
            );
            assert_eq!(parsed.rows[0].seed.expose(), rfc_seed());
        }
    }

    #[test]
    fn the_rfc_6030_figure_7_file_opens_with_its_password_only() {
        let text = sample_text("pskc-rfc6030-figure7.xml");
        let parsed = read(&text, &with(None, Some("qwerty"), false));
        assert!(parsed.errors.is_empty(), "{:?}", errors_of(&parsed));
        assert_eq!(serials(&parsed), ["987654321"]);
        assert_eq!(parsed.rows[0].seed.expose(), rfc_seed());
        assert_eq!(parsed.rows[0].digits, 8);
        assert!(crate::import::needs_password(text.as_bytes()));
        assert!(!crate::import::needs_password(&read_sample(
            "pskc-encrypted.xml"
        )));

        let wrong = read(&text, &with(None, Some("qwertz"), false));
        assert!(wrong.rows.is_empty());
        assert!(!wrong.errors.is_empty());
        for e in &wrong.errors {
            assert!(e.reason.contains("password"), "{e}");
            assert!(e.fix.contains("--password-file"), "{e}");
        }
        let missing = read(&text, &with(Some(&[0u8; 16]), None, false));
        assert_eq!(
            places(&missing),
            [(9, "DerivedKey")],
            "{:?}",
            errors_of(&missing)
        );
        assert!(missing.errors[0].fix.contains("--password-file"));
        assert!(missing.errors[0].fix.contains("not a pre-shared key"));
    }

    #[test]
    fn password_derived_keys_read_with_each_prf_and_refuse_a_wrong_password() {
        for (prf, _) in [("", MacAlgorithm::Sha1), MAC_URIS[2], MAC_URIS[4]] {
            let protect = Protect {
                password: Some(("correct horse", prf)),
                mac: Some(MAC_URIS[3]),
                ..Protect::psk(Cipher::Aes256Cbc)
            };
            let text = protect.file(rfc_seed(), &[("P1", "totp"), ("P2", "totp")]);
            let parsed = read(&text, &with(None, Some("correct horse"), false));
            assert!(parsed.errors.is_empty(), "{prf}: {:?}", errors_of(&parsed));
            assert_eq!(parsed.rows.len(), 2);
            let wrong = read(&text, &with(None, Some("correct horsf"), false));
            assert!(wrong.rows.is_empty() && !wrong.errors.is_empty());
            assert!(wrong
                .errors
                .iter()
                .all(|e| e.fix.contains("--password-file")));
        }
    }

    #[test]
    fn encrypted_time_and_interval_are_opened_and_checked_like_secrets() {
        let protect = Protect {
            params: Some((60, 0)),
            mac: Some(MAC_URIS[1]),
            ..Protect::psk(Cipher::KwAes256Pad)
        };
        let text = protect.file(SEED32, &[("E1", "totp")]);
        let parsed = read(&text, &with(Some(&protect.key), None, false));
        assert!(parsed.errors.is_empty(), "{:?}", errors_of(&parsed));
        assert_eq!(parsed.rows[0].period, 60);

        let shifted = Protect {
            params: Some((30, 1000)),
            ..protect
        };
        let parsed = read(
            &shifted.file(SEED32, &[("E1", "totp")]),
            &with(Some(&shifted.key), None, false),
        );
        assert_eq!(places(&parsed), [(3, "Time")], "{:?}", errors_of(&parsed));

        // A CBC-encrypted interval whose MAC was tampered with.
        let cbc = Protect {
            params: Some((60, 0)),
            ..Protect::psk(Cipher::Aes128Cbc)
        };
        let text = cbc.file(SEED32, &[("E1", "totp")]);
        let interval_mac = text
            .split("<TimeInterval>")
            .nth(1)
            .unwrap()
            .split("<ValueMAC>")
            .nth(1)
            .unwrap()
            .split('<')
            .next()
            .unwrap()
            .to_owned();
        let tampered = text.replace(&interval_mac, &b64(&[0u8; 32]));
        let parsed = read(&tampered, &with(Some(&cbc.key), None, false));
        assert!(parsed.rows.is_empty());
        let e = &parsed.errors[0];
        assert_eq!((e.line, e.column.as_str()), (3, "ValueMAC"));
        assert!(e.reason.contains("TimeInterval"), "{e}");
    }

    #[test]
    fn truncated_ciphertext_and_wrong_padding_are_refused_before_any_seed() {
        let protect = Protect::psk(Cipher::Aes128Cbc);
        let key = protect.file_key();
        // Ciphertext cut short, with a MAC that matches the cut (so the length check speaks).
        let sealed = seal(Cipher::Aes128Cbc, &key, SEED32);
        let cut = &sealed[..sealed.len() - 5];
        let text = protect.file(SEED32, &[("T1", "totp")]);
        let full = b64(&sealed);
        let value_mac = b64(&mac_of(MacAlgorithm::Sha256, &[0x5A; 32], &sealed));
        let truncated = text.replace(&full, &b64(cut)).replace(
            &value_mac,
            &b64(&mac_of(MacAlgorithm::Sha256, &[0x5A; 32], cut)),
        );
        let parsed = read(&truncated, &with(Some(&key), None, false));
        assert!(parsed.rows.is_empty());
        assert!(
            parsed.errors[0].reason.contains("truncated"),
            "{:?}",
            errors_of(&parsed)
        );
        // Plain text whose last byte is no valid padding, sealed without padding, MAC valid.
        let mut plain = SEED32.to_vec();
        plain[31] = 0;
        let mut bad = seal(Cipher::Aes128Cbc, &key, &plain);
        bad.truncate(16 + 32);
        let bad_pad = text.replace(&full, &b64(&bad)).replace(
            &value_mac,
            &b64(&mac_of(MacAlgorithm::Sha256, &[0x5A; 32], &bad)),
        );
        let parsed = read(&bad_pad, &with(Some(&key), None, false));
        assert!(parsed.rows.is_empty());
        assert!(
            parsed.errors[0].reason.contains("padding"),
            "{:?}",
            errors_of(&parsed)
        );
        assert!(parsed.errors[0].fix.contains("--psk-hex"));
    }

    #[test]
    fn a_wrong_key_on_a_key_wrap_is_refused_without_a_value_mac() {
        let protect = Protect {
            mac: None,
            value_mac: false,
            ..Protect::psk(Cipher::KwTdes)
        };
        let text = protect.file(SEED32, &[("W1", "totp")]);
        let parsed = read(&text, &with(Some(&[7u8; 24]), None, false));
        assert!(parsed.rows.is_empty());
        assert!(
            parsed.errors[0]
                .reason
                .contains("pre-shared key does not decrypt"),
            "{:?}",
            errors_of(&parsed)
        );
    }

    #[test]
    fn a_mixed_delivery_is_refused_unless_unsupported_keys_are_skipped() {
        let protect = Protect::psk(Cipher::Aes128Cbc);
        let keys = [
            ("T1", "totp"),
            ("H1", "hotp"),
            ("O1", "ocra-1"),
            ("T2", "totp"),
        ];
        let text = protect.file(SEED32, &keys);
        let refused = read(&text, &with(Some(&protect.key), None, false));
        assert_eq!(places(&refused), [(4, "Algorithm"), (5, "Algorithm")]);
        assert!(
            refused.errors[0].reason.contains("HOTP") && refused.errors[0].reason.contains("H1")
        );
        assert!(refused.errors[1].reason.contains("OCRA"));
        assert!(refused.errors[0].fix.contains("--skip-unsupported"));
        let skipped = read(&text, &with(Some(&protect.key), None, true));
        assert!(skipped.errors.is_empty(), "{:?}", errors_of(&skipped));
        assert_eq!(serials(&skipped), ["T1", "T2"]);
        assert_eq!(skipped.skipped, 2);
        let warnings = warnings_of(&skipped);
        assert!(warnings[0].starts_with("line 4: an HOTP"), "{warnings:?}");
        assert!(warnings[1].starts_with("line 5: an OCRA"), "{warnings:?}");

        let only_hotp = protect.file(SEED32, &[("H1", "hotp")]);
        let parsed = read(&only_hotp, &with(Some(&protect.key), None, true));
        assert!(!parsed.is_importable());
        assert!(
            parsed.errors[0].reason.contains("none of the 1 keys"),
            "{:?}",
            errors_of(&parsed)
        );
    }

    #[test]
    fn a_key_without_an_algorithm_says_so() {
        let text = container(&plain_package("A1", "", ""));
        let parsed = pskc(&text, None);
        let e = &parsed.errors[0];
        assert_eq!((e.line, e.column.as_str()), (2, "Algorithm"));
        assert!(e.reason.contains("no Algorithm attribute"), "{e}");
        assert!(!e.reason.contains("unknown algorithm"), "{e}");
        assert!(e.fix.contains("pskc:totp"), "{e}");
    }

    #[test]
    fn draft_files_are_refused_naming_the_draft_or_read_when_shaped_like_the_rfc() {
        let draft = r#"<?xml version="1.0"?>
<KeyContainer Version="1.0" xmlns="urn:ietf:params:xml:ns:keyprov:pskc">
  <Device><DeviceInfo><SerialNo>987654321</SerialNo></DeviceInfo>
    <Key KeyId="1" KeyAlgorithm="urn:ietf:params:xml:ns:keyprov:pskc#totp"><Data><Secret><PlainValue>MTIzNDU2Nzg5MDEyMzQ1Njc4OTA=</PlainValue></Secret></Data></Key>
  </Device>
</KeyContainer>"#;
        let parsed = pskc(draft, None);
        assert_eq!(places(&parsed), [(2, "KeyContainer")]);
        assert!(
            parsed.errors[0].reason.contains("pre-RFC draft"),
            "{:?}",
            errors_of(&parsed)
        );
        assert!(parsed.errors[0].fix.contains("RFC 6030"));
        let container_ns = draft.replace("keyprov:pskc\"", "keyprov:container:1.0\"");
        let parsed = pskc(&container_ns, None);
        assert!(
            parsed.errors[0].reason.contains("keyprov:container:1.0"),
            "{:?}",
            errors_of(&parsed)
        );

        let rfc_shaped = container(&plain_package("D1", TOTP, "")).replace(
            "urn:ietf:params:xml:ns:keyprov:pskc\"",
            "urn:ietf:params:xml:ns:keyprov:pskc:1.0\"",
        );
        let parsed = pskc(&rfc_shaped, None);
        assert!(parsed.errors.is_empty(), "{:?}", errors_of(&parsed));
        assert!(warnings_of(&parsed)[0].contains("pre-RFC namespace"));
    }
}
