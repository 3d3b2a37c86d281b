use super::*;

fn params(pairs: &[(&str, &str)]) -> Result<VolumeParams> {
    VolumeParams::parse(
        &pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

fn err(pairs: &[(&str, &str)]) -> String {
    params(pairs).unwrap_err().to_string()
}

#[test]
fn the_users_storage_class_parses() {
    let p = params(&[
        ("type", "gp3"),
        ("iops", "3000"),
        ("throughput", "125"),
        ("encrypted", "true"),
        ("fsType", "ext4"),
    ])
    .unwrap();
    assert_eq!(p.volume_type, VolumeType::Gp3);
    assert_eq!(p.performance(10).unwrap(), (Some(3000), Some(125)));
    assert!(p.encrypted);
    assert_eq!(p.fs_type, FsType::Ext4);
}

#[test]
fn keys_are_case_insensitive_and_unknown_keys_named() {
    let p = params(&[
        ("Type", "io2"),
        ("IOPS", "1000"),
        ("CSI.storage.k8s.io/fsType", "XFS"),
    ])
    .unwrap();
    assert_eq!(
        (p.volume_type.clone(), p.iops, p.fs_type),
        (VolumeType::Io2, Some(1000), FsType::Xfs)
    );
    assert!(err(&[("tpye", "gp3")]).contains("\"tpye\""));
}

#[test]
fn defaults() {
    let p = params(&[]).unwrap();
    assert_eq!(
        (p.volume_type.clone(), p.fs_type, p.encrypted),
        (VolumeType::Gp3, FsType::Ext4, false)
    );
    assert_eq!(p.performance(100).unwrap(), (None, None));
}

#[test]
fn bad_values_are_named() {
    assert!(err(&[("type", "gp9")]).contains("\"gp9\""));
    assert!(err(&[("encrypted", "yes")]).contains("\"yes\""));
    assert!(err(&[("iops", "-3")]).contains("\"-3\""));
    assert!(err(&[("fsType", "ntfs")]).contains("\"ntfs\""));
    assert!(err(&[("iops", "3000"), ("iopsPerGB", "10")]).contains("mutually exclusive"));
    assert!(err(&[("outpostArn", "arn:aws:outposts:x")]).contains("Outposts are not supported"));
    assert!(err(&[("blockExpress", "maybe")]).contains("\"maybe\""));
}

#[test]
fn kms_key_implies_encryption() {
    let p = params(&[("kmsKeyId", "arn:aws:kms:us-east-1:1:key/x")]).unwrap();
    assert!(p.encrypted);
}

#[test]
fn per_type_limits_name_the_limit() {
    let p = params(&[("type", "io1"), ("iops", "1000")]).unwrap();
    assert_eq!(
        p.performance(10).unwrap(),
        (Some(500), None),
        "capped at 50 per GiB"
    );
    assert_eq!(p.performance(20).unwrap(), (Some(1000), None));
    // Where the per-GiB cap would fall below the minimum it does not apply
    // (the reference's rule), and EC2 would refuse: refused here, naming it.
    let small = params(&[("iops", "4000")]).unwrap();
    let e = small.performance(4).unwrap_err().to_string();
    assert!(e.contains("500 IOPS per GiB"), "{e}");
    let e = p.performance(2).unwrap_err().to_string();
    assert!(e.contains("4..=16384"), "{e}");
    let st1 = params(&[("type", "st1")]).unwrap();
    assert!(st1.performance(100).is_err());
    assert!(st1.performance(125).is_ok());
    let gp2 = params(&[("type", "gp2"), ("iops", "300")]).unwrap();
    assert!(gp2.performance(10).unwrap_err().to_string().contains("gp2"));
    let tp = params(&[("type", "gp2"), ("throughput", "300")]).unwrap();
    assert!(
        tp.performance(10)
            .unwrap_err()
            .to_string()
            .contains("only valid for gp3")
    );
    let io2 = params(&[("type", "io2")]).unwrap();
    assert!(
        io2.performance(10)
            .unwrap_err()
            .to_string()
            .contains("needs parameter iops")
    );
}

#[test]
fn gp3_ratios() {
    // baseline 3000 IOPS at any size; above it 500 per GiB
    let p = params(&[("iops", "3000")]).unwrap();
    assert!(p.performance(1).is_ok());
    let p = params(&[("iops", "6000")]).unwrap();
    assert_eq!(
        p.performance(10).unwrap().0,
        Some(5000),
        "capped to 500 per GiB"
    );
    assert_eq!(p.performance(12).unwrap().0, Some(6000));
    // throughput at most IOPS / 4
    let p = params(&[("throughput", "1000")]).unwrap();
    let e = p.performance(100).unwrap_err().to_string();
    assert!(e.contains("0.25 MiB/s per IOPS"), "{e}");
    let p = params(&[("throughput", "1000"), ("iops", "4000")]).unwrap();
    assert!(p.performance(100).is_ok());
    let p = params(&[("throughput", "2001"), ("iops", "16000")]).unwrap();
    assert!(
        p.performance(100)
            .unwrap_err()
            .to_string()
            .contains("125..=2000")
    );
}

#[test]
fn iops_per_gb() {
    let p = params(&[("type", "io1"), ("iopsPerGB", "10")]).unwrap();
    assert_eq!(p.performance(100).unwrap().0, Some(1000));
    // 10 × 5 = 50 < 100 minimum
    assert!(p.performance(5).is_err());
    let p = params(&[
        ("type", "io1"),
        ("iopsPerGB", "10"),
        ("allowAutoIOPSPerGBIncrease", "true"),
    ])
    .unwrap();
    assert_eq!(p.performance(5).unwrap().0, Some(100));
    // capped at the type's maximum (io2: 256,000; blockExpress is a no-op)
    for block_express in ["true", "false"] {
        let p = params(&[
            ("type", "io2"),
            ("iopsPerGB", "1000"),
            ("blockExpress", block_express),
        ])
        .unwrap();
        assert_eq!(p.performance(65536).unwrap().0, Some(256000));
    }
}

#[test]
fn format_options() {
    let p = params(&[
        ("blockSize", "4096"),
        ("inodeSize", "512"),
        ("ext4BigAlloc", "True"),
        ("ext4ClusterSize", "65536"),
    ])
    .unwrap();
    assert_eq!(
        p.format.to_context(),
        vec![
            ("blocksize".to_string(), "4096".to_string()),
            ("inodesize".to_string(), "512".to_string()),
            ("ext4bigalloc".to_string(), "true".to_string()),
            ("ext4clustersize".to_string(), "65536".to_string()),
        ],
        "the reference's lowercase context keys"
    );
    assert!(err(&[("fsType", "xfs"), ("bytesPerInode", "4096")]).contains("fstype xfs"));
    assert!(err(&[("fsType", "ext3"), ("ext4BigAlloc", "true")]).contains("fstype ext3"));
    assert!(err(&[("blockSize", "3000")]).contains("power of two"));
    assert!(err(&[("ext4ClusterSize", "65536")]).contains("ext4BigAlloc"));
    assert!(
        params(&[
            ("fsType", "xfs"),
            ("blockSize", "512"),
            ("inodeSize", "1024")
        ])
        .is_ok()
    );
}

#[test]
fn tag_specs_and_metadata_are_kept_for_rendering() {
    let p = params(&[
        ("tagSpecification_1", "owner={{ .PVCNamespace }}"),
        ("tagSpecification_2", "pvc={{ .PVCName }}"),
        ("csi.storage.k8s.io/pvc/name", "data-0"),
        ("csi.storage.k8s.io/pvc/namespace", "kafka"),
        ("iopsPerGB", "10"),
        ("type", "io1"),
        ("allowAutoIOPSIncreaseOnModify", "true"),
    ])
    .unwrap();
    assert_eq!(p.tag_specs.len(), 2);
    assert_eq!(p.meta.pvc_namespace.as_deref(), Some("kafka"));
    assert_eq!(
        p.driver_tags(),
        vec![
            ("ebs.csi.aws.com/IOPSPerGb".to_string(), "10".to_string()),
            (
                "ebs.csi.aws.com/AllowAutoIOPSIncreaseOnModify".to_string(),
                "true".to_string()
            ),
        ]
    );
}

#[test]
fn iops_are_capped_as_the_reference_caps_them() {
    // (rule, parameters, size GiB, IOPS sent)
    type Pairs = Vec<(&'static str, &'static str)>;
    let cases: Vec<(&str, Pairs, i64, Option<i64>)> = vec![
        (
            "gp3 fixed IOPS above the per-GiB limit: capped to it",
            vec![("iops", "20000")],
            10,
            Some(5000),
        ),
        (
            "gp3 per-GiB cap skipped below the baseline",
            vec![("iops", "3000")],
            4,
            Some(3000),
        ),
        (
            "io1 iopsPerGB raised to the minimum when allowed",
            vec![
                ("type", "io1"),
                ("iopsPerGB", "1"),
                ("allowAutoIOPSPerGBIncrease", "true"),
            ],
            4,
            Some(100),
        ),
        (
            "io1 iopsPerGB capped per GiB",
            vec![("type", "io1"), ("iopsPerGB", "10000")],
            4,
            Some(200),
        ),
        (
            "io1 capped at its maximum",
            vec![("type", "io1"), ("iopsPerGB", "10000")],
            4000,
            Some(64000),
        ),
        (
            "io2 capped at 256,000",
            vec![("type", "io2"), ("iopsPerGB", "100000")],
            4000,
            Some(256000),
        ),
        (
            "allow raises a fixed value too",
            vec![("iops", "1000"), ("allowAutoIOPSPerGBIncrease", "true")],
            5,
            Some(3000),
        ),
        (
            "gp3 iopsPerGB",
            vec![("iopsPerGB", "100")],
            100,
            Some(10000),
        ),
    ];
    for (rule, pairs, size, want) in cases {
        let got = params(&pairs).unwrap().performance(size);
        assert_eq!(
            got.as_ref().map(|p| p.0).ok(),
            Some(want),
            "{rule}: {got:?}"
        );
    }
    let low = params(&[("type", "io1"), ("iopsPerGB", "1")]).unwrap();
    assert!(
        low.performance(4)
            .unwrap_err()
            .to_string()
            .contains("allowAutoIOPSPerGBIncrease"),
        "below the minimum without the allow flag is refused, naming it"
    );
}
