//! Reading and validating policy files. Errors name the file, the line and the fix.

use std::path::Path;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use toml::Spanned;

use super::{ApprovalSettings, Check, DirectoryNeed, Policy, PolicySet};
use crate::operators::Role;

/// The policies shipped in `policies/`, used when the configured directory is the default and
/// does not exist (for example after `cargo install`).
const EMBEDDED: [(&str, &str); 2] = [
    (
        "standard.toml",
        include_str!("../../policies/standard.toml"),
    ),
    (
        "high-risk.toml",
        include_str!("../../policies/high-risk.toml"),
    ),
];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    #[error("cannot read policies from {path}: {reason} — set policies_dir (SEEDVAULT_POLICIES_DIR) to the directory holding the *.toml policy files")]
    Dir { path: String, reason: String },
    #[error("{file}:{line}: {reason}")]
    Invalid {
        file: String,
        line: usize,
        reason: String,
    },
    #[error("{dir}: no policy file (*.toml) found — copy the shipped policies/ directory there")]
    Empty { dir: String },
    #[error("{dir}: no policy is marked `default = true` — mark exactly one")]
    NoDefault { dir: String },
    #[error("{dir}: several policies are marked `default = true` ({names}) — mark exactly one")]
    SeveralDefaults { dir: String, names: String },
    #[error("{dir}: two files define the policy '{name}' — policy names must be unique")]
    DuplicateName { dir: String, name: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    name: Spanned<String>,
    #[serde(default)]
    description: String,
    #[serde(default)]
    default: bool,
    #[serde(default)]
    retention_days: Option<Spanned<u32>>,
    #[serde(default)]
    notify_manager: bool,
    #[serde(default)]
    require_verified: bool,
    #[serde(default, rename = "check")]
    checks: Vec<RawCheck>,
    require: Spanned<RawRequire>,
    limits: RawLimits,
    #[serde(default)]
    approval: Option<Spanned<RawApproval>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCheck {
    id: Spanned<String>,
    text: Spanned<String>,
    #[serde(default)]
    guidance: Option<String>,
    #[serde(default)]
    required: bool,
    #[serde(default, rename = "unsafe")]
    is_unsafe: bool,
    /// Why an admin accepted an unsafe check; mandatory when `unsafe = true`.
    #[serde(default)]
    exception: Option<String>,
    /// `"directory"`: the check uses the directory of record.
    #[serde(default)]
    source: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequire {
    min_checks: usize,
    #[serde(default)]
    ticket: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    reveals_per_token_per_day: u32,
    reveals_per_operator_per_hour: u32,
    #[serde(default)]
    next_code: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApproval {
    #[serde(default)]
    second_operator: bool,
    #[serde(default)]
    approvers: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    approval_ttl: Option<Spanned<RawDuration>>,
}

/// `approval_ttl`: whole minutes (`15`) or a span with its unit (`"15m"`, `"2h"`).
#[derive(Deserialize)]
#[serde(untagged)]
enum RawDuration {
    Minutes(i64),
    Text(String),
}

/// Longest `approval_ttl` accepted: a day.
const MAX_APPROVAL_TTL_SECONDS: i64 = 86_400;

impl RawDuration {
    fn seconds(&self) -> Result<i64, String> {
        let fix = "write whole minutes (approval_ttl = 10) or a span such as \"10m\" or \"2h\"";
        let seconds = match self {
            Self::Minutes(m) => m.checked_mul(60),
            Self::Text(text) => {
                let text = text.trim();
                let (number, unit) = match text.char_indices().last() {
                    Some((i, c)) if c.is_ascii_alphabetic() => (&text[..i], c),
                    _ => (text, 'm'),
                };
                let value: i64 = number
                    .trim()
                    .parse()
                    .map_err(|_| format!("approval_ttl '{text}' is not a duration — {fix}"))?;
                match unit {
                    'm' => value.checked_mul(60),
                    'h' => value.checked_mul(3_600),
                    _ => {
                        return Err(format!(
                            "approval_ttl '{text}': the unit must be m or h — {fix}"
                        ))
                    }
                }
            }
        };
        match seconds {
            Some(s) if (60..=MAX_APPROVAL_TTL_SECONDS).contains(&s) => Ok(s),
            _ => Err(format!(
                "approval_ttl must be between 1 minute and 24 hours — {fix}"
            )),
        }
    }
}

fn approval_of(raw: Option<&Spanned<RawApproval>>) -> Result<ApprovalSettings, (usize, String)> {
    let Some(raw) = raw else {
        return Ok(ApprovalSettings::default());
    };
    let raw = raw.get_ref();
    let mut approval = ApprovalSettings {
        second_operator: raw.second_operator,
        ..ApprovalSettings::default()
    };
    if let Some(list) = &raw.approvers {
        let at = list.span().start;
        let mut roles = Vec::new();
        for name in list.get_ref() {
            let role = Role::parse(name).map_err(|_| {
                (
                    at,
                    format!("approvers: '{name}' is not a role — use admin, provisioner, helpdesk or auditor"),
                )
            })?;
            if !roles.contains(&role) {
                roles.push(role);
            }
        }
        if roles.is_empty() {
            return Err((
                at,
                "approvers is empty: nobody could approve — list at least one role, e.g. [\"helpdesk\"]".into(),
            ));
        }
        approval.approvers = roles;
    }
    if let Some(ttl) = &raw.approval_ttl {
        approval.ttl_seconds = ttl.get_ref().seconds().map_err(|e| (ttl.span().start, e))?;
    }
    Ok(approval)
}

/// What a check with `source = …` needs from the directory: a callback check (id starting
/// with `callback`) a phone, a manager check (id starting with `manager`) the manager's phone.
fn directory_need(id: &str, source: &Spanned<String>) -> Result<DirectoryNeed, String> {
    if source.get_ref() != "directory" {
        return Err(format!(
            "check '{id}': source = '{}' is unknown — the only source is \"directory\"",
            source.get_ref()
        ));
    }
    if id.starts_with("callback") {
        Ok(DirectoryNeed::Phone)
    } else if id.starts_with("manager") {
        Ok(DirectoryNeed::ManagerPhone)
    } else {
        Err(format!("check '{id}': source = \"directory\" applies to a callback check (id callback…) or a manager check (id manager…) only"))
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// Parses and validates one policy file's text.
pub fn parse_policy(file: &str, text: &str) -> Result<Policy, PolicyError> {
    let invalid = |offset: usize, reason: String| PolicyError::Invalid {
        file: file.to_owned(),
        line: line_of(text, offset),
        reason,
    };
    let raw: RawPolicy = toml::from_str(text).map_err(|e| {
        let offset = e.span().map_or(0, |s| s.start);
        invalid(offset, e.message().trim().to_owned())
    })?;
    let name = raw.name.get_ref();
    let valid_name = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !valid_name {
        return Err(invalid(
            raw.name.span().start,
            format!("policy name '{name}' must be lower-case letters, digits and '-'"),
        ));
    }
    if raw.checks.is_empty() {
        return Err(invalid(0, "a policy needs at least one [[check]]".into()));
    }
    let mut checks: Vec<Check> = Vec::new();
    for raw_check in &raw.checks {
        let id = raw_check.id.get_ref();
        let at = raw_check.id.span().start;
        if id.is_empty()
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(invalid(
                at,
                format!("check id '{id}' must be letters, digits, '-' or '_'"),
            ));
        }
        if checks.iter().any(|c| &c.id == id) {
            return Err(invalid(
                at,
                format!("check id '{id}' appears twice — ids must be unique within a policy"),
            ));
        }
        if raw_check.text.get_ref().trim().is_empty() {
            return Err(invalid(
                raw_check.text.span().start,
                format!("check '{id}' needs a text the operator can read"),
            ));
        }
        if raw_check.is_unsafe
            && raw_check
                .exception
                .as_deref()
                .is_none_or(|e| e.trim().is_empty())
        {
            return Err(invalid(
                at,
                format!("check '{id}' is marked unsafe = true without an `exception` explaining who accepted it and why"),
            ));
        }
        let needs = match &raw_check.source {
            None => None,
            Some(source) => Some(
                directory_need(id, source)
                    .map_err(|reason| invalid(source.span().start, reason))?,
            ),
        };
        checks.push(Check {
            id: id.clone(),
            text: raw_check.text.get_ref().clone(),
            guidance: raw_check.guidance.clone(),
            required: raw_check.required,
            is_unsafe: raw_check.is_unsafe,
            source: needs.map(|_| "directory".to_owned()),
            needs,
        });
    }
    let require = raw.require.get_ref();
    let required = checks.iter().filter(|c| c.required).count();
    if require.min_checks > checks.len() {
        return Err(invalid(
            raw.require.span().start,
            format!(
                "min_checks = {} but the policy has only {} checks",
                require.min_checks,
                checks.len()
            ),
        ));
    }
    if require.min_checks == 0 && required == 0 {
        return Err(invalid(
            raw.require.span().start,
            "min_checks = 0 and no required check: nothing would be verified".into(),
        ));
    }
    if raw.limits.reveals_per_token_per_day == 0 || raw.limits.reveals_per_operator_per_hour == 0 {
        return Err(invalid(0, "[limits] values must be at least 1".into()));
    }
    let approval =
        approval_of(raw.approval.as_ref()).map_err(|(at, reason)| invalid(at, reason))?;
    if let Some(days) = &raw.retention_days {
        if *days.get_ref() == 0 {
            return Err(invalid(
                days.span().start,
                "retention_days must be at least 1".into(),
            ));
        }
    }
    Ok(Policy {
        name: name.clone(),
        description: raw.description,
        default: raw.default,
        checks,
        min_checks: require.min_checks.max(required),
        ticket_required: require.ticket,
        reveals_per_token_per_day: raw.limits.reveals_per_token_per_day,
        reveals_per_operator_per_hour: raw.limits.reveals_per_operator_per_hour,
        next_code: raw.limits.next_code,
        retention_days: raw.retention_days.map(|d| *d.get_ref()),
        notify_manager: raw.notify_manager,
        require_verified: raw.require_verified,
        approval,
        content_hash: data_encoding::HEXLOWER.encode(&Sha256::digest(text.as_bytes())),
        source: file.to_owned(),
    })
}

fn assemble(dir: &str, policies: Vec<Policy>) -> Result<PolicySet, PolicyError> {
    if policies.is_empty() {
        return Err(PolicyError::Empty {
            dir: dir.to_owned(),
        });
    }
    for (i, p) in policies.iter().enumerate() {
        if policies[..i].iter().any(|q| q.name == p.name) {
            return Err(PolicyError::DuplicateName {
                dir: dir.to_owned(),
                name: p.name.clone(),
            });
        }
    }
    let defaults: Vec<&str> = policies
        .iter()
        .filter(|p| p.default)
        .map(|p| p.name.as_str())
        .collect();
    match defaults.len() {
        0 => Err(PolicyError::NoDefault {
            dir: dir.to_owned(),
        }),
        1 => Ok(PolicySet { policies }),
        _ => Err(PolicyError::SeveralDefaults {
            dir: dir.to_owned(),
            names: defaults.join(", "),
        }),
    }
}

/// Loads every `*.toml` in `dir`, sorted by file name.
pub fn load_dir(dir: &Path) -> Result<PolicySet, PolicyError> {
    let shown = dir.display().to_string();
    let dir_error = |reason: String| PolicyError::Dir {
        path: shown.clone(),
        reason,
    };
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| dir_error(e.to_string()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    let mut policies = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path)
            .map_err(|e| dir_error(format!("{}: {e}", path.display())))?;
        policies.push(parse_policy(&path.display().to_string(), &text)?);
    }
    assemble(&shown, policies)
}

/// Loads the configured directory; when it is the default `policies` and absent (an installed
/// binary run elsewhere), falls back to the built-in copies of the shipped policies.
pub fn load_configured(dir: &Path) -> Result<PolicySet, PolicyError> {
    if dir == Path::new("policies") && !dir.exists() {
        tracing::info!(
            "no ./policies directory: using the built-in standard and high-risk policies"
        );
        return load_embedded();
    }
    load_dir(dir)
}

/// The shipped policies, built into the binary.
pub fn load_embedded() -> Result<PolicySet, PolicyError> {
    let policies = EMBEDDED
        .iter()
        .map(|(file, text)| parse_policy(&format!("(built-in) {file}"), text))
        .collect::<Result<Vec<_>, _>>()?;
    assemble("(built-in policies)", policies)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const GOOD: &str = "name = \"p\"\ndefault = true\n\n[[check]]\nid = \"a\"\ntext = \"A\"\nrequired = true\n\n[require]\nmin_checks = 1\n\n[limits]\nreveals_per_token_per_day = 1\nreveals_per_operator_per_hour = 1\n";

    #[test]
    fn policy_file_errors_name_the_file_line_and_reason() {
        let table = [
            (
                GOOD.replace("min_checks = 1", "min_checks = 3"),
                "p.toml:9: min_checks = 3 but the policy has only 1 checks",
            ),
            (
                GOOD.replace("id = \"a\"", "id = \"a b\""),
                "p.toml:5: check id 'a b'",
            ),
            (
                GOOD.replace("required = true", "required = true\nrequird = 1"),
                "p.toml:8: unknown field `requird`",
            ),
            (
                GOOD.replace("required = true", "required = true\nunsafe = true"),
                "p.toml:5: check 'a' is marked unsafe = true without an `exception`",
            ),
            (
                GOOD.replace("min_checks = 1", "min_checks = \"one\""),
                "p.toml:10:",
            ),
            (
                format!("{GOOD}\n[approval]\nsecond_operator = true\napprovers = [\"boss\"]\n"),
                "p.toml:18: approvers: 'boss' is not a role",
            ),
            (
                format!("{GOOD}\n[approval]\nsecond_operator = true\napprovers = []\n"),
                "approvers is empty: nobody could approve",
            ),
            (
                format!("{GOOD}\n[approval]\napproval_ttl = 0\n"),
                "approval_ttl must be between 1 minute and 24 hours",
            ),
            (
                format!("{GOOD}\n[approval]\napproval_ttl = \"10 days\"\n"),
                "approval_ttl '10 days'",
            ),
        ];
        for (text, expected) in table {
            let err = parse_policy("p.toml", &text).unwrap_err().to_string();
            assert!(err.contains(expected), "{err}\nshould contain\n{expected}");
        }
    }

    #[test]
    fn a_callback_or_manager_check_may_rely_on_the_directory_and_no_other_check_may() {
        let with = |id: &str, source: &str| {
            parse_policy(
                "p.toml",
                &GOOD
                    .replace("id = \"a\"", &format!("id = \"{id}\""))
                    .replace(
                        "required = true",
                        &format!("required = true\nsource = \"{source}\""),
                    ),
            )
        };
        assert_eq!(
            with("callback", "directory").unwrap().checks[0].needs,
            Some(DirectoryNeed::Phone)
        );
        assert_eq!(
            with("manager", "directory").unwrap().checks[0].needs,
            Some(DirectoryNeed::ManagerPhone)
        );
        let err = with("video-id", "directory").unwrap_err().to_string();
        assert!(
            err.contains(
                "p.toml:8: check 'video-id': source = \"directory\" applies to a callback check"
            ),
            "{err}"
        );
        let err = with("callback", "hr").unwrap_err().to_string();
        assert!(err.contains("source = 'hr' is unknown"), "{err}");
    }

    #[test]
    fn approval_settings_load_with_their_defaults_and_change_the_content_hash() {
        let plain = parse_policy("p.toml", GOOD).unwrap();
        assert!(!plain.approval.second_operator);
        assert_eq!(plain.approval.ttl_seconds, 600);
        let table = [
            ("approval_ttl = 15", 900),
            ("approval_ttl = \"15m\"", 900),
            ("approval_ttl = \"2h\"", 7_200),
        ];
        for (line, seconds) in table {
            let text = format!("{GOOD}\n[approval]\nsecond_operator = true\n{line}\n");
            let policy = parse_policy("p.toml", &text).unwrap();
            assert!(policy.approval.second_operator);
            assert_eq!(policy.approval.ttl_seconds, seconds, "{line}");
            assert_ne!(policy.content_hash, plain.content_hash);
        }
        let text = format!(
            "{GOOD}\n[approval]\nsecond_operator = true\napprovers = [\"admin\", \"helpdesk\"]\n"
        );
        let approvers = parse_policy("p.toml", &text).unwrap().approval.approvers;
        assert_eq!(approvers, vec![Role::Admin, Role::Helpdesk]);
    }

    #[test]
    fn an_unsafe_check_with_a_documented_exception_loads() {
        let text = GOOD.replace(
            "required = true",
            "required = true\nunsafe = true\nexception = \"CISO approved 2026-01, ticket SEC-1\"",
        );
        assert!(parse_policy("p.toml", &text).unwrap().checks[0].is_unsafe);
    }

    #[test]
    fn a_directory_needs_exactly_one_default() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.toml"), GOOD).unwrap();
        std::fs::write(
            dir.path().join("b.toml"),
            GOOD.replace("name = \"p\"", "name = \"q\""),
        )
        .unwrap();
        assert!(matches!(
            load_dir(dir.path()),
            Err(PolicyError::SeveralDefaults { .. })
        ));
        std::fs::write(
            dir.path().join("b.toml"),
            GOOD.replace("default = true", "default = false"),
        )
        .unwrap();
        assert!(matches!(
            load_dir(dir.path()),
            Err(PolicyError::DuplicateName { .. })
        ));
    }

    #[test]
    fn the_embedded_policies_match_the_shipped_files() {
        let embedded = load_embedded().unwrap();
        let shipped = load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("policies")).unwrap();
        for p in shipped.all() {
            assert_eq!(embedded.get(&p.name).unwrap().content_hash, p.content_hash);
        }
    }
}
