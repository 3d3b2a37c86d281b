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

/// Worker threads: the driver waits on EC2, the kernel and mkfs, it does
/// not compute. One per core (tokio's default) on a 96-core node would be
/// 96 idle threads, each with a stack and, with glibc, a malloc arena.
const WORKER_THREADS: usize = 2;
/// Threads for blocking work (mkfs, mount, blkid, file reads): enough for
/// every volume a node can attach to be staged at once.
const BLOCKING_THREADS: usize = 64;

fn main() -> ExitCode {
    limit_malloc_arenas();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKER_THREADS)
        .max_blocking_threads(BLOCKING_THREADS)
        .enable_all()
        .build();
    match runtime {
        Ok(rt) => rt.block_on(run()),
        Err(e) => {
            eprintln!("ebs-csi-driver: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

/// glibc gives every thread that allocates its own arena (up to 8 per
/// core), each keeping freed memory to itself; two arenas serve this
/// process's few threads and keep its footprint small and flat.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a malloc tunable; called before any other
    // thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

async fn run() -> ExitCode {
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
