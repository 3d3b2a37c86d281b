//! ControllerExpandVolume and ControllerModifyVolume.
//!
//! EC2 allows one modification per volume at a time. Requests for the same
//! volume that arrive together (the resizer's expand and a
//! VolumeAttributesClass change) are merged into one ModifyVolume; a
//! modification already under way is waited out, not failed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

use super::caps;
use super::params::{VolumeParams, parse_int};
use super::tags::{TagContext, check_tag, parse_specifications};
use super::topology::{gib_to_bytes, round_up_gib};
use super::{Ctl, is_volume_id};
use crate::cloud::wait::poll;
use crate::cloud::{Cloud, CloudError, ModificationState, ModifySpec};
use crate::csi;
use crate::error::{Error, Result};

/// How long a new modification waits for others to merge with.
const MERGE_WINDOW: Duration = Duration::from_millis(200);
/// ModifyVolume attempts while EC2 says a modification is in progress.
const BUSY_ATTEMPTS: u32 = 5;

/// Parsed mutable parameters (VolumeAttributesClass).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MutableParams {
    /// The performance change.
    pub spec: ModifySpec,
    /// Tags to add.
    pub add_tags: Vec<(String, String)>,
    /// Tag keys to remove.
    pub delete_tags: Vec<String>,
}

impl MutableParams {
    /// Parses `mutable_parameters`; unknown keys are InvalidArgument.
    pub fn parse(parameters: &HashMap<String, String>) -> Result<Self> {
        let mut p = MutableParams::default();
        let mut templates = Vec::new();
        let mut keys: Vec<_> = parameters.iter().collect();
        keys.sort();
        for (key, value) in keys {
            match key.to_ascii_lowercase().as_str() {
                "type" => p.spec.volume_type = Some(value.trim().to_ascii_lowercase()),
                "iops" => p.spec.iops = Some(parse_int(key, value)?),
                "throughput" => p.spec.throughput = Some(parse_int(key, value)?),
                k if k.starts_with("tagspecification_") => templates.push((key, value)),
                k if k.starts_with("tagdeletion_") => {
                    check_tag(&format!("parameter {key}"), value.trim(), "")?;
                    p.delete_tags.push(value.trim().to_string());
                }
                _ => {
                    return Err(Error::InvalidArgument(format!(
                        "unsupported mutable parameter {key:?} (value {value:?}); \
                         type, iops, throughput, tagSpecification_N and tagDeletion_N can be modified"
                    )));
                }
            }
        }
        p.add_tags = parse_specifications(&templates, &TagContext::default())?;
        if let Some(t) = &p.spec.volume_type
            && super::params::limits(t).is_none()
        {
            return Err(Error::InvalidArgument(format!(
                "mutable parameter type: {t:?} is not an EBS volume type"
            )));
        }
        Ok(p)
    }

    /// Checks the performance change against the target type's limits for
    /// a volume of `size_gib` currently of `current_type`.
    pub fn check(&self, current_type: &str, size_gib: i64) -> Result<()> {
        if self.spec.iops.is_none() && self.spec.throughput.is_none() {
            return Ok(());
        }
        let params = VolumeParams {
            volume_type: self
                .spec
                .volume_type
                .clone()
                .unwrap_or_else(|| current_type.to_string()),
            iops: self.spec.iops,
            throughput: self.spec.throughput,
            ..VolumeParams::default()
        };
        params.performance(size_gib).map(|_| ())
    }
}

#[derive(Default)]
struct Pending {
    spec: ModifySpec,
    waiters: Vec<oneshot::Sender<Result<()>>>,
}

#[derive(Default)]
struct VolumeQueue {
    next: Option<Pending>,
    running: bool,
}

/// Serialises and merges modifications per volume.
#[derive(Default, Clone)]
pub struct Modifier {
    volumes: Arc<Mutex<HashMap<String, VolumeQueue>>>,
}

/// Merges `add` into `into`; None when they ask for different values.
fn merge(into: &mut ModifySpec, add: &ModifySpec) -> std::result::Result<(), String> {
    fn one<T: PartialEq + Clone + std::fmt::Debug>(
        what: &str,
        a: &mut Option<T>,
        b: &Option<T>,
    ) -> std::result::Result<(), String> {
        match (a.as_ref(), b) {
            (Some(x), Some(y)) if x != y => {
                Err(format!("{what} {x:?} and {y:?} requested at once"))
            }
            (None, Some(y)) => {
                *a = Some(y.clone());
                Ok(())
            }
            _ => Ok(()),
        }
    }
    if let Some(size) = add.size_gib {
        into.size_gib = Some(into.size_gib.map_or(size, |s| s.max(size)));
    }
    one("type", &mut into.volume_type, &add.volume_type)?;
    one("iops", &mut into.iops, &add.iops)?;
    one("throughput", &mut into.throughput, &add.throughput)
}

impl Modifier {
    /// Applies `spec` to `vol`, merged with concurrent requests for it.
    pub async fn modify(
        &self,
        cloud: Arc<dyn Cloud>,
        timeout: Duration,
        vol: &str,
        spec: ModifySpec,
    ) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut vols = self.volumes.lock().expect("modifier lock");
            let queue = vols.entry(vol.to_string()).or_default();
            let pending = queue.next.get_or_insert_with(Pending::default);
            merge(&mut pending.spec, &spec).map_err(|why| {
                Error::Aborted(format!(
                    "volume {vol}: {why}; retry after the first completes"
                ))
            })?;
            pending.waiters.push(tx);
            !std::mem::replace(&mut queue.running, true)
        };
        if start {
            tokio::spawn(self.clone().run(cloud, timeout, vol.to_string()));
        }
        rx.await.unwrap_or_else(|_| {
            Err(Error::Internal(format!(
                "modification of {vol} was dropped"
            )))
        })
    }

    async fn run(self, cloud: Arc<dyn Cloud>, timeout: Duration, vol: String) {
        loop {
            tokio::time::sleep(MERGE_WINDOW).await;
            let pending = {
                let mut vols = self.volumes.lock().expect("modifier lock");
                let queue = vols.get_mut(&vol).expect("queue of a running volume");
                match queue.next.take() {
                    Some(p) => p,
                    None => {
                        vols.remove(&vol);
                        return;
                    }
                }
            };
            let result = apply(cloud.as_ref(), timeout, &vol, &pending.spec).await;
            for waiter in pending.waiters {
                let _ = waiter.send(result.clone());
            }
        }
    }
}

/// Waits out a modification in progress, then modifies what still differs
/// and waits until the new size/performance is in effect.
async fn apply(cloud: &dyn Cloud, timeout: Duration, vol: &str, want: &ModifySpec) -> Result<()> {
    for _ in 0..BUSY_ATTEMPTS {
        wait_idle(cloud, timeout, vol).await?;
        let v = cloud
            .volume(vol)
            .await?
            .ok_or_else(|| Error::NotFound(format!("volume {vol} does not exist")))?;
        let spec = ModifySpec {
            size_gib: want.size_gib.filter(|s| *s > v.size_gib),
            volume_type: want.volume_type.clone().filter(|t| *t != v.volume_type),
            iops: want.iops.filter(|i| Some(*i) != v.iops),
            throughput: want.throughput.filter(|t| Some(*t) != v.throughput),
        };
        if spec.is_empty() {
            return Ok(());
        }
        match cloud.modify_volume(vol, &spec).await {
            Ok(()) => {
                tracing::info!(volume_id = vol, ?spec, "modification requested");
                return wait_effective(cloud, timeout, vol, &spec).await;
            }
            Err(CloudError::IncorrectState(m)) => {
                tracing::info!(
                    volume_id = vol,
                    "a modification is in progress, waiting: {m}"
                );
            }
            Err(CloudError::InvalidParameter(m)) => return Err(Error::InvalidArgument(m)),
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::Aborted(format!(
        "volume {vol} stayed busy with other modifications; retry"
    )))
}

async fn wait_idle(cloud: &dyn Cloud, timeout: Duration, vol: &str) -> Result<()> {
    let busy = |s: &ModificationState| {
        matches!(
            s,
            ModificationState::Modifying | ModificationState::Optimizing
        )
    };
    match cloud.modification(vol).await? {
        Some(m) if busy(&m.state) => {}
        _ => return Ok(()),
    }
    poll(
        &format!("the modification in progress on {vol} to complete"),
        timeout,
        || async {
            Ok(match cloud.modification(vol).await? {
                Some(m) if busy(&m.state) => None,
                _ => Some(()),
            })
        },
    )
    .await
    .map_err(timeout_error)
}

async fn wait_effective(
    cloud: &dyn Cloud,
    timeout: Duration,
    vol: &str,
    spec: &ModifySpec,
) -> Result<()> {
    poll(
        &format!("the modification of {vol} to take effect"),
        timeout,
        || async {
            match cloud.modification(vol).await? {
                Some(m) if m.state == ModificationState::Failed => Err(CloudError::Other(format!(
                    "EC2 reports the modification of {vol} as failed"
                ))),
                Some(m)
                    if m.state.is_effective()
                        && spec
                            .size_gib
                            .is_none_or(|s| m.target_size_gib.unwrap_or(0) >= s) =>
                {
                    Ok(Some(()))
                }
                _ => Ok(None),
            }
        },
    )
    .await
    .map_err(timeout_error)
}

fn timeout_error(e: CloudError) -> Error {
    match e {
        CloudError::Timeout(m) => Error::DeadlineExceeded(format!("{m}; retry")),
        other => other.into(),
    }
}

/// ControllerExpandVolume.
pub async fn expand(
    ctl: &Ctl,
    req: csi::ControllerExpandVolumeRequest,
) -> Result<csi::ControllerExpandVolumeResponse> {
    if req.volume_id.is_empty() {
        return Err(Error::missing("volume_id"));
    }
    let range = req
        .capacity_range
        .as_ref()
        .ok_or_else(|| Error::missing("capacity_range"))?;
    if range.required_bytes <= 0 {
        return Err(Error::InvalidArgument(format!(
            "capacity_range.required_bytes {} must be positive",
            range.required_bytes
        )));
    }
    let gib = round_up_gib(range.required_bytes);
    if range.limit_bytes > 0 && gib_to_bytes(gib) > range.limit_bytes {
        return Err(Error::OutOfRange(format!(
            "required_bytes {} rounds up to {gib} GiB, above limit_bytes {}",
            range.required_bytes, range.limit_bytes
        )));
    }
    let missing = || Error::NotFound(format!("volume {:?} does not exist", req.volume_id));
    if !is_volume_id(&req.volume_id) {
        return Err(missing());
    }
    let cloud = ctl.cloud()?;
    let v = cloud.volume(&req.volume_id).await?.ok_or_else(missing)?;
    if let Some(lim) = super::params::limits(&v.volume_type)
        && gib > lim.max_gib
    {
        return Err(Error::OutOfRange(format!(
            "{gib} GiB is above the {} maximum of {} GiB",
            v.volume_type, lim.max_gib
        )));
    }
    let block = req.volume_capability.as_ref().is_some_and(caps::is_block);
    let size = if v.size_gib >= gib {
        v.size_gib
    } else {
        let spec = ModifySpec {
            size_gib: Some(gib),
            ..ModifySpec::default()
        };
        ctl.modifier
            .modify(cloud.clone(), ctl.timeouts.modify, &req.volume_id, spec)
            .await?;
        gib
    };
    Ok(csi::ControllerExpandVolumeResponse {
        capacity_bytes: gib_to_bytes(size),
        node_expansion_required: !block,
    })
}

/// ControllerModifyVolume.
pub async fn modify(
    ctl: &Ctl,
    req: csi::ControllerModifyVolumeRequest,
) -> Result<csi::ControllerModifyVolumeResponse> {
    if req.volume_id.is_empty() {
        return Err(Error::missing("volume_id"));
    }
    let params = MutableParams::parse(&req.mutable_parameters)?;
    let missing = || Error::NotFound(format!("volume {:?} does not exist", req.volume_id));
    if !is_volume_id(&req.volume_id) {
        return Err(missing());
    }
    let cloud = ctl.cloud()?;
    let v = cloud.volume(&req.volume_id).await?.ok_or_else(missing)?;
    params.check(&v.volume_type, v.size_gib)?;
    if !params.spec.is_empty() {
        ctl.modifier
            .modify(
                cloud.clone(),
                ctl.timeouts.modify,
                &req.volume_id,
                params.spec.clone(),
            )
            .await?;
    }
    cloud.create_tags(&req.volume_id, &params.add_tags).await?;
    cloud
        .delete_tags(&req.volume_id, &params.delete_tags)
        .await?;
    Ok(csi::ControllerModifyVolumeResponse {})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_sizes_and_refuses_conflicts() {
        let mut a = ModifySpec {
            size_gib: Some(10),
            ..Default::default()
        };
        merge(
            &mut a,
            &ModifySpec {
                size_gib: Some(12),
                iops: Some(4000),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!((a.size_gib, a.iops), (Some(12), Some(4000)));
        merge(
            &mut a,
            &ModifySpec {
                size_gib: Some(11),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(a.size_gib, Some(12));
        assert!(
            merge(
                &mut a,
                &ModifySpec {
                    iops: Some(5000),
                    ..Default::default()
                }
            )
            .is_err()
        );
    }

    #[test]
    fn mutable_params() {
        let p = MutableParams::parse(
            &[
                ("Type", "io2"),
                ("iops", "2000"),
                ("tagSpecification_1", "a=b"),
                ("tagDeletion_1", "old"),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        )
        .unwrap();
        assert_eq!(p.spec.volume_type.as_deref(), Some("io2"));
        assert_eq!(p.add_tags, vec![("a".to_string(), "b".to_string())]);
        assert_eq!(p.delete_tags, vec!["old".to_string()]);
        assert!(p.check("gp3", 1).is_err()); // io2 at 2000 IOPS needs ≥ 2 GiB
        assert!(p.check("gp3", 10).is_ok());
        let bad = MutableParams::parse(
            &[("encrypted".to_string(), "true".to_string())]
                .into_iter()
                .collect(),
        );
        assert_eq!(bad.unwrap_err().code(), tonic::Code::InvalidArgument);
    }
}
