//! The end-to-end test's world (the cluster, the emulator, kubelet) and the
//! small helpers its steps share.

use super::*;

/// The test's world: the cluster, the emulator, kubelet, and what to print
/// when a wait times out.
pub(crate) struct World {
    pub(crate) cluster: Cluster,
    pub(crate) sim: Ec2Sim,
    pub(crate) kubelet: Arc<Mutex<Kubelet>>,
    /// The last errors of kubelet's passes (steps it could not make yet).
    pub(crate) kubelet_errors: Arc<Mutex<Vec<String>>>,
    pub(crate) controller_log: std::path::PathBuf,
    pub(crate) node_log: std::path::PathBuf,
    pub(crate) started: Instant,
}

impl World {
    pub(crate) fn phase(&self, what: &str) {
        eprintln!(
            "kube_e2e [{:6.1} s] {what}",
            self.started.elapsed().as_secs_f64()
        );
    }

    pub(crate) async fn diagnostics(&self) -> String {
        let tail = |p: &Path| {
            let text = std::fs::read_to_string(p).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(30)..].join("\n")
        };
        let k = self.kubelet.lock().await;
        format!(
            "{}\n---- driver (controller):\n{}\n---- driver (node):\n{}\n---- kubelet events:\n{}\n\
             ---- kubelet errors of its last pass:\n{}\n---- pods, claims, attachments:\n{}",
            self.cluster.logs(),
            tail(&self.controller_log),
            tail(&self.node_log),
            k.events[k.events.len().saturating_sub(30)..].join("\n"),
            self.kubelet_errors.lock().await.join("\n"),
            self.cluster
                .kubectl(
                    &[
                        "get",
                        "pods,pvc,pv,volumeattachments,volumesnapshots",
                        "-A",
                        "-o",
                        "wide"
                    ],
                    None
                )
                .unwrap_or_else(|e| e),
        )
    }

    /// Polls `done` until it gives a value; panics with every log after `limit`.
    pub(crate) async fn until<T>(
        &mut self,
        what: &str,
        limit: Duration,
        mut done: impl AsyncFnMut(&World) -> Option<T>,
    ) -> T {
        let start = Instant::now();
        loop {
            if let Some(v) = done(self).await {
                self.phase(&format!("{what}: {:.1} s", start.elapsed().as_secs_f64()));
                return v;
            }
            self.cluster.assert_alive();
            if start.elapsed() > limit {
                panic!(
                    "timed out after {limit:?} waiting for {what}\n{}",
                    self.diagnostics().await
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    pub(crate) fn json(&self, args: &[&str]) -> Option<Value> {
        self.cluster.get_json(args)
    }

    /// Applies one of the repository's manifests (a path from its root).
    pub(crate) fn apply_file(&self, file: &str) {
        self.kubectl(&["apply", "-f", &format!("{ROOT}/{file}")]);
    }

    /// Waits (up to 180 s) for kubelet to publish `claim`'s volume to a pod.
    pub(crate) async fn published_claim(&mut self, what: &str, claim: &str) -> Published {
        self.until(what, Duration::from_secs(180), async |w| {
            let k = w.kubelet.lock().await;
            k.published().into_iter().find(|p| p.claim == claim)
        })
        .await
    }

    pub(crate) fn kubectl(&self, args: &[&str]) -> String {
        self.cluster
            .kubectl(args, None)
            .unwrap_or_else(|e| panic!("{e}"))
    }
}

impl Drop for World {
    /// Whatever kubelet still has mounted (a failed run) is unmounted before
    /// the emulator, dropped next, detaches the loop devices under it.
    fn drop(&mut self) {
        let root = self
            .cluster
            .dir
            .path()
            .join("kubelet")
            .display()
            .to_string();
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut paths: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|p| p.starts_with(&root))
            .collect();
        paths.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for p in paths {
            let _ = nix::mount::umount2(p, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// Objects of a multi-document YAML text, nulls left out.
pub(crate) fn yaml_objects(text: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(text)
        .expect("YAML")
        .into_iter()
        .filter(|v| !v.is_null())
        .collect()
}

/// The stdout of `cmd`, which must succeed.
pub(crate) fn output(cmd: &mut std::process::Command) -> String {
    let out = cmd.output().expect("run");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `args` of the chart's container `name` with `$(VAR)` replaced.
pub(crate) fn container_args(deployment: &Value, name: &str, vars: &[(&str, &str)]) -> Vec<String> {
    let containers = deployment["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("containers");
    let c = containers
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("the chart has no container {name}"));
    c["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| {
            let mut a = a.as_str().expect("arg").to_string();
            for (k, v) in vars {
                a = a.replace(&format!("$({k})"), v);
            }
            a
        })
        .collect()
}

/// The value of the EC2 tag `key` on `v`.
pub(crate) fn tag(v: &aws_sdk_ec2::types::Volume, key: &str) -> Option<String> {
    v.tags()
        .iter()
        .find(|t| t.key() == Some(key))
        .and_then(|t| t.value().map(str::to_string))
}
