//! The `gateway` binary: `serve` (the gateway), `provision` (the subscriber registry), and
//! operator tools for reading captures (OTA secured packets, GSM text).

mod cli;

use std::process::ExitCode;

use clap::Parser;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    let mut out = std::io::stdout().lock();
    match cli::run(args, &mut out) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(1)
        }
    }
}
