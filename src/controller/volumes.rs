//! CreateVolume and DeleteVolume.
//!
//! Idempotency is by name: the `CSIVolumeName` tag is looked up first (a
//! coalesced Describe), and the ClientToken is derived from the name and the
//! parameters, so a retry after a crash or a timeout finds or re-claims the
//! same volume instead of leaking a second one.

use std::time::Duration;

use sha2::{Digest, Sha256};

use super::params::VolumeParams;
use super::topology::{gib_to_bytes, requested_zones, size_for, volume_topology};
use super::{Ctl, caps, is_volume_id};
use crate::cloud::ec2::VOLUME_NAME_TAG;
use crate::cloud::wait::poll;
use crate::cloud::{Cloud, CloudError, Volume, VolumeSpec, VolumeState};
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
        spec.snapshot_id,
        spec.multi_attach
    ));
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// CreateVolume.
pub async fn create(ctl: &Ctl, req: csi::CreateVolumeRequest) -> Result<csi::CreateVolumeResponse> {
    if req.name.is_empty() {
        return Err(Error::missing("name"));
    }
    let mut params = VolumeParams::parse(&req.parameters)?;
    if !req.mutable_parameters.is_empty() {
        // A VolumeAttributesClass named at creation: its values win.
        let m = super::modify::MutableParams::parse(&req.mutable_parameters)?;
        if let Some(t) = m.spec.volume_type {
            params.volume_type = t;
        }
        params.iops = m.spec.iops.or(params.iops);
        params.throughput = m.spec.throughput.or(params.throughput);
        for (k, v) in m.add_tags {
            super::tags::push_unique(&mut params.tags, k, v);
        }
    }
    let multi_attach = caps::wants_multi_attach(&req.volume_capabilities);
    caps::check_all(&req.volume_capabilities, Some(params.volume_type == "io2"))?;
    if multi_attach && !req.volume_capabilities.iter().all(caps::is_block) {
        return Err(Error::InvalidArgument(
            "multi-attach (MULTI_NODE_MULTI_WRITER) is only possible with block access".into(),
        ));
    }
    let cloud = ctl.cloud()?;
    let (snapshot_id, floor) = match req
        .volume_content_source
        .as_ref()
        .and_then(|s| s.r#type.as_ref())
    {
        None => (None, None),
        Some(Source::Snapshot(s)) => {
            let snap = match cloud.snapshot(&s.snapshot_id).await {
                Ok(Some(snap)) => snap,
                Ok(None) | Err(CloudError::NotFound(_)) => {
                    return Err(Error::NotFound(format!(
                        "source snapshot {:?} does not exist",
                        s.snapshot_id
                    )));
                }
                Err(e) => return Err(e.into()),
            };
            (Some(snap.id), Some(snap.size_gib))
        }
        Some(Source::Volume(v)) => {
            return Err(Error::InvalidArgument(format!(
                "cloning volume {:?} is not supported by EBS; snapshot it and restore the snapshot",
                v.volume_id
            )));
        }
    };
    let size_gib = size_for(req.capacity_range.as_ref(), floor)?;
    let (iops, throughput) = params.performance(size_gib)?;
    let zones = requested_zones(req.accessibility_requirements.as_ref());

    let _guard = ctl.inflight.claim(&req.name, "volume")?;
    let respond = |v: &Volume| csi::CreateVolumeResponse {
        volume: Some(csi::Volume {
            capacity_bytes: gib_to_bytes(v.size_gib),
            volume_id: v.id.clone(),
            volume_context: params.format.iter().cloned().collect(),
            content_source: req.volume_content_source.clone(),
            accessible_topology: volume_topology(&v.zone),
        }),
    };

    if let Some(existing) = cloud.volume_by_name(&req.name).await? {
        check_compatible(
            &req,
            &existing,
            &params,
            iops,
            throughput,
            &snapshot_id,
            &zones,
        )?;
        let ready = match existing.state {
            VolumeState::Available | VolumeState::InUse => existing,
            _ => wait_available(ctl, cloud.as_ref(), &existing.id).await?,
        };
        tracing::info!(volume_id = %ready.id, name = %req.name, "volume exists already");
        return Ok(respond(&ready));
    }

    let zone = match zones.first() {
        Some(z) => z.clone(),
        None => match ctl.zone() {
            Some(z) => z,
            None => cloud.zones().await?.remove(0),
        },
    };
    let mut spec = VolumeSpec {
        zone,
        size_gib,
        volume_type: params.volume_type.clone(),
        iops,
        throughput,
        encrypted: params.encrypted,
        kms_key_id: params.kms_key_id.clone(),
        snapshot_id,
        multi_attach,
        tags: ctl.volume_tags(&req.name, &params),
        client_token: String::new(),
    };
    for attempt in 0..TOKEN_ATTEMPTS {
        spec.client_token = client_token(&req.name, &spec, attempt);
        let created = match cloud.create_volume(&spec).await {
            Ok(v) => v,
            Err(CloudError::IdempotentParameterMismatch(m)) => {
                tracing::warn!(name = %req.name, attempt, "ClientToken reused with other parameters: {m}");
                continue;
            }
            Err(e) => return Err(create_error(e, &spec)),
        };
        if created.state.is_gone() {
            continue;
        }
        tracing::info!(volume_id = %created.id, zone = %spec.zone, size_gib, "volume created, waiting for available");
        match wait_available(ctl, cloud.as_ref(), &created.id).await {
            Ok(v) => return Ok(respond(&v)),
            Err(Error::NotFound(_)) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(Error::Internal(format!(
        "EC2 kept returning deleted volumes for the ClientTokens of {:?}",
        req.name
    )))
}

fn create_error(err: CloudError, spec: &VolumeSpec) -> Error {
    match err {
        CloudError::InvalidParameter(m) => Error::InvalidArgument(format!(
            "{m} (zone {}, {} GiB {})",
            spec.zone, spec.size_gib, spec.volume_type
        )),
        CloudError::LimitExceeded(m) => Error::ResourceExhausted(m),
        other => other.into(),
    }
}

/// Compares an existing volume of the same name with the request.
fn check_compatible(
    req: &csi::CreateVolumeRequest,
    v: &Volume,
    params: &VolumeParams,
    iops: Option<i64>,
    throughput: Option<i64>,
    snapshot_id: &Option<String>,
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
    if v.volume_type != params.volume_type {
        diffs.push(format!(
            "type {} (requested {})",
            v.volume_type, params.volume_type
        ));
    }
    if iops.is_some() && v.iops != iops {
        diffs.push(format!("iops {:?} (requested {iops:?})", v.iops));
    }
    if throughput.is_some() && v.throughput != throughput {
        diffs.push(format!(
            "throughput {:?} (requested {throughput:?})",
            v.throughput
        ));
    }
    if v.encrypted != params.encrypted {
        diffs.push(format!(
            "encrypted {} (requested {})",
            v.encrypted, params.encrypted
        ));
    }
    if &v.snapshot_id != snapshot_id {
        diffs.push(format!(
            "source snapshot {:?} (requested {snapshot_id:?})",
            v.snapshot_id
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
pub async fn wait_available(ctl: &Ctl, cloud: &dyn Cloud, id: &str) -> Result<Volume> {
    let started = tokio::time::Instant::now();
    let result = poll(
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
        Err(CloudError::NotFound(m)) => Err(Error::NotFound(m)),
        Err(CloudError::Timeout(m)) => Err(Error::DeadlineExceeded(format!(
            "{m}; the request can be retried and will find the volume"
        ))),
        Err(e) => Err(e.into()),
    }
}

/// DeleteVolume: OK when the volume does not exist (or the id could not
/// name one), FailedPrecondition while attached.
pub async fn delete(ctl: &Ctl, req: csi::DeleteVolumeRequest) -> Result<csi::DeleteVolumeResponse> {
    let id = req.volume_id;
    if id.is_empty() {
        return Err(Error::missing("volume_id"));
    }
    if !is_volume_id(&id) {
        tracing::info!(volume_id = %id, "not an EBS volume id; nothing to delete");
        return Ok(csi::DeleteVolumeResponse {});
    }
    let cloud = ctl.cloud()?;
    let _guard = ctl.inflight.claim(&id, "volume")?;
    match cloud.volume(&id).await? {
        None => return Ok(csi::DeleteVolumeResponse {}),
        Some(v) if !v.attached_instances().is_empty() => {
            return Err(Error::FailedPrecondition(format!(
                "volume {id} is still attached to {}; unpublish it first",
                v.attached_instances().join(", ")
            )));
        }
        Some(_) => {}
    }
    match cloud.delete_volume(&id).await {
        Ok(()) | Err(CloudError::NotFound(_)) => Ok(csi::DeleteVolumeResponse {}),
        Err(CloudError::InUse(m)) => Err(Error::FailedPrecondition(m)),
        Err(e) => Err(e.into()),
    }
}

/// Tags of a new volume: name, driver tags, created-for tags, user tags.
pub fn volume_tags(
    common: Vec<(String, String)>,
    name: &str,
    params: &VolumeParams,
) -> Vec<(String, String)> {
    let mut tags = vec![(VOLUME_NAME_TAG.to_string(), name.to_string())];
    tags.extend(common);
    for (key, value) in [
        ("kubernetes.io/created-for/pvc/name", &params.pvc_name),
        (
            "kubernetes.io/created-for/pvc/namespace",
            &params.pvc_namespace,
        ),
        ("kubernetes.io/created-for/pv/name", &params.pv_name),
    ] {
        if let Some(v) = value {
            tags.push((key.to_string(), v.clone()));
        }
    }
    for (k, v) in &params.tags {
        super::tags::push_unique(&mut tags, k.clone(), v.clone());
    }
    tags
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_tokens_are_64_hex_and_differ_by_params_and_attempt() {
        let spec = VolumeSpec {
            zone: "us-east-1a".into(),
            size_gib: 10,
            volume_type: "gp3".into(),
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

    #[test]
    fn tags_in_order_and_user_tags_cannot_override() {
        let mut params = VolumeParams {
            pvc_name: Some("data-0".into()),
            ..VolumeParams::default()
        };
        params.tags = vec![("team".into(), "db".into())];
        let tags = volume_tags(
            vec![("ebs.csi.aws.com/cluster".into(), "true".into())],
            "pvc-1",
            &params,
        );
        assert_eq!(tags[0], ("CSIVolumeName".into(), "pvc-1".into()));
        assert_eq!(tags[1], ("ebs.csi.aws.com/cluster".into(), "true".into()));
        assert!(tags.contains(&("kubernetes.io/created-for/pvc/name".into(), "data-0".into())));
        assert_eq!(
            tags.last().unwrap(),
            &("team".to_string(), "db".to_string())
        );
    }
}
