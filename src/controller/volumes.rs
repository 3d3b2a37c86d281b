//! CreateVolume and DeleteVolume.
//!
//! Idempotency is by name: the `CSIVolumeName` tag is looked up first (a
//! coalesced Describe), and the ClientToken is derived from the name and the
//! parameters, so a retry after a crash or a timeout finds or re-claims the
//! same volume instead of leaking a second one.

use std::time::Duration;

use sha2::{Digest, Sha256};

use super::params::VolumeParams;
use super::topology::{gib_to_bytes, requested_zones, requisite_zones, size_for, volume_topology};
use super::{Ctl, caps};
use crate::cloud::wait::{Watch, poll};
use crate::cloud::{
    Cloud, CloudError, Snapshot, SnapshotId, Volume, VolumeId, VolumeSpec, VolumeState,
};
use crate::csi;
use crate::csi::volume_content_source::Type as Source;
use crate::error::{Error, Result};

/// How long a volume that is not visible yet may stay invisible before we
/// conclude it is gone (EC2's Describe is eventually consistent).
const INVISIBLE_GRACE: Duration = Duration::from_secs(15);
/// New ClientTokens tried when EC2 hands back a deleted volume for a token.
const TOKEN_ATTEMPTS: u32 = 3;

/// The ClientToken of a creation: a hash of name, spec and attempt (EC2
/// allows 64 ASCII characters; a hex SHA-256 is exactly that).
fn client_token(name: &str, spec: &VolumeSpec, attempt: u32) -> String {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(format!(
        "|{}|{}|{}|{:?}|{:?}|{}|{:?}|{:?}|{}|{attempt}",
        spec.zone,
        spec.size_gib,
        spec.volume_type,
        spec.iops,
        spec.throughput,
        spec.encrypted,
        spec.kms_key_id,
        spec.snapshot_id.as_ref().map(SnapshotId::as_str),
        spec.multi_attach
    ));
    // Only when set, so that tokens of volumes without them stay as they were.
    if let Some(source) = &spec.source_volume_id {
        h.update(format!("|copy of {source}"));
    }
    if let Some(rate) = spec.initialization_rate {
        h.update(format!("|init {rate}"));
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The StorageClass parameters of a request, with a VolumeAttributesClass
/// named at creation merged in (its values win), and the capabilities
/// checked against them.
fn request_params(req: &csi::CreateVolumeRequest) -> Result<(VolumeParams, Vec<(String, String)>)> {
    let mut params = VolumeParams::parse(&req.parameters)?;
    let mut user_tags = params.tag_specs.clone();
    if !req.mutable_parameters.is_empty() {
        let m = super::modify::MutableParams::parse(&req.mutable_parameters)?;
        if let Some(t) = m.volume_type {
            params.volume_type = t;
        }
        if m.iops.is_some() || m.iops_per_gb.is_some() {
            params.iops = m.iops;
            params.iops_per_gb = m.iops_per_gb;
        }
        params.throughput = m.throughput.or(params.throughput);
        params.allow_iops_increase_on_modify = m
            .allow_iops_increase_on_modify
            .or(params.allow_iops_increase_on_modify);
        user_tags.extend(m.tag_specs);
    }
    caps::check_all(
        &req.volume_capabilities,
        Some(params.volume_type.multi_attach()),
    )?;
    if caps::wants_multi_attach(&req.volume_capabilities)
        && !req.volume_capabilities.iter().all(caps::is_block)
    {
        return Err(Error::InvalidArgument(
            "multi-attach (MULTI_NODE_MULTI_WRITER) is only possible with block access".into(),
        ));
    }
    if let Some(key) = outpost_key(req.accessibility_requirements.as_ref()) {
        return Err(super::params::outposts(&format!("topology key {key}")));
    }
    Ok((params, user_tags))
}

/// An Outposts topology key in the request, if any.
fn outpost_key(req: Option<&csi::TopologyRequirement>) -> Option<String> {
    req?.requisite
        .iter()
        .chain(&req?.preferred)
        .flat_map(|t| t.segments.keys())
        .find(|k| k.starts_with("topology.ebs.csi.aws.com/outpost"))
        .cloned()
}

/// What a new volume starts from.
enum Content {
    /// Nothing: an empty volume.
    Empty,
    /// A snapshot to restore.
    Snapshot(Snapshot),
    /// A volume to clone (EC2 CopyVolumes).
    Volume(Volume),
}

/// The source a request names, if any: NotFound when it does not exist.
async fn content_source(cloud: &dyn Cloud, req: &csi::CreateVolumeRequest) -> Result<Content> {
    match req
        .volume_content_source
        .as_ref()
        .and_then(|s| s.r#type.as_ref())
    {
        None => Ok(Content::Empty),
        Some(Source::Snapshot(s)) => {
            let missing = || {
                Error::NotFound(format!(
                    "source snapshot {:?} does not exist",
                    s.snapshot_id
                ))
            };
            let id = SnapshotId::parse(&s.snapshot_id).ok_or_else(missing)?;
            match cloud.snapshot(&id).await {
                Ok(Some(snap)) => Ok(Content::Snapshot(snap)),
                Ok(None) | Err(CloudError::NotFound(_)) => Err(missing()),
                Err(e) => Err(e.into()),
            }
        }
        Some(Source::Volume(v)) => {
            let missing =
                || Error::NotFound(format!("source volume {:?} does not exist", v.volume_id));
            let id = VolumeId::parse(&v.volume_id).ok_or_else(missing)?;
            match cloud.volume(&id).await {
                Ok(Some(vol)) => Ok(Content::Volume(vol)),
                Ok(None) | Err(CloudError::NotFound(_)) => Err(missing()),
                Err(e) => Err(e.into()),
            }
        }
    }
}

/// The spec of a clone of `source`: in its zone, encrypted as it is (a
/// copy of an encrypted volume is encrypted), refused where the class asks
/// for what a copy cannot be — the reference driver's rules.
fn clone_spec(
    mut spec: VolumeSpec,
    params: &VolumeParams,
    source: &Volume,
    requisite: &[String],
) -> Result<VolumeSpec> {
    if !requisite.is_empty() && !requisite.contains(&source.zone) {
        return Err(Error::ResourceExhausted(format!(
            "cannot provision a clone of {} (in {}) within the requested topology ({}): a copy \
             stays in its source's zone",
            source.id,
            source.zone,
            requisite.join(", ")
        )));
    }
    if params.encrypted_given && !params.encrypted && source.encrypted {
        return Err(Error::InvalidArgument(format!(
            "cannot make an unencrypted clone of encrypted volume {}",
            source.id
        )));
    }
    if let Some(kms) = &params.kms_key_id
        && source.kms_key_id.as_ref().is_some_and(|k| k != kms)
    {
        return Err(Error::InvalidArgument(format!(
            "cannot provision a clone with a KMS key ({kms}) other than its source's ({})",
            source.kms_key_id.as_deref().unwrap_or_default()
        )));
    }
    spec.zone = source.zone.clone();
    spec.source_volume_id = Some(source.id.clone());
    spec.encrypted = params.encrypted || source.encrypted;
    spec.kms_key_id = params
        .kms_key_id
        .clone()
        .or_else(|| source.kms_key_id.clone());
    Ok(spec)
}

/// CreateVolume.
pub async fn create(ctl: &Ctl, req: csi::CreateVolumeRequest) -> Result<csi::CreateVolumeResponse> {
    if req.name.is_empty() {
        return Err(Error::missing("name"));
    }
    let (params, user_tags) = request_params(&req)?;
    let cloud = ctl.cloud()?;
    let content = content_source(cloud.as_ref(), &req).await?;
    let floor = match &content {
        Content::Empty => None,
        Content::Snapshot(s) => Some(s.size_gib),
        Content::Volume(v) => Some(v.size_gib),
    };
    let size_gib = size_for(req.capacity_range.as_ref(), floor)?;
    let (iops, throughput) = params.performance(size_gib)?;
    let zones = requested_zones(req.accessibility_requirements.as_ref());
    let tags = ctl
        .tags
        .volume(&req.name, &params.meta, &params.driver_tags(), &user_tags)?;
    let mut spec = VolumeSpec {
        zone: String::new(),
        size_gib,
        volume_type: params.volume_type.clone(),
        iops,
        throughput,
        encrypted: params.encrypted,
        kms_key_id: params.kms_key_id.clone(),
        snapshot_id: None,
        source_volume_id: None,
        initialization_rate: params.initialization_rate,
        multi_attach: caps::wants_multi_attach(&req.volume_capabilities),
        tags,
        client_token: String::new(),
    };
    match &content {
        Content::Empty => {}
        Content::Snapshot(s) => spec.snapshot_id = Some(s.id.clone()),
        Content::Volume(source) => {
            let requisite = requisite_zones(req.accessibility_requirements.as_ref());
            spec = clone_spec(spec, &params, source, &requisite)?;
        }
    }
    if spec.initialization_rate.is_some() && spec.snapshot_id.is_none() {
        return Err(Error::InvalidArgument(
            "parameter volumeInitializationRate applies only to volumes restored from a snapshot"
                .into(),
        ));
    }

    let _guard = ctl.inflight.claim(&req.name, "volume")?;
    let volume = match cloud.volume_by_name(&req.name).await? {
        Some(existing) => {
            check_compatible(&req, &existing, &spec, &zones)?;
            tracing::info!(volume_id = %existing.id, name = %req.name, "volume exists already");
            match existing.state {
                VolumeState::Available | VolumeState::InUse => existing,
                _ => wait_available(ctl, cloud.as_ref(), &existing.id).await?,
            }
        }
        None => {
            if spec.source_volume_id.is_none() {
                spec.zone = match zones.first() {
                    Some(z) => z.clone(),
                    None => match ctl.zone() {
                        Some(z) => z,
                        None => cloud.zones().await?.remove(0),
                    },
                };
            }
            create_new(ctl, cloud.as_ref(), &req.name, spec).await?
        }
    };
    // The publish that usually follows can skip describing it.
    ctl.created.record(&volume);
    Ok(csi::CreateVolumeResponse {
        volume: Some(csi::Volume {
            capacity_bytes: gib_to_bytes(volume.size_gib),
            volume_id: volume.id.to_string(),
            volume_context: params.volume_context(),
            content_source: req.volume_content_source.clone(),
            accessible_topology: volume_topology(&volume.zone),
        }),
    })
}

/// Calls CreateVolume with a ClientToken from the name and the spec, and
/// waits for the volume. Should EC2 hand back a deleted volume for the
/// token (a volume of this name created and deleted before), or the volume
/// vanish while being created, a token of the next attempt is used.
async fn create_new(
    ctl: &Ctl,
    cloud: &dyn Cloud,
    name: &str,
    mut spec: VolumeSpec,
) -> Result<Volume> {
    for attempt in 0..TOKEN_ATTEMPTS {
        spec.client_token = client_token(name, &spec, attempt);
        let call = match spec.source_volume_id {
            Some(_) => cloud.copy_volume(&spec).await,
            None => cloud.create_volume(&spec).await,
        };
        let created = match call {
            Ok(v) => v,
            Err(CloudError::IdempotentParameterMismatch(m)) => {
                tracing::warn!(
                    name,
                    attempt,
                    "ClientToken reused with other parameters: {m}"
                );
                continue;
            }
            Err(CloudError::InvalidParameter(m)) => {
                return Err(Error::InvalidArgument(format!(
                    "{m} (zone {}, {} GiB {})",
                    spec.zone, spec.size_gib, spec.volume_type
                )));
            }
            Err(e) => return Err(e.into()),
        };
        if created.state.is_gone() {
            continue;
        }
        tracing::info!(volume_id = %created.id, zone = %spec.zone, size_gib = spec.size_gib, "volume created, waiting for available");
        match wait_available(ctl, cloud, &created.id).await {
            Ok(v) => return Ok(v),
            Err(Error::NotFound(_)) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(Error::Internal(format!(
        "EC2 kept returning deleted volumes for the ClientTokens of {name:?}"
    )))
}

/// Compares an existing volume of the same name with what the request
/// would create: AlreadyExists naming every difference.
fn check_compatible(
    req: &csi::CreateVolumeRequest,
    v: &Volume,
    want: &VolumeSpec,
    zones: &[String],
) -> Result<()> {
    let (required, limit) = req
        .capacity_range
        .as_ref()
        .map_or((0, 0), |r| (r.required_bytes, r.limit_bytes));
    let bytes = gib_to_bytes(v.size_gib);
    let mut diffs = Vec::new();
    if bytes < required || (limit > 0 && bytes > limit) {
        diffs.push(format!(
            "size {} GiB outside required {required} / limit {limit} bytes",
            v.size_gib
        ));
    }
    if v.volume_type != want.volume_type {
        diffs.push(format!(
            "type {} (requested {})",
            v.volume_type, want.volume_type
        ));
    }
    if want.iops.is_some() && v.iops != want.iops {
        diffs.push(format!("iops {:?} (requested {:?})", v.iops, want.iops));
    }
    if want.throughput.is_some() && v.throughput != want.throughput {
        diffs.push(format!(
            "throughput {:?} (requested {:?})",
            v.throughput, want.throughput
        ));
    }
    if v.encrypted != want.encrypted {
        diffs.push(format!(
            "encrypted {} (requested {})",
            v.encrypted, want.encrypted
        ));
    }
    if v.source_volume_id != want.source_volume_id {
        let show = |s: &Option<VolumeId>| format!("{:?}", s.as_ref().map(VolumeId::as_str));
        diffs.push(format!(
            "source volume {} (requested {})",
            show(&v.source_volume_id),
            show(&want.source_volume_id)
        ));
    }
    if v.snapshot_id != want.snapshot_id {
        let show = |s: &Option<SnapshotId>| format!("{:?}", s.as_ref().map(SnapshotId::as_str));
        diffs.push(format!(
            "source snapshot {} (requested {})",
            show(&v.snapshot_id),
            show(&want.snapshot_id)
        ));
    }
    if !zones.is_empty() && !zones.contains(&v.zone) {
        diffs.push(format!("zone {} (allowed {})", v.zone, zones.join(", ")));
    }
    if diffs.is_empty() {
        Ok(())
    } else {
        Err(Error::AlreadyExists(format!(
            "volume {:?} exists as {} with different parameters: {}",
            req.name,
            v.id,
            diffs.join("; ")
        )))
    }
}

/// Waits until the volume is `available` (or already attached). An `error`
/// volume is deleted and reported; a volume that stays invisible is
/// NotFound.
pub async fn wait_available(ctl: &Ctl, cloud: &dyn Cloud, id: &VolumeId) -> Result<Volume> {
    let started = tokio::time::Instant::now();
    let result = poll(
        cloud.pacer(),
        Watch::Volumes,
        &format!("volume {id} to become available"),
        ctl.timeouts.create,
        || async {
            match cloud.poll_volume(id).await? {
                Some(v) => match v.state {
                    VolumeState::Available | VolumeState::InUse => Ok(Some(Ok(v))),
                    VolumeState::Error => Ok(Some(Err(v))),
                    _ => Ok(None),
                },
                None if started.elapsed() > INVISIBLE_GRACE => Err(CloudError::NotFound(format!(
                    "volume {id} disappeared while being created"
                ))),
                None => Ok(None),
            }
        },
    )
    .await;
    match result {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(v)) => {
            // An errored volume is useless and would leak: delete it.
            let deleted = cloud.delete_volume(&v.id).await;
            Err(Error::Internal(format!(
                "volume {} went to state error while being created ({} GiB {} in {}); {}",
                v.id,
                v.size_gib,
                v.volume_type,
                v.zone,
                match deleted {
                    Ok(()) => "it was deleted".to_string(),
                    Err(e) => format!("deleting it failed: {e}"),
                }
            )))
        }
        Err(CloudError::Timeout(m)) => Err(Error::DeadlineExceeded(format!(
            "{m}; the request can be retried and will find the volume"
        ))),
        Err(e) => Err(e.into()),
    }
}

/// DeleteVolume: OK when the volume does not exist (or the id could not
/// name one), FailedPrecondition while attached.
pub async fn delete(ctl: &Ctl, req: csi::DeleteVolumeRequest) -> Result<csi::DeleteVolumeResponse> {
    if req.volume_id.is_empty() {
        return Err(Error::missing("volume_id"));
    }
    let Some(id) = VolumeId::parse(&req.volume_id) else {
        tracing::info!(volume_id = %req.volume_id, "not an EBS volume id; nothing to delete");
        return Ok(csi::DeleteVolumeResponse {});
    };
    let cloud = ctl.cloud()?;
    let _guard = ctl.inflight.claim(id.as_str(), "volume")?;
    ctl.created.forget(&id);
    match cloud.volume(&id).await? {
        None => return Ok(csi::DeleteVolumeResponse {}),
        Some(v) if !v.attached_instances().is_empty() => {
            return Err(Error::FailedPrecondition(format!(
                "volume {id} is still attached to {}; unpublish it first",
                v.attached_instance_names().join(", ")
            )));
        }
        Some(_) => {}
    }
    match cloud.delete_volume(&id).await {
        Ok(()) | Err(CloudError::NotFound(_)) => Ok(csi::DeleteVolumeResponse {}),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::VolumeType;

    #[test]
    fn client_tokens_are_64_hex_and_differ_by_params_and_attempt() {
        let spec = VolumeSpec {
            zone: "us-east-1a".into(),
            size_gib: 10,
            volume_type: VolumeType::Gp3,
            ..VolumeSpec::default()
        };
        let a = client_token("pvc-1", &spec, 0);
        assert_eq!(a.len(), 64);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(a, client_token("pvc-1", &spec, 0));
        assert_ne!(a, client_token("pvc-1", &spec, 1));
        assert_ne!(a, client_token("pvc-2", &spec, 0));
        let bigger = VolumeSpec {
            size_gib: 11,
            ..spec.clone()
        };
        assert_ne!(a, client_token("pvc-1", &bigger, 0));
    }
}
