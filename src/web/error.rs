//! The web layer's one error type, mapped to an HTTP status and a JSON body in one place.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

/// An error a handler returns. The message is shown to the client, so it never holds a secret.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    BadRequest(String),
    #[error("sign in first")]
    Unauthenticated,
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Gone(String),
    #[error("{0}")]
    Unprocessable(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{message}")]
    TooManyRequests {
        message: String,
        retry_after_seconds: u64,
    },
    /// The data directory's disk is full: nothing was written, and writes resume by
    /// themselves once there is room.
    #[error("{0}")]
    InsufficientStorage(String),
    /// The database is locked by another writer (the CLI) past the busy timeout.
    #[error("{message}")]
    Unavailable {
        message: String,
        retry_after_seconds: u64,
    },
    /// `/readyz`: the vault cannot serve writes now (the reason names why).
    #[error("{0}")]
    NotReady(String),
    #[error("internal error")]
    Internal(String),
}

/// What a client is told when the disk is full; the database's own words go to the log.
const DISK_FULL: &str = "the vault cannot write: the disk holding its data directory is full — nothing was changed; free space there and try again (no restart needed)";
/// What a client is told when another writer holds the database past the busy timeout.
const BUSY: &str = "the vault's database is locked by another writer (such as a seedvault command running beside the server) — nothing was changed; try again shortly";

impl AppError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthenticated | Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Gone(_) => StatusCode::GONE,
            Self::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            // RFC 4918 §11.5: the server cannot store what is needed to complete the request.
            Self::InsufficientStorage(_) => StatusCode::INSUFFICIENT_STORAGE,
            Self::Unavailable { .. } | Self::NotReady(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Stable machine-readable code for the JSON body.
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad_request",
            Self::Unauthenticated => "unauthenticated",
            Self::Unauthorized(_) => "sign_in_failed",
            Self::Forbidden(_) => "forbidden",
            Self::NotFound(_) => "not_found",
            Self::MethodNotAllowed(_) => "method_not_allowed",
            Self::Conflict(_) => "conflict",
            Self::Gone(_) => "gone",
            Self::Unprocessable(_) => "unprocessable",
            Self::PayloadTooLarge(_) => "payload_too_large",
            Self::TooManyRequests { .. } => "rate_limited",
            Self::InsufficientStorage(_) => "disk_full",
            Self::Unavailable { .. } => "database_busy",
            Self::NotReady(_) => "not_ready",
            Self::Internal(_) => "internal",
        }
    }
}

/// The body of every error reply.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    /// A stable machine-readable code: `bad_request`, `unauthenticated`, `sign_in_failed`,
    /// `forbidden`, `not_found`, `method_not_allowed`, `conflict`, `gone`, `unprocessable`,
    /// `payload_too_large`, `rate_limited`, `disk_full`, `database_busy`, `not_ready` or
    /// `internal`.
    pub error: &'static str,
    /// What went wrong and how to fix it, for a person.
    pub message: String,
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        if let Self::Internal(detail) = &self {
            // The detail goes to the log only; it may name tables or paths.
            tracing::error!(error = %detail, "request failed");
        }
        let status = self.status();
        let body = Json(ErrorBody {
            error: self.code(),
            message: self.to_string(),
        });
        let mut response = (status, body).into_response();
        if let Some(seconds) = self.retry_after_seconds() {
            if let Ok(value) = seconds.to_string().parse() {
                response
                    .headers_mut()
                    .insert(axum::http::header::RETRY_AFTER, value);
            }
        }
        response
    }
}

impl AppError {
    /// The `Retry-After` a response carries (RFC 9110 §10.2.3), for a limit or a busy database.
    pub fn retry_after_seconds(&self) -> Option<u64> {
        match self {
            Self::TooManyRequests {
                retry_after_seconds,
                ..
            }
            | Self::Unavailable {
                retry_after_seconds,
                ..
            } => Some(*retry_after_seconds),
            _ => None,
        }
    }
}

impl From<crate::store::StoreError> for AppError {
    fn from(e: crate::store::StoreError) -> Self {
        use crate::store::StoreError as E;
        match e {
            E::DiskFull(detail) => {
                tracing::error!(error = %detail, "a write failed: the disk is full");
                Self::InsufficientStorage(DISK_FULL.to_owned())
            }
            E::Busy(detail) => {
                tracing::warn!(error = %detail, "a write failed: the database is locked");
                Self::Unavailable {
                    message: BUSY.to_owned(),
                    retry_after_seconds: 1,
                }
            }
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<crate::backup::BackupError> for AppError {
    fn from(e: crate::backup::BackupError) -> Self {
        use crate::backup::BackupError as E;
        match e {
            E::NoRecipients
            | E::BadRecipient(_)
            | E::Vault(crate::vault::VaultError::PluginMissing { .. }) => {
                Self::Unprocessable(e.to_string())
            }
            E::DiskFull(_) => Self::InsufficientStorage(e.to_string()),
            E::Store(inner) => inner.into(),
            E::Audit(inner) => inner.into(),
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<crate::audit::AuditError> for AppError {
    fn from(e: crate::audit::AuditError) -> Self {
        match e {
            crate::audit::AuditError::Store(inner) => inner.into(),
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<crate::operators::OperatorError> for AppError {
    fn from(e: crate::operators::OperatorError) -> Self {
        use crate::operators::OperatorError as E;
        let message = e.to_string();
        match e {
            E::InviteUnknown | E::UnknownOperator(_) | E::UnknownCredential(_) => {
                Self::NotFound(message)
            }
            E::InviteExpired | E::InviteUsed => Self::Gone(message),
            E::NameTaken(_)
            | E::InvitePending(_)
            | E::CredentialExists
            | E::LastCredential
            | E::SelfLockout => Self::Conflict(message),
            E::InvalidName(_) | E::NoRoles | E::UnknownRole(_) => Self::Unprocessable(message),
            E::Store(inner) => inner.into(),
            E::Audit(inner) => inner.into(),
            E::Passkey(_) => Self::Internal(message),
        }
    }
}

impl From<webauthn_rs::prelude::WebauthnError> for AppError {
    fn from(e: webauthn_rs::prelude::WebauthnError) -> Self {
        Self::BadRequest(format!("the passkey response was not accepted: {e}"))
    }
}

impl From<crate::import::OptionError> for AppError {
    fn from(e: crate::import::OptionError) -> Self {
        Self::Unprocessable(e.to_string())
    }
}

impl From<crate::tokens::TokenError> for AppError {
    fn from(e: crate::tokens::TokenError) -> Self {
        use crate::tokens::TokenError as E;
        let message = e.to_string();
        match e {
            E::NotFound(_) => Self::NotFound(message),
            E::Duplicate(_) | E::BeingImported(_) | E::ImportAbandoned | E::WrongState { .. } => {
                Self::Conflict(message)
            }
            E::Invalid { .. } | E::UnknownPolicy(_) => Self::Unprocessable(message),
            E::Qr(crate::qr::QrError::TooManyBytes { .. }) => Self::PayloadTooLarge(message),
            E::Qr(_) => Self::Unprocessable(message),
            E::Store(inner) => inner.into(),
            E::Audit(inner) => inner.into(),
            E::Vault(_) => Self::Internal(message),
        }
    }
}

impl From<crate::tokens::reveal::RevealError> for AppError {
    fn from(e: crate::tokens::reveal::RevealError) -> Self {
        use crate::tokens::reveal::RevealError as E;
        let message = e.to_string();
        match e {
            E::Token(inner) => inner.into(),
            E::NoOwner(_) | E::NotVerified(_) | E::DirectoryRecord { .. } => {
                Self::Conflict(message)
            }
            E::Checklist { .. } => Self::Unprocessable(message),
            E::Limit {
                retry_after_seconds,
                ..
            } => Self::TooManyRequests {
                message,
                retry_after_seconds,
            },
            E::WrongToken { .. } | E::Expired | E::NoPasskey | E::Challenge(_) => {
                Self::BadRequest(message)
            }
            E::ForeignPasskey | E::Assertion(_) => Self::Unauthorized(message),
            E::Operator(inner) => inner.into(),
            E::Approval(inner) => inner.into(),
        }
    }
}

impl From<crate::tokens::approval::ApprovalError> for AppError {
    fn from(e: crate::tokens::approval::ApprovalError) -> Self {
        use crate::tokens::approval::ApprovalError as E;
        let message = e.to_string();
        match e {
            E::Token(inner) => inner.into(),
            E::NotFound(_) => Self::NotFound(message),
            E::NotYours { .. } | E::OwnRequest { .. } | E::NotApprover { .. } => {
                Self::Forbidden(message)
            }
            E::Expired(_) => Self::Gone(message),
            E::AlreadyDecided { .. }
            | E::StillPending(_)
            | E::Denied { .. }
            | E::Used(_)
            | E::Void { .. }
            | E::Consumed(_)
            | E::Required(_) => Self::Conflict(message),
            E::WrongApproval { .. } | E::CeremonyExpired | E::NoPasskey | E::Challenge(_) => {
                Self::BadRequest(message)
            }
            E::ReasonMissing | E::ReasonTooLong => Self::Unprocessable(message),
            E::Limit {
                retry_after_seconds,
                ..
            } => Self::TooManyRequests {
                message,
                retry_after_seconds,
            },
            E::ForeignPasskey | E::Assertion(_) => Self::Unauthorized(message),
            E::Operator(inner) => inner.into(),
        }
    }
}

impl From<crate::directory::DirectoryError> for AppError {
    fn from(e: crate::directory::DirectoryError) -> Self {
        use crate::directory::DirectoryError as E;
        let message = e.to_string();
        match e {
            E::Rows { .. } | E::Empty { .. } => Self::Unprocessable(message),
            E::LdapNotConfigured => Self::Conflict(message),
            // The directory server, not this one, failed.
            E::Ldap { .. } => Self::Unavailable {
                message,
                retry_after_seconds: 60,
            },
            E::Store(inner) => inner.into(),
            E::Audit(inner) => inner.into(),
        }
    }
}

impl From<crate::tokens::lifecycle::LifecycleError> for AppError {
    fn from(e: crate::tokens::lifecycle::LifecycleError) -> Self {
        use crate::tokens::lifecycle::LifecycleError as E;
        let message = e.to_string();
        match e {
            E::Token(inner) => inner.into(),
            E::WrongCode(_) | E::Invalid(_) => Self::Unprocessable(message),
            E::TooManyAttempts {
                retry_after_seconds,
            } => Self::TooManyRequests {
                message,
                retry_after_seconds,
            },
        }
    }
}

impl From<crate::tokens::delivery_link::LinkError> for AppError {
    fn from(e: crate::tokens::delivery_link::LinkError) -> Self {
        use crate::tokens::delivery_link::LinkError as E;
        let message = e.to_string();
        match e {
            E::Unknown => Self::NotFound(message),
            E::Expired | E::Used | E::Replaced | E::Locked | E::Settled => Self::Gone(message),
            E::WrongCode { .. } | E::NoCode => Self::Unprocessable(message),
            E::Lifecycle(inner) => inner.into(),
        }
    }
}

impl From<crate::audit::export::ExportError> for AppError {
    fn from(e: crate::audit::export::ExportError) -> Self {
        use crate::audit::export::ExportError as E;
        let message = e.to_string();
        match e {
            E::UnknownFormat(_) | E::BadTime { .. } | E::EmptyRange | E::BadOutcome(_) => {
                Self::Unprocessable(message)
            }
            E::Store(inner) => inner.into(),
            E::Audit(inner) => inner.into(),
            E::Write(_) => Self::Internal(message),
        }
    }
}
