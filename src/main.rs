//! `ebs-csi-driver`: command line, logging, signals; the work is in the library.

use std::process::ExitCode;

use clap::Parser;
use ebs_csi_driver::{driver, logging, options::Options};
use tokio::signal::unix::{SignalKind, signal};

/// Resolves on the first SIGTERM (what kubelet sends) or SIGINT.
async fn terminated() {
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("install SIGINT handler");
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!(signal = name, "received signal");
}

#[tokio::main]
async fn main() -> ExitCode {
    let opts = Options::parse();
    if let Err(e) = logging::init(opts.logging_format, opts.log_level.as_deref()) {
        eprintln!("ebs-csi-driver: {e}");
        return ExitCode::from(2);
    }
    match driver::run(opts, terminated()).await {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot run");
            ExitCode::FAILURE
        }
    }
}
