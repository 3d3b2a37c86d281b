//! `ebs-csi-driver`: command line, logging, signals; the work is in the library.

use std::process::ExitCode;

use clap::Parser;
use ebs_csi_driver::options::{Mode, Options};
use ebs_csi_driver::{driver, logging};
use tokio::signal::unix::{SignalKind, signal};

/// Installs the SIGTERM (what kubelet sends) and SIGINT handlers at once and
/// returns a future resolving on the first of them. The handlers must exist
/// before the socket is bound: a signal arriving between the two would
/// otherwise kill the process without cleanup.
fn terminated() -> std::io::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(signal = name, "received signal");
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    let opts = Options::parse();
    if let Err(e) = logging::init(
        opts.logging_format,
        opts.log_level.as_deref(),
        opts.aws_sdk_debug_log,
    ) {
        eprintln!("ebs-csi-driver: {e}");
        return ExitCode::from(2);
    }
    if opts.mode == Mode::PreStopHook {
        return match driver::pre_stop(&opts).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %e, "pre-stop hook failed");
                ExitCode::FAILURE
            }
        };
    }
    let shutdown = match terminated() {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot install signal handlers");
            return ExitCode::FAILURE;
        }
    };
    match driver::run(opts, shutdown).await {
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
