//! An in-memory [`Cloud`] for the controller's unit tests (compiled for
//! tests only, never into the binary).
//!
//! It keeps volumes, instances, snapshots and modifications in maps and
//! answers like EC2 where the controller's rules depend on it: ClientToken
//! idempotency, VolumeInUse, zone checks, device names in use, attachment
//! limits, one modification at a time. State changes are not timed: each
//! pending transition advances one step whenever the object is looked up,
//! so a poller sees `creating` once and then `available`. Tests can queue
//! errors per action ([`MemoryCloud::fail_next`]), make attachments stick
//! in `attaching` ([`MemoryCloud::stick_attachments`]), change an
//! instance's mappings behind the driver's back ([`MemoryCloud::set_mapped`]),
//! and read the log of calls ([`MemoryCloud::calls`]) or count them by
//! action ([`MemoryCloud::count`]).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::SystemTime;

use async_trait::async_trait;

use super::{
    AttachState, Attachment, BlockDevice, Cloud, CloudError, CloudResult, Instance, InstanceId,
    Modification, ModificationState, ModifySpec, Snapshot, SnapshotId, SnapshotLock, SnapshotState,
    Volume, VolumeId, VolumeSpec, VolumeState,
};
use crate::contract::tags;

#[derive(Default)]
struct State {
    volumes: BTreeMap<VolumeId, Volume>,
    instances: HashMap<InstanceId, Instance>,
    snapshots: BTreeMap<SnapshotId, Snapshot>,
    modifications: HashMap<VolumeId, Modification>,
    tokens: HashMap<String, (VolumeSpec, VolumeId)>,
    next_id: u64,
    calls: Vec<String>,
    faults: HashMap<String, VecDeque<CloudError>>,
    /// How many of the next attachments stick in `attaching`.
    stick_next: usize,
    /// (volume, device) of the attachments that stick.
    stuck: std::collections::HashSet<(VolumeId, String)>,
    attach_limit: Option<usize>,
    /// What `creating` volumes become (default `available`).
    created_as: Option<VolumeState>,
}

/// The in-memory EC2 (see the module docs).
#[derive(Default)]
pub struct MemoryCloud {
    state: Mutex<State>,
    pacer: crate::cloud::wait::Pacer,
}

/// The zone instances and volumes are in unless a test says otherwise.
pub const ZONE: &str = "us-east-1a";

impl MemoryCloud {
    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut crate::sync::lock(&self.state))
    }

    /// Adds a running instance of `instance_type` in `zone` with its root
    /// volume mapped at `/dev/xvda`; returns its id.
    pub fn add_instance(&self, zone: &str, instance_type: &str) -> InstanceId {
        self.with(|s| {
            s.next_id += 1;
            let id = InstanceId::from_ec2(format!("i-{:017x}", s.next_id));
            s.instances.insert(
                id.clone(),
                Instance {
                    id: id.clone(),
                    zone: zone.to_string(),
                    instance_type: instance_type.to_string(),
                    state: "running".into(),
                    devices: vec![BlockDevice {
                        name: "/dev/xvda".into(),
                        volume_id: None,
                        card: None,
                    }],
                    enis: 1,
                },
            );
            id
        })
    }

    /// Maps `device` on instance `id` (or unmaps it, `mapped` false)
    /// behind the driver's back, as another tool's attach or detach would.
    pub fn set_mapped(&self, id: &InstanceId, device: &str, mapped: bool) {
        self.with(|s| {
            let Some(i) = s.instances.get_mut(id) else {
                return;
            };
            i.devices.retain(|d| d.name != device);
            if mapped {
                i.devices.push(BlockDevice {
                    name: device.to_string(),
                    volume_id: None,
                    card: None,
                });
            }
        });
    }

    /// Makes the next call of `action` fail with `error` (queued: several
    /// calls make several failures).
    pub fn fail_next(&self, action: &str, error: CloudError) {
        self.with(|s| {
            s.faults
                .entry(action.to_string())
                .or_default()
                .push_back(error)
        });
    }

    /// Makes the next `n` attachments stay `attaching` forever (stuck).
    pub fn stick_attachments(&self, n: usize) {
        self.with(|s| s.stick_next = n);
    }

    /// Makes volumes being created end in `state` instead of `available`.
    pub fn finish_creations_as(&self, state: VolumeState) {
        self.with(|s| s.created_as = Some(state));
    }

    /// Refuses attachments past `n` per instance with AttachmentLimitExceeded.
    pub fn limit_attachments(&self, n: usize) {
        self.with(|s| s.attach_limit = Some(n));
    }

    /// Every call so far, as `Action` or `Action detail`.
    pub fn calls(&self) -> Vec<String> {
        self.with(|s| s.calls.clone())
    }

    /// How many times `action` was called.
    pub fn count(&self, action: &str) -> usize {
        self.with(|s| {
            s.calls
                .iter()
                .filter(|c| c.split(' ').next() == Some(action))
                .count()
        })
    }

    /// A volume as it is now, without advancing it.
    pub fn peek(&self, id: &VolumeId) -> Option<Volume> {
        self.with(|s| s.volumes.get(id).cloned())
    }

    /// Puts a volume in `state` (e.g. `error` while being created).
    pub fn set_state(&self, id: &VolumeId, state: VolumeState) {
        self.with(|s| {
            if let Some(v) = s.volumes.get_mut(id) {
                v.state = state;
            }
        });
    }

    /// Every live volume.
    pub fn volumes(&self) -> Vec<Volume> {
        self.with(|s| s.volumes.values().cloned().collect())
    }

    /// Every snapshot.
    pub fn snapshots(&self) -> Vec<Snapshot> {
        self.with(|s| s.snapshots.values().cloned().collect())
    }
}

impl State {
    /// CreateVolume or CopyVolumes: ClientToken idempotency as EC2 keeps it,
    /// then a new `creating` volume.
    fn create(&mut self, action: &str, spec: &VolumeSpec) -> CloudResult<Volume> {
        self.enter(action, &spec.client_token)?;
        if let Some((earlier, id)) = self.tokens.get(&spec.client_token).cloned() {
            if earlier != *spec {
                return Err(CloudError::IdempotentParameterMismatch(format!(
                    "token {} reused",
                    spec.client_token
                )));
            }
            // EC2 answers a reused token with the volume, even deleted.
            let v = self.volumes.get(&id).cloned().unwrap_or_else(|| Volume {
                state: VolumeState::Deleted,
                ..volume_of(&id, spec)
            });
            return Ok(v);
        }
        let id = VolumeId::from_ec2(self.new_id("vol-"));
        let v = volume_of(&id, spec);
        self.volumes.insert(id.clone(), v.clone());
        self.tokens
            .insert(spec.client_token.clone(), (spec.clone(), id));
        Ok(v)
    }

    /// Logs the call and returns the queued failure, if any.
    fn enter(&mut self, action: &str, detail: &str) -> CloudResult<()> {
        self.calls.push(if detail.is_empty() {
            action.to_string()
        } else {
            format!("{action} {detail}")
        });
        match self.faults.get_mut(action).and_then(VecDeque::pop_front) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn new_id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}{:017x}", self.next_id)
    }

    /// Advances the volume's pending transitions by one step.
    fn advance(&mut self, id: &VolumeId) {
        let stuck = &self.stuck;
        let Some(v) = self.volumes.get_mut(id) else {
            return;
        };
        if v.state == VolumeState::Creating {
            v.state = self.created_as.clone().unwrap_or(VolumeState::Available);
        }
        for a in &mut v.attachments {
            match a.state {
                AttachState::Attaching if !stuck.contains(&(id.clone(), a.device.clone())) => {
                    a.state = AttachState::Attached
                }
                AttachState::Detaching => a.state = AttachState::Detached,
                _ => {}
            }
        }
        let gone: Vec<InstanceId> = v
            .attachments
            .iter()
            .filter(|a| a.state == AttachState::Detached)
            .map(|a| a.instance_id.clone())
            .collect();
        v.attachments.retain(|a| a.state != AttachState::Detached);
        if v.attachments.is_empty() && v.state == VolumeState::InUse {
            v.state = VolumeState::Available;
        }
        for instance in gone {
            if let Some(i) = self.instances.get_mut(&instance) {
                i.devices.retain(|d| d.volume_id.as_ref() != Some(id));
            }
        }
    }

    fn volume(&mut self, id: &VolumeId) -> Option<Volume> {
        self.advance(id);
        self.volumes.get(id).cloned()
    }
}

fn not_found(what: &str, id: &str) -> CloudError {
    CloudError::NotFound(format!("{what} {id} does not exist"))
}

#[async_trait]
impl Cloud for MemoryCloud {
    fn pacer(&self) -> &crate::cloud::wait::Pacer {
        &self.pacer
    }
    async fn create_volume(&self, spec: &VolumeSpec) -> CloudResult<Volume> {
        self.with(|s| s.create("CreateVolume", spec))
    }

    async fn copy_volume(&self, spec: &VolumeSpec) -> CloudResult<Volume> {
        self.with(|s| {
            let source = spec.source_volume_id.as_ref().ok_or_else(|| {
                CloudError::InvalidParameter("CopyVolumes without a source".into())
            })?;
            let zone = s
                .volumes
                .get(source)
                .map(|v| v.zone.clone())
                .ok_or_else(|| not_found("volume", source.as_str()))?;
            // A copy lives in its source's zone.
            let spec = VolumeSpec {
                zone,
                ..spec.clone()
            };
            s.create("CopyVolumes", &spec)
        })
    }

    async fn delete_volume(&self, id: &VolumeId) -> CloudResult<()> {
        self.with(|s| {
            s.enter("DeleteVolume", id.as_str())?;
            match s.volumes.get(id) {
                None => Err(not_found("volume", id.as_str())),
                Some(v) if !v.attachments.is_empty() => {
                    Err(CloudError::InUse(format!("volume {id} is attached")))
                }
                Some(_) => {
                    s.volumes.remove(id);
                    Ok(())
                }
            }
        })
    }

    async fn volume(&self, id: &VolumeId) -> CloudResult<Option<Volume>> {
        self.with(|s| {
            s.enter("DescribeVolumes", id.as_str())?;
            Ok(s.volume(id))
        })
    }

    async fn volume_by_name(&self, name: &str) -> CloudResult<Option<Volume>> {
        self.with(|s| {
            s.enter("DescribeVolumes", name)?;
            let id = s
                .volumes
                .values()
                .find(|v| v.tags.get(tags::VOLUME_NAME).map(String::as_str) == Some(name))
                .map(|v| v.id.clone());
            Ok(id.and_then(|id| s.volume(&id)))
        })
    }

    async fn list_volumes(&self) -> CloudResult<Vec<Volume>> {
        self.with(|s| {
            s.enter("DescribeVolumes", "")?;
            Ok(s.volumes.values().cloned().collect())
        })
    }

    async fn instance(&self, id: &InstanceId) -> CloudResult<Option<Instance>> {
        self.with(|s| {
            s.enter("DescribeInstances", id.as_str())?;
            Ok(s.instances.get(id).cloned())
        })
    }

    async fn attach_volume(
        &self,
        volume: &VolumeId,
        instance: &InstanceId,
        device: &str,
        card: Option<u32>,
    ) -> CloudResult<()> {
        self.with(|s| {
            s.enter("AttachVolume", &format!("{volume} {instance} {device}"))?;
            let limit = s.attach_limit;
            let i = s
                .instances
                .get_mut(instance)
                .ok_or_else(|| not_found("instance", instance.as_str()))?;
            if i.devices.iter().any(|d| d.name == device) {
                return Err(CloudError::DeviceInUse(format!(
                    "Attachment point {device} is already in use"
                )));
            }
            if limit.is_some_and(|n| i.devices.len() >= n) {
                return Err(CloudError::LimitExceeded(format!(
                    "EC2 AttachVolume failed: AttachmentLimitExceeded: {instance} is full"
                )));
            }
            let zone = i.zone.clone();
            let v = s
                .volumes
                .get_mut(volume)
                .ok_or_else(|| not_found("volume", volume.as_str()))?;
            if v.zone != zone {
                return Err(CloudError::ZoneMismatch(format!(
                    "volume {volume} is in {} and instance {instance} in {zone}",
                    v.zone
                )));
            }
            if !v.attachments.is_empty() && !v.multi_attach {
                return Err(CloudError::InUse(format!("{volume} is already attached")));
            }
            v.attachments.push(Attachment {
                instance_id: instance.clone(),
                device: device.to_string(),
                state: AttachState::Attaching,
            });
            v.state = VolumeState::InUse;
            if s.stick_next > 0 {
                s.stick_next -= 1;
                s.stuck.insert((volume.clone(), device.to_string()));
            }
            if let Some(i) = s.instances.get_mut(instance) {
                i.devices.push(BlockDevice {
                    name: device.to_string(),
                    volume_id: Some(volume.clone()),
                    card,
                });
            }
            Ok(())
        })
    }

    async fn detach_volume(
        &self,
        volume: &VolumeId,
        instance: &InstanceId,
        _force: bool,
    ) -> CloudResult<()> {
        self.with(|s| {
            s.enter("DetachVolume", &format!("{volume} {instance}"))?;
            let v = s
                .volumes
                .get_mut(volume)
                .ok_or_else(|| not_found("volume", volume.as_str()))?;
            let a = v
                .attachments
                .iter_mut()
                .find(|a| a.instance_id == *instance)
                .ok_or_else(|| {
                    CloudError::IncorrectState(format!("{volume} is not attached to {instance}"))
                })?;
            a.state = AttachState::Detaching;
            Ok(())
        })
    }

    async fn zones(&self) -> CloudResult<Vec<String>> {
        Ok(vec![ZONE.to_string(), "us-east-1b".to_string()])
    }

    async fn modify_volume(&self, id: &VolumeId, spec: &ModifySpec) -> CloudResult<()> {
        self.with(|s| {
            s.enter("ModifyVolume", &format!("{id} {spec:?}"))?;
            if s.modifications.get(id).is_some_and(|m| {
                matches!(
                    m.state,
                    ModificationState::Modifying | ModificationState::Optimizing
                )
            }) {
                return Err(CloudError::IncorrectState(format!(
                    "{id} is being modified"
                )));
            }
            if !s.volumes.contains_key(id) {
                return Err(not_found("volume", id.as_str()));
            }
            s.modifications.insert(
                id.clone(),
                Modification {
                    volume_id: id.clone(),
                    state: ModificationState::Modifying,
                    target_size_gib: spec.size_gib,
                    target_type: spec.volume_type.clone(),
                    target_iops: spec.iops,
                    target_throughput: spec.throughput,
                },
            );
            Ok(())
        })
    }

    async fn modification(&self, id: &VolumeId) -> CloudResult<Option<Modification>> {
        self.with(|s| {
            s.enter("DescribeVolumesModifications", id.as_str())?;
            let Some(m) = s.modifications.get_mut(id) else {
                return Ok(None);
            };
            let seen = m.clone();
            // One step per look: modifying → optimizing (the change is in
            // effect) → completed.
            match m.state {
                ModificationState::Modifying => {
                    m.state = ModificationState::Optimizing;
                    let m = m.clone();
                    if let Some(v) = s.volumes.get_mut(id) {
                        v.size_gib = m.target_size_gib.unwrap_or(v.size_gib);
                        v.volume_type = m.target_type.clone().unwrap_or(v.volume_type.clone());
                        v.iops = m.target_iops.or(v.iops);
                        v.throughput = m.target_throughput.or(v.throughput);
                    }
                }
                ModificationState::Optimizing => m.state = ModificationState::Completed,
                _ => {}
            }
            Ok(Some(seen))
        })
    }

    async fn create_tags(&self, id: &VolumeId, tags: &[(String, String)]) -> CloudResult<()> {
        self.with(|s| {
            s.enter("CreateTags", id.as_str())?;
            let v = s
                .volumes
                .get_mut(id)
                .ok_or_else(|| not_found("volume", id.as_str()))?;
            v.tags.extend(tags.iter().cloned());
            Ok(())
        })
    }

    async fn delete_tags(&self, id: &VolumeId, keys: &[String]) -> CloudResult<()> {
        self.with(|s| {
            s.enter("DeleteTags", id.as_str())?;
            let v = s
                .volumes
                .get_mut(id)
                .ok_or_else(|| not_found("volume", id.as_str()))?;
            v.tags.retain(|k, _| !keys.contains(k));
            Ok(())
        })
    }

    async fn create_snapshot(
        &self,
        volume: &VolumeId,
        _description: &str,
        tags: &[(String, String)],
    ) -> CloudResult<Snapshot> {
        self.with(|s| {
            s.enter("CreateSnapshot", volume.as_str())?;
            let size_gib = s
                .volumes
                .get(volume)
                .ok_or_else(|| not_found("volume", volume.as_str()))?
                .size_gib;
            let id = SnapshotId::from_ec2(s.new_id("snap-"));
            let snap = Snapshot {
                id: id.clone(),
                volume_id: volume.clone(),
                size_gib,
                state: SnapshotState::Pending,
                start_time: Some(SystemTime::now()),
                tags: tags.iter().cloned().collect(),
            };
            s.snapshots.insert(id, snap.clone());
            Ok(snap)
        })
    }

    async fn create_snapshots(
        &self,
        _instance: &InstanceId,
        volumes: &[VolumeId],
        description: &str,
        tags: &[(String, String)],
    ) -> CloudResult<Vec<Snapshot>> {
        let mut out = Vec::new();
        for v in volumes {
            out.push(self.create_snapshot(v, description, tags).await?);
        }
        Ok(out)
    }

    async fn delete_snapshot(&self, id: &SnapshotId) -> CloudResult<()> {
        self.with(|s| {
            s.enter("DeleteSnapshot", id.as_str())?;
            s.snapshots
                .remove(id)
                .map(drop)
                .ok_or_else(|| not_found("snapshot", id.as_str()))
        })
    }

    async fn snapshot(&self, id: &SnapshotId) -> CloudResult<Option<Snapshot>> {
        self.with(|s| {
            s.enter("DescribeSnapshots", id.as_str())?;
            // Snapshots complete at the first look after they were taken.
            let seen = s.snapshots.get(id).cloned();
            if let Some(snap) = s.snapshots.get_mut(id) {
                snap.state = SnapshotState::Completed;
            }
            Ok(seen)
        })
    }

    async fn snapshot_by_name(&self, name: &str) -> CloudResult<Option<Snapshot>> {
        self.with(|s| {
            s.enter("DescribeSnapshots", name)?;
            Ok(s.snapshots
                .values()
                .find(|x| x.tags.get(tags::SNAPSHOT_NAME).map(String::as_str) == Some(name))
                .cloned())
        })
    }

    async fn snapshots_tagged(&self, key: &str, value: &str) -> CloudResult<Vec<Snapshot>> {
        self.with(|s| {
            s.enter("DescribeSnapshots", &format!("{key}={value}"))?;
            Ok(s.snapshots
                .values()
                .filter(|x| x.tags.get(key).map(String::as_str) == Some(value))
                .cloned()
                .collect())
        })
    }

    async fn list_snapshots(&self, volume: Option<&VolumeId>) -> CloudResult<Vec<Snapshot>> {
        self.with(|s| {
            s.enter("DescribeSnapshots", "")?;
            Ok(s.snapshots
                .values()
                .filter(|x| volume.is_none_or(|v| x.volume_id == *v))
                .cloned()
                .collect())
        })
    }

    async fn enable_fast_snapshot_restores(
        &self,
        id: &SnapshotId,
        _zones: &[String],
    ) -> CloudResult<()> {
        self.with(|s| s.enter("EnableFastSnapshotRestores", id.as_str()))
    }

    async fn lock_snapshot(&self, id: &SnapshotId, _lock: &SnapshotLock) -> CloudResult<()> {
        self.with(|s| s.enter("LockSnapshot", id.as_str()))
    }
}

/// The volume EC2 would create for `spec`, `creating`.
fn volume_of(id: &VolumeId, spec: &VolumeSpec) -> Volume {
    Volume {
        id: id.clone(),
        size_gib: spec.size_gib,
        zone: spec.zone.clone(),
        volume_type: spec.volume_type.clone(),
        iops: spec.iops,
        throughput: spec.throughput,
        encrypted: spec.encrypted,
        kms_key_id: spec.kms_key_id.clone(),
        snapshot_id: spec.snapshot_id.clone(),
        source_volume_id: spec.source_volume_id.clone(),
        initialization_rate: spec.initialization_rate,
        multi_attach: spec.multi_attach,
        state: VolumeState::Creating,
        attachments: Vec::new(),
        tags: spec.tags.iter().cloned().collect(),
        create_time: Some(SystemTime::now()),
    }
}
