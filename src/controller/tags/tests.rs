//! The tag rules, table-style; rows from the reference's docs/tagging.md.

use super::*;

fn specs(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn meta(ns: &str, pvc: &str) -> PvMeta {
    PvMeta {
        pvc_name: Some(pvc.into()),
        pvc_namespace: Some(ns.into()),
        pv_name: Some("pvc-1234".into()),
    }
}

fn get<'a>(tags: &'a [(String, String)], key: &str) -> Option<&'a str> {
    tags.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

#[test]
fn tagging_md_rows() {
    let driver = DriverTags::default();
    type Pairs = Vec<(&'static str, &'static str)>;
    let cases: Vec<(&str, Pairs, PvMeta, Pairs)> = vec![
        (
            "plain tags, spaces and empty values",
            vec![
                ("tagSpecification_1", "key1=value1"),
                ("tagSpecification_2", "key2=hello world"),
                ("tagSpecification_3", "key3="),
            ],
            PvMeta::default(),
            vec![("key1", "value1"), ("key2", "hello world"), ("key3", "")],
        ),
        (
            "metadata fields",
            vec![
                ("tagSpecification_1", "pvcnamespace={{ .PVCNamespace }}"),
                ("tagSpecification_2", "pvcname={{ .PVCName }}"),
                ("tagSpecification_3", "pvname={{ .PVName }}"),
            ],
            meta("default", "ebs-claim"),
            vec![
                ("pvcnamespace", "default"),
                ("pvcname", "ebs-claim"),
                ("pvname", "pvc-1234"),
            ],
        ),
        (
            "functions and pipelines",
            vec![
                (
                    "tagSpecification_1",
                    "backup={{ .PVCNamespace | contains \"prod\" }}",
                ),
                (
                    "tagSpecification_2",
                    "billingID={{ .PVCNamespace | field \"-\" 2 | toUpper }}",
                ),
            ],
            meta("ns-prod-abcdef", "c"),
            vec![("backup", "true"), ("billingID", "ABCDEF")],
        ),
        (
            "without --extra-create-metadata a field is empty, not an error",
            vec![("tagSpecification_1", "pvcnamespace={{ .PVCNamespace }}")],
            PvMeta::default(),
            vec![("pvcnamespace", "")],
        ),
        (
            "any key after the tagSpecification prefix",
            vec![("tagSpecificationDept", "dept=storage")],
            PvMeta::default(),
            vec![("dept", "storage")],
        ),
    ];
    for (rule, user, meta, want) in cases {
        let tags = driver.volume("pvc-1", &meta, &[], &specs(&user)).unwrap();
        for (k, v) in want {
            assert_eq!(get(&tags, k), Some(v), "{rule}: {k} in {tags:?}");
        }
    }
}

#[test]
fn failures_fail_or_are_left_out_with_warn_on_invalid_tag() {
    let strict = DriverTags::default();
    let lenient = DriverTags {
        policy: TagPolicy {
            warn_on_invalid: true,
        },
        ..DriverTags::default()
    };
    // (rule, spec, error text, left out when lenient?)
    let cases = [
        (
            "a reserved key",
            "CSIVolumeName=x",
            "tag key 'CSIVolumeName' is reserved",
            true,
        ),
        (
            "a reserved prefix",
            "kubernetes.io/x=y",
            "prefix 'kubernetes.io' is reserved",
            true,
        ),
        (
            "the driver's prefix",
            "ebs.csi.aws.com/cluster=false",
            "prefix 'ebs.csi.aws.com/' is reserved",
            true,
        ),
        ("AWS's prefix", "aws:owner=x", "'aws:'", true),
        (
            "a template that does not parse",
            "x={{ .PVCName }",
            "Error interpolating tag value",
            true,
        ),
        (
            "a function that fails",
            "x={{ field \"-\" 5 .PVCNamespace }}",
            "Error interpolating tag value",
            true,
        ),
        (
            "no '=' fails even when lenient",
            "novalue",
            "doesn't contain a value",
            false,
        ),
    ];
    for (rule, spec, text, skipped) in cases {
        let user = specs(&[("tagSpecification_1", spec)]);
        let err = strict
            .volume("pvc-1", &meta("a-b", "c"), &[], &user)
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{rule}");
        assert!(err.to_string().contains(text), "{rule}: {err}");
        assert!(
            err.to_string().contains("tagSpecification_1"),
            "{rule}: {err}"
        );
        let got = lenient.volume("pvc-1", &meta("a-b", "c"), &[], &user);
        if skipped {
            let tags = got.unwrap_or_else(|e| panic!("{rule}: {e}"));
            assert_eq!(tags.len(), 2 + 3, "{rule}: left out: {tags:?}");
        } else {
            assert!(got.is_err(), "{rule}");
        }
    }
}

#[test]
fn precedence_and_cluster_tags_as_the_reference() {
    let driver = DriverTags {
        extra: parse_extra_tags("team=a, pv={{ .PVName }}").unwrap(),
        cluster_id: Some("c1".into()),
        policy: TagPolicy::default(),
    };
    let user = specs(&[
        ("tagSpecification_1", "Name=mine"),
        ("tagSpecification_2", "team=b"),
        ("tagSpecification_3", "KubernetesCluster=other"),
    ]);
    let tags = driver
        .volume("pvc-1", &meta("ns", "c"), &[], &user)
        .unwrap();
    for (k, v) in [
        ("CSIVolumeName", "pvc-1"),
        ("ebs.csi.aws.com/cluster", "true"),
        ("kubernetes.io/cluster/c1", "owned"),
        ("ebs.csi.aws.com/cluster-name", "c1"),
        ("Name", "mine"),
        ("KubernetesCluster", "other"),
        ("team", "a"),
        ("pv", "pvc-1234"),
    ] {
        assert_eq!(get(&tags, k), Some(v), "{k} in {tags:?}");
    }
    let no_user = driver.volume("pvc-1", &meta("ns", "c"), &[], &[]).unwrap();
    assert_eq!(get(&no_user, "Name"), Some("c1-dynamic-pvc-1"));

    // Snapshots: no KubernetesCluster; --extra-tags raw; the class wins.
    let snap_user = specs(&[("tagSpecification_1", "team=b")]);
    let snap = driver
        .snapshot("snap-1", &SnapshotMeta::default(), &snap_user)
        .unwrap();
    assert_eq!(get(&snap, "CSIVolumeSnapshotName"), Some("snap-1"));
    assert_eq!(get(&snap, "Name"), Some("c1-dynamic-snap-1"));
    assert_eq!(get(&snap, "KubernetesCluster"), None);
    assert_eq!(get(&snap, "team"), Some("b"));
    assert_eq!(get(&snap, "pv"), Some("{{ .PVName }}"));
}

#[test]
fn extra_tags_and_key_prefixes() {
    assert!(parse_extra_tags("a").is_err());
    assert!(parse_extra_tags("CSIVolumeName=x").is_err());
    assert_eq!(parse_extra_tags(" a=1 ,b=2").unwrap(), ["a=1", "b=2"]);
    assert!(is_tag_spec_key("tagSpecification_1") && is_tag_spec_key("tagspecification_2"));
    assert!(!is_tag_spec_key("tagSpec"));
    assert!(is_tag_deletion_key("tagDeletion_1") && !is_tag_deletion_key("tag"));
}
