//! Every EC2 action the code calls is granted by docs/iam-policy.json, or by
//! docs/iam-policy-optional.json for the features documented as needing more.

use std::collections::BTreeSet;
use std::path::Path;

fn actions_in_policy(file: &str) -> BTreeSet<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{file}: {e}"));
    let policy: serde_json::Value = serde_json::from_str(&text).expect("policy is JSON");
    let mut out = BTreeSet::new();
    for stmt in policy["Statement"].as_array().expect("Statement list") {
        let actions = match &stmt["Action"] {
            serde_json::Value::String(s) => vec![s.clone()],
            serde_json::Value::Array(a) => a
                .iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect(),
            _ => vec![],
        };
        out.extend(
            actions
                .into_iter()
                .filter_map(|a| a.strip_prefix("ec2:").map(String::from)),
        );
    }
    out
}

/// Actions named in `self.call("Action", …)`, `self.call_checked("Action",
/// …)` and `self.paged("Action", …)`
/// in the EC2 implementation, through which every EC2 request goes.
fn actions_in_code() -> BTreeSet<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/cloud/ec2");
    let mut out = BTreeSet::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for opener in [".call(", ".call_checked(", ".paged("] {
            let mut rest = text.as_str();
            while let Some(i) = rest.find(opener) {
                rest = rest[i + opener.len()..].trim_start();
                if let Some(quoted) = rest.strip_prefix('"') {
                    let end = quoted.find('"').unwrap();
                    let name = &quoted[..end];
                    // Action names only (the scanner's own test has quoted markers).
                    if !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric()) {
                        out.insert(name.to_string());
                    }
                }
            }
        }
    }
    out
}

#[test]
fn every_called_action_is_granted() {
    let code = actions_in_code();
    assert!(
        code.len() >= 15,
        "found only {code:?}: is the scan still right?"
    );
    let main = actions_in_policy("docs/iam-policy.json");
    let optional = actions_in_policy("docs/iam-policy-optional.json");
    let missing: Vec<_> = code
        .iter()
        .filter(|a| !main.contains(*a) && !optional.contains(*a))
        .collect();
    assert!(
        missing.is_empty(),
        "EC2 actions called but in no policy: {missing:?}"
    );
    // The optional ones are exactly the documented extras.
    let extra: BTreeSet<_> = code.difference(&main).cloned().collect();
    let documented: BTreeSet<String> = [
        "CreateSnapshots",
        "EnableFastSnapshotRestores",
        "LockSnapshot",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert!(
        extra.is_subset(&documented),
        "needs more than the contract policy: {extra:?}"
    );
    // And the main policy grants nothing the code does not call, except
    // DescribeTags: the reference driver's policy has it and DESIGN.md keeps
    // the same policy so clusters can swap drivers without IAM changes.
    let unused: Vec<_> = main
        .difference(&code)
        .filter(|a| *a != "DescribeTags")
        .collect();
    assert!(
        unused.is_empty(),
        "policy grants actions the driver never calls: {unused:?}"
    );
}
