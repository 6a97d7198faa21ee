//! `keycast`: demo, inspect and derive for the OMA BCAST Smartcard Profile.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = keycast::cli::Cli::parse();
    match keycast::cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
