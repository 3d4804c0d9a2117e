//! Operator roles (DESIGN §4). An operator may hold several; none implies another — an admin
//! does not reveal codes unless also granted `helpdesk`.

use std::collections::BTreeSet;
use std::fmt;

#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Manages operators, policies and keys.
    Admin,
    /// Captures, imports and cancels tokens.
    Provisioner,
    /// Reveals codes and confirms delivery.
    Helpdesk,
    /// Reads and exports the audit trail.
    Auditor,
}

impl Role {
    pub const ALL: [Role; 4] = [
        Role::Admin,
        Role::Provisioner,
        Role::Helpdesk,
        Role::Auditor,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Provisioner => "provisioner",
            Self::Helpdesk => "helpdesk",
            Self::Auditor => "auditor",
        }
    }

    pub fn parse(text: &str) -> Result<Self, UnknownRole> {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str().eq_ignore_ascii_case(text.trim()))
            .ok_or_else(|| UnknownRole(text.trim().to_owned()))
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown role '{0}' — roles are admin, provisioner, helpdesk and auditor")]
pub struct UnknownRole(pub String);

/// A non-empty set of roles.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Roles(BTreeSet<Role>);

impl Roles {
    pub fn new(roles: impl IntoIterator<Item = Role>) -> Self {
        Self(roles.into_iter().collect())
    }

    /// Parses `admin,helpdesk` (the stored form and the CLI's `--role`).
    pub fn parse_list(text: &str) -> Result<Self, UnknownRole> {
        text.split(',')
            .filter(|p| !p.trim().is_empty())
            .map(Role::parse)
            .collect::<Result<BTreeSet<_>, _>>()
            .map(Self)
    }

    pub fn contains(&self, role: Role) -> bool {
        self.0.contains(&role)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = Role> + '_ {
        self.0.iter().copied()
    }

    /// The stored form: comma-separated, sorted.
    pub fn to_stored(&self) -> String {
        self.0
            .iter()
            .map(|r| r.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn to_vec(&self) -> Vec<Role> {
        self.0.iter().copied().collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn role_lists_parse_case_insensitively_and_store_sorted() {
        let roles = Roles::parse_list("Helpdesk, admin").unwrap();
        assert_eq!(roles.to_stored(), "admin,helpdesk");
        assert!(roles.contains(Role::Admin) && !roles.contains(Role::Auditor));
    }

    #[test]
    fn an_unknown_role_names_the_valid_ones() {
        let err = Roles::parse_list("admin,root").unwrap_err().to_string();
        assert!(
            err.contains("'root'") && err.contains("provisioner"),
            "{err}"
        );
    }
}
