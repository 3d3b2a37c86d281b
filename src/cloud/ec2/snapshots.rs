//! Snapshot calls of [`Ec2Cloud`].

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use aws_sdk_ec2::primitives::{DateTime, DateTimeFormat};
use aws_sdk_ec2::types::{Filter, InstanceSpecification, LockMode as SdkLockMode, ResourceType};

use super::retry::Check;
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
        // Without a ClientToken, the name tag is what tells whether a lost
        // answer made a snapshot; with no name, nothing is resent.
        let name = tag_value(tags, tags::SNAPSHOT_NAME);
        let check: Check<'_, Snapshot> = Box::new(move || {
            Box::pin(async move {
                let found = self
                    .describe_snapshots(vec![
                        convert::filter(
                            &format!("tag:{}", tags::SNAPSHOT_NAME),
                            vec![name.unwrap_or_default().to_string()],
                        ),
                        convert::filter("volume-id", vec![volume_id.to_string()]),
                    ])
                    .await?;
                Ok(oldest(found))
            })
        });
        self.call_checked(
            "CreateSnapshot",
            || async {
                self.client()
                    .create_snapshot()
                    .volume_id(volume_id.as_str())
                    .description(description)
                    .tag_specifications(convert::tag_spec(ResourceType::Snapshot, tags))
                    .send()
                    .await
                    .map(|out| convert::created_snapshot(&out))
            },
            name.map(|_| check),
        )
        .await
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
        // The group id tag marks what a lost answer made.
        let group = tag_value(tags, tags::GROUP_ID);
        let check: Check<'_, Vec<Snapshot>> = Box::new(move || {
            Box::pin(async move {
                let found = self
                    .snapshots_tagged_impl(tags::GROUP_ID, group.unwrap_or_default())
                    .await?;
                Ok((!found.is_empty()).then_some(found))
            })
        });
        let taken = self
            .call_checked(
                "CreateSnapshots",
                || async {
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
                        .await
                        .map(|out| {
                            out.snapshots()
                                .iter()
                                .map(convert::snapshot_info)
                                .collect::<Vec<_>>()
                        })
                },
                group.map(|_| check),
            )
            .await?;
        let (wanted, extra): (Vec<Snapshot>, Vec<Snapshot>) = taken
            .into_iter()
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
        // Done once EC2 no longer lists it.
        let check: Check<'_, ()> = Box::new(move || {
            Box::pin(async move {
                let gone = self.snapshots.get(snapshot_id.as_str()).await?.is_none();
                Ok(gone.then_some(()))
            })
        });
        self.call_checked(
            "DeleteSnapshot",
            || async {
                self.client()
                    .delete_snapshot()
                    .snapshot_id(snapshot_id.as_str())
                    .send()
                    .await
                    .map(|_| ())
            },
            Some(check),
        )
        .await
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

/// The value of tag `key` among `tags`.
fn tag_value<'a>(tags: &'a [(String, String)], key: &str) -> Option<&'a str> {
    tags.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// The oldest of `found` (by start time, then id): the one a name lookup
/// answers, consistently.
fn oldest(found: Vec<Snapshot>) -> Option<Snapshot> {
    found
        .into_iter()
        .min_by(|a, b| (a.start_time, &a.id).cmp(&(b.start_time, &b.id)))
}
