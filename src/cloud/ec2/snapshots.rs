//! Snapshot calls of [`Ec2Cloud`].

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use aws_sdk_ec2::primitives::{DateTime, DateTimeFormat};
use aws_sdk_ec2::types::{Filter, InstanceSpecification, LockMode as SdkLockMode, ResourceType};

use super::{Ec2Cloud, MAX_FILTER_VALUES, convert, upgrade};
use crate::cloud::coalesce::{Coalescer, FetchFn};
use crate::cloud::error::{CloudError, CloudResult};
use crate::cloud::types::*;
use crate::contract::tags;

/// Coalesced lookup of snapshots by id (a `snapshot-id` filter, so a
/// missing id does not fail the batch).
pub(super) fn by_id(weak: Weak<Ec2Cloud>) -> Coalescer<Snapshot> {
    let fetch: FetchFn<Snapshot> = Arc::new(move |ids: Vec<String>| {
        let weak = weak.clone();
        Box::pin(async move {
            let cloud = upgrade(&weak)?;
            let found = cloud
                .describe_snapshots(vec![convert::filter("snapshot-id", ids)])
                .await?;
            Ok(found.into_iter().map(|s| (s.id.to_string(), s)).collect())
        })
    });
    Coalescer::new(MAX_FILTER_VALUES, fetch)
}

/// Coalesced lookup of snapshots by their `CSIVolumeSnapshotName` tag.
pub(super) fn by_name(weak: Weak<Ec2Cloud>) -> Coalescer<Snapshot> {
    let fetch: FetchFn<Snapshot> = Arc::new(move |names: Vec<String>| {
        let weak = weak.clone();
        Box::pin(async move {
            let cloud = upgrade(&weak)?;
            let found = cloud
                .describe_snapshots(vec![convert::filter(
                    &format!("tag:{}", tags::SNAPSHOT_NAME),
                    names,
                )])
                .await?;
            let mut by_name: HashMap<String, Snapshot> = HashMap::new();
            for s in found {
                let Some(name) = s.tags.get(tags::SNAPSHOT_NAME).cloned() else {
                    continue;
                };
                match by_name.get(&name) {
                    Some(old) if (old.start_time, &old.id) <= (s.start_time, &s.id) => {}
                    _ => {
                        by_name.insert(name, s);
                    }
                }
            }
            Ok(by_name)
        })
    });
    Coalescer::new(MAX_FILTER_VALUES, fetch)
}

impl Ec2Cloud {
    async fn describe_snapshots(&self, filters: Vec<Filter>) -> CloudResult<Vec<Snapshot>> {
        self.paged(
            "DescribeSnapshots",
            |token| {
                self.client()
                    .describe_snapshots()
                    .set_filters(Some(filters.clone()))
                    .max_results(1000)
                    .set_next_token(token)
                    .send()
            },
            |page| {
                let items = page.snapshots().iter().map(convert::snapshot).collect();
                (items, page.next_token().map(str::to_string))
            },
        )
        .await
    }

    pub(super) async fn create_snapshot_impl(
        &self,
        volume_id: &VolumeId,
        description: &str,
        tags: &[(String, String)],
    ) -> CloudResult<Snapshot> {
        let out = self
            .call("CreateSnapshot", || {
                self.client()
                    .create_snapshot()
                    .volume_id(volume_id.as_str())
                    .description(description)
                    .tag_specifications(convert::tag_spec(ResourceType::Snapshot, tags))
                    .send()
            })
            .await?;
        Ok(convert::created_snapshot(&out))
    }

    pub(super) async fn create_snapshots_impl(
        &self,
        instance_id: &InstanceId,
        volume_ids: &[VolumeId],
        description: &str,
        tags: &[(String, String)],
    ) -> CloudResult<Vec<Snapshot>> {
        // CreateSnapshots takes every volume of the instance; exclude the
        // attached data volumes that are not in the group.
        let attached = self
            .describe_volumes(vec![convert::filter(
                "attachment.instance-id",
                vec![instance_id.to_string()],
            )])
            .await?;
        let excluded: Vec<String> = attached
            .iter()
            .filter(|v| !volume_ids.contains(&v.id))
            .map(|v| v.id.to_string())
            .collect();
        let out = self
            .call("CreateSnapshots", || {
                self.client()
                    .create_snapshots()
                    .instance_specification(
                        InstanceSpecification::builder()
                            .instance_id(instance_id.as_str())
                            .exclude_boot_volume(true)
                            .set_exclude_data_volume_ids(Some(excluded.clone()))
                            .build(),
                    )
                    .description(description)
                    .tag_specifications(convert::tag_spec(ResourceType::Snapshot, tags))
                    .send()
            })
            .await?;
        let (wanted, extra): (Vec<Snapshot>, Vec<Snapshot>) = out
            .snapshots()
            .iter()
            .map(convert::snapshot_info)
            .partition(|s| volume_ids.contains(&s.volume_id));
        // A volume we could not exclude (one attached meanwhile, or a boot
        // volume EC2 did not recognise as such) must not leave a snapshot
        // nobody tracks.
        for s in extra {
            tracing::warn!(snapshot_id = %s.id, volume_id = %s.volume_id, "CreateSnapshots took a volume outside the group; deleting its snapshot");
            self.delete_snapshot_impl(&s.id).await?;
        }
        Ok(wanted)
    }

    pub(super) async fn delete_snapshot_impl(&self, snapshot_id: &SnapshotId) -> CloudResult<()> {
        self.call("DeleteSnapshot", || {
            self.client()
                .delete_snapshot()
                .snapshot_id(snapshot_id.as_str())
                .send()
        })
        .await
        .map(|_| ())
    }

    pub(super) async fn snapshots_tagged_impl(
        &self,
        key: &str,
        value: &str,
    ) -> CloudResult<Vec<Snapshot>> {
        self.describe_snapshots(vec![convert::filter(
            &format!("tag:{key}"),
            vec![value.to_string()],
        )])
        .await
    }

    pub(super) async fn list_snapshots_impl(
        &self,
        volume_id: Option<&VolumeId>,
    ) -> CloudResult<Vec<Snapshot>> {
        let mut filters = vec![convert::filter(
            &format!("tag:{}", tags::CLUSTER),
            vec!["true".into()],
        )];
        if let Some(v) = volume_id {
            filters.push(convert::filter("volume-id", vec![v.to_string()]));
        }
        self.describe_snapshots(filters).await
    }

    pub(super) async fn enable_fsr_impl(
        &self,
        snapshot_id: &SnapshotId,
        zones: &[String],
    ) -> CloudResult<()> {
        let out = self
            .call("EnableFastSnapshotRestores", || {
                self.client()
                    .enable_fast_snapshot_restores()
                    .source_snapshot_ids(snapshot_id.as_str())
                    .set_availability_zones(Some(zones.to_vec()))
                    .send()
            })
            .await?;
        let mut refused = Vec::new();
        for item in out.unsuccessful() {
            for e in item.fast_snapshot_restore_state_errors() {
                let zone = e.availability_zone().unwrap_or("?");
                let (code, msg) = e
                    .error()
                    .map(|x| (x.code().unwrap_or(""), x.message().unwrap_or("")))
                    .unwrap_or(("", ""));
                refused.push(format!("{zone}: {code} {msg}"));
            }
        }
        if refused.is_empty() {
            Ok(())
        } else {
            Err(CloudError::InvalidParameter(format!(
                "EC2 EnableFastSnapshotRestores refused for {snapshot_id}: {}",
                refused.join("; ")
            )))
        }
    }

    pub(super) async fn lock_snapshot_impl(
        &self,
        snapshot_id: &SnapshotId,
        lock: &SnapshotLock,
    ) -> CloudResult<()> {
        let expiration = match &lock.expiration_date {
            Some(text) => Some(DateTime::from_str(text, DateTimeFormat::DateTime).map_err(
                |e| {
                    CloudError::InvalidParameter(format!(
                        "lockExpirationDate {text:?} is not an RFC 3339 date-time: {e}"
                    ))
                },
            )?),
            None => None,
        };
        self.call("LockSnapshot", || {
            self.client()
                .lock_snapshot()
                .snapshot_id(snapshot_id.as_str())
                .lock_mode(SdkLockMode::from(lock.mode.as_str()))
                .set_lock_duration(lock.duration_days)
                .set_expiration_date(expiration)
                .set_cool_off_period(lock.cool_off_hours)
                .send()
        })
        .await
        .map(|_| ())
    }
}
