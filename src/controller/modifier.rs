//! Modifications of one volume, merged and serialised.
//!
//! EC2 allows one modification per volume at a time. Requests for the same
//! volume that arrive within the merge window (the resizer's expand and a
//! VolumeAttributesClass change) become one ModifyVolume; a modification
//! already under way is waited out, not failed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

use crate::cloud::wait::{Watch, poll};
use crate::cloud::{Cloud, CloudError, ModificationState, ModifySpec, VolumeId};
use crate::error::{Error, Result};
use crate::sync::lock;

/// The merge window without `--modify-volume-request-handler-timeout`: the
/// reference driver's default.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(2);
/// ModifyVolume attempts while EC2 says a modification is in progress.
const BUSY_ATTEMPTS: u32 = 5;

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
#[derive(Clone)]
pub struct Modifier {
    volumes: Arc<Mutex<HashMap<VolumeId, VolumeQueue>>>,
    window: Duration,
}

impl Default for Modifier {
    fn default() -> Self {
        Modifier::new(DEFAULT_WINDOW)
    }
}

/// Merges `add` into `into`; None when they ask for different values.
fn merge(into: &mut ModifySpec, add: &ModifySpec) -> std::result::Result<(), String> {
    fn one<T: PartialEq + Clone + std::fmt::Display>(
        what: &str,
        a: &mut Option<T>,
        b: &Option<T>,
    ) -> std::result::Result<(), String> {
        match (a.as_ref(), b) {
            (Some(x), Some(y)) if x != y => Err(format!("{what} {x} and {y} requested at once")),
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
    /// A modifier merging the requests that arrive within `window`
    /// (`--modify-volume-request-handler-timeout`).
    pub fn new(window: Duration) -> Self {
        Modifier {
            volumes: Arc::default(),
            window,
        }
    }

    /// Applies `spec` to `vol`, merged with concurrent requests for it.
    pub async fn modify(
        &self,
        cloud: Arc<dyn Cloud>,
        timeout: Duration,
        vol: &VolumeId,
        spec: ModifySpec,
    ) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut vols = lock(&self.volumes);
            let queue = vols.entry(vol.clone()).or_default();
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
            tokio::spawn(self.clone().run(cloud, timeout, vol.clone()));
        }
        rx.await.unwrap_or_else(|_| {
            Err(Error::Internal(format!(
                "modification of {vol} was dropped"
            )))
        })
    }

    async fn run(self, cloud: Arc<dyn Cloud>, timeout: Duration, vol: VolumeId) {
        loop {
            tokio::time::sleep(self.window).await;
            let pending = {
                let mut vols = lock(&self.volumes);
                match vols.get_mut(&vol).and_then(|q| q.next.take()) {
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
async fn apply(
    cloud: &dyn Cloud,
    timeout: Duration,
    vol: &VolumeId,
    want: &ModifySpec,
) -> Result<()> {
    for _ in 0..BUSY_ATTEMPTS {
        wait_idle(cloud, timeout, vol).await?;
        let v = cloud
            .volume(vol)
            .await?
            .ok_or_else(|| Error::NotFound(format!("volume {vol} does not exist")))?;
        let spec = ModifySpec {
            size_gib: want.size_gib.filter(|s| *s > v.size_gib),
            volume_type: want.volume_type.clone().filter(|t| *t != v.volume_type),
            // A new type needs its IOPS named even when the number stays.
            iops: want.iops.filter(|i| {
                Some(*i) != v.iops
                    || want
                        .volume_type
                        .as_ref()
                        .is_some_and(|t| *t != v.volume_type)
            }),
            throughput: want.throughput.filter(|t| Some(*t) != v.throughput),
        };
        if spec.is_empty() {
            return Ok(());
        }
        match cloud.modify_volume(vol, &spec).await {
            Ok(()) => {
                tracing::info!(volume_id = %vol, ?spec, "modification requested");
                return wait_effective(cloud, timeout, vol, &spec).await;
            }
            Err(CloudError::IncorrectState(m)) => {
                tracing::info!(volume_id = %vol, "a modification is in progress, waiting: {m}");
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::Aborted(format!(
        "volume {vol} stayed busy with other modifications; retry"
    )))
}

async fn wait_idle(cloud: &dyn Cloud, timeout: Duration, vol: &VolumeId) -> Result<()> {
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
        cloud.pacer(),
        Watch::Modifications,
        &format!("the modification in progress on {vol} to complete"),
        timeout,
        || async {
            Ok(match cloud.poll_modification(vol).await? {
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
    vol: &VolumeId,
    spec: &ModifySpec,
) -> Result<()> {
    poll(
        cloud.pacer(),
        Watch::Modifications,
        &format!("the modification of {vol} to take effect"),
        timeout,
        || async {
            match cloud.poll_modification(vol).await? {
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
}
