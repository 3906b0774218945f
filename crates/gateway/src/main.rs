//! The `asc` binary: parse the command line, hand over to the library.

use std::process::ExitCode;

use clap::Parser;

/// jemalloc rather than glibc's malloc: under load glibc's malloc and free (with the
/// consolidation of freed chunks that allocations over 1 KB set off) took 12% of the
/// gateway's CPU, and jemalloc's size classes leave less memory per open stream
/// (docs/performance.md, "Sixth round").
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    asc_gateway::cli::run(asc_gateway::cli::Cli::parse())
}
