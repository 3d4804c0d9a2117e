//! Reveal policies (DESIGN §5): the identity-verification checklist and limits for a class of
//! tokens, loaded from `policies/*.toml` and validated at start.
//!
//! - [`load_dir`] reads and validates every file (a bad file names file, line and reason);
//! - [`Policy::evaluate`] checks an operator's submission (ticked checks, ticket, note).

mod load;

use serde::Serialize;
use utoipa::ToSchema;

use crate::operators::{Role, Roles};

pub use load::{load_configured, load_dir, load_embedded, parse_policy, PolicyError};

/// Longest ticket reference accepted.
pub const MAX_TICKET_LEN: usize = 64;
/// Longest note accepted.
pub const MAX_NOTE_LEN: usize = 500;

/// One item of the checklist.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Check {
    pub id: String,
    pub text: String,
    pub guidance: Option<String>,
    pub required: bool,
    /// A check an admin marked as a documented exception to the helpdesk guidance.
    #[serde(rename = "unsafe")]
    pub is_unsafe: bool,
    /// `directory`: the check relies on the directory of record (`source = "directory"`), and a
    /// reveal for an owner without the record it needs is refused.
    #[schema(nullable = false)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// What that record must hold; set exactly when `source` is `directory`.
    #[serde(skip)]
    pub needs: Option<DirectoryNeed>,
}

/// What a check with `source = "directory"` needs from the owner's directory record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirectoryNeed {
    /// A callback check (id `callback…`): a phone number of record.
    Phone,
    /// A manager check (id `manager…`): the manager and the manager's phone of record.
    ManagerPhone,
}

impl DirectoryNeed {
    /// What is missing when the record lacks it, for the refusal.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Phone => "a phone number of record",
            Self::ManagerPhone => "a manager with a phone number of record",
        }
    }
}

/// A validated policy.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Policy {
    pub name: String,
    pub description: String,
    pub default: bool,
    pub checks: Vec<Check>,
    pub min_checks: usize,
    pub ticket_required: bool,
    pub reveals_per_token_per_day: u32,
    pub reveals_per_operator_per_hour: u32,
    pub next_code: bool,
    /// Days an escrowed seed may wait under this policy (at most the configured default).
    pub retention_days: Option<u32>,
    /// Whether the owner's manager gets the owner's notices too (reveal, delivery, cancel,
    /// purge); the address comes from `notices::manager_recipient`.
    pub notify_manager: bool,
    /// `require_verified = true`: no code is revealed for a token whose seed was not first
    /// checked against a code from the physical device (`token verify`).
    pub require_verified: bool,
    /// Four-eyes approval: whether a second operator must approve each reveal, who may.
    pub approval: ApprovalSettings,
    /// SHA-256 of the file's bytes (so it covers the `[approval]` settings too), hex: a reveal records the version it ran under.
    pub content_hash: String,
    /// The file it came from.
    pub source: String,
}

/// Default minutes an approval request waits for a decision ([`ApprovalSettings::ttl_seconds`]).
pub const DEFAULT_APPROVAL_TTL_MINUTES: i64 = 10;

/// A policy's `[approval]` table (DESIGN §5): four-eyes reveals.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ApprovalSettings {
    /// A second operator must approve each reveal with their own passkey.
    pub second_operator: bool,
    /// Roles that may approve (any one of them); `helpdesk` by default.
    pub approvers: Vec<Role>,
    /// How long a request waits for a decision, and then how long an approval stays usable.
    pub ttl_seconds: i64,
}

impl Default for ApprovalSettings {
    fn default() -> Self {
        Self {
            second_operator: false,
            approvers: vec![Role::Helpdesk],
            ttl_seconds: DEFAULT_APPROVAL_TTL_MINUTES * 60,
        }
    }
}

impl ApprovalSettings {
    /// Whether an operator holding `roles` may approve under this policy (whether they are the
    /// requester is the approval's own rule).
    pub fn may_approve(&self, roles: &Roles) -> bool {
        self.approvers.iter().any(|r| roles.contains(*r))
    }
}

/// What the operator submitted with a reveal.
#[derive(Debug, Clone)]
pub struct Submission<'a> {
    pub checks: &'a [String],
    pub ticket: Option<&'a str>,
    pub note: Option<&'a str>,
}

/// Why a submission does not satisfy a policy; each names what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shortfall {
    UnknownCheck(String),
    MissingRequired { id: String, text: String },
    TooFewChecks { needed: usize, ticked: usize },
    TicketMissing,
    TicketTooLong,
    NoteTooLong,
}

impl std::fmt::Display for Shortfall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::UnknownCheck(id) => write!(
                f,
                "'{}' is not a check of this policy",
                id.chars().take(40).collect::<String>()
            ),
            Self::MissingRequired { id, text } => {
                write!(f, "required check '{id}' is not ticked ({text})")
            }
            Self::TooFewChecks { needed, ticked } => {
                write!(f, "at least {needed} checks are needed, {ticked} ticked")
            }
            Self::TicketMissing => write!(f, "a ticket reference is required"),
            Self::TicketTooLong => write!(
                f,
                "the ticket reference is longer than {MAX_TICKET_LEN} characters"
            ),
            Self::NoteTooLong => write!(f, "the note is longer than {MAX_NOTE_LEN} characters"),
        }
    }
}

impl Policy {
    /// Every way `submission` falls short of this policy (empty: it satisfies it).
    pub fn evaluate(&self, submission: &Submission<'_>) -> Vec<Shortfall> {
        let mut shortfalls = Vec::new();
        let mut ticked: Vec<&str> = Vec::new();
        for id in submission.checks {
            if !self.checks.iter().any(|c| &c.id == id) {
                shortfalls.push(Shortfall::UnknownCheck(id.clone()));
            } else if !ticked.contains(&id.as_str()) {
                ticked.push(id);
            }
        }
        for check in self.checks.iter().filter(|c| c.required) {
            if !ticked.contains(&check.id.as_str()) {
                shortfalls.push(Shortfall::MissingRequired {
                    id: check.id.clone(),
                    text: check.text.clone(),
                });
            }
        }
        if ticked.len() < self.min_checks {
            shortfalls.push(Shortfall::TooFewChecks {
                needed: self.min_checks,
                ticked: ticked.len(),
            });
        }
        let ticket = submission.ticket.map(str::trim).filter(|t| !t.is_empty());
        match ticket {
            None if self.ticket_required => shortfalls.push(Shortfall::TicketMissing),
            Some(t) if t.chars().count() > MAX_TICKET_LEN => {
                shortfalls.push(Shortfall::TicketTooLong)
            }
            _ => {}
        }
        if submission
            .note
            .is_some_and(|n| n.chars().count() > MAX_NOTE_LEN)
        {
            shortfalls.push(Shortfall::NoteTooLong);
        }
        shortfalls
    }
}

/// The loaded policies, exactly one of them the default.
#[derive(Debug, Clone)]
pub struct PolicySet {
    policies: Vec<Policy>,
}

impl PolicySet {
    pub fn get(&self, name: &str) -> Option<&Policy> {
        self.policies.iter().find(|p| p.name == name)
    }

    pub fn default_policy(&self) -> &Policy {
        // load_dir guarantees exactly one default.
        self.policies
            .iter()
            .find(|p| p.default)
            .unwrap_or(&self.policies[0])
    }

    pub fn all(&self) -> &[Policy] {
        &self.policies
    }

    /// Names of the four-eyes policies whose approvals an operator holding `roles` may decide.
    pub fn approvable_by(&self, roles: &Roles) -> Vec<String> {
        self.policies
            .iter()
            .filter(|p| p.approval.second_operator && p.approval.may_approve(roles))
            .map(|p| p.name.clone())
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn shipped() -> PolicySet {
        load_dir(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies")).unwrap()
    }

    fn evaluate(policy: &str, checks: &[&str], ticket: Option<&str>) -> Vec<String> {
        let set = shipped();
        let checks: Vec<String> = checks.iter().map(|c| (*c).to_owned()).collect();
        set.get(policy)
            .unwrap()
            .evaluate(&Submission {
                checks: &checks,
                ticket,
                note: None,
            })
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn the_shipped_policies_load_with_standard_as_the_default() {
        let set = shipped();
        assert_eq!(set.default_policy().name, "standard");
        assert!(set.get("high-risk").is_some());
        assert!(set
            .all()
            .iter()
            .all(|p| p.checks.iter().all(|c| !c.is_unsafe)));
        assert_eq!(set.default_policy().content_hash.len(), 64);
    }

    #[test]
    fn standard_needs_the_callback_plus_one_other_check_and_a_ticket() {
        let table: Vec<(&[&str], Option<&str>, &[&str])> = vec![
            (&["callback", "video-id"], Some("INC-1"), &[]),
            (&["callback", "manager"], Some("INC-1"), &[]),
            (
                &["callback"],
                Some("INC-1"),
                &["at least 2 checks are needed, 1 ticked"],
            ),
            (
                &["video-id", "manager"],
                Some("INC-1"),
                &["required check 'callback' is not ticked"],
            ),
            (
                &["callback", "video-id"],
                None,
                &["a ticket reference is required"],
            ),
            (
                &["callback", "video-id", "dob"],
                Some("INC-1"),
                &["'dob' is not a check of this policy"],
            ),
            (
                &["callback", "callback"],
                Some("INC-1"),
                &["at least 2 checks are needed, 1 ticked"],
            ),
        ];
        for (checks, ticket, expected) in table {
            let got = evaluate("standard", checks, ticket);
            assert_eq!(got.len(), expected.len(), "{checks:?}: {got:?}");
            for (g, e) in got.iter().zip(expected) {
                assert!(g.contains(e), "{checks:?}: {g} should contain {e}");
            }
        }
    }

    #[test]
    fn high_risk_needs_a_second_operator_from_the_helpdesk_and_standard_does_not() {
        let set = shipped();
        let high = &set.get("high-risk").unwrap().approval;
        assert!(high.second_operator);
        assert_eq!(high.approvers, vec![Role::Helpdesk]);
        assert_eq!(high.ttl_seconds, 600);
        assert!(!set.default_policy().approval.second_operator);
        let helpdesk = Roles::new([Role::Helpdesk]);
        assert_eq!(set.approvable_by(&helpdesk), vec!["high-risk".to_owned()]);
        assert!(set.approvable_by(&Roles::new([Role::Admin])).is_empty());
    }

    #[test]
    fn high_risk_needs_every_check() {
        assert!(evaluate(
            "high-risk",
            &["callback", "video-id", "manager"],
            Some("INC-9")
        )
        .is_empty());
        let got = evaluate("high-risk", &["callback", "video-id"], Some("INC-9"));
        assert!(got.iter().any(|g| g.contains("'manager'")), "{got:?}");
    }

    #[test]
    fn over_long_tickets_and_notes_are_refused() {
        let set = shipped();
        let checks = vec!["callback".to_owned(), "video-id".to_owned()];
        let long = "x".repeat(MAX_NOTE_LEN + 1);
        let got = set.default_policy().evaluate(&Submission {
            checks: &checks,
            ticket: Some(&long[..65]),
            note: Some(&long),
        });
        assert_eq!(got, vec![Shortfall::TicketTooLong, Shortfall::NoteTooLong]);
    }
}
