//! CreateSnapshot, DeleteSnapshot, ListSnapshots and GetSnapshot.
//!
//! Idempotent by name through the `CSIVolumeSnapshotName` tag. CreateSnapshot
//! does not wait for completion: the CO calls it again and gets
//! `ready_to_use` once EC2 reports `completed`.

use super::Ctl;
use super::snapshot_params::SnapshotParams;
use super::topology::gib_to_bytes;
use crate::cloud::{Cloud, CloudError, Snapshot, SnapshotId, SnapshotState, VolumeId};
use crate::csi;
use crate::error::{Error, Result};

/// The CSI view of a snapshot.
pub fn to_csi(s: &Snapshot, group_id: &str) -> csi::Snapshot {
    csi::Snapshot {
        size_bytes: gib_to_bytes(s.size_gib),
        snapshot_id: s.id.to_string(),
        source_volume_id: s.volume_id.to_string(),
        creation_time: s.start_time.map(prost_types::Timestamp::from),
        ready_to_use: s.state == SnapshotState::Completed,
        group_snapshot_id: group_id.to_string(),
    }
}

/// Applies fast snapshot restore and locks to a new snapshot; if EC2 refuses
/// either, the snapshot is deleted (it is not what the class asked for) and
/// the error says so.
pub async fn finish_snapshot(
    cloud: &dyn Cloud,
    snap: &Snapshot,
    params: &SnapshotParams,
) -> Result<()> {
    let mut failure = None;
    if !params.fsr_zones.is_empty()
        && let Err(e) = cloud
            .enable_fast_snapshot_restores(&snap.id, &params.fsr_zones)
            .await
    {
        failure = Some(format!(
            "enabling fast snapshot restore in {} failed: {e}",
            params.fsr_zones.join(",")
        ));
    }
    if failure.is_none()
        && let Some(lock) = &params.lock
        && let Err(e) = cloud.lock_snapshot(&snap.id, lock).await
    {
        failure = Some(format!(
            "locking it ({} mode) failed: {e}",
            lock.mode.as_str()
        ));
    }
    let Some(why) = failure else { return Ok(()) };
    let cleanup = match cloud.delete_snapshot(&snap.id).await {
        Ok(()) => "the snapshot was deleted".to_string(),
        Err(e) => format!("deleting the snapshot failed too: {e}"),
    };
    Err(Error::FailedPrecondition(format!(
        "snapshot {} of {}: {why}; {cleanup}",
        snap.id, snap.volume_id
    )))
}

/// CreateSnapshot.
pub async fn create(
    ctl: &Ctl,
    req: csi::CreateSnapshotRequest,
) -> Result<csi::CreateSnapshotResponse> {
    if req.name.is_empty() {
        return Err(Error::missing("name"));
    }
    if req.source_volume_id.is_empty() {
        return Err(Error::missing("source_volume_id"));
    }
    let params = SnapshotParams::parse(&req.parameters)?;
    let cloud = ctl.cloud()?;
    let _guard = ctl.inflight.claim(&req.name, "snapshot")?;
    let respond = |s: &Snapshot| csi::CreateSnapshotResponse {
        snapshot: Some(to_csi(s, "")),
    };
    if let Some(existing) = cloud.snapshot_by_name(&req.name).await? {
        if existing.volume_id != req.source_volume_id.as_str() {
            return Err(Error::AlreadyExists(format!(
                "snapshot {:?} exists as {} of volume {}, not of {}",
                req.name, existing.id, existing.volume_id, req.source_volume_id
            )));
        }
        return Ok(respond(&existing));
    }
    let source_missing = || {
        Error::NotFound(format!(
            "source volume {:?} does not exist",
            req.source_volume_id
        ))
    };
    let source = VolumeId::parse(&req.source_volume_id).ok_or_else(source_missing)?;
    if cloud.volume(&source).await?.is_none() {
        return Err(source_missing());
    }
    let tags = ctl
        .tags
        .snapshot(&req.name, &params.meta, &params.tag_specs)?;
    let description = format!("Created by ebs.csi.aws.com for {}", req.name);
    let snap = match cloud.create_snapshot(&source, &description, &tags).await {
        Ok(s) => s,
        Err(CloudError::NotFound(_)) => return Err(source_missing()),
        Err(e) => return Err(e.into()),
    };
    tracing::info!(snapshot_id = %snap.id, volume_id = %snap.volume_id, "snapshot started");
    finish_snapshot(cloud.as_ref(), &snap, &params).await?;
    Ok(respond(&snap))
}

/// DeleteSnapshot: OK when it does not exist.
pub async fn delete(
    ctl: &Ctl,
    req: csi::DeleteSnapshotRequest,
) -> Result<csi::DeleteSnapshotResponse> {
    if req.snapshot_id.is_empty() {
        return Err(Error::missing("snapshot_id"));
    }
    let Some(id) = SnapshotId::parse(&req.snapshot_id) else {
        return Ok(csi::DeleteSnapshotResponse {});
    };
    let cloud = ctl.cloud()?;
    let _guard = ctl.inflight.claim(id.as_str(), "snapshot")?;
    match cloud.delete_snapshot(&id).await {
        Ok(()) | Err(CloudError::NotFound(_)) => Ok(csi::DeleteSnapshotResponse {}),
        // A snapshot a volume is being created from, or an AMI uses.
        Err(CloudError::InvalidParameter(m)) if m.contains("InUse") => {
            Err(Error::FailedPrecondition(m))
        }
        Err(e) => Err(e.into()),
    }
}

/// ListSnapshots by id, by source volume, or all of this driver's; ordered
/// by id, the token being the last id of the previous page.
pub async fn list(ctl: &Ctl, req: csi::ListSnapshotsRequest) -> Result<csi::ListSnapshotsResponse> {
    if req.max_entries < 0 {
        return Err(Error::InvalidArgument(format!(
            "max_entries {} must not be negative",
            req.max_entries
        )));
    }
    if !req.starting_token.is_empty() && SnapshotId::parse(&req.starting_token).is_none() {
        return Err(Error::Aborted(format!(
            "starting_token {:?} was not issued by this driver",
            req.starting_token
        )));
    }
    let cloud = ctl.cloud()?;
    // Unknown ids give an empty list, not an error (csi-sanity checks).
    let mut snaps = if !req.snapshot_id.is_empty() {
        match SnapshotId::parse(&req.snapshot_id) {
            Some(id) => cloud.snapshot(&id).await?.into_iter().collect(),
            None => Vec::new(),
        }
    } else if !req.source_volume_id.is_empty() {
        match VolumeId::parse(&req.source_volume_id) {
            Some(vol) => cloud.list_snapshots(Some(&vol)).await?,
            None => Vec::new(),
        }
    } else {
        cloud.list_snapshots(None).await?
    };
    if !req.source_volume_id.is_empty() {
        snaps.retain(|s| s.volume_id == req.source_volume_id.as_str());
    }
    snaps.sort_by(|a, b| a.id.cmp(&b.id));
    let start = snaps.partition_point(|s| {
        !req.starting_token.is_empty() && s.id.as_str() <= req.starting_token.as_str()
    });
    let rest = &snaps[start..];
    let take = if req.max_entries == 0 {
        rest.len()
    } else {
        rest.len().min(req.max_entries as usize)
    };
    let page = &rest[..take];
    Ok(csi::ListSnapshotsResponse {
        entries: page
            .iter()
            .map(|s| csi::list_snapshots_response::Entry {
                snapshot: Some(to_csi(s, "")),
            })
            .collect(),
        next_token: if take < rest.len() {
            page.last().map(|s| s.id.to_string()).unwrap_or_default()
        } else {
            String::new()
        },
    })
}

/// GetSnapshot.
pub async fn get(ctl: &Ctl, req: csi::GetSnapshotRequest) -> Result<csi::GetSnapshotResponse> {
    if req.snapshot_id.is_empty() {
        return Err(Error::missing("snapshot_id"));
    }
    let missing = || Error::NotFound(format!("snapshot {:?} does not exist", req.snapshot_id));
    let id = SnapshotId::parse(&req.snapshot_id).ok_or_else(missing)?;
    let snap = ctl.cloud()?.snapshot(&id).await?.ok_or_else(missing)?;
    Ok(csi::GetSnapshotResponse {
        snapshot: Some(to_csi(&snap, "")),
    })
}
