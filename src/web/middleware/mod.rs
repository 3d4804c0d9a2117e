//! Cross-cutting request checks, one file per concern.

pub mod origin;
pub mod security_headers;
