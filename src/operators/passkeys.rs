//! An operator's passkeys as stored: webauthn-rs's `Passkey` (public key, signature counter)
//! kept as its own JSON in the `credentials` table. The only place that reads or writes that
//! JSON.

use webauthn_rs::prelude::{
    AuthenticationResult, Passkey, PasskeyAuthentication, PublicKeyCredential, Webauthn,
};

use super::OperatorError;
use crate::store::operators as rows;
use crate::store::{Store, StoreError};

/// One of an operator's passkeys and the `credentials` row that holds it.
pub struct StoredPasskey {
    pub row: i64,
    pub passkey: Passkey,
}

impl StoredPasskey {
    /// Takes a verified assertion's result (the new signature counter, backup state) into the
    /// passkey and prepares it for storing; the action the assertion authorised stores it in
    /// its own transaction.
    pub fn used(mut self, result: &AuthenticationResult) -> Result<UsedPasskey, OperatorError> {
        self.passkey.update_credential(result);
        Ok(UsedPasskey {
            row: self.row,
            stored: to_stored(&self.passkey)?,
        })
    }
}

/// A passkey after a verified assertion, in its stored form (see [`StoredPasskey::used`]).
pub struct UsedPasskey {
    pub row: i64,
    pub(super) stored: String,
}

/// The operator's passkeys, oldest first.
pub async fn of(store: &Store, operator_id: i64) -> Result<Vec<StoredPasskey>, OperatorError> {
    store
        .inline(|c| rows::credentials_of_on(c, operator_id))
        .await??
        .into_iter()
        .map(stored)
        .collect()
}

fn stored(row: rows::CredentialRow) -> Result<StoredPasskey, OperatorError> {
    Ok(StoredPasskey {
        passkey: from_stored(row.id, &row.passkey)?,
        row: row.id,
    })
}

/// Why an assertion signed for an action (a reveal, an approval) was not accepted.
pub enum SignRefusal {
    /// The credential is not one of this operator's passkeys.
    Foreign,
    /// It is, but the assertion does not verify against the challenge (the reason).
    Invalid(String),
}

/// The operator's own passkey that signed `assertion`, with its new counter, once the
/// assertion verified against `challenge`; the outer error is reading the passkeys, the inner
/// one the refusal to report.
pub async fn verify_own(
    store: &Store,
    webauthn: &Webauthn,
    operator_id: i64,
    challenge: &PasskeyAuthentication,
    assertion: &PublicKeyCredential,
) -> Result<Result<UsedPasskey, SignRefusal>, OperatorError> {
    // Only the signer's row is read and parsed, by the unique index on the credential id.
    let signer = store
        .inline(|c| rows::credential_of_on(c, operator_id, assertion.raw_id.as_slice()))
        .await??
        .map(stored)
        .transpose()?
        .filter(|stored| stored.passkey.cred_id().as_slice() == assertion.raw_id.as_slice());
    let Some(signer) = signer else {
        return Ok(Err(SignRefusal::Foreign));
    };
    match webauthn.finish_passkey_authentication(assertion, challenge) {
        Ok(result) => Ok(Ok(signer.used(&result)?)),
        Err(e) => Ok(Err(SignRefusal::Invalid(e.to_string()))),
    }
}

/// The stored form of a passkey.
pub(super) fn to_stored(passkey: &Passkey) -> Result<String, OperatorError> {
    serde_json::to_string(passkey).map_err(|e| OperatorError::Passkey(e.to_string()))
}

fn from_stored(row: i64, json: &str) -> Result<Passkey, OperatorError> {
    serde_json::from_str(json).map_err(|e| {
        StoreError::Corrupt(format!("stored credential {row} is unreadable: {e}")).into()
    })
}
