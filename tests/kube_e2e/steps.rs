//! The steps of the end-to-end test, in the order it takes them: the
//! workloads, an online expansion, a snapshot and its restore, the pre-stop
//! hook and the teardown that checks nothing is left.

use super::*;

/// The StatefulSets and the io1 claim: provisioned, attached, mounted, with
/// the class's parameters and the provisioner's tags in EC2.
pub(crate) async fn workloads(w: &mut World) {
    for (file, _, _, _) in STATEFULSETS {
        w.apply_file(file);
    }
    let io1 = json!([
        {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "legacy-io1", "namespace": "default"},
         "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "io1-legacy",
                  "resources": {"requests": {"storage": "10Gi"}}}},
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "legacy-io1", "namespace": "default"},
         "spec": {"containers": [{"name": "app", "image": "busybox", "volumeMounts": [{"name": "d", "mountPath": "/d"}]}],
                  "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "legacy-io1"}}]}}
    ]);
    w.cluster.apply(io1.as_array().unwrap());
    let replicas: u32 = STATEFULSETS.iter().map(|s| s.2).sum();
    w.until(
        &format!("{replicas} StatefulSet pods and the io1 pod Running on published volumes"),
        Duration::from_secs(600),
        async |w| {
            let pods = w.json(&["pods", "-n", "default"])?;
            let ready = pods["items"]
                .as_array()?
                .iter()
                .filter(|p| p["status"]["phase"] == "Running")
                .count();
            (ready as u32 == replicas + 1).then_some(())
        },
    )
    .await;

    let volumes = w.sim.all_volumes().await;
    let k = w.kubelet.lock().await;
    let published = k.published();
    drop(k);
    let claims: u32 = STATEFULSETS
        .iter()
        .map(|s| s.2 * s.3.len() as u32)
        .sum::<u32>()
        + 1;
    assert_eq!(
        published.len() as u32,
        claims,
        "every claim published: {published:#?}"
    );
    assert_eq!(volumes.len() as u32, claims, "one EBS volume per claim");
    for p in &published {
        let v = volumes
            .iter()
            .find(|v| v.volume_id() == Some(p.volume_id.as_str()))
            .unwrap_or_else(|| panic!("{} has no EBS volume", p.pv));
        let pvc_name = p.claim.as_str();
        assert_eq!(
            tag(v, "CSIVolumeName").as_deref(),
            Some(p.pv.as_str()),
            "{pvc_name}"
        );
        assert_eq!(
            tag(v, "kubernetes.io/created-for/pvc/name").as_deref(),
            Some(pvc_name)
        );
        assert_eq!(
            tag(v, "kubernetes.io/created-for/pvc/namespace").as_deref(),
            Some("default")
        );
        assert_eq!(
            tag(v, "kubernetes.io/created-for/pv/name").as_deref(),
            Some(p.pv.as_str())
        );
        assert_eq!(tag(v, "ebs.csi.aws.com/cluster").as_deref(), Some("true"));
        assert_eq!(
            v.availability_zone(),
            Some(w.sim.zone.as_str()),
            "{pvc_name}: the node's zone"
        );
        let pv = w.json(&["pv", &p.pv]).expect("pv");
        let class = pv["spec"]["storageClassName"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let size = pv["spec"]["capacity"]["storage"]
            .as_str()
            .map(quantity_bytes)
            .unwrap()
            >> 30;
        assert_eq!(v.size(), Some(size as i32), "{pvc_name}");
        let (ty, iops, throughput, encrypted, fs) = match class.as_str() {
            "ebs-sc" => ("gp3", 3000, Some(125), true, "ext4"),
            "ebs-gp3-search" => ("gp3", 6000, Some(500), true, "xfs"),
            "io1-legacy" => ("io1", 10 * size as i32, None, false, "ext4"),
            other => panic!("{pvc_name}: unexpected class {other}"),
        };
        assert_eq!(v.volume_type().map(|t| t.as_str()), Some(ty), "{pvc_name}");
        assert_eq!(v.iops(), Some(iops), "{pvc_name} ({class})");
        if let Some(t) = throughput {
            assert_eq!(v.throughput(), Some(t), "{pvc_name} ({class})");
        }
        assert_eq!(v.encrypted(), Some(encrypted), "{pvc_name} ({class})");
        let mounted = support::node::mounted_fs(&p.target);
        assert_eq!(
            mounted.as_deref(),
            Some(fs),
            "{pvc_name} mounted at {}",
            p.target.display()
        );
        if class == "ebs-gp3-search" {
            // The class's tagSpecification templates, rendered from the
            // provisioner's metadata.
            assert_eq!(tag(v, "app").as_deref(), Some("elasticsearch"));
            assert_eq!(tag(v, "claim"), Some(format!("default/{pvc_name}")));
        }
        // PV's topology: the zone the volume was made in.
        let terms = pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"].to_string();
        assert!(terms.contains(&w.sim.zone), "{}: {terms}", p.pv);
    }
    w.phase(&format!("{claims} claims checked against EC2: type, IOPS, throughput, encryption, zone, tags, filesystem"));
}

/// An Elasticsearch claim (xfs) grown online through external-resizer and
/// kubelet's NodeExpandVolume.
pub(crate) async fn expansion(w: &mut World) {
    let claim = "data-elasticsearch-0";
    w.kubectl(&[
        "patch",
        "pvc",
        claim,
        "-n",
        "default",
        "--type=merge",
        "-p",
        r#"{"spec":{"resources":{"requests":{"storage":"120Gi"}}}}"#,
    ]);
    w.until(
        "the claim's capacity at 120Gi after ControllerExpand and NodeExpand",
        Duration::from_secs(180),
        async |w| {
            let pvc = w.json(&["pvc", claim, "-n", "default"])?;
            (pvc["status"]["capacity"]["storage"] == "120Gi").then_some(())
        },
    )
    .await;
    let p = w
        .kubelet
        .lock()
        .await
        .find("default/elasticsearch-0", "data-elasticsearch-0")
        .expect("published");
    let vol = w
        .sim
        .all_volumes()
        .await
        .into_iter()
        .find(|v| v.volume_id() == Some(&p.volume_id))
        .unwrap();
    assert_eq!(vol.size(), Some(120), "EC2 grew the volume");
    let st = nix::sys::statvfs::statvfs(&p.target).expect("statvfs");
    let bytes = st.blocks() as u64 * st.fragment_size() as u64;
    assert!(bytes > 115 << 30, "the mounted xfs grew: {bytes} bytes");
}

/// examples/snapshot: data written in the source claim, a VolumeSnapshot
/// made ready by the snapshot controller and csi-snapshotter, restored into
/// a new claim that holds the same bytes.
pub(crate) async fn snapshot_and_restore(w: &mut World) {
    w.apply_file("examples/snapshot/1-source.yaml");
    let source = w
        .published_claim(
            "the snapshot example's source pod on its volume",
            "source-data",
        )
        .await;
    let data: Vec<u8> = (0..1 << 20)
        .map(|i: u32| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    {
        use std::io::Write;
        let path = source.target.join("snapshot-check.bin");
        let mut f = std::fs::File::create(&path).expect("create");
        f.write_all(&data).expect("write");
        f.sync_all().expect("fsync");
        nix::unistd::syncfs(&f).expect("syncfs");
    }
    w.apply_file("examples/snapshot/2-snapshot.yaml");
    let snap = w
        .until(
            "the VolumeSnapshot readyToUse",
            Duration::from_secs(180),
            async |w| {
                let snaps = w.json(&["volumesnapshots", "-n", "default"])?;
                let s = snaps["items"].as_array()?.first()?.clone();
                (s["status"]["readyToUse"] == true).then_some(s)
            },
        )
        .await;
    let content = snap["status"]["boundVolumeSnapshotContentName"]
        .as_str()
        .unwrap()
        .to_string();
    let snaps = w.sim.own_snapshots().await;
    let ours: Vec<_> = snaps
        .iter()
        .filter(|s| {
            s.tags()
                .iter()
                .any(|t| t.key() == Some("CSIVolumeSnapshotName"))
        })
        .collect();
    assert_eq!(ours.len(), 1, "one EBS snapshot");
    let stag = |k: &str| {
        ours[0]
            .tags()
            .iter()
            .find(|t| t.key() == Some(k))
            .and_then(|t| t.value().map(str::to_string))
    };
    // csi-snapshotter names the snapshot "snapshot-" + the VolumeSnapshot's uid.
    let uid = snap["metadata"]["uid"].as_str().unwrap();
    assert_eq!(
        stag("CSIVolumeSnapshotName"),
        Some(format!("snapshot-{uid}"))
    );
    // The reference tags snapshots with these two only; the snapshotter's
    // metadata (--extra-create-metadata) feeds tagSpecification templates.
    assert_eq!(stag("ebs.csi.aws.com/cluster").as_deref(), Some("true"));
    assert_eq!(
        ours[0].volume_id(),
        Some(source.volume_id.as_str()),
        "the snapshot is of the source claim's volume ({content})"
    );

    w.apply_file("examples/snapshot/3-restore.yaml");
    let restored = w
        .published_claim("the restored claim's pod on its volume", "restored-data")
        .await;
    let back = std::fs::read(restored.target.join("snapshot-check.bin"))
        .expect("the file is in the restored volume");
    assert!(
        back == data,
        "the restored volume holds the bytes written before the snapshot"
    );
}

/// The node is cordoned while volumes are attached: the pre-stop hook waits;
/// the workloads go, kubelet unmounts, the attach/detach controller and
/// external-attacher detach, and the hook returns. Then every claim and the
/// snapshot are deleted: nothing is left in EC2, the API or the host.
pub(crate) async fn pre_stop_and_teardown(w: &mut World) {
    w.kubectl(&["cordon", NODE]);
    w.until(
        "the node-lifecycle controller's unschedulable taint",
        Duration::from_secs(60),
        async |w| {
            let node = w.json(&["node", NODE])?;
            node["spec"]["taints"]
                .as_array()?
                .iter()
                .any(|t| t["key"] == "node.kubernetes.io/unschedulable")
                .then_some(())
        },
    )
    .await;
    let node_sa = w.cluster.kubeconfig_for("kube-system", "ebs-csi-node-sa");
    let hook_log = w.cluster.dir.path().join("pre-stop-hook.log");
    let mut hook = std::process::Command::new(DRIVER_BIN)
        .arg("pre-stop-hook")
        .arg(format!("--kubeconfig={}", node_sa.display()))
        .env("CSI_NODE_NAME", NODE)
        .stderr(std::fs::File::create(&hook_log).unwrap())
        .spawn()
        .expect("pre-stop-hook");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        hook.try_wait().unwrap().is_none(),
        "the hook waits while volumes are attached: {}",
        std::fs::read_to_string(&hook_log).unwrap_or_default()
    );
    let hook_started = Instant::now();
    for (file, _, _, _) in STATEFULSETS.iter().rev() {
        w.kubectl(&["delete", "-f", &format!("{ROOT}/{file}"), "--wait=false"]);
    }
    w.kubectl(&[
        "delete",
        "pod",
        "legacy-io1",
        "source-pod",
        "restore-pod",
        "-n",
        "default",
        "--wait=false",
        "--ignore-not-found",
    ]);
    w.kubectl(&["delete", "pod", "--all", "-n", "default", "--wait=false"]);
    let status = w
        .until(
            "the pre-stop hook to return after the last detach",
            Duration::from_secs(300),
            async |_| hook.try_wait().unwrap(),
        )
        .await;
    assert!(
        status.success(),
        "pre-stop hook: {status}\n{}",
        std::fs::read_to_string(&hook_log).unwrap_or_default()
    );
    assert!(
        w.json(&["volumeattachments"])
            .is_some_and(|l| l["items"].as_array().is_some_and(|i| i.is_empty()))
    );
    w.phase(&format!(
        "pre-stop hook returned {:.1} s after the workloads were deleted",
        hook_started.elapsed().as_secs_f64()
    ));
    {
        let k = w.kubelet.lock().await;
        assert!(
            k.staged().is_empty(),
            "kubelet unstaged everything: {:?}",
            k.staged()
        );
    }

    w.kubectl(&[
        "delete",
        "volumesnapshots",
        "--all",
        "-n",
        "default",
        "--wait=false",
    ]);
    w.kubectl(&["delete", "pvc", "--all", "-n", "default", "--wait=false"]);
    w.until(
        "no PV, no EBS volume, no EBS snapshot left",
        Duration::from_secs(300),
        async |w| {
            let pvs = w.json(&["pv"])?;
            let snaps = w
                .sim
                .sdk()
                .describe_snapshots()
                .owner_ids("self")
                .send()
                .await
                .ok()?;
            let leftover_snaps = snaps
                .snapshots()
                .iter()
                .filter(|s| {
                    s.tags()
                        .iter()
                        .any(|t| t.key() == Some("CSIVolumeSnapshotName"))
                })
                .count();
            (pvs["items"].as_array()?.is_empty()
                && w.sim.all_volumes().await.is_empty()
                && leftover_snaps == 0)
                .then_some(())
        },
    )
    .await;
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let root = w.kubelet.lock().await.root.display().to_string();
    assert!(
        !mounts.contains(&root),
        "nothing mounted under kubelet's dir"
    );
}
