//! `agentpkg`: publish and fetch agent packages from the command line, over the registry's
//! REST API (through `agentpkg-client`).
//!
//! Exit codes: 0 ok, 1 error, 2 usage, 3 not found, 4 conflict, 5 checksum (or signature)
//! mismatch ([`exit::Exit`]).

// A command line reports on standard output and standard error.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod args;
mod commands;
mod config;
mod exit;
mod progress;

use std::process::ExitCode;

use clap::Parser;

use crate::args::Cli;

/// A transfer's pieces are allocated on one thread and freed on another, a few hundred KiB
/// each. With glibc's defaults that memory goes back to the kernel and is faulted in again
/// (some 40 000 page faults per GiB pulled, 0.1 s of CPU); with pieces up to 4 MiB taken
/// from the heap and freed memory under 64 MiB kept, it is used again. The price is a few
/// MiB kept for reuse: peak memory 16–22 MiB instead of 14–16 (docs/performance.md).
/// `MALLOC_MMAP_THRESHOLD_` or `MALLOC_TRIM_THRESHOLD_`, when set, win.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn tune_allocator() {
    if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_some()
        || std::env::var_os("MALLOC_TRIM_THRESHOLD_").is_some()
    {
        return;
    }
    // SAFETY: mallopt only changes glibc's allocation policy; it is called first thing in
    // main, before any other thread exists, with documented parameters and values.
    let applied = unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20)
            + libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20)
    };
    debug_assert_eq!(applied, 2, "mallopt refused a setting");
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_allocator() {}

fn main() -> ExitCode {
    tune_allocator();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::Exit::Error.into();
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("error: {}", failure.message);
            failure.exit.into()
        }
    }
}
