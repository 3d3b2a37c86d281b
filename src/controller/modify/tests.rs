//! The VolumeAttributesClass rules, table-style; rows from the reference's
//! docs/modify-volume.md and examples/.../volumeattributesclass.yaml.

use std::collections::BTreeMap;

use super::*;
use crate::cloud::VolumeState;

fn parse(pairs: &[(&str, &str)]) -> Result<MutableParams> {
    MutableParams::parse(
        &pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

fn volume(t: VolumeType, gib: i64, iops: i64, tags: &[(&str, &str)]) -> Volume {
    Volume {
        id: VolumeId::from_ec2("vol-1"),
        size_gib: gib,
        zone: "us-east-1a".into(),
        volume_type: t,
        iops: Some(iops),
        throughput: Some(125),
        encrypted: false,
        kms_key_id: None,
        snapshot_id: None,
        source_volume_id: None,
        initialization_rate: None,
        multi_attach: false,
        state: VolumeState::Available,
        attachments: Vec::new(),
        tags: tags
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        create_time: None,
    }
}

#[test]
fn plans() {
    let gp3 = volume(VolumeType::Gp3, 10, 3000, &[]);
    let io2 = volume(VolumeType::Io2, 20, 1000, &[]);
    let scaled = volume(
        VolumeType::Io2,
        20,
        1000,
        &[
            ("ebs.csi.aws.com/IOPSPerGb", "50"),
            ("ebs.csi.aws.com/AllowAutoIOPSIncreaseOnModify", "true"),
        ],
    );
    // (rule, parameters, volume, size to be, expected type/iops/throughput/size)
    type Row<'a> = (
        &'a str,
        Vec<(&'a str, &'a str)>,
        &'a Volume,
        i64,
        ModifySpec,
    );
    let cases: Vec<Row> = vec![
        (
            "the reference example: gp3 to io2 at 3000 IOPS",
            vec![("type", "io2"), ("iops", "3000")],
            &gp3,
            10,
            ModifySpec {
                volume_type: Some(VolumeType::Io2),
                iops: Some(3000),
                ..Default::default()
            },
        ),
        (
            "IOPS below the minimum are raised on modify (here to the current value: nothing to do)",
            vec![("iops", "2000")],
            &gp3,
            10,
            ModifySpec::default(),
        ),
        (
            "fixed IOPS above the per-GiB limit are capped to it",
            vec![("iops", "20000")],
            &gp3,
            10,
            ModifySpec {
                iops: Some(5000),
                ..Default::default()
            },
        ),
        (
            "iopsPerGB with allowAutoIOPSIncreaseOnModify scales by the size",
            vec![
                ("iopsPerGB", "100"),
                ("allowAutoIOPSIncreaseOnModify", "true"),
            ],
            &io2,
            20,
            ModifySpec {
                iops: Some(2000),
                ..Default::default()
            },
        ),
        (
            "iopsPerGB alone does not change the IOPS (the reference needs the allow flag)",
            vec![("iopsPerGB", "100")],
            &io2,
            20,
            ModifySpec::default(),
        ),
        (
            "the volume's tags scale IOPS when it grows",
            vec![],
            &scaled,
            40,
            ModifySpec {
                size_gib: Some(40),
                iops: Some(2000),
                ..Default::default()
            },
        ),
        (
            "volumeType is the deprecated spelling of type",
            vec![("volumeType", "gp2")],
            &gp3,
            10,
            ModifySpec {
                volume_type: Some(VolumeType::Gp2),
                ..Default::default()
            },
        ),
        (
            "type wins over volumeType",
            vec![("volumeType", "gp2"), ("type", "io1"), ("iops", "500")],
            &gp3,
            10,
            ModifySpec {
                volume_type: Some(VolumeType::Io1),
                iops: Some(500),
                ..Default::default()
            },
        ),
    ];
    for (rule, params, v, size, want) in cases {
        let got = parse(&params).and_then(|p| p.plan(v, size));
        assert_eq!(got.as_ref().ok(), Some(&want), "{rule}: {got:?}");
    }
}

#[test]
fn refusals_name_the_problem() {
    let gp3 = volume(VolumeType::Gp3, 10, 3000, &[]);
    let cases = [
        (
            "an unsupported key",
            vec![("encrypted", "true")],
            "\"encrypted\"",
        ),
        (
            "a reserved tag cannot be deleted",
            vec![("tagDeletion_1", "CSIVolumeName")],
            "Cannot delete reserved tag",
        ),
        ("an unknown type", vec![("type", "gp9")], "\"gp9\""),
        ("a bad number", vec![("iops", "123.5")], "\"123.5\""),
        (
            "iops and iopsPerGB together",
            vec![("iops", "4000"), ("iopsPerGB", "10")],
            "mutually exclusive",
        ),
        (
            "gp2 has no provisioned IOPS",
            vec![("type", "gp2"), ("iops", "3000")],
            "no provisioned IOPS",
        ),
        (
            "throughput beyond gp3's ratio to IOPS",
            vec![("throughput", "1000")],
            "0.25 MiB/s per IOPS",
        ),
    ];
    for (rule, params, needle) in cases {
        let err = parse(&params)
            .and_then(|p| p.plan(&gp3, 10))
            .expect_err(rule);
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{rule}");
        assert!(err.to_string().contains(needle), "{rule}: {err}");
    }
}

#[test]
fn tags_render_with_the_resizers_metadata() {
    let p = parse(&[
        ("tagSpecification_1", "location=Seattle"),
        ("tagSpecification_2", "cost-center="),
        ("tagSpecification_3", "pvc={{ .PVCName }}"),
        ("csi.storage.k8s.io/pvc/name", "data-0"),
        ("iopsPerGB", "10"),
        ("tagDeletion_1", "old"),
    ])
    .unwrap();
    let tags = p.add_tags().unwrap();
    for want in [
        ("location", "Seattle"),
        ("cost-center", ""),
        ("pvc", "data-0"),
        ("ebs.csi.aws.com/IOPSPerGb", "10"),
    ] {
        assert!(
            tags.contains(&(want.0.to_string(), want.1.to_string())),
            "{want:?} in {tags:?}"
        );
    }
    assert_eq!(p.delete_tags, ["old"]);
    let err = parse(&[("tagSpecification_1", "nokey")])
        .unwrap()
        .add_tags()
        .unwrap_err();
    assert!(err.to_string().contains("doesn't contain a value"), "{err}");
}
