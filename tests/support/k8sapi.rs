//! Handle on the Kubernetes API stand-in (`tests/k8sapi/server.py`): no API
//! server can run on these machines, so the Kubernetes features are tested
//! against that local server, which answers in the real API's wire format.
//! Starts it on a free loopback port, writes a kubeconfig pointing at it,
//! and talks to its `/_fake/` control endpoints. Dropping the handle stops it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

/// A running stand-in.
pub struct KubeApi {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// A kubeconfig file pointing at it.
    pub kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
}

/// A fixture of `tests/k8sapi/fixtures/`, parsed.
pub fn fixture(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/k8sapi/fixtures")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).expect("fixture")).expect("fixture JSON")
}

impl KubeApi {
    /// Starts the stand-in holding `objects`.
    pub fn start(objects: &[Value]) -> KubeApi {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/k8sapi/server.py");
        let mut child = Command::new("python3")
            .arg(&script)
            .arg("--port=0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tests/k8sapi/server.py");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("ready line");
        let ready: Value = serde_json::from_str(line.trim()).expect("ready line is JSON");
        let endpoint = ready["endpoint"].as_str().expect("endpoint").to_string();
        let dir = tempfile::tempdir().expect("temp dir");
        let mut api = KubeApi {
            child,
            endpoint,
            kubeconfig: dir.path().join("kubeconfig"),
            _dir: dir,
        };
        let config = api.http("GET", "/_fake/kubeconfig", None);
        std::fs::write(&api.kubeconfig, config.to_string()).expect("write kubeconfig");
        for o in objects {
            api.put(o);
        }
        api.http(
            "POST",
            "/_fake/requests/reset",
            Some(&serde_json::json!({})),
        );
        api
    }

    /// Creates or replaces an object.
    pub fn put(&mut self, object: &Value) {
        self.http("POST", "/_fake/objects", Some(object));
    }

    /// Deletes an object (`nodes`, `volumeattachments`, …).
    pub fn delete(&self, resource: &str, name: &str) {
        self.http("DELETE", &format!("/_fake/objects/{resource}/{name}"), None);
    }

    /// The stored object.
    pub fn get(&self, resource: &str, name: &str) -> Value {
        self.http("GET", &format!("/_fake/objects/{resource}/{name}"), None)
    }

    /// Merges `config` into the stand-in's behaviour settings.
    pub fn configure(&self, config: Value) {
        self.http("POST", "/_fake/config", Some(&config));
    }

    /// Every API request so far, optionally only of `method`.
    pub fn requests(&self, method: Option<&str>) -> Vec<Value> {
        let path = match method {
            Some(m) => format!("/_fake/requests?method={m}"),
            None => "/_fake/requests".to_string(),
        };
        self.http("GET", &path, None)["requests"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    fn http(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let addr = self.endpoint.trim_start_matches("http://").to_string();
        let mut stream = TcpStream::connect(&addr).expect("connect to the k8sapi stand-in");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
        assert!(
            head.starts_with("HTTP/1.1 2") || head.starts_with("HTTP/1.0 2"),
            "k8sapi {method} {path}: {head}\n{body}"
        );
        // Chunked answers are not used by the control endpoints.
        serde_json::from_str(body).unwrap_or(Value::Null)
    }
}

impl Drop for KubeApi {
    fn drop(&mut self) {
        super::signal(&self.child, nix::sys::signal::Signal::SIGTERM);
        if super::wait_bounded(&mut self.child, Duration::from_secs(10)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
