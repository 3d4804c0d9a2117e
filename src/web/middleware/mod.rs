//! Cross-cutting request checks, one file per concern.

pub mod access_log;
pub mod body_limit;
pub mod origin;
pub mod security_headers;
