//! Handle on the EC2 test bed (`tests/ec2sim/run`): starts it on a free
//! loopback port, reads its ready line, and talks to its `/_sim/` control
//! endpoints. Dropping the handle sends SIGTERM and waits for the emulator to
//! release its loop devices and files.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

/// Options for starting the emulator; `Default` is fast delays, throttling
/// on, no faults, devices when root.
#[derive(Clone, Debug)]
pub struct SimOptions {
    /// `none`, `fast` or `realistic`.
    pub delays: &'static str,
    /// Token-bucket throttling.
    pub throttle: bool,
    /// Fault SPEC (see tests/ec2sim/README.md), empty for none.
    pub faults: String,
    /// Zone of the local instance; empty for the region's first.
    pub zone: String,
    /// Instance type of the local instance.
    pub instance_type: String,
    /// Seed of the fault dice (`--seed`), for reproducible fault runs.
    pub seed: Option<u64>,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            delays: "fast",
            throttle: true,
            faults: String::new(),
            zone: String::new(),
            instance_type: "m5.large".into(),
            seed: None,
        }
    }
}

/// A running emulator.
pub struct Ec2Sim {
    child: Child,
    /// The emulator's stderr; removed with the handle.
    _log: tempfile::NamedTempFile,
    /// The parsed ready line.
    pub info: Value,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// Region served.
    pub region: String,
    /// Zone of the local instance.
    pub zone: String,
    /// Id of the local instance (the node id the node service must report).
    pub instance_id: String,
    /// Where device links appear.
    pub device_dir: PathBuf,
    /// Whether attachments make real loop devices (root only).
    pub devices: bool,
}

/// Path of the emulator launcher in the source tree.
pub fn run_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ec2sim/run")
}

impl Ec2Sim {
    /// Starts the emulator with default options.
    pub fn start() -> Ec2Sim {
        Ec2Sim::start_with(SimOptions::default())
    }

    /// Starts the emulator and waits (bounded; the first start may build
    /// its venv) for the ready line.
    pub fn start_with(opts: SimOptions) -> Ec2Sim {
        let mut cmd = Command::new(run_script());
        cmd.arg("--port=0")
            .arg(format!("--delays={}", opts.delays))
            .arg(format!(
                "--throttle={}",
                if opts.throttle { "on" } else { "off" }
            ))
            .arg(format!("--instance-type={}", opts.instance_type));
        if !opts.faults.is_empty() {
            cmd.arg(format!("--faults={}", opts.faults));
        }
        if let Some(seed) = opts.seed {
            cmd.arg(format!("--seed={seed}"));
        }
        if !opts.zone.is_empty() {
            cmd.arg(format!("--zone={}", opts.zone));
        }
        // The emulator's log goes to a file, shown when it fails to start,
        // so test output stays readable.
        let log = tempfile::NamedTempFile::new().expect("ec2sim log file");
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log.reopen().expect("reopen ec2sim log"))
            .spawn()
            .expect("spawn tests/ec2sim/run");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = match rx.recv_timeout(Duration::from_secs(600)) {
            Ok(line) if !line.trim().is_empty() => line,
            other => {
                let _ = child.kill();
                let status = child.wait().ok();
                let text = std::fs::read_to_string(log.path()).unwrap_or_default();
                panic!(
                    "ec2sim gave no ready line ({other:?}); exit status {status:?}; its log:\n{text}"
                );
            }
        };
        let info: Value = serde_json::from_str(line.trim()).expect("ready line is JSON");
        let text = |k: &str| info[k].as_str().unwrap_or_default().to_string();
        Ec2Sim {
            endpoint: text("endpoint"),
            region: text("region"),
            zone: text("availability_zone"),
            instance_id: text("instance_id"),
            device_dir: PathBuf::from(text("device_dir")),
            devices: info["devices"].as_bool().unwrap_or(false),
            info,
            child,
            _log: log,
        }
    }

    /// The environment a driver needs to use this emulator for EC2 and IMDS.
    pub fn driver_env(&self) -> Vec<(String, String)> {
        let imds = self.info["imds_endpoint"]
            .as_str()
            .unwrap_or(&self.endpoint);
        [
            ("AWS_ENDPOINT_URL_EC2", self.endpoint.as_str()),
            ("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_REGION", self.region.as_str()),
            // Keep the SDK from reading the developer's real profile.
            ("AWS_CONFIG_FILE", "/dev/null"),
            ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// `GET /_sim/<path>`.
    pub fn get(&self, path: &str) -> Value {
        self.http("GET", path, None)
    }

    /// `POST /_sim/<path>` with a JSON body.
    pub fn post(&self, path: &str, body: &Value) -> Value {
        self.http("POST", path, Some(body))
    }

    /// Calls per EC2 action since the last counter reset.
    pub fn calls(&self, action: &str) -> u64 {
        self.get("counters")["calls"][action].as_u64().unwrap_or(0)
    }

    /// Resets the per-action counters.
    pub fn reset_counters(&self) {
        self.post("counters/reset", &serde_json::json!({}));
    }

    fn http(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let addr = self.endpoint.trim_start_matches("http://");
        let mut stream = TcpStream::connect(addr).expect("connect to ec2sim");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        write!(
            stream,
            "{method} /_sim/{path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .expect("write request");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("read response");
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
        assert!(
            head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200"),
            "ec2sim {method} /_sim/{path} failed: {head}\n{body}"
        );
        serde_json::from_str(body).unwrap_or(Value::Null)
    }
}

impl Drop for Ec2Sim {
    fn drop(&mut self) {
        // SIGTERM lets the emulator detach its loop devices; SIGKILL only if
        // it hangs (the next emulator start then reaps what it left).
        super::signal(&self.child, nix::sys::signal::Signal::SIGTERM);
        if super::wait_bounded(&mut self.child, Duration::from_secs(30)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
