//! The compatibility contract with the reference driver
//! (kubernetes-sigs/aws-ebs-csi-driver): every name, key and piece of data
//! that a cluster's objects depend on, so that a cluster can swap drivers
//! without touching a StorageClass, PersistentVolume or node. None of it is
//! ours to invent (DESIGN.md, "The compatibility contract"); controller and
//! node both take it from here.
//!
//! - [`DRIVER_NAME`], the topology keys, the publish-context and
//!   volume-context keys below;
//! - [`tags`]: the tag keys on what the driver creates (the IAM policy of
//!   the user's guide conditions on them);
//! - [`format`]: filesystem types and the format options of the volume
//!   context, with the one parser controller and node share;
//! - [`attach_limits`]: attachment facts per instance type.

pub mod attach_limits;
pub mod format;
pub mod tags;

/// The driver name every Kubernetes object refers to.
pub const DRIVER_NAME: &str = "ebs.csi.aws.com";

/// The well-known Kubernetes zone key: reported on created volumes and by
/// NodeGetInfo, accepted in requests.
pub const WELL_KNOWN_ZONE_KEY: &str = "topology.kubernetes.io/zone";

/// The reference driver's own zone key: still on older PVs and nodes, so
/// accepted in requests and reported by NodeGetInfo too.
pub const EBS_ZONE_KEY: &str = "topology.ebs.csi.aws.com/zone";

/// Publish-context key: the device name ControllerPublish attached as
/// (`/dev/xvdba`); the node looks the device up by it on Xen instances.
pub const DEVICE_PATH_KEY: &str = "devicePath";

/// Volume-context key carrying the StorageClass's filesystem type, for COs
/// whose capabilities name none (Kubernetes always names one). Ours; the
/// reference ignores it.
pub const FS_TYPE_CONTEXT_KEY: &str = "csi.storage.k8s.io/fstype";
