//! Volume, instance and zone calls of [`Ec2Cloud`].

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use aws_sdk_ec2::types::{Filter, ResourceType, VolumeType as SdkVolumeType};

use super::retry::Check;
use super::{Ec2Cloud, MAX_FILTER_VALUES, convert, upgrade};
use crate::cloud::coalesce::{Coalescer, FetchFn};
use crate::cloud::error::{CloudError, CloudResult};
use crate::cloud::types::*;
use crate::contract::tags;

/// Coalesced lookup of volumes by id. A `volume-id` filter, not VolumeIds:
/// with VolumeIds one missing id fails the whole call for everyone.
pub(super) fn by_id(weak: Weak<Ec2Cloud>) -> Coalescer<Volume> {
    let fetch: FetchFn<Volume> = Arc::new(move |ids: Vec<String>| {
        let weak = weak.clone();
        Box::pin(async move {
            let cloud = upgrade(&weak)?;
            let found = cloud
                .describe_volumes(vec![convert::filter("volume-id", ids)])
                .await?;
            Ok(found
                .into_iter()
                .filter(|v| !v.state.is_gone())
                .map(|v| (v.id.to_string(), v))
                .collect())
        })
    });
    Coalescer::new(MAX_FILTER_VALUES, fetch)
}

/// Coalesced lookup of live volumes by their `CSIVolumeName` tag. Should
/// two exist (a leak from elsewhere), the oldest wins, consistently.
pub(super) fn by_name(weak: Weak<Ec2Cloud>) -> Coalescer<Volume> {
    let fetch: FetchFn<Volume> = Arc::new(move |names: Vec<String>| {
        let weak = weak.clone();
        Box::pin(async move {
            let cloud = upgrade(&weak)?;
            let found = cloud
                .describe_volumes(vec![convert::filter(
                    &format!("tag:{}", tags::VOLUME_NAME),
                    names,
                )])
                .await?;
            let mut by_name: HashMap<String, Volume> = HashMap::new();
            for v in found.into_iter().filter(|v| !v.state.is_gone()) {
                let Some(name) = v.tags.get(tags::VOLUME_NAME).cloned() else {
                    continue;
                };
                match by_name.get(&name) {
                    Some(old) if (old.create_time, &old.id) <= (v.create_time, &v.id) => {}
                    _ => {
                        by_name.insert(name, v);
                    }
                }
            }
            Ok(by_name)
        })
    });
    Coalescer::new(MAX_FILTER_VALUES, fetch)
}

/// Coalesced lookup of instances by id (terminated ones count as absent).
pub(super) fn instances_by_id(weak: Weak<Ec2Cloud>) -> Coalescer<Instance> {
    let fetch: FetchFn<Instance> = Arc::new(move |ids: Vec<String>| {
        let weak = weak.clone();
        Box::pin(async move {
            let cloud = upgrade(&weak)?;
            let found = cloud
                .describe_instances(vec![convert::filter("instance-id", ids)])
                .await?;
            Ok(found
                .into_iter()
                .filter(|i| i.state != "terminated")
                .map(|i| (i.id.to_string(), i))
                .collect())
        })
    });
    Coalescer::new(MAX_FILTER_VALUES, fetch)
}

/// Coalesced lookup of the latest modification of volumes, by a
/// `volume-id` filter (with VolumeIds, a never-modified volume fails the
/// whole call): N volumes waiting for a modification cost one call a tick.
pub(super) fn modifications_by_id(weak: Weak<Ec2Cloud>) -> Coalescer<Modification> {
    let fetch: FetchFn<Modification> = Arc::new(move |ids: Vec<String>| {
        let weak = weak.clone();
        Box::pin(async move {
            let cloud = upgrade(&weak)?;
            let filters = vec![convert::filter("volume-id", ids)];
            let found = cloud
                .paged(
                    "DescribeVolumesModifications",
                    |token| {
                        cloud
                            .client()
                            .describe_volumes_modifications()
                            .set_filters(Some(filters.clone()))
                            .max_results(500)
                            .set_next_token(token)
                            .send()
                    },
                    |page| {
                        let items = page
                            .volumes_modifications()
                            .iter()
                            .map(convert::modification)
                            .collect();
                        (items, page.next_token().map(str::to_string))
                    },
                )
                .await?;
            // EC2 lists the latest modification of each volume; should it
            // list more, the last one wins.
            Ok(found
                .into_iter()
                .map(|m| (m.volume_id.to_string(), m))
                .collect())
        })
    });
    Coalescer::new(MAX_FILTER_VALUES, fetch)
}

impl Ec2Cloud {
    /// DescribeVolumes with filters, all pages.
    pub(super) async fn describe_volumes(&self, filters: Vec<Filter>) -> CloudResult<Vec<Volume>> {
        self.paged(
            "DescribeVolumes",
            |token| {
                self.client()
                    .describe_volumes()
                    .set_filters(Some(filters.clone()))
                    .max_results(500)
                    .set_next_token(token)
                    .send()
            },
            |page| {
                let items = page.volumes().iter().map(convert::volume).collect();
                (items, page.next_token().map(str::to_string))
            },
        )
        .await
    }

    async fn describe_instances(&self, filters: Vec<Filter>) -> CloudResult<Vec<Instance>> {
        self.paged(
            "DescribeInstances",
            |token| {
                self.client()
                    .describe_instances()
                    .set_filters(Some(filters.clone()))
                    .max_results(1000)
                    .set_next_token(token)
                    .send()
            },
            |page| {
                let items = page
                    .reservations()
                    .iter()
                    .flat_map(|r| r.instances().iter().map(convert::instance))
                    .collect();
                (items, page.next_token().map(str::to_string))
            },
        )
        .await
    }

    pub(super) async fn describe_zones(&self) -> CloudResult<Vec<String>> {
        let out = self
            .call("DescribeAvailabilityZones", || {
                self.client().describe_availability_zones().send()
            })
            .await?;
        let zones: Vec<String> = out
            .availability_zones()
            .iter()
            .filter(|z| z.state().map(|s| s.as_str()) == Some("available"))
            // Local and Wavelength zones are opt-in and not where a default
            // volume belongs.
            .filter(|z| matches!(z.zone_type(), None | Some("availability-zone")))
            .filter_map(|z| z.zone_name().map(str::to_string))
            .collect();
        if zones.is_empty() {
            return Err(CloudError::Other(
                "EC2 DescribeAvailabilityZones listed no available zone".into(),
            ));
        }
        Ok(zones)
    }

    pub(super) async fn create_volume_impl(&self, spec: &VolumeSpec) -> CloudResult<Volume> {
        let out = self
            .call("CreateVolume", || {
                let mut req = self
                    .client()
                    .create_volume()
                    .availability_zone(&spec.zone)
                    .size(spec.size_gib as i32)
                    .volume_type(SdkVolumeType::from(spec.volume_type.as_str()))
                    .encrypted(spec.encrypted)
                    .set_kms_key_id(spec.kms_key_id.clone())
                    .set_snapshot_id(spec.snapshot_id.as_ref().map(ToString::to_string))
                    .set_iops(spec.iops.map(|i| i as i32))
                    .set_throughput(spec.throughput.map(|t| t as i32))
                    .set_volume_initialization_rate(spec.initialization_rate.map(|r| r as i32))
                    .tag_specifications(convert::tag_spec(ResourceType::Volume, &spec.tags))
                    .client_token(&spec.client_token);
                if spec.multi_attach {
                    req = req.multi_attach_enabled(true);
                }
                req.send()
            })
            .await?;
        Ok(convert::created_volume(&out))
    }

    pub(super) async fn copy_volume_impl(&self, spec: &VolumeSpec) -> CloudResult<Volume> {
        let source = spec.source_volume_id.as_ref().ok_or_else(|| {
            CloudError::InvalidParameter("internal: CopyVolumes without a source volume".into())
        })?;
        let out = self
            .call("CopyVolumes", || {
                let mut req = self
                    .client()
                    .copy_volumes()
                    .source_volume_id(source.as_str())
                    .size(spec.size_gib as i32)
                    .volume_type(SdkVolumeType::from(spec.volume_type.as_str()))
                    .set_iops(spec.iops.map(|i| i as i32))
                    .set_throughput(spec.throughput.map(|t| t as i32))
                    .tag_specifications(convert::tag_spec(ResourceType::Volume, &spec.tags))
                    .client_token(&spec.client_token);
                if spec.encrypted {
                    req = req.encrypted(true).set_kms_key_id(spec.kms_key_id.clone());
                }
                if spec.multi_attach {
                    req = req.multi_attach_enabled(true);
                }
                req.send()
            })
            .await?;
        match out.volumes() {
            [one] => Ok(convert::volume(one)),
            other => Err(CloudError::Other(format!(
                "EC2 CopyVolumes of {source} answered {} volumes, expected one",
                other.len()
            ))),
        }
    }

    pub(super) async fn delete_volume_impl(&self, volume_id: &VolumeId) -> CloudResult<()> {
        // Done once EC2 lists the volume as deleting or not at all.
        let check: Check<'_, ()> = Box::new(move || {
            Box::pin(async move {
                let gone = self.volumes.get(volume_id.as_str()).await?.is_none();
                Ok(gone.then_some(()))
            })
        });
        self.call_checked(
            "DeleteVolume",
            || async {
                self.client()
                    .delete_volume()
                    .volume_id(volume_id.as_str())
                    .send()
                    .await
                    .map(|_| ())
            },
            Some(check),
        )
        .await
    }

    pub(super) async fn list_volumes_impl(&self) -> CloudResult<Vec<Volume>> {
        let mut volumes = self
            .describe_volumes(vec![convert::filter(
                &format!("tag:{}", tags::CLUSTER),
                vec!["true".into()],
            )])
            .await?;
        volumes.retain(|v| !v.state.is_gone());
        Ok(volumes)
    }

    pub(super) async fn attach_volume_impl(
        &self,
        volume_id: &VolumeId,
        instance_id: &InstanceId,
        device: &str,
        card: Option<u32>,
    ) -> CloudResult<()> {
        // Done when the volume is attaching or attached to that instance
        // with that device.
        let check: Check<'_, ()> = Box::new(move || {
            Box::pin(async move {
                let Some(v) = self.volumes.get(volume_id.as_str()).await? else {
                    return Ok(None);
                };
                let done = v.attachments.iter().any(|a| {
                    a.instance_id == *instance_id
                        && a.device == device
                        && matches!(a.state, AttachState::Attaching | AttachState::Attached)
                });
                Ok(done.then_some(()))
            })
        });
        self.call_checked(
            "AttachVolume",
            || async {
                self.client()
                    .attach_volume()
                    .volume_id(volume_id.as_str())
                    .instance_id(instance_id.as_str())
                    .device(device)
                    .set_ebs_card_index(card.map(|c| c as i32))
                    .send()
                    .await
                    .map(|_| ())
            },
            Some(check),
        )
        .await
    }

    pub(super) async fn detach_volume_impl(
        &self,
        volume_id: &VolumeId,
        instance_id: &InstanceId,
        force: bool,
    ) -> CloudResult<()> {
        // Done when the volume no longer has an attachment to the instance
        // that is not already on its way out; a forced detach counts only
        // once the attachment is gone (forcing is what moves a stuck one).
        let check: Check<'_, ()> = Box::new(move || {
            Box::pin(async move {
                let Some(v) = self.volumes.get(volume_id.as_str()).await? else {
                    return Ok(Some(()));
                };
                let pending = v.attachments.iter().any(|a| {
                    a.instance_id == *instance_id
                        && match a.state {
                            AttachState::Detached => false,
                            AttachState::Detaching | AttachState::Busy => force,
                            _ => true,
                        }
                });
                Ok((!pending).then_some(()))
            })
        });
        self.call_checked(
            "DetachVolume",
            || async {
                self.client()
                    .detach_volume()
                    .volume_id(volume_id.as_str())
                    .instance_id(instance_id.as_str())
                    .force(force)
                    .send()
                    .await
                    .map(|_| ())
            },
            Some(check),
        )
        .await
    }

    pub(super) async fn modify_volume_impl(
        &self,
        volume_id: &VolumeId,
        spec: &ModifySpec,
    ) -> CloudResult<()> {
        // Done when the volume's latest modification targets what was asked
        // and has not failed.
        let check: Check<'_, ()> = Box::new(move || {
            Box::pin(async move {
                let Some(m) = self.modifications.get(volume_id.as_str()).await? else {
                    return Ok(None);
                };
                Ok(modification_matches(&m, spec).then_some(()))
            })
        });
        self.call_checked(
            "ModifyVolume",
            || async {
                self.client()
                    .modify_volume()
                    .volume_id(volume_id.as_str())
                    .set_size(spec.size_gib.map(|s| s as i32))
                    .set_volume_type(
                        spec.volume_type
                            .as_ref()
                            .map(|t| SdkVolumeType::from(t.as_str())),
                    )
                    .set_iops(spec.iops.map(|i| i as i32))
                    .set_throughput(spec.throughput.map(|t| t as i32))
                    .send()
                    .await
                    .map(|_| ())
            },
            Some(check),
        )
        .await
    }

    pub(super) async fn create_tags_impl(
        &self,
        resource_id: &str,
        tags: &[(String, String)],
    ) -> CloudResult<()> {
        if tags.is_empty() {
            return Ok(());
        }
        self.call("CreateTags", || {
            self.client()
                .create_tags()
                .resources(resource_id)
                .set_tags(Some(convert::to_tags(tags)))
                .send()
        })
        .await
        .map(|_| ())
    }

    pub(super) async fn delete_tags_impl(
        &self,
        resource_id: &str,
        keys: &[String],
    ) -> CloudResult<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let tags: Vec<_> = keys
            .iter()
            .map(|k| aws_sdk_ec2::types::Tag::builder().key(k).build())
            .collect();
        self.call("DeleteTags", || {
            self.client()
                .delete_tags()
                .resources(resource_id)
                .set_tags(Some(tags.clone()))
                .send()
        })
        .await
        .map(|_| ())
    }
}

/// Whether modification `m` is one EC2 accepted for `spec`: every property
/// the spec sets is its target, and it has not failed.
fn modification_matches(m: &Modification, spec: &ModifySpec) -> bool {
    let wanted = |want: Option<i64>, target: Option<i64>| want.is_none() || want == target;
    !matches!(m.state, ModificationState::Failed)
        && wanted(spec.size_gib, m.target_size_gib)
        && wanted(spec.iops, m.target_iops)
        && wanted(spec.throughput, m.target_throughput)
        && (spec.volume_type.is_none() || spec.volume_type == m.target_type)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn modification(state: ModificationState) -> Modification {
        Modification {
            volume_id: VolumeId::parse("vol-0123456789abcdef0").unwrap(),
            state,
            target_size_gib: Some(20),
            target_type: Some(VolumeType::Gp3),
            target_iops: Some(4000),
            target_throughput: Some(125),
        }
    }

    #[test]
    fn a_modification_matches_the_properties_asked_for() {
        let spec = ModifySpec {
            size_gib: Some(20),
            iops: Some(4000),
            ..ModifySpec::default()
        };
        assert!(modification_matches(
            &modification(ModificationState::Modifying),
            &spec
        ));
        assert!(modification_matches(
            &modification(ModificationState::Completed),
            &spec
        ));
        assert!(!modification_matches(
            &modification(ModificationState::Failed),
            &spec
        ));
        let other = ModifySpec {
            size_gib: Some(30),
            ..ModifySpec::default()
        };
        assert!(!modification_matches(
            &modification(ModificationState::Modifying),
            &other
        ));
        let retype = ModifySpec {
            volume_type: Some(VolumeType::Io2),
            ..ModifySpec::default()
        };
        assert!(!modification_matches(
            &modification(ModificationState::Optimizing),
            &retype
        ));
    }
}
