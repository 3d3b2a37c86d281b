//! Test support: start the driver binary (and, for tests that need EC2, the
//! emulator in `tests/ec2sim`) on temporary sockets and hand out connected
//! CSI clients, so each integration test is a few lines.
//!
//! Every process started here is killed when its handle drops, so a failing
//! test leaves nothing running.

#![allow(dead_code)] // each test binary uses a different part of this module

mod aws;
pub mod cluster;
pub mod csi;
mod ec2sim;
pub mod k8sapi;
pub mod kube_node;
pub mod kubelet;
pub mod life;
pub use ec2sim::{Ec2Sim, SimOptions};
// Node-test additions: volumes through the emulator, the node test bed.
pub mod node;
pub mod volumes;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ebs_csi_driver::csi::controller_client::ControllerClient;
use ebs_csi_driver::csi::identity_client::IdentityClient;
use ebs_csi_driver::csi::node_client::NodeClient;
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

/// The driver binary cargo built for this test run.
pub const DRIVER_BIN: &str = env!("CARGO_BIN_EXE_ebs-csi-driver");

/// A running driver process listening on a socket in its own temp dir.
pub struct Driver {
    /// The child process; killed on drop.
    pub child: Child,
    /// The socket path.
    pub socket: PathBuf,
    /// Where stderr (the driver's log) is written.
    pub log: PathBuf,
    /// Keeps the temp dir alive as long as the driver.
    pub dir: tempfile::TempDir,
}

/// How to start a driver.
#[derive(Default, Clone)]
pub struct DriverConfig {
    /// `controller`, `node` or `all`.
    pub mode: &'static str,
    /// Extra command-line arguments.
    pub args: Vec<String>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// Socket path; default: `csi.sock` in the driver's temp dir.
    pub socket: Option<PathBuf>,
}

impl Driver {
    /// Starts the driver in `mode` with no extra flags and waits for its socket.
    pub async fn start(mode: &'static str) -> Driver {
        Driver::start_with(DriverConfig {
            mode,
            ..DriverConfig::default()
        })
        .await
    }

    /// Starts the driver as configured and waits until its socket accepts.
    pub async fn start_with(config: DriverConfig) -> Driver {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = config
            .socket
            .clone()
            .unwrap_or_else(|| dir.path().join("csi.sock"));
        let log = dir.path().join("driver.log");
        let child = spawn_driver(config.mode, &socket, &log, &config.args, &config.env);
        let mut driver = Driver {
            child,
            socket,
            log,
            dir,
        };
        driver.wait_for_socket(Duration::from_secs(20)).await;
        driver
    }

    async fn wait_for_socket(&mut self, limit: Duration) {
        let start = Instant::now();
        loop {
            if UnixStream::connect(&self.socket).await.is_ok() {
                return;
            }
            if let Some(status) = self.child.try_wait().expect("poll driver") {
                panic!(
                    "driver exited with {status} before serving; log:\n{}",
                    self.log_text()
                );
            }
            if start.elapsed() > limit {
                panic!(
                    "driver did not open {} within {limit:?}; log:\n{}",
                    self.socket.display(),
                    self.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// What the driver has logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A channel to the driver's socket.
    pub async fn channel(&self) -> Channel {
        connect(&self.socket).await
    }

    /// An Identity client.
    pub async fn identity(&self) -> IdentityClient<Channel> {
        IdentityClient::new(self.channel().await)
    }

    /// A Controller client.
    pub async fn controller(&self) -> ControllerClient<Channel> {
        ControllerClient::new(self.channel().await)
    }

    /// A Node client.
    pub async fn node(&self) -> NodeClient<Channel> {
        NodeClient::new(self.channel().await)
    }

    /// Waits (bounded) until Probe reports ready.
    pub async fn wait_ready(&self) {
        let mut identity = self.identity().await;
        let start = Instant::now();
        loop {
            let reply = identity
                .probe(ebs_csi_driver::csi::ProbeRequest {})
                .await
                .expect("probe")
                .into_inner();
            if reply.ready == Some(true) {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "driver not ready after 30s; log:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        signal(&self.child, nix::sys::signal::Signal::SIGTERM);
        wait_bounded(&mut self.child, Duration::from_secs(30))
            .unwrap_or_else(|| panic!("driver ignored SIGTERM; log:\n{}", self.log_text()))
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Spawns the driver binary with its log going to `log`.
pub fn spawn_driver(
    mode: &str,
    socket: &Path,
    log: &Path,
    args: &[String],
    env: &[(String, String)],
) -> Child {
    let log_file = std::fs::File::create(log).expect("create driver log");
    // Benchmarks may measure another build of the driver (say the release
    // binary with a harness built in the dev profile): BENCH_DRIVER_BIN.
    let bin = std::env::var_os("BENCH_DRIVER_BIN").unwrap_or_else(|| DRIVER_BIN.into());
    let mut cmd = Command::new(bin);
    if !mode.is_empty() {
        cmd.arg(mode);
    }
    cmd.arg(format!("--endpoint=unix://{}", socket.display()))
        .arg("--log-level=debug")
        .args(args)
        .env_remove("RUST_LOG")
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file);
    cmd.spawn().expect("spawn driver")
}

/// Sends `sig` to `child`.
pub fn signal(child: &Child, sig: nix::sys::signal::Signal) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, sig).expect("signal child");
}

/// Waits at most `limit` for `child` to exit.
pub fn wait_bounded(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(status) = child.try_wait().expect("poll child") {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// A gRPC channel over the Unix socket at `path`.
pub async fn connect(path: &Path) -> Channel {
    let path = path.to_path_buf();
    // The URI is required by tonic but unused: the connector dials the socket.
    Endpoint::try_from("http://[::]:50051")
        .expect("static uri")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
        .await
        .expect("connect to driver socket")
}

/// The emulator plus a driver wired to it: the usual start of an
/// integration test that needs EC2 (and, as root, real devices).
pub struct Harness {
    /// The driver; declared first so it stops before the emulator.
    pub driver: Driver,
    /// The EC2 emulator.
    pub sim: Ec2Sim,
}

impl Harness {
    /// Starts the emulator with default options and a driver in `mode`.
    pub async fn start(mode: &'static str) -> Harness {
        Harness::start_with(mode, SimOptions::default(), Vec::new()).await
    }

    /// Starts the emulator with `opts` and a driver in `mode` with extra
    /// `args`; the driver gets the emulator's AWS environment and its
    /// device directory.
    pub async fn start_with(mode: &'static str, opts: SimOptions, args: Vec<String>) -> Harness {
        let sim = tokio::task::spawn_blocking(move || Ec2Sim::start_with(opts))
            .await
            .expect("start ec2sim");
        let mut all_args = vec![format!("--device-dir={}", sim.device_dir.display())];
        all_args.extend(args);
        let driver = Driver::start_with(DriverConfig {
            mode,
            args: all_args,
            env: sim.driver_env(),
            socket: None,
        })
        .await;
        Harness { driver, sim }
    }

    /// Waits (bounded) until the driver's Probe reports ready.
    pub async fn wait_ready(&self) {
        self.driver.wait_ready().await
    }
}

/// True when running as root (needed for loop devices and mounts).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}
