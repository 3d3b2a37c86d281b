//! A real Kubernetes control plane as local processes on loopback, for the
//! end-to-end test (`tests/kube_e2e.rs`): etcd, kube-apiserver (TLS from a CA
//! made here, RBAC on, bearer tokens, service-account tokens signed by a key
//! made here), kube-controller-manager and kube-scheduler, all v1.36 built
//! from the Go module proxy by `tests/kube/build.sh`. No kubelet can run here
//! (no container runtime): the test plays kubelet itself (`kubelet.rs`).
//!
//! Every process started here is stopped when the `Cluster` drops; their logs
//! stay in its temp dir, and [`Cluster::logs`] shows their tails on failure.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::{Value, json};

/// The binaries the control plane needs, found in `KUBE_BIN_DIR`.
pub const CONTROL_PLANE: &[&str] = &[
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
];

/// Where the real parts are: the Go-built binaries, kubectl and helm.
#[derive(Clone, Debug)]
pub struct Tools {
    /// `KUBE_BIN_DIR` (what `tests/kube/build.sh` printed).
    pub bin: PathBuf,
    /// kubectl (`KUBECTL`, else deploy/.tools/bin/kubectl from deploy/check.sh).
    pub kubectl: PathBuf,
    /// helm (`HELM`, else deploy/.tools/bin/helm).
    pub helm: PathBuf,
}

impl Tools {
    /// The tools, or why they are not all here.
    pub fn find() -> Result<Tools, String> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let bin = std::env::var_os("KUBE_BIN_DIR").map(PathBuf::from).ok_or(
            "KUBE_BIN_DIR is not set (it is the directory `bash tests/kube/build.sh` prints; \
             tests/run-all.sh sets it)",
        )?;
        for name in CONTROL_PLANE {
            if !bin.join(name).is_file() {
                return Err(format!("{} has no {name}", bin.display()));
            }
        }
        let tool = |var: &str, name: &str| -> Result<PathBuf, String> {
            let path = std::env::var_os(var)
                .map(PathBuf::from)
                .unwrap_or_else(|| root.join("deploy/.tools/bin").join(name));
            if path.is_file() {
                Ok(path)
            } else {
                Err(format!(
                    "no {name} at {} (${var}, or run `bash deploy/check.sh`, which installs it)",
                    path.display()
                ))
            }
        };
        Ok(Tools {
            bin,
            kubectl: tool("KUBECTL", "kubectl")?,
            helm: tool("HELM", "helm")?,
        })
    }
}

/// One process of the cluster (or beside it): stopped on drop.
pub struct Proc {
    /// Its name in logs.
    pub name: String,
    child: Child,
    /// Its combined stdout and stderr.
    pub log: PathBuf,
}

impl Proc {
    /// Whether it has exited (and how).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        super::signal(&self.child, nix::sys::signal::Signal::SIGTERM);
        if super::wait_bounded(&mut self.child, Duration::from_secs(10)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A running control plane.
pub struct Cluster {
    /// The processes, stopped in reverse order of start.
    procs: Vec<Proc>,
    /// The tools it runs.
    pub tools: Tools,
    /// `https://127.0.0.1:PORT`.
    pub server: String,
    /// The CA that signed the API server's certificate.
    pub ca: PathBuf,
    /// Kubeconfig of `admin` (group system:masters).
    pub admin: PathBuf,
    /// A kube-rs client as admin.
    pub client: kube::Client,
    /// Certificates, keys, kubeconfigs, etcd's data, logs.
    pub dir: tempfile::TempDir,
}

/// A free TCP port on 127.0.0.1 (closed again; the process binds it next).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("run command");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, the API server's certificate (127.0.0.1, localhost) and the
/// service-account signing key pair, made with openssl in `dir`.
fn make_certs(dir: &Path) {
    let p = |name: &str| dir.join(name);
    let ssl = || {
        let mut c = Command::new("openssl");
        c.current_dir(dir);
        c
    };
    run(ssl().args([
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=e2e-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
    ]));
    run(ssl().args([
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=kube-apiserver",
        "-keyout",
        "apiserver.key",
        "-out",
        "apiserver.csr",
    ]));
    std::fs::write(
        p("apiserver.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc\n\
         basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n\
         extendedKeyUsage=serverAuth\n",
    )
    .expect("write ext");
    run(ssl().args([
        "x509",
        "-req",
        "-in",
        "apiserver.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "apiserver.ext",
        "-out",
        "apiserver.crt",
    ]));
    run(ssl().args(["genrsa", "-out", "sa.key", "2048"]));
    run(ssl().args(["rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub"]));
}

/// Bearer tokens of the users that are not service accounts.
const ADMIN_TOKEN: &str = "e2e-admin-token";

/// The audit policy: every request of a service account, with its body, so
/// tests can read what our parts asked of the real server (verb, path, patch
/// body, answer code) from its audit log.
const AUDIT_POLICY: &str = r#"{"apiVersion": "audit.k8s.io/v1", "kind": "Policy",
 "omitStages": ["RequestReceived"],
 "rules": [{"level": "Request", "userGroups": ["system:serviceaccounts"]}, {"level": "None"}]}"#;

impl Cluster {
    /// Starts etcd, kube-apiserver, kube-controller-manager and
    /// kube-scheduler, and waits until the API server is ready and the
    /// controllers have made the `default` service account.
    pub async fn start(tools: Tools) -> Cluster {
        Cluster::boot(tools, true).await
    }

    /// Starts etcd and kube-apiserver only: for tests that need the API's
    /// objects and its RBAC but none of the controllers.
    pub async fn start_api(tools: Tools) -> Cluster {
        Cluster::boot(tools, false).await
    }

    async fn boot(tools: Tools, controllers: bool) -> Cluster {
        let dir = tempfile::tempdir().expect("cluster dir");
        let d = dir.path().to_path_buf();
        make_certs(&d);
        std::fs::write(
            d.join("tokens.csv"),
            format!("{ADMIN_TOKEN},admin,admin-uid,\"system:masters\"\n"),
        )
        .expect("tokens");
        std::fs::write(d.join("audit-policy.json"), AUDIT_POLICY).expect("audit policy");
        let port = free_port();
        let server = format!("https://127.0.0.1:{port}");
        let ca = d.join("ca.crt");
        let admin = d.join("admin.kubeconfig");
        write_kubeconfig(&admin, &server, &ca, ADMIN_TOKEN);
        let client = client_for(&admin).await;
        let mut cluster = Cluster {
            procs: Vec::new(),
            tools,
            server,
            ca,
            admin,
            client,
            dir,
        };
        let s = |p: &Path| p.display().to_string();
        let (etcd_client, etcd_peer) = (free_port(), free_port());
        let etcd_url = format!("http://127.0.0.1:{etcd_client}");
        let peer_url = format!("http://127.0.0.1:{etcd_peer}");
        cluster.spawn_bin(
            "etcd",
            &[
                "--name=e2e".into(),
                format!("--data-dir={}", s(&d.join("etcd"))),
                format!("--listen-client-urls={etcd_url}"),
                format!("--advertise-client-urls={etcd_url}"),
                format!("--listen-peer-urls={peer_url}"),
                format!("--initial-advertise-peer-urls={peer_url}"),
                format!("--initial-cluster=e2e={peer_url}"),
                // A test cluster: losing etcd's data on a power cut is fine.
                "--unsafe-no-fsync".into(),
                "--log-level=warn".into(),
            ],
        );
        cluster.spawn_bin(
            "kube-apiserver",
            &[
                format!("--etcd-servers={etcd_url}"),
                "--bind-address=127.0.0.1".into(),
                "--advertise-address=127.0.0.1".into(),
                format!("--secure-port={port}"),
                format!("--tls-cert-file={}", s(&d.join("apiserver.crt"))),
                format!("--tls-private-key-file={}", s(&d.join("apiserver.key"))),
                format!("--token-auth-file={}", s(&d.join("tokens.csv"))),
                "--authorization-mode=RBAC".into(),
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
                format!("--service-account-key-file={}", s(&d.join("sa.pub"))),
                format!(
                    "--service-account-signing-key-file={}",
                    s(&d.join("sa.key"))
                ),
                // Addresses for Service objects only: nothing routes to them.
                "--service-cluster-ip-range=10.96.0.0/24".into(),
                format!("--cert-dir={}", s(&d.join("apiserver-certs"))),
                // The `kubernetes` Service's endpoints cannot be a loopback
                // address; nothing here uses that Service.
                "--endpoint-reconciler-type=none".into(),
                // As every real cluster: the node plugin and Elasticsearch's
                // init container are privileged.
                "--allow-privileged=true".into(),
                "--profiling=false".into(),
                format!("--audit-policy-file={}", s(&d.join("audit-policy.json"))),
                format!("--audit-log-path={}", s(&d.join("audit.log"))),
                "--v=1".into(),
            ],
        );
        cluster.wait_ready().await;
        if !controllers {
            return cluster;
        }
        let admin = s(&cluster.admin);
        let kcm_port = free_port();
        cluster.spawn_bin(
            "kube-controller-manager",
            &[
                format!("--kubeconfig={admin}"),
                format!("--authentication-kubeconfig={admin}"),
                format!("--authorization-kubeconfig={admin}"),
                "--leader-elect=false".into(),
                "--bind-address=127.0.0.1".into(),
                format!("--secure-port={kcm_port}"),
                format!("--root-ca-file={}", s(&cluster.ca)),
                format!(
                    "--service-account-private-key-file={}",
                    s(&d.join("sa.key"))
                ),
                "--v=2".into(),
            ],
        );
        let sched_port = free_port();
        cluster.spawn_bin(
            "kube-scheduler",
            &[
                format!("--kubeconfig={admin}"),
                format!("--authentication-kubeconfig={admin}"),
                format!("--authorization-kubeconfig={admin}"),
                "--leader-elect=false".into(),
                "--bind-address=127.0.0.1".into(),
                format!("--secure-port={sched_port}"),
                "--v=2".into(),
            ],
        );
        // The service-account controller is up once `default` exists.
        cluster
            .wait_for(
                "the default service account",
                Duration::from_secs(90),
                |c| {
                    c.kubectl(&["get", "serviceaccount", "default", "-n", "default"], None)
                        .is_ok()
                },
            )
            .await;
        cluster
    }

    /// Starts `bin/name` with `args`, logging to `<dir>/<name>.log`.
    fn spawn_bin(&mut self, name: &str, args: &[String]) {
        let program = self.tools.bin.join(name);
        self.spawn(name, &program, args, &[]);
    }

    /// Starts `program` beside the cluster; stopped with it.
    pub fn spawn(&mut self, name: &str, program: &Path, args: &[String], env: &[(String, String)]) {
        let log = self.dir.path().join(format!("{name}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(program)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", program.display()));
        self.procs.push(Proc {
            name: name.into(),
            child,
            log,
        });
    }

    /// Panics (with the logs) if a process has exited.
    pub fn assert_alive(&mut self) {
        let dead: Vec<String> = self
            .procs
            .iter_mut()
            .filter_map(|p| p.exited().map(|st| format!("{} exited ({st})", p.name)))
            .collect();
        assert!(dead.is_empty(), "{dead:?}\n{}", self.logs());
    }

    async fn wait_ready(&mut self) {
        let start = Instant::now();
        loop {
            if self.kubectl(&["get", "--raw", "/readyz"], None).is_ok() {
                return;
            }
            self.assert_alive();
            assert!(
                start.elapsed() < Duration::from_secs(90),
                "kube-apiserver not ready in 90 s\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Polls `done` every 250 ms until it holds; panics with the logs after
    /// `limit` or when a process of the cluster exits.
    pub async fn wait_for(
        &mut self,
        what: &str,
        limit: Duration,
        mut done: impl FnMut(&Cluster) -> bool,
    ) {
        let start = Instant::now();
        while !done(self) {
            self.assert_alive();
            assert!(
                start.elapsed() < limit,
                "timed out after {limit:?} waiting for {what}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Runs kubectl as admin; its stdout, or its stderr as the error.
    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
        self.kubectl_as(&self.admin, args, stdin)
    }

    /// Runs kubectl with `kubeconfig`.
    pub fn kubectl_as(
        &self,
        kubeconfig: &Path,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Result<String, String> {
        use std::io::Write;
        let mut child = Command::new(&self.tools.kubectl)
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kubectl");
        if let Some(text) = stdin {
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(text.as_bytes())
                .expect("write kubectl stdin");
        }
        let out = child.wait_with_output().expect("kubectl output");
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "kubectl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// `kubectl get ... -o json`, parsed; None when it fails (not found).
    pub fn get_json(&self, args: &[&str]) -> Option<Value> {
        let mut all = vec!["get"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["-o", "json"]);
        let text = self.kubectl(&all, None).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Applies `objects` (server-side apply as admin); panics naming the error.
    pub fn apply(&self, objects: &[Value]) {
        let list = json!({"apiVersion": "v1", "kind": "List", "items": objects});
        if let Err(e) = self.kubectl(
            &["apply", "--server-side", "--field-manager=e2e", "-f", "-"],
            Some(&list.to_string()),
        ) {
            panic!("apply failed: {e}");
        }
    }

    /// A kubeconfig authenticating as service account `namespace/name`,
    /// with a token from the TokenRequest API (as a pod's projected token).
    pub fn kubeconfig_for(&self, namespace: &str, name: &str) -> PathBuf {
        let token = self
            .kubectl(
                &["create", "token", name, "-n", namespace, "--duration=3h"],
                None,
            )
            .unwrap_or_else(|e| panic!("token for {namespace}/{name}: {e}"));
        let path = self
            .dir
            .path()
            .join(format!("{namespace}-{name}.kubeconfig"));
        write_kubeconfig(&path, &self.server, &self.ca, token.trim());
        path
    }

    /// The audit log's events of service account `namespace/name`
    /// (`user.username` system:serviceaccount:NS:NAME), oldest first.
    pub fn audit(&self, namespace: &str, name: &str) -> Vec<Value> {
        let user = format!("system:serviceaccount:{namespace}:{name}");
        std::fs::read_to_string(self.dir.path().join("audit.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|e| e["user"]["username"] == user.as_str())
            .collect()
    }

    /// The last lines of every process's log, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for p in &self.procs {
            let text = std::fs::read_to_string(&p.log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(25)..];
            out.push_str(&format!(
                "---- {} ({}):\n{}\n",
                p.name,
                p.log.display(),
                tail.join("\n")
            ));
        }
        out
    }

    /// Lines of process `name`'s log that contain `needle`.
    pub fn log_lines(&self, name: &str, needle: &str) -> Vec<String> {
        self.procs
            .iter()
            .filter(|p| p.name == name)
            .flat_map(|p| {
                std::fs::read_to_string(&p.log)
                    .unwrap_or_default()
                    .lines()
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .filter(|l| l.contains(needle))
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Ok(keep) = std::env::var("KUBE_E2E_KEEP") {
            let _ = std::fs::create_dir_all(&keep);
            for p in &self.procs {
                let _ = std::fs::copy(&p.log, Path::new(&keep).join(format!("{}.log", p.name)));
            }
        }
        // Sidecars and controllers first, etcd last.
        while let Some(p) = self.procs.pop() {
            drop(p);
        }
    }
}

/// Writes a kubeconfig (JSON, which is YAML) for `server` with `token`.
pub fn write_kubeconfig(path: &Path, server: &str, ca: &Path, token: &str) {
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "e2e", "cluster": {
            "server": server, "certificate-authority": ca.display().to_string()}}],
        "users": [{"name": "user", "user": {"token": token}}],
        "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": "user"}}],
        "current-context": "e2e",
    });
    std::fs::write(path, config.to_string()).expect("write kubeconfig");
}

/// A kube-rs client from a kubeconfig file.
pub async fn client_for(kubeconfig: &Path) -> kube::Client {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let config = kube::Config::from_custom_kubeconfig(
        Kubeconfig::read_from(kubeconfig).expect("read kubeconfig"),
        &KubeConfigOptions::default(),
    )
    .await
    .expect("kubeconfig");
    kube::Client::try_from(config).expect("kube client")
}
