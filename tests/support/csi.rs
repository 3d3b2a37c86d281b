//! Builders for CSI requests, so tests read as what they ask.

use std::collections::HashMap;

use ebs_csi_driver::csi;
use ebs_csi_driver::csi::volume_capability::access_mode::Mode;
use ebs_csi_driver::csi::volume_capability::{AccessMode, AccessType, BlockVolume, MountVolume};

/// One GiB in bytes.
pub const GIB: i64 = 1 << 30;

/// A single-node-writer mount capability with `fs`.
pub fn mount_cap(fs: &str) -> csi::VolumeCapability {
    csi::VolumeCapability {
        access_mode: Some(AccessMode {
            mode: Mode::SingleNodeWriter as i32,
        }),
        access_type: Some(AccessType::Mount(MountVolume {
            fs_type: fs.into(),
            ..Default::default()
        })),
    }
}

/// A block capability with `mode`.
pub fn block_cap(mode: Mode) -> csi::VolumeCapability {
    csi::VolumeCapability {
        access_mode: Some(AccessMode { mode: mode as i32 }),
        access_type: Some(AccessType::Block(BlockVolume {})),
    }
}

/// String pairs into a parameter map.
pub fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The StorageClass the users run: gp3, 3000 IOPS, 125 MiB/s, encrypted, ext4.
pub fn user_storage_class() -> HashMap<String, String> {
    params(&[
        ("type", "gp3"),
        ("iops", "3000"),
        ("throughput", "125"),
        ("encrypted", "true"),
        ("csi.storage.k8s.io/fstype", "ext4"),
    ])
}

/// A CreateVolume request for `gib` GiB with a mount capability.
pub fn create_req(
    name: &str,
    gib: i64,
    parameters: HashMap<String, String>,
) -> csi::CreateVolumeRequest {
    csi::CreateVolumeRequest {
        name: name.into(),
        capacity_range: Some(csi::CapacityRange {
            required_bytes: gib * GIB,
            limit_bytes: 0,
        }),
        volume_capabilities: vec![mount_cap("ext4")],
        parameters,
        ..Default::default()
    }
}

/// Topology requiring `zone` under `key`.
pub fn zone_requirement(
    key: &str,
    requisite: &[&str],
    preferred: &[&str],
) -> csi::TopologyRequirement {
    let topo = |z: &&str| csi::Topology {
        segments: HashMap::from([(key.to_string(), z.to_string())]),
    };
    csi::TopologyRequirement {
        requisite: requisite.iter().map(topo).collect(),
        preferred: preferred.iter().map(topo).collect(),
    }
}

/// A publish request of `volume` to `node` with a mount capability.
pub fn publish_req(volume: &str, node: &str) -> csi::ControllerPublishVolumeRequest {
    csi::ControllerPublishVolumeRequest {
        volume_id: volume.into(),
        node_id: node.into(),
        volume_capability: Some(mount_cap("ext4")),
        ..Default::default()
    }
}

/// An unpublish request.
pub fn unpublish_req(volume: &str, node: &str) -> csi::ControllerUnpublishVolumeRequest {
    csi::ControllerUnpublishVolumeRequest {
        volume_id: volume.into(),
        node_id: node.into(),
        ..Default::default()
    }
}
