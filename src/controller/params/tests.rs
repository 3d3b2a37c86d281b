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
    assert!(err(&[("type", "gp3"), ("blockExpress", "true")]).contains("io2"));
}

#[test]
fn kms_key_implies_encryption() {
    let p = params(&[("kmsKeyId", "arn:aws:kms:us-east-1:1:key/x")]).unwrap();
    assert!(p.encrypted);
}

#[test]
fn per_type_limits_name_the_limit() {
    let p = params(&[("type", "io1"), ("iops", "1000")]).unwrap();
    let e = p.performance(10).unwrap_err().to_string();
    assert!(e.contains("50 IOPS per GiB"), "{e}");
    assert_eq!(p.performance(20).unwrap(), (Some(1000), None));
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
    assert!(p.performance(10).is_err());
    assert!(p.performance(12).is_ok());
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
    // capped at the type's maximum: io2 at 64,000 unless blockExpress
    let p = params(&[("type", "io2"), ("iopsPerGB", "1000")]).unwrap();
    assert_eq!(p.performance(65536).unwrap().0, Some(64000));
    let p = params(&[
        ("type", "io2"),
        ("iopsPerGB", "1000"),
        ("blockExpress", "true"),
    ])
    .unwrap();
    assert_eq!(p.performance(65536).unwrap().0, Some(256000));
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
            ("blockSize".to_string(), "4096".to_string()),
            ("inodeSize".to_string(), "512".to_string()),
            ("ext4BigAlloc".to_string(), "true".to_string()),
            ("ext4ClusterSize".to_string(), "65536".to_string()),
        ]
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
fn tag_specifications_with_templates() {
    let p = params(&[
        ("tagSpecification_1", "owner={{ .PVCNamespace }}"),
        ("tagSpecification_2", "pvc={{ .PVCName }}"),
        ("csi.storage.k8s.io/pvc/name", "data-0"),
        ("csi.storage.k8s.io/pvc/namespace", "kafka"),
    ])
    .unwrap();
    assert_eq!(
        p.tags,
        vec![
            ("owner".to_string(), "kafka".to_string()),
            ("pvc".to_string(), "data-0".to_string())
        ]
    );
    assert!(err(&[("tagSpecification_1", "CSIVolumeName=x")]).contains("reserved"));
}
