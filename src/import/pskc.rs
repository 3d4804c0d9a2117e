//! PSKC 1.0 (RFC 6030): `KeyContainer/KeyPackage*`, each with `DeviceInfo` (`SerialNo`,
//! `Manufacturer`, `Model`, `UserId`) and one TOTP `Key` whose `Data/Secret` is a base64
//! `PlainValue` or a pre-shared-key `EncryptedValue`.
//!
//! Encryption (RFC 6030 §6.1): `EncryptedValue` is xmlenc AES-128/192/256-CBC, the
//! `CipherValue` being IV || ciphertext with PKCS#7 padding. CBC has no integrity of its
//! own, so every encrypted secret must carry a `ValueMAC`: HMAC over IV || ciphertext
//! (§6.1.1), with the algorithm named by `MACMethod` and keyed by `MACMethod/MACKey`, a MAC
//! key that is itself encrypted under the pre-shared key (older producers leave `MACKey`
//! out; the pre-shared key is then the MAC key). The MAC is checked in constant time before
//! anything is decrypted. A wrong key or a failed MAC is an error on the `KeyPackage`'s line,
//! never a garbage seed; an encrypted secret without a `ValueMAC` is refused for the same
//! reason. Password-derived keys (PBKDF2) and asymmetric key transport are not supported.
//!
//! Other fields: `ResponseFormat@Length` → digits (6 when absent), `Suite` → hash (SHA1
//! when absent), `TimeInterval` → period (30 when absent); a non-zero `Time` (T0) is refused
//! because a token starting elsewhere than the epoch cannot be represented; HOTP keys are
//! refused. The serial is `DeviceInfo/SerialNo`, or the `Key@Id` when there is none.
//!
//! The XML is read with quick-xml into a small tree (element depth limited; no DTD, no
//! entities beyond the five predefined ones and character references, so no entity bombs or
//! external entities); element text is kept in zeroizing buffers.

use aes::{Aes128, Aes192, Aes256};
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use cbc::cipher::block_padding::Pkcs7;
use cbc::cipher::{BlockDecryptMut, KeyIvInit};
use hmac::{Hmac, Mac};
use quick_xml::events::{BytesStart, Event};
use quick_xml::XmlVersion;
use zeroize::Zeroizing;

use super::rows::{self, Report, RowCheck};
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cipher {
    Aes128,
    Aes192,
    Aes256,
}

impl Cipher {
    /// xmlenc algorithm URIs (W3C XML Encryption §5.2.2).
    fn from_uri(uri: &str) -> Option<Self> {
        match uri.trim() {
            "http://www.w3.org/2001/04/xmlenc#aes128-cbc" => Some(Self::Aes128),
            "http://www.w3.org/2001/04/xmlenc#aes192-cbc" => Some(Self::Aes192),
            "http://www.w3.org/2001/04/xmlenc#aes256-cbc" => Some(Self::Aes256),
            _ => None,
        }
    }

    const fn key_len(self) -> usize {
        match self {
            Self::Aes128 => 16,
            Self::Aes192 => 24,
            Self::Aes256 => 32,
        }
    }

    const fn name(self) -> &'static str {
        match self {
            Self::Aes128 => "AES-128-CBC",
            Self::Aes192 => "AES-192-CBC",
            Self::Aes256 => "AES-256-CBC",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MacAlgorithm {
    Sha1,
    Sha256,
    Sha512,
}

impl MacAlgorithm {
    /// xmldsig (RFC 3275) and xmldsig-more (RFC 6931) HMAC URIs.
    fn from_uri(uri: &str) -> Option<Self> {
        match uri.trim() {
            "http://www.w3.org/2000/09/xmldsig#hmac-sha1" => Some(Self::Sha1),
            "http://www.w3.org/2001/04/xmldsig-more#hmac-sha256" => Some(Self::Sha256),
            "http://www.w3.org/2001/04/xmldsig-more#hmac-sha512" => Some(Self::Sha512),
            _ => None,
        }
    }

    /// For a `ValueMAC` without a `MACMethod`: judged by its length.
    fn from_len(len: usize) -> Option<Self> {
        match len {
            20 => Some(Self::Sha1),
            32 => Some(Self::Sha256),
            64 => Some(Self::Sha512),
            _ => None,
        }
    }

    /// Constant-time check of `mac` over `data`.
    fn verify(self, key: &[u8], data: &[u8], mac: &[u8]) -> bool {
        fn check<M: Mac + hmac::digest::KeyInit>(key: &[u8], data: &[u8], mac: &[u8]) -> bool {
            let Ok(mut hmac) = <M as hmac::digest::KeyInit>::new_from_slice(key) else {
                return false;
            };
            hmac.update(data);
            hmac.verify_slice(mac).is_ok()
        }
        match self {
            Self::Sha1 => check::<Hmac<sha1::Sha1>>(key, data, mac),
            Self::Sha256 => check::<Hmac<sha2::Sha256>>(key, data, mac),
            Self::Sha512 => check::<Hmac<sha2::Sha512>>(key, data, mac),
        }
    }
}

/// Why an encrypted value could not be opened.
enum Sealed {
    Unsupported(String),
    KeyLength(Cipher, usize),
    Malformed(&'static str),
    WrongKey,
}

impl Sealed {
    fn problem(&self, what: &str) -> rows::Problem {
        match self {
            Self::Unsupported(uri) => rows::Problem::new(
                format!("{what} is encrypted with {uri}, which seedvault does not read"),
                "ask the vendor for a file encrypted with AES-128-CBC or AES-256-CBC under a pre-shared key",
            ),
            Self::KeyLength(cipher, len) => rows::Problem::new(
                format!(
                    "the file uses {} but the pre-shared key is {} bytes, not {}",
                    cipher.name(),
                    len,
                    cipher.key_len()
                ),
                PSK_FIX,
            ),
            Self::Malformed(why) => rows::Problem::new(
                format!("{what} is malformed: {why}"),
                "export the PSKC file again",
            ),
            Self::WrongKey => rows::Problem::new(
                format!("the pre-shared key does not decrypt {what} (the padding check failed)"),
                PSK_FIX,
            ),
        }
    }
}

/// An `EncryptedValue` (or `MACKey`): its cipher and IV || ciphertext.
fn sealed_value(node: &Node) -> Result<(Cipher, Zeroizing<Vec<u8>>), Sealed> {
    let uri = node
        .path(&["EncryptionMethod"])
        .and_then(|m| m.attr("Algorithm"))
        .ok_or(Sealed::Malformed("it has no EncryptionMethod Algorithm"))?;
    let cipher = Cipher::from_uri(uri).ok_or_else(|| Sealed::Unsupported(show_uri(uri)))?;
    let value = node
        .path(&["CipherData", "CipherValue"])
        .ok_or(Sealed::Malformed("it has no CipherData/CipherValue"))?;
    let bytes =
        base64_decode(value.text()).ok_or(Sealed::Malformed("the CipherValue is not base64"))?;
    if bytes.len() < 32 || bytes.len() % 16 != 0 {
        return Err(Sealed::Malformed(
            "the CipherValue is not a 16-byte IV followed by whole AES blocks",
        ));
    }
    Ok((cipher, bytes))
}

/// AES-CBC with the IV prepended and PKCS#7 padding (RFC 6030 §6.1, xmlenc §5.2).
fn decrypt(cipher: Cipher, key: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, Sealed> {
    if key.len() != cipher.key_len() {
        return Err(Sealed::KeyLength(cipher, key.len()));
    }
    let (iv, body) = sealed.split_at(16);
    let mut buffer = Zeroizing::new(body.to_vec());
    let plain_len = match cipher {
        Cipher::Aes128 => cbc::Decryptor::<Aes128>::new_from_slices(key, iv)
            .map_err(|_| Sealed::KeyLength(cipher, key.len()))?
            .decrypt_padded_mut::<Pkcs7>(&mut buffer)
            .map(<[u8]>::len),
        Cipher::Aes192 => cbc::Decryptor::<Aes192>::new_from_slices(key, iv)
            .map_err(|_| Sealed::KeyLength(cipher, key.len()))?
            .decrypt_padded_mut::<Pkcs7>(&mut buffer)
            .map(<[u8]>::len),
        Cipher::Aes256 => cbc::Decryptor::<Aes256>::new_from_slices(key, iv)
            .map_err(|_| Sealed::KeyLength(cipher, key.len()))?
            .decrypt_padded_mut::<Pkcs7>(&mut buffer)
            .map(<[u8]>::len),
    }
    .map_err(|_| Sealed::WrongKey)?;
    buffer.truncate(plain_len);
    Ok(buffer)
}

/// The keys an encrypted file needs, opened once.
struct Keys<'o> {
    psk: Option<&'o [u8]>,
    /// From `MACMethod`: the algorithm and the (decrypted) MAC key.
    mac: Option<(MacAlgorithm, Zeroizing<Vec<u8>>)>,
}

impl<'o> Keys<'o> {
    /// Checks what the file needs against what the caller gave; errors go to `report`.
    fn open(root: &Node, options: &'o ImportOptions, report: &mut Report) -> Option<Self> {
        let Some(encrypted) = root.find("EncryptedValue") else {
            if options.psk.is_some() {
                report.warn(
                    root.line,
                    "a pre-shared key was given but the secrets in this file are not encrypted; it was ignored",
                );
            }
            return Some(Keys {
                psk: None,
                mac: None,
            });
        };
        if let Some(derived) = root.path(&["EncryptionKey", "DerivedKey"]) {
            report.error(
                derived.line,
                "EncryptionKey",
                "the secrets are encrypted with a key derived from a password (PBKDF2), which seedvault does not read",
                "ask the vendor for the file encrypted with a pre-shared AES key instead",
            );
            return None;
        }
        let Some(psk) = options.psk.as_deref() else {
            report.error(
                encrypted.line,
                "EncryptedValue",
                "the secrets in this file are encrypted with a pre-shared key",
                "pass the key the vendor sent with --psk-hex HEX or --psk-file FILE",
            );
            return None;
        };
        let mut keys = Keys {
            psk: Some(psk.as_slice()),
            mac: None,
        };
        if let Some(method) = root.child("MACMethod") {
            let uri = method.attr("Algorithm").unwrap_or("");
            let Some(algorithm) = MacAlgorithm::from_uri(uri) else {
                report.error(
                    method.line,
                    "MACMethod",
                    format!("the MAC algorithm {} is not supported", show_uri(uri)),
                    "seedvault checks HMAC-SHA1, HMAC-SHA256 and HMAC-SHA512 ValueMACs",
                );
                return None;
            };
            let key = match method.child("MACKey") {
                Some(mac_key) => {
                    match sealed_value(mac_key).and_then(|(c, s)| decrypt(c, psk, &s)) {
                        Ok(key) => key,
                        Err(e) => {
                            report.problem(method.line, "MACKey", e.problem("the MAC key"));
                            return None;
                        }
                    }
                }
                None => Zeroizing::new(psk.to_vec()),
            };
            keys.mac = Some((algorithm, key));
        }
        Some(keys)
    }

    /// Checks a `ValueMAC` over IV || ciphertext.
    fn mac_matches(&self, sealed: &[u8], value_mac: &[u8]) -> bool {
        match (&self.mac, self.psk) {
            (Some((algorithm, key)), _) => algorithm.verify(key, sealed, value_mac),
            (None, Some(psk)) => MacAlgorithm::from_len(value_mac.len())
                .is_some_and(|a| a.verify(psk, sealed, value_mac)),
            (None, None) => false,
        }
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
        read_package(package, &keys, report);
    }
}

/// The first `DeviceInfo` child (or `Key` child) named `name`, trimmed, if any.
fn field<'n>(package: &'n Node, key: &'n Node, name: &str) -> Option<&'n str> {
    package
        .path(&["DeviceInfo", name])
        .or_else(|| key.child(name))
        .map(Node::text)
}

fn read_package(package: &Node, keys: &Keys<'_>, report: &mut Report) {
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
    let algorithm_uri = key.attr("Algorithm").unwrap_or("").trim();
    let kind = algorithm_uri
        .rsplit([':', '#'])
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    match kind.as_str() {
        "totp" => {}
        "hotp" => {
            report.error(
                line,
                "Algorithm",
                "HOTP (counter-based) keys are not supported; seedvault escrows TOTP tokens only",
                "remove the HOTP KeyPackages, or ask the vendor for the TOTP file",
            );
            return;
        }
        _ => {
            report.error(
                line,
                "Algorithm",
                format!("the key algorithm {} is not TOTP", show_uri(algorithm_uri)),
                "seedvault imports keys with Algorithm=\"urn:ietf:params:xml:ns:keyprov:pskc:totp\"",
            );
            return;
        }
    }
    let mut check = RowCheck::new(line, report);
    let serial_text = package
        .path(&["DeviceInfo", "SerialNo"])
        .map(Node::text)
        .or_else(|| key.attr("Id"))
        .unwrap_or("");
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
    let period = match data.and_then(|d| d.child("TimeInterval")) {
        None => Some(30),
        Some(interval) => check.take(
            "TimeInterval",
            interval.child("PlainValue").map_or_else(
                || {
                    Err(rows::Problem::new(
                        "the time interval is not a PlainValue",
                        "ask the vendor for a file with plain TimeInterval values",
                    ))
                },
                |value| rows::check_period(value.text(), false),
            ),
        ),
    };
    if let Some(time) = data.and_then(|d| d.path(&["Time", "PlainValue"])) {
        if time.text().parse::<i64>() != Ok(0) {
            check.fail(
                "Time",
                rows::Problem::new(
                    "the key counts time steps from a start time (T0) other than 0, which seedvault cannot represent",
                    "ask the vendor for the token's data with T0 = 0",
                ),
            );
        }
    }
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
fn open_secret(secret: &Node, keys: &Keys<'_>) -> Result<Seed, (&'static str, rows::Problem)> {
    let bytes = if let Some(plain) = secret.child("PlainValue") {
        base64_decode(plain.text()).ok_or((
            "Secret",
            rows::Problem::new("the PlainValue is not base64", "export the PSKC file again"),
        ))?
    } else if let Some(encrypted) = secret.child("EncryptedValue") {
        let psk = keys.psk.ok_or((
            "EncryptedValue",
            rows::Problem::new(
                "the secret is encrypted with a pre-shared key",
                "pass the key the vendor sent with --psk-hex HEX or --psk-file FILE",
            ),
        ))?;
        let (cipher, sealed) =
            sealed_value(encrypted).map_err(|e| ("EncryptedValue", e.problem("the secret")))?;
        // Authenticate before decrypting; without a MAC a wrong key can yield a wrong seed.
        let Some(value_mac) = secret.child("ValueMAC") else {
            return Err((
                "ValueMAC",
                rows::Problem::new(
                    "the encrypted secret has no ValueMAC, so a wrong pre-shared key could not be detected",
                    "ask the vendor for the file with MACMethod and ValueMAC (RFC 6030 §6.1.1)",
                ),
            ));
        };
        let mac = base64_decode(value_mac.text()).ok_or((
            "ValueMAC",
            rows::Problem::new("the ValueMAC is not base64", "export the PSKC file again"),
        ))?;
        if !keys.mac_matches(&sealed, &mac) {
            return Err((
                "ValueMAC",
                rows::Problem::new(
                    "the ValueMAC does not match: the pre-shared key is wrong or the file was altered",
                    PSK_FIX,
                ),
            ));
        }
        decrypt(cipher, psk, &sealed).map_err(|e| ("EncryptedValue", e.problem("the secret")))?
    } else {
        return Err((
            "Secret",
            rows::Problem::new(
                "the Secret has neither a PlainValue nor an EncryptedValue",
                "export the PSKC file again, with the secrets",
            ),
        ));
    };
    let mut bytes = bytes;
    Seed::from_bytes(std::mem::take(&mut *bytes)).map_err(|e| ("Secret", rows::secret_problem(&e)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use cbc::cipher::BlockEncryptMut;
    use zeroize::Zeroizing;

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

    /// IV || AES-CBC(PKCS#7) of `plain`, as a producer would write it.
    fn seal(cipher: Cipher, key: &[u8], plain: &[u8]) -> Vec<u8> {
        let iv = [7u8; 16];
        let mut buffer = vec![0u8; plain.len() + 16];
        buffer[..plain.len()].copy_from_slice(plain);
        let len = match cipher {
            Cipher::Aes128 => cbc::Encryptor::<Aes128>::new_from_slices(key, &iv)
                .unwrap()
                .encrypt_padded_mut::<Pkcs7>(&mut buffer, plain.len())
                .unwrap()
                .len(),
            Cipher::Aes192 => cbc::Encryptor::<Aes192>::new_from_slices(key, &iv)
                .unwrap()
                .encrypt_padded_mut::<Pkcs7>(&mut buffer, plain.len())
                .unwrap()
                .len(),
            Cipher::Aes256 => cbc::Encryptor::<Aes256>::new_from_slices(key, &iv)
                .unwrap()
                .encrypt_padded_mut::<Pkcs7>(&mut buffer, plain.len())
                .unwrap()
                .len(),
        };
        buffer.truncate(len);
        [iv.to_vec(), buffer].concat()
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
        let sealed_mac_key = seal(Cipher::Aes256, psk, mac_key);
        let sealed_secret = seal(Cipher::Aes256, psk, rfc_seed());
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
}
