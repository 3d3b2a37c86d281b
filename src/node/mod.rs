//! The CSI Node service: finds, formats and mounts the attached EBS devices.
//!
//! This module checks requests and dispatches; the rules live in the
//! submodules (`stage`, `publish`, `expand`, `stats`), the host operations
//! behind the [`mounter::Mounter`] seam. Every request is validated before
//! anything on the host is touched; the host work then runs on a blocking
//! thread (mkfs and resize take seconds) holding the volume's in-flight key.

pub mod device;
pub mod expand;
#[cfg(test)]
mod fake;
pub mod format;
pub mod host;
pub mod limits;
pub mod mounter;
pub mod publish;
pub mod request;
pub mod stage;
pub mod stats;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::contract::format::FormatOptions;
use crate::contract::{DEVICE_PATH_KEY, EBS_ZONE_KEY, FS_TYPE_CONTEXT_KEY, WELL_KNOWN_ZONE_KEY};
use crate::csi;
use crate::csi::node_server::Node;
use crate::csi::node_service_capability::{self, rpc::Type as Cap};
use crate::csi::volume_usage::Unit;
use crate::error::{Error, Result};
use crate::inflight::InFlight;
use crate::metadata::InstanceState;
use crate::rpc;
use device::DeviceFinder;
use mounter::Mounter;
use request::Access;

/// What the Node service is built from.
pub struct NodeConfig {
    /// The host seam.
    pub mounter: Arc<dyn Mounter>,
    /// Device lookup.
    pub devices: DeviceFinder,
    /// Who we are (filled in the background).
    pub instance: InstanceState,
    /// `--volume-attach-limit`.
    pub volume_attach_limit: Option<u32>,
    /// `--reserved-volume-attachments`.
    pub reserved_volume_attachments: Option<u32>,
    /// `--legacy-xfs`.
    pub legacy_xfs: bool,
}

struct Inner {
    config: NodeConfig,
    locks: InFlight,
}

/// The Node service.
#[derive(Clone)]
pub struct NodeService {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for NodeService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeService")
            .field("device_dir", &self.inner.config.devices.dir)
            .finish()
    }
}

/// Runs host work on a blocking thread.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::Internal(format!("node operation did not complete: {e}")))?
}

/// A path for the read-only RPCs (stats, expand): csi-sanity expects a
/// relative path there to be NotFound ("no volume at that path"), not
/// InvalidArgument.
fn lookup_path(field: &str, value: &str) -> Result<PathBuf> {
    request::path(field, value).map_err(|e| match e {
        Error::InvalidArgument(m) if !value.is_empty() => Error::NotFound(m),
        other => other,
    })
}

fn device_path(context: &HashMap<String, String>) -> Option<String> {
    context.get(DEVICE_PATH_KEY).cloned()
}

impl NodeService {
    /// A Node service over `config`.
    pub fn new(config: NodeConfig) -> Self {
        NodeService {
            inner: Arc::new(Inner {
                config,
                locks: InFlight::default(),
            }),
        }
    }

    async fn stage(
        &self,
        req: csi::NodeStageVolumeRequest,
    ) -> Result<csi::NodeStageVolumeResponse> {
        let volume_id = request::volume_id(&req.volume_id)?.to_string();
        let staging = request::path("staging_target_path", &req.staging_target_path)?;
        let Access::Mount(mut mount) = request::access(req.volume_capability.as_ref())? else {
            // Block volumes are used straight from the device at publish.
            return Ok(csi::NodeStageVolumeResponse {});
        };
        if request::names_no_fs_type(req.volume_capability.as_ref())
            && let Some(fs) = req.volume_context.get(FS_TYPE_CONTEXT_KEY)
        {
            // The capability leaves the filesystem open (Kubernetes always
            // names it; other COs and csi-sanity may not): the one the
            // StorageClass asked for, recorded at CreateVolume.
            mount.fs_type = format::fs_type(fs)?;
        }
        let format = FormatOptions::from_context(&req.volume_context, mount.fs_type)?;
        let partition = request::partition(&req.volume_context)?;
        let dev_path = device_path(&req.publish_context);
        let guard = self
            .inner
            .locks
            .try_lock(volume_id.clone(), &format!("volume {volume_id}"))?;
        let inner = self.inner.clone();
        blocking(move || {
            let _guard = guard;
            let devices = &inner.config.devices;
            let mut device = devices.find(&volume_id, dev_path.as_deref())?;
            if let Some(n) = partition {
                device = devices.partition(&device, n)?;
            }
            let spec = stage::StageSpec {
                volume_id: &volume_id,
                device: &device,
                staging: &staging,
                mount: &mount,
                format: &format,
                legacy_xfs: inner.config.legacy_xfs,
            };
            stage::stage(&*inner.config.mounter, &spec)
        })
        .await?;
        Ok(csi::NodeStageVolumeResponse {})
    }

    async fn unstage(
        &self,
        req: csi::NodeUnstageVolumeRequest,
    ) -> Result<csi::NodeUnstageVolumeResponse> {
        let volume_id = request::volume_id(&req.volume_id)?.to_string();
        let staging = request::path("staging_target_path", &req.staging_target_path)?;
        let guard = self
            .inner
            .locks
            .try_lock(volume_id.clone(), &format!("volume {volume_id}"))?;
        let inner = self.inner.clone();
        blocking(move || {
            let _guard = guard;
            stage::unstage(&*inner.config.mounter, &volume_id, &staging)
        })
        .await?;
        Ok(csi::NodeUnstageVolumeResponse {})
    }

    async fn publish(
        &self,
        req: csi::NodePublishVolumeRequest,
    ) -> Result<csi::NodePublishVolumeResponse> {
        let volume_id = request::volume_id(&req.volume_id)?.to_string();
        let target = request::path("target_path", &req.target_path)?;
        let access = request::access(req.volume_capability.as_ref())?;
        let staging = match (&access, req.staging_target_path.as_str()) {
            (Access::Mount(_), "") => return Err(Error::missing("staging_target_path")),
            (_, "") => None,
            (_, s) => Some(request::path("staging_target_path", s)?),
        };
        let readonly = req.readonly;
        let exclusive = request::is_single_writer(req.volume_capability.as_ref());
        let dev_path = device_path(&req.publish_context);
        let partition = request::partition(&req.volume_context)?;
        let key = format!("{volume_id}@{}", target.display());
        let guard = self
            .inner
            .locks
            .try_lock(key, &format!("volume {volume_id} at {}", target.display()))?;
        let inner = self.inner.clone();
        blocking(move || {
            let _guard = guard;
            let m = &*inner.config.mounter;
            match (&access, staging) {
                (Access::Mount(mount), Some(staging)) => publish::publish_mount(
                    m, &volume_id, &staging, &target, readonly, mount, exclusive,
                ),
                _ => {
                    let devices = &inner.config.devices;
                    let mut device = devices.find(&volume_id, dev_path.as_deref())?;
                    if let Some(n) = partition {
                        device = devices.partition(&device, n)?;
                    }
                    publish::publish_block(m, &volume_id, &device, &target, readonly, exclusive)
                }
            }
        })
        .await?;
        Ok(csi::NodePublishVolumeResponse {})
    }

    async fn unpublish(
        &self,
        req: csi::NodeUnpublishVolumeRequest,
    ) -> Result<csi::NodeUnpublishVolumeResponse> {
        let volume_id = request::volume_id(&req.volume_id)?.to_string();
        let target = request::path("target_path", &req.target_path)?;
        let key = format!("{volume_id}@{}", target.display());
        let guard = self
            .inner
            .locks
            .try_lock(key, &format!("volume {volume_id} at {}", target.display()))?;
        let inner = self.inner.clone();
        blocking(move || {
            let _guard = guard;
            publish::unpublish(&*inner.config.mounter, &volume_id, &target)
        })
        .await?;
        Ok(csi::NodeUnpublishVolumeResponse {})
    }

    async fn volume_stats(
        &self,
        req: csi::NodeGetVolumeStatsRequest,
    ) -> Result<csi::NodeGetVolumeStatsResponse> {
        let volume_id = request::volume_id(&req.volume_id)?.to_string();
        let path = lookup_path("volume_path", &req.volume_path)?;
        let inner = self.inner.clone();
        let s = blocking(move || {
            // No waiting: a device that is not there now is part of the answer.
            let device = inner
                .config
                .devices
                .find_now(&volume_id, None)
                .ok()
                .flatten();
            stats::stats(&*inner.config.mounter, &volume_id, &path, device.as_deref())
        })
        .await?;
        let as_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        let mut usage = Vec::new();
        if let Some(fs) = s.fs {
            usage.push(csi::VolumeUsage {
                available: as_i64(fs.bytes_available),
                total: as_i64(fs.bytes_total),
                used: as_i64(fs.bytes_used),
                unit: Unit::Bytes as i32,
            });
            usage.push(csi::VolumeUsage {
                available: as_i64(fs.inodes_available),
                total: as_i64(fs.inodes_total),
                used: as_i64(fs.inodes_used),
                unit: Unit::Inodes as i32,
            });
        }
        if let Some(bytes) = s.block_bytes {
            usage.push(csi::VolumeUsage {
                total: as_i64(bytes),
                unit: Unit::Bytes as i32,
                ..Default::default()
            });
        }
        Ok(csi::NodeGetVolumeStatsResponse {
            usage,
            volume_condition: Some(csi::VolumeCondition {
                abnormal: s.abnormal.is_some(),
                message: s.abnormal.unwrap_or_default(),
            }),
        })
    }

    async fn expand(
        &self,
        req: csi::NodeExpandVolumeRequest,
    ) -> Result<csi::NodeExpandVolumeResponse> {
        let volume_id = request::volume_id(&req.volume_id)?.to_string();
        let path = lookup_path("volume_path", &req.volume_path)?;
        let block = match req.volume_capability.as_ref() {
            Some(cap) => request::access(Some(cap))? == Access::Block,
            None => false,
        };
        let required = req.capacity_range.as_ref().map_or(0, |r| r.required_bytes);
        let required_bytes = u64::try_from(required).map_err(|_| {
            Error::InvalidArgument(format!(
                "capacity_range.required_bytes must not be negative, got {required}"
            ))
        })?;
        let guard = self
            .inner
            .locks
            .try_lock(volume_id.clone(), &format!("volume {volume_id}"))?;
        let inner = self.inner.clone();
        let capacity = blocking(move || {
            let _guard = guard;
            let device = inner.config.devices.find_now(&volume_id, None)?;
            let spec = expand::ExpandSpec {
                volume_id: &volume_id,
                volume_path: &path,
                device: device.as_deref(),
                block,
                required_bytes,
                wait: expand::DEVICE_GROWTH_WAIT,
            };
            expand::expand(&*inner.config.mounter, &spec)
        })
        .await?;
        Ok(csi::NodeExpandVolumeResponse {
            capacity_bytes: i64::try_from(capacity).unwrap_or(i64::MAX),
        })
    }

    fn info(&self) -> Result<csi::NodeGetInfoResponse> {
        let info = self.inner.config.instance.get()?;
        let (limit, warning) = limits::max_volumes(&limits::LimitInputs {
            instance_type: &info.instance_type,
            enis: info.enis,
            extra_mappings: info.extra_mappings,
            volume_attach_limit: self.inner.config.volume_attach_limit,
            reserved_volume_attachments: self.inner.config.reserved_volume_attachments,
        });
        // Info, not a warning: the table lists only the exceptions, so most
        // Nitro types (m5.large, c6i.xlarge, …) are absent and get the
        // default, exactly as with the reference driver (found in the
        // end-to-end test: every ordinary node warned).
        if let Some(note) = warning {
            tracing::info!("{note}");
        }
        let segments = [WELL_KNOWN_ZONE_KEY, EBS_ZONE_KEY]
            .into_iter()
            .map(|k| (k.to_string(), info.availability_zone.clone()))
            .collect();
        Ok(csi::NodeGetInfoResponse {
            node_id: info.instance_id.clone(),
            max_volumes_per_node: i64::from(limit),
            accessible_topology: Some(csi::Topology { segments }),
        })
    }
}

fn capability(kind: Cap) -> csi::NodeServiceCapability {
    csi::NodeServiceCapability {
        r#type: Some(node_service_capability::Type::Rpc(
            node_service_capability::Rpc {
                r#type: kind as i32,
            },
        )),
    }
}

#[tonic::async_trait]
impl Node for NodeService {
    async fn node_stage_volume(
        &self,
        request: Request<csi::NodeStageVolumeRequest>,
    ) -> std::result::Result<Response<csi::NodeStageVolumeResponse>, Status> {
        rpc::serve("NodeStageVolume", request, |r| self.stage(r)).await
    }

    async fn node_unstage_volume(
        &self,
        request: Request<csi::NodeUnstageVolumeRequest>,
    ) -> std::result::Result<Response<csi::NodeUnstageVolumeResponse>, Status> {
        rpc::serve("NodeUnstageVolume", request, |r| self.unstage(r)).await
    }

    async fn node_publish_volume(
        &self,
        request: Request<csi::NodePublishVolumeRequest>,
    ) -> std::result::Result<Response<csi::NodePublishVolumeResponse>, Status> {
        rpc::serve("NodePublishVolume", request, |r| self.publish(r)).await
    }

    async fn node_unpublish_volume(
        &self,
        request: Request<csi::NodeUnpublishVolumeRequest>,
    ) -> std::result::Result<Response<csi::NodeUnpublishVolumeResponse>, Status> {
        rpc::serve("NodeUnpublishVolume", request, |r| self.unpublish(r)).await
    }

    async fn node_get_volume_stats(
        &self,
        request: Request<csi::NodeGetVolumeStatsRequest>,
    ) -> std::result::Result<Response<csi::NodeGetVolumeStatsResponse>, Status> {
        rpc::serve("NodeGetVolumeStats", request, |r| self.volume_stats(r)).await
    }

    async fn node_expand_volume(
        &self,
        request: Request<csi::NodeExpandVolumeRequest>,
    ) -> std::result::Result<Response<csi::NodeExpandVolumeResponse>, Status> {
        rpc::serve("NodeExpandVolume", request, |r| self.expand(r)).await
    }

    async fn node_get_capabilities(
        &self,
        request: Request<csi::NodeGetCapabilitiesRequest>,
    ) -> std::result::Result<Response<csi::NodeGetCapabilitiesResponse>, Status> {
        rpc::serve("NodeGetCapabilities", request, |_| async {
            Ok(csi::NodeGetCapabilitiesResponse {
                capabilities: [
                    Cap::StageUnstageVolume,
                    Cap::ExpandVolume,
                    Cap::GetVolumeStats,
                    Cap::VolumeCondition,
                    // Knows SINGLE_NODE_SINGLE_WRITER from
                    // SINGLE_NODE_MULTI_WRITER: a single-writer volume is
                    // published at one target only.
                    Cap::SingleNodeMultiWriter,
                ]
                .into_iter()
                .map(capability)
                .collect(),
            })
        })
        .await
    }

    async fn node_get_info(
        &self,
        request: Request<csi::NodeGetInfoRequest>,
    ) -> std::result::Result<Response<csi::NodeGetInfoResponse>, Status> {
        rpc::serve("NodeGetInfo", request, |_| async { self.info() }).await
    }
}
