//! The GroupController service: crash-consistent snapshots of several
//! volumes at once through EC2 CreateSnapshots (which the reference driver
//! lacks). EC2 takes such a set only of volumes attached to one instance,
//! so a group must share an instance; otherwise the request fails naming
//! where each volume is.
//!
//! Needs `ec2:CreateSnapshots` beyond the contract policy (see
//! docs/iam-policy-optional.json).

use std::collections::HashMap;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use tonic::{Request, Response, Status};

use super::snapshot_params::SnapshotParams;
use super::snapshots::{finish_snapshot, is_snapshot_id, snapshot_tags, to_csi};
use super::{Ctl, is_volume_id};
use crate::cloud::{Snapshot, SnapshotState};
use crate::csi;
use crate::csi::group_controller_server::GroupController;
use crate::error::{Error, Result};
use crate::rpc::{self, Ids};

/// Tag naming the group a snapshot belongs to (CSI name).
pub const GROUP_NAME_TAG: &str = "CSIVolumeGroupSnapshotName";
/// Tag carrying the group snapshot id we report.
pub const GROUP_ID_TAG: &str = "CSIVolumeGroupSnapshotId";

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

    let existing = cloud.snapshots_tagged(GROUP_NAME_TAG, &req.name).await?;
    if !existing.is_empty() {
        let mut have: Vec<String> = existing.iter().map(|s| s.volume_id.clone()).collect();
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

    // Where is each volume attached?
    let mut placement: HashMap<String, Vec<String>> = HashMap::new();
    for vol in &wanted {
        let missing = || Error::NotFound(format!("source volume {vol:?} does not exist"));
        if !is_volume_id(vol) {
            return Err(missing());
        }
        let v = cloud.volume(vol).await?.ok_or_else(missing)?;
        let key = match v.attached_instances().as_slice() {
            [one] => one.clone(),
            [] => "not attached".to_string(),
            many => many.join("+"),
        };
        placement.entry(key).or_default().push(vol.clone());
    }
    let instance = match placement.keys().next() {
        Some(i) if placement.len() == 1 && i.starts_with("i-") && !i.contains('+') => i.clone(),
        _ => {
            let mut parts: Vec<String> = placement
                .iter()
                .map(|(i, v)| format!("{} on {i}", v.join(", ")))
                .collect();
            parts.sort();
            return Err(Error::FailedPrecondition(format!(
                "EC2 takes a crash-consistent group snapshot only of volumes attached to one instance: {}",
                parts.join("; ")
            )));
        }
    };
    let mut tags = snapshot_tags(ctl, &req.name, &params.tags);
    // The per-snapshot name tag would be the same on every member; the
    // group tags identify them instead.
    tags.retain(|(k, _)| k != crate::cloud::ec2::SNAPSHOT_NAME_TAG);
    tags.push((GROUP_NAME_TAG.to_string(), req.name.clone()));
    tags.push((GROUP_ID_TAG.to_string(), gid.clone()));
    let description = format!("Created by ebs.csi.aws.com for group {}", req.name);
    let snaps = cloud
        .create_snapshots(&instance, &wanted, &description, &tags)
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
        return Ok(cloud.snapshots_tagged(GROUP_ID_TAG, gid).await?);
    }
    let mut out = Vec::new();
    for id in ids {
        if is_snapshot_id(id)
            && let Some(s) = cloud.snapshot(id).await?
        {
            out.push(s);
        }
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
            Ok(()) | Err(crate::cloud::CloudError::NotFound(_)) => {}
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
        _request: Request<csi::GroupControllerGetCapabilitiesRequest>,
    ) -> std::result::Result<Response<csi::GroupControllerGetCapabilitiesResponse>, Status> {
        use csi::group_controller_service_capability::{Rpc, Type, rpc::Type as Cap};
        rpc::run("GroupControllerGetCapabilities", Ids::default(), async {
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
        let req = request.into_inner();
        let name = req.name.clone();
        rpc::run(
            "CreateVolumeGroupSnapshot",
            Ids {
                name: &name,
                ..Ids::default()
            },
            create(&self.ctl, req),
        )
        .await
    }

    async fn delete_volume_group_snapshot(
        &self,
        request: Request<csi::DeleteVolumeGroupSnapshotRequest>,
    ) -> std::result::Result<Response<csi::DeleteVolumeGroupSnapshotResponse>, Status> {
        let req = request.into_inner();
        let id = req.group_snapshot_id.clone();
        rpc::run(
            "DeleteVolumeGroupSnapshot",
            Ids {
                snapshot: &id,
                ..Ids::default()
            },
            delete(&self.ctl, req),
        )
        .await
    }

    async fn get_volume_group_snapshot(
        &self,
        request: Request<csi::GetVolumeGroupSnapshotRequest>,
    ) -> std::result::Result<Response<csi::GetVolumeGroupSnapshotResponse>, Status> {
        let req = request.into_inner();
        let id = req.group_snapshot_id.clone();
        rpc::run(
            "GetVolumeGroupSnapshot",
            Ids {
                snapshot: &id,
                ..Ids::default()
            },
            get(&self.ctl, req),
        )
        .await
    }
}
