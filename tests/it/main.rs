//! The integration suite, one test binary (one link instead of one per area): the real server
//! in-process on a temporary SQLite file with software passkeys, the real binary for the
//! command line, and headless Chromium for the pages. One module per area; shared fixtures in
//! `common`. Sample files and their independently computed codes are in `tests/data/`.
//!
//! `tests/audit_memory.rs` stays a binary of its own: it counts every allocation of its process.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

mod accessibility;
mod api_contract;
mod approvals;
mod audit;
mod audit_completeness;
mod backup;
mod browser;
mod canary;
mod chunked_import;
mod cli;
mod concurrency;
mod delivery;
mod deploy;
mod directory;
mod full_disk;
mod fuzz_regressions;
mod ha;
mod hardening;
mod import;
mod instances;
mod notices;
mod observability;
mod operators;
mod pages;
mod postgres;
mod pskc;
mod qr;
mod reveal;
mod rotation;
mod screens;
mod shipping;
