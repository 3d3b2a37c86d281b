//! Parity with the reference driver (kubernetes-sigs/aws-ebs-csi-driver
//! v1.64.0): its documented StorageClass, VolumeAttributesClass and
//! VolumeSnapshotClass examples (docs/parameters.md, docs/tagging.md,
//! docs/modify-volume.md, examples/), driven over CSI against the EC2
//! emulator, checking what EC2 ends up holding. One row per behaviour: the
//! next difference found is one more row.

mod support;

use std::collections::{BTreeMap, HashMap};

use ebs_csi_driver::csi;
use support::csi::*;
use support::{Driver, DriverConfig, Harness, SimOptions};
use tonic::Code;

/// What EC2 must hold after a CreateVolume; `None` fields are not checked.
#[derive(Default)]
struct Want {
    volume_type: Option<&'static str>,
    size_gib: Option<i32>,
    iops: Option<i32>,
    throughput: Option<i32>,
    encrypted: Option<bool>,
    tags: Vec<(&'static str, &'static str)>,
    absent_tags: Vec<&'static str>,
}

/// One StorageClass row: flags of the driver, parameters, size (GiB, 0 for
/// none), and EC2's volume or the error (code and a word of the message).
struct Row {
    rule: &'static str,
    flags: &'static [&'static str],
    params: Vec<(&'static str, &'static str)>,
    gib: i64,
    want: Result<Want, (Code, &'static str)>,
}

fn tags_of(v: &aws_sdk_ec2::types::Volume) -> BTreeMap<String, String> {
    v.tags()
        .iter()
        .map(|t| {
            (
                t.key().unwrap_or_default().to_string(),
                t.value().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// The PV metadata the external-provisioner sends with --extra-create-metadata.
const META: [(&str, &str); 3] = [
    ("csi.storage.k8s.io/pvc/name", "data-kafka-0"),
    ("csi.storage.k8s.io/pvc/namespace", "ns-prod-abcdef"),
    ("csi.storage.k8s.io/pv/name", "pvc-0a1b"),
];

fn storage_class_rows() -> Vec<Row> {
    let ok = Ok::<Want, (Code, &'static str)>;
    vec![
        Row {
            rule: "the users' gp3 class (README): type, iops, throughput, encrypted",
            flags: &[],
            params: vec![
                ("type", "gp3"),
                ("iops", "3000"),
                ("throughput", "125"),
                ("encrypted", "true"),
                ("csi.storage.k8s.io/fstype", "ext4"),
            ],
            gib: 10,
            want: ok(Want {
                volume_type: Some("gp3"),
                iops: Some(3000),
                throughput: Some(125),
                encrypted: Some(true),
                ..Want::default()
            }),
        },
        Row {
            rule: "examples/dynamic-provisioning: no parameters is gp3, unencrypted",
            flags: &[],
            params: vec![],
            gib: 4,
            want: ok(Want {
                volume_type: Some("gp3"),
                size_gib: Some(4),
                encrypted: Some(false),
                tags: vec![("ebs.csi.aws.com/cluster", "true")],
                ..Want::default()
            }),
        },
        Row {
            rule: "no capacity range is the reference's 100 GiB",
            flags: &[],
            params: vec![],
            gib: 0,
            want: ok(Want {
                size_gib: Some(100),
                ..Want::default()
            }),
        },
        Row {
            rule: "in-tree style io1 with iopsPerGB: IOPS = 10 × size, tag IOPSPerGb",
            flags: &[],
            params: vec![("type", "io1"), ("iopsPerGB", "10")],
            gib: 100,
            want: ok(Want {
                volume_type: Some("io1"),
                iops: Some(1000),
                tags: vec![("ebs.csi.aws.com/IOPSPerGb", "10")],
                ..Want::default()
            }),
        },
        Row {
            rule: "examples/storageclass: io1, iopsPerGB 50, encrypted, xfs",
            flags: &[],
            params: vec![
                ("csi.storage.k8s.io/fstype", "xfs"),
                ("type", "io1"),
                ("iopsPerGB", "50"),
                ("encrypted", "true"),
            ],
            gib: 4,
            want: ok(Want {
                volume_type: Some("io1"),
                iops: Some(200),
                encrypted: Some(true),
                ..Want::default()
            }),
        },
        Row {
            rule: "capIOPS: gp3 iops 20000 on 10 GiB is capped to 500 per GiB",
            flags: &[],
            params: vec![("type", "gp3"), ("iops", "20000")],
            gib: 10,
            want: ok(Want {
                iops: Some(5000),
                ..Want::default()
            }),
        },
        Row {
            rule: "capIOPS: io2 iopsPerGB past 64,000 goes to 256,000 (blockExpress not needed)",
            flags: &[],
            params: vec![("type", "io2"), ("iopsPerGB", "1000")],
            gib: 1000,
            want: ok(Want {
                volume_type: Some("io2"),
                iops: Some(256_000),
                ..Want::default()
            }),
        },
        Row {
            rule: "capIOPS: allowAutoIOPSPerGBIncrease raises io1 to its minimum",
            flags: &[],
            params: vec![
                ("type", "io1"),
                ("iopsPerGB", "1"),
                ("allowAutoIOPSPerGBIncrease", "true"),
            ],
            gib: 4,
            want: ok(Want {
                iops: Some(100),
                ..Want::default()
            }),
        },
        Row {
            rule: "blockExpress is a deprecated no-op on any type",
            flags: &[],
            params: vec![("type", "gp3"), ("blockExpress", "true")],
            gib: 10,
            want: ok(Want {
                volume_type: Some("gp3"),
                ..Want::default()
            }),
        },
        Row {
            rule: "allowAutoIOPSIncreaseOnModify is kept in a tag",
            flags: &[],
            params: vec![("allowAutoIOPSIncreaseOnModify", "true")],
            gib: 10,
            want: ok(Want {
                tags: vec![("ebs.csi.aws.com/AllowAutoIOPSIncreaseOnModify", "true")],
                ..Want::default()
            }),
        },
        Row {
            rule: "docs/tagging.md: templates with contains, field and toUpper",
            flags: &[],
            params: vec![
                (
                    "tagSpecification_1",
                    "backup={{ .PVCNamespace | contains \"prod\" }}",
                ),
                (
                    "tagSpecification_2",
                    "billingID={{ .PVCNamespace | field \"-\" 2 | toUpper }}",
                ),
                ("tagSpecification_3", "key3="),
                ("tagSpecificationOwner", "owner={{ .PVCName }}"),
            ],
            gib: 1,
            want: ok(Want {
                tags: vec![
                    ("backup", "true"),
                    ("billingID", "ABCDEF"),
                    ("key3", ""),
                    ("owner", "data-kafka-0"),
                    ("kubernetes.io/created-for/pvc/name", "data-kafka-0"),
                    ("kubernetes.io/created-for/pv/name", "pvc-0a1b"),
                ],
                ..Want::default()
            }),
        },
        Row {
            rule: "--k8s-tag-cluster-id adds cluster-name and Name; a class's Name wins",
            flags: &["--k8s-tag-cluster-id=prod-1", "--extra-tags=team=a"],
            params: vec![
                ("tagSpecification_1", "Name=mine"),
                ("tagSpecification_2", "team=b"),
            ],
            gib: 1,
            want: ok(Want {
                tags: vec![
                    ("kubernetes.io/cluster/prod-1", "owned"),
                    ("KubernetesCluster", "prod-1"),
                    ("ebs.csi.aws.com/cluster-name", "prod-1"),
                    ("Name", "mine"),
                    ("team", "a"),
                ],
                ..Want::default()
            }),
        },
        Row {
            rule: "--extra-tags values are templates on volumes",
            flags: &["--extra-tags=pv={{ .PVName }}"],
            params: vec![],
            gib: 1,
            want: ok(Want {
                tags: vec![("pv", "pvc-0a1b")],
                ..Want::default()
            }),
        },
        Row {
            rule: "a reserved tag key is refused, naming it",
            flags: &[],
            params: vec![("tagSpecification_1", "CSIVolumeName=x")],
            gib: 1,
            want: Err((Code::InvalidArgument, "tag key 'CSIVolumeName' is reserved")),
        },
        Row {
            rule: "--warn-on-invalid-tag leaves a bad tag out",
            flags: &["--warn-on-invalid-tag"],
            params: vec![
                ("tagSpecification_1", "ebs.csi.aws.com/x=y"),
                ("tagSpecification_2", "broken={{ .PVCName }"),
                ("tagSpecification_3", "fine=yes"),
            ],
            gib: 1,
            want: ok(Want {
                tags: vec![("fine", "yes")],
                absent_tags: vec!["broken", "ebs.csi.aws.com/x"],
                ..Want::default()
            }),
        },
        Row {
            rule: "a tag without '=' fails even with --warn-on-invalid-tag",
            flags: &["--warn-on-invalid-tag"],
            params: vec![("tagSpecification_1", "novalue")],
            gib: 1,
            want: Err((Code::InvalidArgument, "doesn't contain a value")),
        },
        Row {
            rule: "Outposts are refused clearly",
            flags: &[],
            params: vec![("outpostArn", "arn:aws:outposts:us-east-1:1:outpost/op-1")],
            gib: 1,
            want: Err((Code::InvalidArgument, "Outposts are not supported")),
        },
        Row {
            rule: "an unknown key is refused, naming it",
            flags: &[],
            params: vec![("tpye", "gp3")],
            gib: 1,
            want: Err((Code::InvalidArgument, "\"tpye\"")),
        },
    ]
}

/// Controllers per distinct flag set, all on one emulator.
struct Bed {
    h: Harness,
    extra: HashMap<&'static [&'static str], Driver>,
}

impl Bed {
    async fn start() -> Bed {
        let h = Harness::start_with("controller", SimOptions::default(), vec![]).await;
        h.wait_ready().await;
        Bed {
            h,
            extra: HashMap::new(),
        }
    }

    async fn controller(
        &mut self,
        flags: &'static [&'static str],
    ) -> csi::controller_client::ControllerClient<tonic::transport::Channel> {
        if flags.is_empty() {
            return self.h.driver.controller().await;
        }
        if !self.extra.contains_key(flags) {
            let d = Driver::start_with(DriverConfig {
                mode: "controller",
                args: flags.iter().map(|f| f.to_string()).collect(),
                env: self.h.sim.driver_env(),
                socket: None,
            })
            .await;
            d.wait_ready().await;
            self.extra.insert(flags, d);
        }
        self.extra[flags].controller().await
    }

    async fn ec2_volume(&self, id: &str) -> aws_sdk_ec2::types::Volume {
        self.h
            .sim
            .all_volumes()
            .await
            .into_iter()
            .find(|v| v.volume_id() == Some(id))
            .unwrap_or_else(|| panic!("{id} not in EC2"))
    }
}

#[tokio::test]
async fn storage_classes_as_the_reference() {
    let mut bed = Bed::start().await;
    for (n, row) in storage_class_rows().into_iter().enumerate() {
        let mut c = bed.controller(row.flags).await;
        let mut parameters = params(&row.params);
        parameters.extend(params(&META));
        let mut req = create_req(&format!("pvc-parity-{n}"), row.gib.max(1), parameters);
        if row.gib == 0 {
            req.capacity_range = None;
        }
        let got = c.create_volume(req).await;
        let want = match (row.want, got) {
            (Err((code, needle)), Err(e)) => {
                assert_eq!(e.code(), code, "{}: {}", row.rule, e.message());
                assert!(
                    e.message().contains(needle),
                    "{}: {}",
                    row.rule,
                    e.message()
                );
                continue;
            }
            (Err(_), Ok(v)) => panic!("{}: expected an error, got {v:?}", row.rule),
            (Ok(_), Err(e)) => panic!("{}: {e:?}", row.rule),
            (Ok(want), Ok(v)) => (want, v.into_inner().volume.unwrap()),
        };
        let (want, created) = want;
        let v = bed.ec2_volume(&created.volume_id).await;
        let rule = row.rule;
        if let Some(t) = want.volume_type {
            assert_eq!(v.volume_type().map(|t| t.as_str()), Some(t), "{rule}");
        }
        if let Some(s) = want.size_gib {
            assert_eq!(v.size(), Some(s), "{rule}");
        }
        if let Some(i) = want.iops {
            assert_eq!(v.iops(), Some(i), "{rule}");
        }
        if let Some(t) = want.throughput {
            assert_eq!(v.throughput(), Some(t), "{rule}");
        }
        if let Some(e) = want.encrypted {
            assert_eq!(v.encrypted(), Some(e), "{rule}");
        }
        let tags = tags_of(&v);
        for (k, val) in want.tags {
            assert_eq!(
                tags.get(k).map(String::as_str),
                Some(val),
                "{rule}: {k} in {tags:?}"
            );
        }
        for k in want.absent_tags {
            assert!(
                !tags.contains_key(k),
                "{rule}: {k} should be absent from {tags:?}"
            );
        }
        assert_eq!(
            tags.get("CSIVolumeName").map(String::as_str),
            Some(format!("pvc-parity-{n}").as_str()),
            "{rule}: every volume carries its name tag"
        );
    }
}

fn modify_req(vol: &str, pairs: &[(&str, &str)]) -> csi::ControllerModifyVolumeRequest {
    csi::ControllerModifyVolumeRequest {
        volume_id: vol.into(),
        mutable_parameters: params(pairs),
        ..Default::default()
    }
}

#[tokio::test]
async fn volume_attributes_classes_as_the_reference() {
    let mut bed = Bed::start().await;
    let mut c = bed.controller(&[]).await;
    let create = |name: &str, pairs: &[(&str, &str)], gib| create_req(name, gib, params(pairs));
    let gp3 = c
        .create_volume(create("pvc-vac-1", &[("type", "gp3")], 10))
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap()
        .volume_id;

    // examples/modify-volume: gp3 → io2 at 3000 IOPS with tags.
    c.controller_modify_volume(modify_req(
        &gp3,
        &[
            ("type", "io2"),
            ("iops", "3000"),
            ("tagSpecification_1", "location=Seattle"),
            ("tagSpecification_2", "cost-center="),
            ("tagSpecification_3", "pvc={{ .PVCName }}"),
            ("csi.storage.k8s.io/pvc/name", "data-0"),
            ("csi.storage.k8s.io/pvc/namespace", "db"),
            ("csi.storage.k8s.io/pv/name", "pvc-9"),
        ],
    ))
    .await
    .expect("the resizer's --extra-modify-metadata keys are accepted");
    let v = bed.ec2_volume(&gp3).await;
    assert_eq!(
        (v.volume_type().map(|t| t.as_str()), v.iops()),
        (Some("io2"), Some(3000))
    );
    let tags = tags_of(&v);
    for (k, val) in [
        ("location", "Seattle"),
        ("cost-center", ""),
        ("pvc", "data-0"),
    ] {
        assert_eq!(
            tags.get(k).map(String::as_str),
            Some(val),
            "{k} in {tags:?}"
        );
    }

    // iopsPerGB with allowAutoIOPSIncreaseOnModify: 100 × 20 GiB.
    let io2 = c
        .create_volume(create(
            "pvc-vac-2",
            &[("type", "io2"), ("iops", "1000")],
            20,
        ))
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap()
        .volume_id;
    c.controller_modify_volume(modify_req(
        &io2,
        &[
            ("iopsPerGB", "100"),
            ("allowAutoIOPSIncreaseOnModify", "true"),
        ],
    ))
    .await
    .unwrap();
    assert_eq!(bed.ec2_volume(&io2).await.iops(), Some(2000));
    // ... and growth then scales the IOPS with the size (the tags say so).
    c.controller_expand_volume(csi::ControllerExpandVolumeRequest {
        volume_id: io2.clone(),
        capacity_range: Some(csi::CapacityRange {
            required_bytes: 30 * GIB,
            limit_bytes: 0,
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    let v = bed.ec2_volume(&io2).await;
    assert_eq!((v.size(), v.iops()), (Some(30), Some(3000)));

    for (rule, pairs, code, needle) in [
        (
            "a reserved tag cannot be deleted",
            vec![("tagDeletion_1", "CSIVolumeName")],
            Code::InvalidArgument,
            "Cannot delete reserved tag",
        ),
        (
            "a tag without '='",
            vec![("tagSpecification_1", "key1")],
            Code::InvalidArgument,
            "doesn't contain a value",
        ),
        (
            "a bad number",
            vec![("iops", "123.5")],
            Code::InvalidArgument,
            "\"123.5\"",
        ),
    ] {
        let err = c
            .controller_modify_volume(modify_req(&gp3, &pairs))
            .await
            .unwrap_err();
        assert_eq!(err.code(), code, "{rule}: {}", err.message());
        assert!(err.message().contains(needle), "{rule}: {}", err.message());
    }
}

#[tokio::test]
async fn clones_and_snapshot_tags_as_the_reference() {
    let mut bed = Bed::start().await;
    let mut c = bed.controller(&["--extra-tags=team=a"]).await;
    let source = c
        .create_volume(create_req("pvc-src", 10, params(&[("encrypted", "true")])))
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    let clone_req = |name: &str, gib: i64, pairs: &[(&str, &str)]| {
        let mut r = create_req(name, gib, params(pairs));
        r.volume_content_source = Some(csi::VolumeContentSource {
            r#type: Some(csi::volume_content_source::Type::Volume(
                csi::volume_content_source::VolumeSource {
                    volume_id: source.volume_id.clone(),
                },
            )),
        });
        r
    };
    let clone = c
        .create_volume(clone_req("pvc-clone", 12, &[]))
        .await
        .expect("clone")
        .into_inner()
        .volume
        .unwrap();
    let again = c
        .create_volume(clone_req("pvc-clone", 12, &[]))
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    assert_eq!(clone.volume_id, again.volume_id, "idempotent by name");
    assert!(
        clone.content_source.is_some(),
        "the answer names its source"
    );
    let v = bed.ec2_volume(&clone.volume_id).await;
    let src = bed.ec2_volume(&source.volume_id).await;
    assert_eq!(v.source_volume_id(), Some(source.volume_id.as_str()));
    assert_eq!(v.availability_zone(), src.availability_zone(), "same zone");
    assert_eq!((v.size(), v.encrypted()), (Some(12), Some(true)));
    let tags = tags_of(&v);
    assert_eq!(
        tags.get("CSIVolumeName").map(String::as_str),
        Some("pvc-clone")
    );
    assert_eq!(tags.get("team").map(String::as_str), Some("a"));
    assert_eq!(
        bed.h.sim.calls("CopyVolumes"),
        1,
        "one copy for two requests"
    );

    for (rule, req, code, needle) in [
        (
            "a clone smaller than its source",
            clone_req("pvc-c2", 5, &[]),
            Code::InvalidArgument,
            "smaller than the source",
        ),
        (
            "an unencrypted clone of an encrypted volume",
            clone_req("pvc-c3", 10, &[("encrypted", "false")]),
            Code::InvalidArgument,
            "unencrypted clone",
        ),
    ] {
        let err = c.create_volume(req).await.unwrap_err();
        assert_eq!(err.code(), code, "{rule}: {}", err.message());
        assert!(err.message().contains(needle), "{rule}: {}", err.message());
    }
    let mut elsewhere = clone_req("pvc-c4", 10, &[]);
    elsewhere.accessibility_requirements = Some(zone_requirement(
        "topology.kubernetes.io/zone",
        &["us-east-1c"],
        &[],
    ));
    let err = c.create_volume(elsewhere).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{}", err.message());
    let mut missing = clone_req("pvc-c5", 10, &[]);
    missing.volume_content_source = Some(csi::VolumeContentSource {
        r#type: Some(csi::volume_content_source::Type::Volume(
            csi::volume_content_source::VolumeSource {
                volume_id: "vol-0000000000000dead".into(),
            },
        )),
    });
    assert_eq!(
        c.create_volume(missing).await.unwrap_err().code(),
        Code::NotFound
    );

    // Snapshots: the VolumeSnapshotClass's tag beats --extra-tags.
    let snap = c
        .create_snapshot(csi::CreateSnapshotRequest {
            name: "snap-parity".into(),
            source_volume_id: source.volume_id.clone(),
            parameters: params(&[
                ("tagSpecification_1", "team=b"),
                ("tagSpecification_2", "ns={{ .VolumeSnapshotNamespace }}"),
                ("csi.storage.k8s.io/volumesnapshot/namespace", "ns-prod"),
            ]),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .snapshot
        .unwrap();
    let described = bed
        .h
        .sim
        .sdk()
        .describe_snapshots()
        .snapshot_ids(&snap.snapshot_id)
        .send()
        .await
        .unwrap();
    let tags: BTreeMap<String, String> = described.snapshots()[0]
        .tags()
        .iter()
        .map(|t| {
            (
                t.key().unwrap().to_string(),
                t.value().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(tags.get("team").map(String::as_str), Some("b"), "{tags:?}");
    assert_eq!(
        tags.get("ns").map(String::as_str),
        Some("ns-prod"),
        "{tags:?}"
    );
    assert_eq!(
        tags.get("CSIVolumeSnapshotName").map(String::as_str),
        Some("snap-parity")
    );
}
