//! The `seedvault` binary: parse the command line and hand over to the library.

use std::process::ExitCode;

use clap::Parser;
use zeroize::Zeroizing;

fn main() -> ExitCode {
    // Before any other thread exists (the runtime is built below): nothing else can be reading
    // the environment while it changes.
    take_passphrase_from_environment();
    take_bind_password_from_environment();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let cli = seedvault::cli::Cli::parse();
    match runtime.block_on(seedvault::cli::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Moves `SEEDVAULT_PASSPHRASE` out of the process environment into the library, and wipes the
/// value where the kernel shows it: `/proc/PID/environ` reads the environment block the process
/// started with, which `remove_var` alone leaves intact, so anyone able to read that file (the
/// same user, root, a core dump) would find the passphrase for the life of the server.
fn take_passphrase_from_environment() {
    use seedvault::cli::unlock::{keep_env_passphrase, PASSPHRASE_ENV};
    let Some(value) = std::env::var_os(PASSPHRASE_ENV) else {
        keep_env_passphrase(None);
        return;
    };
    let passphrase = value.into_string().ok().map(Zeroizing::new);
    wipe_environment_value(PASSPHRASE_ENV);
    std::env::remove_var(PASSPHRASE_ENV);
    keep_env_passphrase(passphrase);
}

/// The same for the LDAP bind password (`SEEDVAULT_DIRECTORY_LDAP_BIND_PASSWORD`): the server
/// binds at every directory sync, so the library keeps it, and the environment does not.
fn take_bind_password_from_environment() {
    use seedvault::directory::ldap::{keep_env_password, PASSWORD_ENV};
    let Some(value) = std::env::var_os(PASSWORD_ENV) else {
        keep_env_password(None);
        return;
    };
    let password = value.into_string().ok().map(Zeroizing::new);
    wipe_environment_value(PASSWORD_ENV);
    std::env::remove_var(PASSWORD_ENV);
    keep_env_password(password);
}

/// Overwrites the value of `name` in place with zero bytes.
#[cfg(unix)]
fn wipe_environment_value(name: &str) {
    let Ok(name) = std::ffi::CString::new(name) else {
        return;
    };
    // SAFETY: called from `main` before any other thread exists, so nothing reads or changes
    // the environment concurrently. `getenv` returns either null or a pointer to the
    // NUL-terminated value inside the environment block, which is writable process memory (the
    // initial block sits on the main thread's stack; a value set later lives on the heap);
    // `strlen` stays within that value and we write exactly that many bytes, leaving its NUL.
    unsafe {
        let value = libc::getenv(name.as_ptr());
        if !value.is_null() {
            let length = libc::strlen(value);
            std::ptr::write_bytes(value, 0, length);
        }
    }
}

#[cfg(not(unix))]
fn wipe_environment_value(_name: &str) {}
