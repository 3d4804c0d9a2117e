//! Notices to token owners (issue 17): after every granted reveal, delivery, cancellation and
//! purge — and with a self-service delivery link — the owner (and, when the token's policy says
//! `notify_manager = true`, the manager) gets an email.
//!
//! A notice is written to the `outbox` table inside the transaction of the action it tells of
//! ([`record_on`] on the reveal grant's group-commit connection, [`record`] elsewhere), so none
//! is lost across a crash, and the action never waits for a mail server: the server's sender
//! task ([`sender`]) sends, retries with capped backoff, and marks each row sent or failed.
//! A notice never carries a code or a seed.

pub mod sender;
pub mod templates;

use serde_json::{json, Value};

use crate::store::outbox::{self, NewNotice};
use crate::store::{Inline, Store, StoreError, WriteTx};

/// What a notice tells of; also the name of its template (`templates/notices/KIND.txt`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Reveal,
    Delivered,
    Cancelled,
    Expired,
    DeliveryLink,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Reveal,
        Kind::Delivered,
        Kind::Cancelled,
        Kind::Expired,
        Kind::DeliveryLink,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reveal => "reveal",
            Self::Delivered => "delivered",
            Self::Cancelled => "cancelled",
            Self::Expired => "expired",
            Self::DeliveryLink => "delivery-link",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

/// One notice as an action records it. `operator` is who acted (an operator's name, or
/// "you" when the owner acted), `ticket` the reveal's ticket; `link` only for a delivery link.
pub struct Notice<'a> {
    pub kind: Kind,
    pub serial: &'a str,
    pub owner: &'a str,
    pub notify_manager: bool,
    pub operator: &'a str,
    pub ticket: Option<&'a str>,
    pub link: Option<&'a str>,
    pub expires_at: Option<i64>,
    pub at: i64,
}

impl Notice<'_> {
    fn facts(&self) -> String {
        let mut facts = json!({ "operator": self.operator, "time": self.at });
        if let Some(ticket) = self.ticket {
            facts["ticket"] = Value::from(ticket);
        }
        if let Some(link) = self.link {
            facts["link"] = Value::from(link);
        }
        if let Some(expires) = self.expires_at {
            facts["expires_at"] = Value::from(expires);
        }
        facts.to_string()
    }

    fn with_facts<R>(&self, write: impl FnOnce(&NewNotice<'_>) -> R) -> R {
        let facts = self.facts();
        write(&NewNotice {
            kind: self.kind.as_str(),
            serial: self.serial,
            owner: self.owner,
            notify_manager: self.notify_manager,
            facts: &facts,
            created_at: self.at,
        })
    }
}

/// Records `notice` on a held connection, in its transaction (the reveal grant).
pub fn record_on(c: &Inline<'_>, notice: &Notice<'_>) -> Result<(), StoreError> {
    notice.with_facts(|row| outbox::insert_on(c, row))
}

/// Records `notice` in the caller's write transaction.
pub async fn record(tx: &mut WriteTx, notice: &Notice<'_>) -> Result<(), StoreError> {
    let facts = notice.facts();
    let row = NewNotice {
        kind: notice.kind.as_str(),
        serial: notice.serial,
        owner: notice.owner,
        notify_manager: notice.notify_manager,
        facts: &facts,
        created_at: notice.at,
    };
    outbox::insert(tx, &row).await
}

/// The address an owner's notices go to: the directory of record's `mail` for the owner when
/// it has one, otherwise the owner id itself when it is an email address or UPN
/// (`user@example.org`); any other owner has none (its notices are recorded as not sent).
pub async fn notice_recipient(store: &Store, owner: &str) -> Result<Option<String>, StoreError> {
    let owner = owner.trim();
    let of_record = crate::store::directory::by_owner(store, owner)
        .await?
        .and_then(|entry| entry.mail);
    Ok(of_record
        .as_deref()
        .unwrap_or(owner)
        .parse::<lettre::Address>()
        .ok()
        .map(|address| address.to_string()))
}

/// The address of an owner's manager, for policies with `notify_manager = true`: the manager's
/// own directory entry's `mail` (or the manager id when it is an address). Without a manager
/// of record the owner's notice goes out alone.
pub async fn manager_recipient(store: &Store, owner: &str) -> Result<Option<String>, StoreError> {
    let manager = crate::store::directory::by_owner(store, owner.trim())
        .await?
        .and_then(|entry| entry.manager);
    match manager {
        Some(manager) => notice_recipient(store, &manager).await,
        None => Ok(None),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_owner_id_that_is_an_address_is_where_its_notices_go() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        assert_eq!(
            notice_recipient(&store, " alice@example.org ")
                .await
                .unwrap()
                .as_deref(),
            Some("alice@example.org")
        );
        for no_address in ["alice", "EXAMPLE\\alice", "", "a@b@c"] {
            assert_eq!(
                notice_recipient(&store, no_address).await.unwrap(),
                None,
                "{no_address}"
            );
        }
    }

    #[tokio::test]
    async fn the_directory_of_record_names_the_owners_and_the_managers_address() {
        use crate::store::directory::{replace_source_on, EntryRow};
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let entry = |owner: &str, manager: Option<&str>, mail: Option<&str>| EntryRow {
            owner: owner.into(),
            display_name: None,
            phones: vec!["+15550100001".into()],
            manager: manager.map(Into::into),
            manager_phone: None,
            department: None,
            mail: mail.map(Into::into),
            source: "csv".into(),
            synced_at: 0,
        };
        let entries = [
            entry("EXAMPLE\\ann", Some("bob"), Some("ann@mail.example.org")),
            entry("bob", None, Some("bob@mail.example.org")),
            entry("cy@example.org", None, None),
        ];
        let mut tx = store.begin_write().await.unwrap();
        tx.inline(|c| replace_source_on(c, "csv", &entries))
            .await
            .unwrap()
            .unwrap();
        tx.commit().await.unwrap();
        let to = |owner: &'static str| {
            let store = store.clone();
            async move { notice_recipient(&store, owner).await.unwrap() }
        };
        assert_eq!(
            to("EXAMPLE\\ann").await.as_deref(),
            Some("ann@mail.example.org")
        );
        assert_eq!(
            to("cy@example.org").await.as_deref(),
            Some("cy@example.org"),
            "no mail of record: the owner id"
        );
        assert_eq!(
            manager_recipient(&store, "EXAMPLE\\ann")
                .await
                .unwrap()
                .as_deref(),
            Some("bob@mail.example.org")
        );
        assert_eq!(manager_recipient(&store, "bob").await.unwrap(), None);
    }

    #[test]
    fn every_kind_has_a_name_that_parses_back() {
        for kind in Kind::ALL {
            assert_eq!(Kind::parse(kind.as_str()), Some(kind));
        }
    }
}
