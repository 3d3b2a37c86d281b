//! Walks one volume through its whole life against a running driver, as
//! Kubernetes would, printing each step and its time:
//!
//! ```sh
//! bash tests/local-run.sh --demo     # starts the EC2 emulator and the driver, then this
//! ```
//!
//! Usage: `volume_life SOCKET WORKDIR [FS]` — the driver on SOCKET must serve
//! the Controller and Node services (`all` mode); FS is xfs (default) or ext4.

#[path = "../tests/support/life.rs"]
mod life;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use ebs_csi_driver::csi;
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Endpoint, Uri};

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: {} SOCKET WORKDIR [xfs|ext4]", args[0]);
        return ExitCode::from(2);
    }
    let socket = PathBuf::from(&args[1]);
    let dir = PathBuf::from(&args[2]);
    let fs = args.get(3).cloned().unwrap_or_else(|| "xfs".into());
    if !nix::unistd::geteuid().is_root() {
        eprintln!(
            "volume_life: formatting and mounting need root (loop devices, mkfs, mount); run as root"
        );
        return ExitCode::from(1);
    }
    let channel = Endpoint::try_from("http://[::]:50051")
        .expect("static uri")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(socket).await?)) }
        }))
        .await;
    let channel = match channel {
        Ok(c) => c,
        Err(e) => {
            eprintln!("volume_life: cannot connect to {}: {e}", args[1]);
            return ExitCode::from(1);
        }
    };
    let node_id = match csi::node_client::NodeClient::new(channel.clone())
        .node_get_info(csi::NodeGetInfoRequest {})
        .await
    {
        Ok(info) => info.into_inner().node_id,
        Err(e) => {
            eprintln!("volume_life: NodeGetInfo failed: {e}");
            return ExitCode::from(1);
        }
    };
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("volume_life: {}: {e}", dir.display());
        return ExitCode::from(1);
    }
    println!("The life of one {fs} volume on node {node_id}:");
    let started = Instant::now();
    let tag = format!("demo-{}", std::process::id());
    match life::Life::new(channel, &node_id, &dir, &fs, true)
        .run(&tag)
        .await
    {
        Ok(report) => {
            println!(
                "done in {:.1}s: data survived snapshot and restore; filesystem grew {} → {} MiB ({})",
                started.elapsed().as_secs_f64(),
                report.fs_bytes_before >> 20,
                report.fs_bytes_after >> 20,
                report.growth
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("volume_life: FAILED at {e}");
            ExitCode::from(1)
        }
    }
}
