//! The GroupController service: crash-consistent snapshots of several
//! volumes at once through EC2 CreateSnapshots (which the reference driver
//! lacks). EC2 takes such a set only of volumes attached to one instance,
//! so a group must share an instance; otherwise the request fails naming
//! where each volume is.
//!
//! Needs `ec2:CreateSnapshots` beyond the contract policy (see
//! docs/iam-policy-optional.json).

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::future::join_all;
use sha2::{Digest, Sha256};
use tonic::{Request, Response, Status};

use super::Ctl;
use super::snapshot_params::SnapshotParams;
use super::snapshots::{finish_snapshot, to_csi};
use crate::cloud::{Cloud, CloudError, InstanceId, Snapshot, SnapshotId, SnapshotState, VolumeId};
use crate::contract::tags;
use crate::csi;
use crate::csi::group_controller_server::GroupController;
use crate::error::{Error, Result};
use crate::rpc;

/// The group snapshot id of a group name: stable, so retries agree.
pub fn group_id(name: &str) -> String {
    let digest = Sha256::digest(name.as_bytes());
    let hex: String = digest.iter().take(12).map(|b| format!("{b:02x}")).collect();
    format!("groupsnap-{hex}")
}

fn respond(id: &str, snaps: &[Snapshot]) -> csi::VolumeGroupSnapshot {
    csi::VolumeGroupSnapshot {
        group_snapshot_id: id.to_string(),
        snapshots: snaps.iter().map(|s| to_csi(s, id)).collect(),
        creation_time: snaps
            .iter()
            .filter_map(|s| s.start_time)
            .min()
            .map(prost_types::Timestamp::from),
        ready_to_use: !snaps.is_empty()
            && snaps.iter().all(|s| s.state == SnapshotState::Completed),
    }
}

/// Where a group's volume is attached.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Placement {
    /// Nowhere.
    NotAttached,
    /// To one instance.
    On(InstanceId),
    /// To several (io2 multi-attach).
    Shared(Vec<InstanceId>),
}

impl std::fmt::Display for Placement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Placement::NotAttached => f.write_str("not attached"),
            Placement::On(i) => write!(f, "{i}"),
            Placement::Shared(many) => {
                let names: Vec<String> = many.iter().map(ToString::to_string).collect();
                f.write_str(&names.join("+"))
            }
        }
    }
}

/// The one instance every volume is attached to: EC2 takes a
/// crash-consistent set only there. FailedPrecondition naming where each
/// volume is otherwise; NotFound for a volume that does not exist.
async fn common_instance(
    cloud: &dyn Cloud,
    wanted: &[String],
) -> Result<(InstanceId, Vec<VolumeId>)> {
    let mut ids = Vec::new();
    for vol in wanted {
        let id = VolumeId::parse(vol)
            .ok_or_else(|| Error::NotFound(format!("source volume {vol:?} does not exist")))?;
        ids.push(id);
    }
    // Concurrent lookups share one coalesced DescribeVolumes.
    let found = join_all(ids.iter().map(|id| cloud.volume(id))).await;
    let mut placement: BTreeMap<Placement, Vec<String>> = BTreeMap::new();
    for (id, volume) in ids.iter().zip(found) {
        let v = volume?.ok_or_else(|| {
            Error::NotFound(format!("source volume {:?} does not exist", id.as_str()))
        })?;
        let at = match v.attached_instances().as_slice() {
            [] => Placement::NotAttached,
            [one] => Placement::On(one.clone()),
            many => Placement::Shared(many.to_vec()),
        };
        placement.entry(at).or_default().push(id.to_string());
    }
    match placement.keys().next() {
        Some(Placement::On(instance)) if placement.len() == 1 => Ok((instance.clone(), ids)),
        _ => {
            let parts: Vec<String> = placement
                .iter()
                .map(|(at, v)| format!("{} on {at}", v.join(", ")))
                .collect();
            Err(Error::FailedPrecondition(format!(
                "EC2 takes a crash-consistent group snapshot only of volumes attached to one instance: {}",
                parts.join("; ")
            )))
        }
    }
}

async fn create(
    ctl: &Ctl,
    req: csi::CreateVolumeGroupSnapshotRequest,
) -> Result<csi::CreateVolumeGroupSnapshotResponse> {
    if req.name.is_empty() {
        return Err(Error::missing("name"));
    }
    if req.source_volume_ids.is_empty() {
        return Err(Error::missing("source_volume_ids"));
    }
    let params = SnapshotParams::parse(&req.parameters)?;
    let cloud = ctl.cloud()?;
    let _guard = ctl.inflight.claim(&req.name, "group snapshot")?;
    let gid = group_id(&req.name);
    let mut wanted = req.source_volume_ids.clone();
    wanted.sort();
    wanted.dedup();

    let existing = cloud.snapshots_tagged(tags::GROUP_NAME, &req.name).await?;
    if !existing.is_empty() {
        let mut have: Vec<String> = existing.iter().map(|s| s.volume_id.to_string()).collect();
        have.sort();
        if have != wanted {
            return Err(Error::AlreadyExists(format!(
                "group snapshot {:?} exists for volumes {} (requested {})",
                req.name,
                have.join(", "),
                wanted.join(", ")
            )));
        }
        return Ok(csi::CreateVolumeGroupSnapshotResponse {
            group_snapshot: Some(respond(&gid, &existing)),
        });
    }

    let (instance, volumes) = common_instance(cloud.as_ref(), &wanted).await?;
    let mut snapshot_tags = ctl
        .tags
        .snapshot(&req.name, &params.meta, &params.tag_specs)?;
    // The per-snapshot name tag would be the same on every member; the
    // group tags identify them instead.
    snapshot_tags.retain(|(k, _)| k != tags::SNAPSHOT_NAME);
    snapshot_tags.push((tags::GROUP_NAME.to_string(), req.name.clone()));
    snapshot_tags.push((tags::GROUP_ID.to_string(), gid.clone()));
    let description = format!("Created by ebs.csi.aws.com for group {}", req.name);
    let snaps = cloud
        .create_snapshots(&instance, &volumes, &description, &snapshot_tags)
        .await?;
    tracing::info!(group = %gid, %instance, count = snaps.len(), "group snapshot started");
    for snap in &snaps {
        finish_snapshot(cloud.as_ref(), snap, &params).await?;
    }
    Ok(csi::CreateVolumeGroupSnapshotResponse {
        group_snapshot: Some(respond(&gid, &snaps)),
    })
}

/// The member snapshots: the ids given, or else those tagged with the group id.
async fn members(ctl: &Ctl, gid: &str, ids: &[String]) -> Result<Vec<Snapshot>> {
    let cloud = ctl.cloud()?;
    if ids.is_empty() {
        return Ok(cloud.snapshots_tagged(tags::GROUP_ID, gid).await?);
    }
    // Concurrent lookups share one coalesced DescribeSnapshots.
    let ids: Vec<SnapshotId> = ids.iter().filter_map(|id| SnapshotId::parse(id)).collect();
    let found = join_all(ids.iter().map(|id| cloud.snapshot(id))).await;
    let mut out = Vec::new();
    for s in found {
        out.extend(s?);
    }
    Ok(out)
}

async fn delete(
    ctl: &Ctl,
    req: csi::DeleteVolumeGroupSnapshotRequest,
) -> Result<csi::DeleteVolumeGroupSnapshotResponse> {
    if req.group_snapshot_id.is_empty() {
        return Err(Error::missing("group_snapshot_id"));
    }
    let cloud = ctl.cloud()?;
    let _guard = ctl
        .inflight
        .claim(&req.group_snapshot_id, "group snapshot")?;
    for snap in members(ctl, &req.group_snapshot_id, &req.snapshot_ids).await? {
        match cloud.delete_snapshot(&snap.id).await {
            Ok(()) | Err(CloudError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(csi::DeleteVolumeGroupSnapshotResponse {})
}

async fn get(
    ctl: &Ctl,
    req: csi::GetVolumeGroupSnapshotRequest,
) -> Result<csi::GetVolumeGroupSnapshotResponse> {
    if req.group_snapshot_id.is_empty() {
        return Err(Error::missing("group_snapshot_id"));
    }
    let snaps = members(ctl, &req.group_snapshot_id, &req.snapshot_ids).await?;
    if snaps.is_empty() || (!req.snapshot_ids.is_empty() && snaps.len() != req.snapshot_ids.len()) {
        return Err(Error::NotFound(format!(
            "group snapshot {:?} (snapshots {}) does not exist",
            req.group_snapshot_id,
            req.snapshot_ids.join(", ")
        )));
    }
    Ok(csi::GetVolumeGroupSnapshotResponse {
        group_snapshot: Some(respond(&req.group_snapshot_id, &snaps)),
    })
}

/// The GroupController service.
#[derive(Clone)]
pub struct GroupService {
    ctl: Arc<Ctl>,
}

impl GroupService {
    /// A service sharing the controller's state.
    pub fn new(ctl: Arc<Ctl>) -> Self {
        GroupService { ctl }
    }
}

#[tonic::async_trait]
impl GroupController for GroupService {
    async fn group_controller_get_capabilities(
        &self,
        request: Request<csi::GroupControllerGetCapabilitiesRequest>,
    ) -> std::result::Result<Response<csi::GroupControllerGetCapabilitiesResponse>, Status> {
        use csi::group_controller_service_capability::{Rpc, Type, rpc::Type as Cap};
        rpc::serve("GroupControllerGetCapabilities", request, |_| async {
            Ok(csi::GroupControllerGetCapabilitiesResponse {
                capabilities: vec![csi::GroupControllerServiceCapability {
                    r#type: Some(Type::Rpc(Rpc {
                        r#type: Cap::CreateDeleteGetVolumeGroupSnapshot as i32,
                    })),
                }],
            })
        })
        .await
    }

    async fn create_volume_group_snapshot(
        &self,
        request: Request<csi::CreateVolumeGroupSnapshotRequest>,
    ) -> std::result::Result<Response<csi::CreateVolumeGroupSnapshotResponse>, Status> {
        rpc::serve("CreateVolumeGroupSnapshot", request, |r| {
            create(&self.ctl, r)
        })
        .await
    }

    async fn delete_volume_group_snapshot(
        &self,
        request: Request<csi::DeleteVolumeGroupSnapshotRequest>,
    ) -> std::result::Result<Response<csi::DeleteVolumeGroupSnapshotResponse>, Status> {
        rpc::serve("DeleteVolumeGroupSnapshot", request, |r| {
            delete(&self.ctl, r)
        })
        .await
    }

    async fn get_volume_group_snapshot(
        &self,
        request: Request<csi::GetVolumeGroupSnapshotRequest>,
    ) -> std::result::Result<Response<csi::GetVolumeGroupSnapshotResponse>, Status> {
        rpc::serve("GetVolumeGroupSnapshot", request, |r| get(&self.ctl, r)).await
    }
}
