//! The driver in a real Kubernetes control plane, driven by the real CSI
//! sidecars: etcd, kube-apiserver (RBAC on), kube-controller-manager (PV
//! binder, attach/detach, StatefulSet, node lifecycle…) and kube-scheduler
//! v1.36.1, external-provisioner v6.3.0, external-attacher v4.12.0,
//! external-resizer v1.14.0, csi-snapshotter and snapshot-controller v8.6.0,
//! all built from the Go module proxy (`tests/kube/build.sh`), run as local
//! processes on loopback; the EC2 emulator and, as root, real loop devices.
//!
//! Our deploy/ RBAC is applied and every part of ours runs as its own
//! service account with a TokenRequest token (the controller sidecars as
//! `ebs-csi-controller-sa`, the node plugin and its pre-stop hook as
//! `ebs-csi-node-sa`), so a missing permission fails here. The sidecars run
//! with the flags the Helm chart gives them. No kubelet can run here (no
//! container runtime), so the test plays kubelet (`support/kubelet.rs`) and
//! makes the node's CSI calls itself.
//!
//! What it walks through: the startup taint removed by the node plugin once
//! the CSINode carries the driver; the examples' StatefulSets (MySQL,
//! Elasticsearch with its own xfs class, ZooKeeper and Kafka with two claims
//! each) and an in-tree style io1 `iopsPerGB` class provisioned on
//! WaitForFirstConsumer, attached, staged and published; EC2 holding the
//! parameters and the tags from the provisioner's metadata; an online xfs
//! expansion through external-resizer; a snapshot through the snapshot
//! controller and its restore with the data intact; the pre-stop hook of a
//! cordoned node waiting until the volumes are detached; and nothing left in
//! EC2, the API or the host at the end.

#[path = "kube_e2e/steps.rs"]
mod steps;
mod support;
#[path = "kube_e2e/world.rs"]
mod world;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use steps::*;
use support::cluster::{Cluster, Tools};
use support::kubelet::{Kubelet, Published, quantity_bytes};
use support::node::skip_without_root;
use support::{DRIVER_BIN, Ec2Sim, SimOptions, connect};
use tokio::sync::Mutex;
use world::*;

const NODE: &str = "ip-10-0-7-21.ec2.internal";
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The StatefulSets of examples/ and the claims each replica gets.
const STATEFULSETS: &[(&str, &str, u32, &[&str])] = &[
    ("examples/mysql/mysql.yaml", "mysql", 1, &["data"]),
    (
        "examples/elasticsearch/elasticsearch.yaml",
        "elasticsearch",
        3,
        &["data"],
    ),
    (
        "examples/kafka/zookeeper.yaml",
        "zookeeper",
        3,
        &["data", "datalog"],
    ),
    (
        "examples/kafka/kafka.yaml",
        "kafka",
        3,
        &["data-0", "data-1"],
    ),
];

/// The in-tree style class the issue's users still have.
const IO1_CLASS: &str = r#"{"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
  "metadata": {"name": "io1-legacy"}, "provisioner": "ebs.csi.aws.com",
  "volumeBindingMode": "WaitForFirstConsumer", "allowVolumeExpansion": true,
  "parameters": {"type": "io1", "iopsPerGB": "10", "fsType": "ext4"}}"#;

/// Skips (saying why) when this machine cannot run the test; fails
/// instead when `KUBE_E2E_REQUIRED=1` (tests/run-all.sh in CI sets it).
fn tools_or_skip() -> Option<Tools> {
    let required = std::env::var("KUBE_E2E_REQUIRED").as_deref() == Ok("1");
    let why = if skip_without_root("kube_e2e") {
        Some("needs root".to_string())
    } else {
        Tools::find().err()
    };
    match why {
        None => Tools::find().ok(),
        Some(why) if required => panic!("kube_e2e cannot run: {why}"),
        Some(why) => {
            eprintln!("SKIP kube_e2e: {why}");
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workloads_through_the_real_control_plane_and_sidecars() {
    let Some(tools) = tools_or_skip() else { return };
    let started = Instant::now();
    let sim = tokio::task::spawn_blocking(|| Ec2Sim::start_with(SimOptions::default()))
        .await
        .expect("ec2sim");
    assert!(sim.devices, "the emulator makes loop devices as root");
    let mut cluster = Cluster::start(tools.clone()).await;
    eprintln!(
        "kube_e2e [{:6.1} s] control plane ready",
        started.elapsed().as_secs_f64()
    );

    // ---- our objects: the snapshot CRDs, deploy/ RBAC and CSIDriver, classes
    for crd in std::fs::read_dir(tools.bin.join("crds")).expect("crds dir") {
        let text = std::fs::read_to_string(crd.expect("crd").path()).expect("crd");
        cluster.apply(&yaml_objects(&text));
    }
    let base = output(
        std::process::Command::new(&tools.kubectl)
            .args(["kustomize", &format!("{ROOT}/deploy/kubernetes/base")]),
    );
    let ours: Vec<Value> = yaml_objects(&base)
        .into_iter()
        .filter(|o| {
            !matches!(
                o["kind"].as_str(),
                Some("Deployment" | "DaemonSet" | "PodDisruptionBudget")
            )
        })
        .collect();
    assert!(
        ours.iter().any(|o| o["kind"] == "ClusterRole"),
        "deploy/ has RBAC"
    );
    cluster.apply(&ours);
    cluster
        .wait_for("the snapshot CRDs", Duration::from_secs(30), |c| {
            c.kubectl(&["get", "volumesnapshotclasses"], None).is_ok()
        })
        .await;
    for f in [
        "examples/storageclass.yaml",
        "examples/volumesnapshotclass.yaml",
    ] {
        cluster.apply(&yaml_objects(
            &std::fs::read_to_string(format!("{ROOT}/{f}")).unwrap(),
        ));
    }
    cluster.apply(&[serde_json::from_str(IO1_CLASS).unwrap()]);

    // ---- the controller: our driver and the sidecars with the chart's flags
    let helm_home = cluster.dir.path().join("helm");
    let chart = output(
        std::process::Command::new(&tools.helm)
            .args([
                "template",
                "ebs-csi-driver",
                &format!("{ROOT}/charts/ebs-csi-driver"),
                "--namespace",
                "kube-system",
            ])
            .env("HELM_CACHE_HOME", helm_home.join("cache"))
            .env("HELM_CONFIG_HOME", helm_home.join("config"))
            .env("HELM_DATA_HOME", helm_home.join("data")),
    );
    let deployment = yaml_objects(&chart)
        .into_iter()
        .find(|o| o["kind"] == "Deployment" && o["metadata"]["name"] == "ebs-csi-controller")
        .expect("the chart's controller Deployment");
    let socket_dir = cluster.dir.path().join("pluginproxy");
    std::fs::create_dir_all(&socket_dir).unwrap();
    let socket = socket_dir.join("csi.sock");
    let endpoint = format!("unix://{}", socket.display());
    let controller_log = cluster.dir.path().join("driver-controller.log");
    let args = container_args(&deployment, "ebs-plugin", &[("CSI_ENDPOINT", &endpoint)]);
    let mut env = sim.driver_env();
    env.push(("CSI_NODE_NAME".into(), NODE.into()));
    cluster.spawn("driver-controller", Path::new(DRIVER_BIN), &args, &env);
    let sa = cluster.kubeconfig_for("kube-system", "ebs-csi-controller-sa");
    let address = socket.display().to_string();
    for sidecar in [
        "csi-provisioner",
        "csi-attacher",
        "csi-snapshotter",
        "csi-resizer",
    ] {
        let mut args = container_args(&deployment, sidecar, &[("ADDRESS", &address)]);
        args.push(format!("--kubeconfig={}", sa.display()));
        // In a pod the namespace comes from the service account's mount.
        args.push("--leader-election-namespace=kube-system".into());
        let bin = tools.bin.join(sidecar);
        cluster.spawn(sidecar, &bin, &args, &[]);
    }
    // The snapshot controller is the cluster's, not ours: it runs as admin.
    let admin = cluster.admin.display().to_string();
    let bin = tools.bin.join("snapshot-controller");
    cluster.spawn(
        "snapshot-controller",
        &bin,
        &[
            format!("--kubeconfig={admin}"),
            "--leader-election=false".into(),
        ],
        &[],
    );

    // ---- the node: the Node object, our node plugin, driver registration
    let node_socket = cluster.dir.path().join("node.sock");
    let node_sa = cluster.kubeconfig_for("kube-system", "ebs-csi-node-sa");
    let chart_node = yaml_objects(&chart)
        .into_iter()
        .find(|o| o["kind"] == "DaemonSet" && o["metadata"]["name"] == "ebs-csi-node")
        .expect("the chart's node DaemonSet");
    let mut args = container_args(
        &chart_node,
        "ebs-plugin",
        &[("CSI_ENDPOINT", &format!("unix:{}", node_socket.display()))],
    );
    args.extend([
        format!("--kubeconfig={}", node_sa.display()),
        format!("--device-dir={}", sim.device_dir.display()),
    ]);
    let mut node_env = sim.driver_env();
    node_env.push(("CSI_NODE_NAME".into(), NODE.into()));
    let labels: BTreeMap<String, String> = [
        ("kubernetes.io/hostname", NODE),
        ("kubernetes.io/os", "linux"),
        ("kubernetes.io/arch", "amd64"),
        ("node.kubernetes.io/instance-type", "m5.large"),
        ("topology.kubernetes.io/region", sim.region.as_str()),
        ("topology.kubernetes.io/zone", sim.zone.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    // Nodes start with the driver's startup taint (the reference's advice for
    // node groups): pods stay off them until the node plugin is ready.
    let taints = json!([{"key": "ebs.csi.aws.com/agent-not-ready", "effect": "NoExecute"}]);
    let provider_id = format!("aws:///{}/{}", sim.zone, sim.instance_id);
    // The Node exists before the plugin starts, as on a real node.
    let kube_root = cluster.dir.path().join("kubelet");
    cluster.spawn("driver-node", Path::new(DRIVER_BIN), &args, &node_env);
    let node_log = cluster.dir.path().join("driver-node.log");
    cluster
        .wait_for("the node plugin's socket", Duration::from_secs(30), |_| {
            node_socket.exists()
        })
        .await;
    let channel = connect(&node_socket).await;
    let kubelet = Kubelet::register_node(
        cluster.client.clone(),
        channel,
        NODE,
        &provider_id,
        labels,
        taints,
        &kube_root,
    )
    .await;
    let mut world = World {
        cluster,
        sim,
        kubelet: Arc::new(Mutex::new(kubelet)),
        kubelet_errors: Arc::new(Mutex::new(Vec::new())),
        controller_log,
        node_log,
        started,
    };
    world.phase("controller, sidecars, node plugin and Node up");
    let info = world
        .until(
            "the node plugin knows its instance",
            Duration::from_secs(60),
            async |w| {
                let mut k = w.kubelet.lock().await;
                let ready = std::fs::read_to_string(&w.node_log)
                    .unwrap_or_default()
                    .contains("instance identity loaded");
                if ready {
                    Some(k.register_driver().await)
                } else {
                    None
                }
            },
        )
        .await;
    assert_eq!(info.node_id, world.sim.instance_id);

    // The node plugin removes its startup taint once the CSINode has it.
    world
        .until(
            "the startup taint removed by the node plugin",
            Duration::from_secs(60),
            async |w| {
                let node = w.json(&["node", NODE])?;
                let tainted = node["spec"]["taints"].as_array().is_some_and(|t| {
                    t.iter()
                        .any(|t| t["key"] == "ebs.csi.aws.com/agent-not-ready")
                });
                (!tainted).then_some(())
            },
        )
        .await;

    // kubelet's loops run from here on.
    let (k, errs) = (world.kubelet.clone(), world.kubelet_errors.clone());
    let kubelet_task = tokio::spawn(async move {
        loop {
            let errors = k.lock().await.sync().await;
            *errs.lock().await = errors;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });

    workloads(&mut world).await;
    expansion(&mut world).await;
    snapshot_and_restore(&mut world).await;
    pre_stop_and_teardown(&mut world).await;
    kubelet_task.abort();
    world.phase("done");
}
