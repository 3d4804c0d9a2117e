//! seedvault: a secure seed-escrow and helpdesk OTP vault.
//!
//! Map of the crate (dependencies point downwards: `cli`/`web` → domain → `vault`, `store`):
//!
//! - [`cli`]     the command line (clap): one file per command group; thin glue over the library.
//! - [`server`]  binding, serving and graceful shutdown of the HTTP server.
//! - [`web`]     HTTP: router (`web::app`), state, error → status mapping, handlers.
//! - [`telemetry`] Prometheus metrics: the recorder, every metric's name and labels, rendering.
//! - [`siem`]    streaming the audit trail to SIEM sinks (HTTP JSON Lines, syslog over TCP/TLS)
//!   with a durable per-sink cursor, retries with capped backoff, and lag reporting.
//! - [`status`]  what a data directory holds (vault, slots, token counts) for `status` and the UI.
//! - [`doctor`]  what is wrong with a deployment (`seedvault doctor`): read-only findings and fixes.
//! - [`tokens`]  the token model: capture, search, reassignment, reveal (checklist, limits,
//!   passkey-signed grant), four-eyes approvals (`tokens::approval`), delivery, cancel, purge
//!   and the retention sweep; bulk import's store (in chunks, invisible until committed:
//!   `tokens::import`, `store::imports`); shipping (`tokens::shipping`: verify against
//!   the device, shipments, delivery slips, per-token batches).
//! - [`operators`] invites, passkey registration, roles, credentials and sign-in records.
//! - [`directory`] the directory of record: owners' phones and managers from CSV or LDAP, synced
//!   atomically with a dry-run diff; what the reveal shows beside the checklist.
//! - [`notices`] notices to token owners: the outbox written with each reveal, delivery, cancel
//!   and purge, its templates, and the sender task that mails them (SMTP, retries with backoff).
//! - [`policy`]  reveal policies from `policies/*.toml`: checklists, limits, retention; evaluation.
//! - [`ratelimit`] sliding windows (failed sign-ins, refused delivery links): in memory, or in
//!   PostgreSQL for several instances.
//! - [`shared`]  where the state instances must agree on lives (memory on SQLite, PostgreSQL's
//!   `transient` schema and advisory locks otherwise) and the one-instance gate of scheduled jobs.
//! - [`audit`]   the tamper-evident trail: append inside the caller's transaction, hash chain,
//!   signatures; verify (live and exports) and streamed JSONL/CSV export.
//! - [`backup`]  backups (an age-encrypted `VACUUM INTO` snapshot with its manifest) and
//!   verified restores, with purges replayed from a later audit export.
//! - [`otp`]     TOTP codes and code verification with drift (RFC 6238, via totp-rs).
//! - [`secret`]  parsing base32 / hex / `otpauth://` input into a typed, zeroizing `Seed`.
//! - [`fuzzing`] (feature `fuzzing`) the properties the fuzz targets in `fuzz/` check, shared with
//!   the stable replay of their corpus and saved crashes (`tests/it/fuzz_regressions.rs`).
//! - [`qr`]      QR codes: the `otpauth://totp/` URI out of a PNG/JPEG screenshot (bounded in bytes,
//!   pixels and time, zeroized) and a generated seed's QR as SVG or terminal blocks.
//! - [`import`]  seed files (Entra/vendor/privacyIDEA CSV, PSKC, otpauth lists) → validated rows and a per-row error report.
//! - [`vault`]   keys: the data key, age key slots, sealing seeds (XChaCha20-Poly1305 + row binding).
//! - [`store`]   the engine (SQLite: sqlx's read pool and rusqlite's own read connections,
//!   pragmas, one writer; PostgreSQL: a pool) behind one
//!   `Store`/`WriteTx`/`Inline`, migrations and every SQL query, grouped by table, per dialect
//!   only where they differ; `store::postgres`: connection, its own migrations, the bulk copy
//!   from SQLite;
//!   `store::engine` parses `database_url`; `store::transient` (ceremonies in flight, rate
//!   events) and `store::leader` (scheduled jobs' advisory locks) hold what several instances
//!   share.
//! - [`transfer`] `migrate-to-postgres`: a SQLite vault copied into an empty PostgreSQL database
//!   in one transaction, verified there (row counts, audit chain and head) before the commit.
//! - [`config`]  defaults → `seedvault.toml` → `SEEDVAULT_*` → flags, validated once.
//! - [`clock`]   injectable time, so tests cross TOTP steps and deadlines without sleeping.
//! - [`timesync`] whether the kernel says the system clock is synchronised (`adjtimex`), injectable.
//!
//! # Safety
//!
//! `unsafe` is denied crate-wide with two exceptions, each in one small function with its
//! SAFETY comment. `store::on_rusqlite` hands the SQLite handle of a connection sqlx opened to
//! rusqlite, so that runs of statements and bulk writes execute on the calling thread (see
//! `docs/ARCHITECTURE.md`, "Write path and group commit"); that is sound only while sqlx's
//! worker thread leaves the connection alone (sqlx's `lock_handle` guarantees it) and both
//! crates link the same SQLite library, and a test in `store` fails if the two drivers ever see
//! different libraries or different transactions. [`timesync`] asks the kernel for the clock's
//! state with a read-only `adjtimex`. The binary (`src/main.rs`) has one more, in
//! `wipe_environment_value`: it zeroes the values of `SEEDVAULT_PASSPHRASE` and
//! `SEEDVAULT_DIRECTORY_LDAP_BIND_PASSWORD` in the process's initial environment block before
//! any thread starts, which no safe API can reach.

#![deny(unsafe_code)]

pub mod audit;
pub mod backup;
pub mod cli;
pub mod clock;
pub mod config;
pub mod directory;
pub mod doctor;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod import;
pub mod notices;
pub mod operators;
pub mod otp;
pub mod policy;
pub mod qr;
pub mod ratelimit;
pub mod secret;
pub mod server;
pub mod shared;
pub mod siem;
pub mod status;
pub mod store;
pub mod telemetry;
pub mod timesync;
pub mod tokens;
pub mod transfer;
pub mod vault;
pub mod web;

#[cfg(test)]
mod map_tests {
    /// The map at the top of this file is how a newcomer finds their way: a module missing from
    /// it is a module nobody finds.
    #[test]
    fn the_crate_map_names_every_module() {
        let source = include_str!("lib.rs");
        let missing: Vec<&str> = source
            .lines()
            .filter_map(|line| line.strip_prefix("pub mod ")?.strip_suffix(';'))
            .filter(|name| !source.contains(&format!("//! - [`{name}`]")))
            .collect();
        assert!(
            missing.is_empty(),
            "add to the map in src/lib.rs: {missing:?}"
        );
    }
}
