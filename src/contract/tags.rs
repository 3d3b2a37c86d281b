//! Tag keys on the volumes and snapshots the driver creates. The IAM policy
//! of the EBS CSI user's guide grants CreateVolume, DeleteVolume and
//! DeleteSnapshot only on resources carrying some of these, so a missing or
//! misspelt key is an outage, not a cosmetic difference.

/// The CO's name of a volume (CreateVolume's `name`); idempotency is by it.
pub const VOLUME_NAME: &str = "CSIVolumeName";
/// The CO's name of a snapshot (CreateSnapshot's `name`).
pub const SNAPSHOT_NAME: &str = "CSIVolumeSnapshotName";
/// On everything the driver creates (`true`).
pub const CLUSTER: &str = "ebs.csi.aws.com/cluster";
/// With `--k8s-tag-cluster-id`: the cluster id (legacy in-tree key).
pub const KUBERNETES_CLUSTER: &str = "KubernetesCluster";
/// With `--k8s-tag-cluster-id`: `kubernetes.io/cluster/<id>` = `owned`.
pub const CLUSTER_ID_PREFIX: &str = "kubernetes.io/cluster/";
/// Prefix of the created-for tags below.
pub const CREATED_FOR_PREFIX: &str = "kubernetes.io/created-for/";
/// The PVC a volume was created for.
pub const PVC_NAME: &str = "kubernetes.io/created-for/pvc/name";
/// The PVC's namespace.
pub const PVC_NAMESPACE: &str = "kubernetes.io/created-for/pvc/namespace";
/// The PV a volume was created for.
pub const PV_NAME: &str = "kubernetes.io/created-for/pv/name";
/// With `--k8s-tag-cluster-id`: the cluster id (the EKS cluster-scoped
/// IAM policy conditions on it).
pub const CLUSTER_NAME: &str = "ebs.csi.aws.com/cluster-name";
/// The `iopsPerGB` a volume was created or modified with, for scaling its
/// IOPS when it grows.
pub const IOPS_PER_GB: &str = "ebs.csi.aws.com/IOPSPerGb";
/// Whether a volume's IOPS may be raised when it is modified or grows.
pub const ALLOW_AUTO_IOPS_INCREASE_ON_MODIFY: &str =
    "ebs.csi.aws.com/AllowAutoIOPSIncreaseOnModify";
/// The group a group snapshot's member belongs to (CSI name; ours, the
/// reference has no group snapshots).
pub const GROUP_NAME: &str = "CSIVolumeGroupSnapshotName";
/// The group snapshot id we report for a member.
pub const GROUP_ID: &str = "CSIVolumeGroupSnapshotId";

/// The `kubernetes.io/cluster/<id>` key of a cluster id.
pub fn cluster_id_key(id: &str) -> String {
    format!("{CLUSTER_ID_PREFIX}{id}")
}
