//! The directory from LDAP (`[directory.ldap]`, ldap3 over OpenSSL): bind, search `base_dn`
//! with `filter`, map attributes to [`Entry`]s and resolve each `manager` DN to the manager's
//! own entry (in the result, or read on its own when the filter left it out).
//!
//! The bind password comes from `bind_password_file` or `SEEDVAULT_DIRECTORY_LDAP_BIND_PASSWORD`,
//! never from the command line, and is held in zeroizing memory.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use ldap3::adapters::{Adapter, EntriesOnly, PagedResults};
use ldap3::{LdapConnAsync, LdapConnSettings, LdapError, Scope, SearchEntry};
use url::Url;
use zeroize::Zeroizing;

use super::{phone, Entry};

/// The environment variable that may hold the bind password.
pub const PASSWORD_ENV: &str = "SEEDVAULT_DIRECTORY_LDAP_BIND_PASSWORD";

/// Entries per page of a search (RFC 2696), under OpenLDAP's default size limit of 500.
const PAGE_SIZE: i32 = 400;

/// Which LDAP attribute fills which field. The first attribute of a list that an entry has
/// wins (`displayName`, else `cn`); every phone attribute adds its numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttributeMap {
    /// `mail` (the default: owner ids are UPNs, which are usually the mail address) or `uid`.
    pub owner: String,
    pub phones: Vec<String>,
    pub manager: String,
    pub mail: String,
    pub display_name: Vec<String>,
    pub department: Vec<String>,
}

impl Default for AttributeMap {
    fn default() -> Self {
        Self {
            owner: "mail".into(),
            phones: vec!["telephoneNumber".into(), "mobile".into()],
            manager: "manager".into(),
            mail: "mail".into(),
            display_name: vec!["displayName".into(), "cn".into()],
            department: vec!["departmentNumber".into(), "ou".into()],
        }
    }
}

impl AttributeMap {
    fn requested(&self) -> Vec<String> {
        let mut all = vec![self.owner.clone(), self.manager.clone(), self.mail.clone()];
        all.extend(self.phones.iter().cloned());
        all.extend(self.display_name.iter().cloned());
        all.extend(self.department.iter().cloned());
        all.sort();
        all.dedup();
        all
    }
}

/// The validated `[directory.ldap]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LdapSettings {
    /// `ldap://` (with `starttls`) or `ldaps://`.
    pub url: Url,
    pub starttls: bool,
    /// Without one the bind is anonymous.
    pub bind_dn: Option<String>,
    pub bind_password_file: Option<PathBuf>,
    pub base_dn: String,
    pub filter: String,
    pub attributes: AttributeMap,
    /// Minutes between syncs in `serve`; 0: only on demand.
    pub sync_interval_minutes: u32,
    /// Connect and per-operation timeout.
    pub timeout: Duration,
}

/// What a search brought back.
#[derive(Debug)]
pub struct Fetched {
    pub entries: Vec<Entry>,
    pub warnings: Vec<String>,
}

/// The bind password `main` took out of the environment at start ([`keep_env_password`]).
static ENV_PASSWORD: std::sync::OnceLock<Option<Zeroizing<String>>> = std::sync::OnceLock::new();

/// Keeps the bind password the binary read from [`PASSWORD_ENV`] before it removed the
/// variable from its environment (so that it is not in `/proc/PID/environ` for the life of the
/// server, like `SEEDVAULT_PASSPHRASE`). Called once by `main`; later calls are ignored.
pub fn keep_env_password(password: Option<Zeroizing<String>>) {
    let _ = ENV_PASSWORD.set(password);
}

/// The bind password from the environment: the one `main` kept, or (for library callers that
/// did not go through `main`) the variable itself.
fn env_password() -> Option<Zeroizing<String>> {
    match ENV_PASSWORD.get() {
        Some(kept) => kept.clone(),
        None => std::env::var(PASSWORD_ENV).ok().map(Zeroizing::new),
    }
}

/// The bind password: the file's first line, else the environment variable.
fn password(settings: &LdapSettings) -> Result<Zeroizing<String>, String> {
    if let Some(path) = &settings.bind_password_file {
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
            format!(
                "cannot read bind_password_file {}: {e} — check the path and that the service user can read it",
                path.display()
            )
        })?);
        return Ok(Zeroizing::new(text.lines().next().unwrap_or("").to_owned()));
    }
    env_password().ok_or_else(|| {
        format!("bind_dn is set but no password: set bind_password_file in [directory.ldap] or the {PASSWORD_ENV} environment variable")
    })
}

/// Says what an ldap3 error means for the administrator.
fn explain(settings: &LdapSettings, stage: &str, e: LdapError) -> String {
    match e {
        LdapError::LdapResult { result } if result.rc == 49 => format!(
            "the server refused the bind as {} (invalid credentials) — check bind_dn and the bind password",
            settings.bind_dn.as_deref().unwrap_or("anonymous")
        ),
        LdapError::LdapResult { result } if result.rc == 32 => format!(
            "base_dn '{}' does not exist on the server — check base_dn",
            settings.base_dn
        ),
        LdapError::LdapResult { result } => format!(
            "{stage}: the server answered {} ({}) — check the [directory.ldap] settings",
            result.rc, result.text
        ),
        LdapError::Io { source } => format!(
            "cannot reach the server ({source}) — check url and that the server is up and reachable"
        ),
        LdapError::Timeout { .. } => format!(
            "{stage}: no answer within {} s — check url, or raise timeout_seconds",
            settings.timeout.as_secs()
        ),
        LdapError::NativeTLS { source } => format!(
            "TLS failed ({source}) — check that the server's certificate is valid for its host name and trusted by this machine"
        ),
        other => format!("{stage}: {other}"),
    }
}

/// The first value of the first of `names` the entry has (attribute names are
/// case-insensitive).
fn first(entry: &SearchEntry, names: &[String]) -> Option<String> {
    names.iter().find_map(|name| {
        entry
            .attrs
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| v.first())
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    })
}

fn all_values<'e>(entry: &'e SearchEntry, name: &'e str) -> impl Iterator<Item = &'e String> {
    entry
        .attrs
        .iter()
        .filter(move |(k, _)| k.eq_ignore_ascii_case(name))
        .flat_map(|(_, v)| v.iter())
}

/// Connects, binds and reads every entry the filter matches.
pub async fn fetch(settings: &LdapSettings) -> Result<Fetched, String> {
    let conn_settings = LdapConnSettings::new()
        .set_conn_timeout(settings.timeout)
        .set_starttls(settings.starttls);
    let (conn, mut ldap) = LdapConnAsync::with_settings(conn_settings, settings.url.as_str())
        .await
        .map_err(|e| explain(settings, "connect", e))?;
    ldap3::drive!(conn);
    ldap.with_timeout(settings.timeout);
    if let Some(dn) = &settings.bind_dn {
        let password = password(settings)?;
        ldap.simple_bind(dn, &password)
            .await
            .and_then(ldap3::LdapResult::success)
            .map_err(|e| explain(settings, "bind", e))?;
    }
    let attrs = settings.attributes.requested();
    let adapters: Vec<Box<dyn Adapter<_, _>>> = vec![
        Box::new(EntriesOnly::new()),
        Box::new(PagedResults::new(PAGE_SIZE)),
    ];
    let mut search = ldap
        .streaming_search_with(
            adapters,
            &settings.base_dn,
            Scope::Subtree,
            &settings.filter,
            attrs.clone(),
        )
        .await
        .map_err(|e| explain(settings, "search", e))?;
    let mut found = Vec::new();
    while let Some(entry) = search
        .next()
        .await
        .map_err(|e| explain(settings, "search", e))?
    {
        found.push(SearchEntry::construct(entry));
    }
    search
        .finish()
        .await
        .success()
        .map_err(|e| explain(settings, "search", e))?;
    let fetched = map_entries(settings, &mut ldap, found, &attrs).await;
    let _ = ldap.unbind().await;
    Ok(fetched)
}

/// The search result as entries, with each manager DN resolved.
async fn map_entries(
    settings: &LdapSettings,
    ldap: &mut ldap3::Ldap,
    found: Vec<SearchEntry>,
    attrs: &[String],
) -> Fetched {
    let map = &settings.attributes;
    let mut warnings = Vec::new();
    let phones_of = |entry: &SearchEntry, warnings: &mut Vec<String>| -> Vec<String> {
        let mut phones: Vec<String> = Vec::new();
        for name in &map.phones {
            for value in all_values(entry, name) {
                match phone::normalise(value) {
                    Ok(n) if !phones.contains(&n) => phones.push(n),
                    Ok(_) => {}
                    Err(e) => warnings.push(format!("{}: {name} {e} — number left out", entry.dn)),
                }
            }
        }
        phones
    };
    // DN (lower case) → (owner id, first phone), for resolving managers.
    let mut by_dn: HashMap<String, (String, Option<String>)> = HashMap::new();
    let mut entries: Vec<(Entry, Option<String>)> = Vec::new();
    for entry in &found {
        let Some(owner) = first(entry, std::slice::from_ref(&map.owner)) else {
            warnings.push(format!(
                "{}: no {} attribute, so no owner id — entry left out",
                entry.dn, map.owner
            ));
            continue;
        };
        if entries
            .iter()
            .any(|(e, _)| e.owner.eq_ignore_ascii_case(&owner))
        {
            warnings.push(format!(
                "{}: owner '{owner}' appears in two entries — the first is kept",
                entry.dn
            ));
            continue;
        }
        let phones = phones_of(entry, &mut warnings);
        by_dn.insert(
            entry.dn.to_ascii_lowercase(),
            (owner.clone(), phones.first().cloned()),
        );
        entries.push((
            Entry {
                owner,
                display_name: first(entry, &map.display_name),
                phones,
                manager: None,
                manager_phone: None,
                department: first(entry, &map.department),
                mail: first(entry, std::slice::from_ref(&map.mail)),
            },
            first(entry, std::slice::from_ref(&map.manager)),
        ));
    }
    let mut resolved = Vec::with_capacity(entries.len());
    for (mut entry, manager_dn) in entries {
        if let Some(dn) = manager_dn {
            let key = dn.to_ascii_lowercase();
            if !by_dn.contains_key(&key) {
                // The filter left the manager out (another OU, a disabled filter): read the
                // entry itself.
                match read_one(ldap, &dn, attrs).await {
                    Some(m) => {
                        if let Some(owner) = first(&m, std::slice::from_ref(&map.owner)) {
                            let phone = phones_of(&m, &mut warnings).into_iter().next();
                            by_dn.insert(key.clone(), (owner, phone));
                        }
                    }
                    None => warnings.push(format!(
                        "{}: manager '{dn}' was not found — the record has no manager",
                        entry.owner
                    )),
                }
            }
            if let Some((owner, phone)) = by_dn.get(&key) {
                entry.manager = Some(owner.clone());
                entry.manager_phone = phone.clone();
            }
        }
        resolved.push(entry);
    }
    Fetched {
        entries: resolved,
        warnings,
    }
}

async fn read_one(ldap: &mut ldap3::Ldap, dn: &str, attrs: &[String]) -> Option<SearchEntry> {
    let (mut found, _) = ldap
        .search(dn, Scope::Base, "(objectClass=*)", attrs.to_vec())
        .await
        .ok()?
        .success()
        .ok()?;
    found.pop().map(SearchEntry::construct)
}
