//! Volumes for node tests, made through the emulator's EC2 API the way the
//! controller would (CreateVolume, AttachVolume, ModifyVolume), since node
//! tests cannot rely on the Controller service. As root, an attachment to
//! the emulator's local instance becomes a real loop device behind an NVMe
//! style link in the emulator's device directory.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_ec2 as ec2;
use ec2::types::{VolumeState, VolumeType};

use super::Ec2Sim;

/// Device names handed out to attachments: `/dev/xvdba` … `/dev/xvdcz`,
/// names EC2 accepts and no root volume uses.
static NEXT_DEVICE: AtomicUsize = AtomicUsize::new(0);

fn next_device_name() -> String {
    let n = NEXT_DEVICE.fetch_add(1, Ordering::Relaxed) % 52;
    let first = (b'b' + (n / 26) as u8) as char;
    let second = (b'a' + (n % 26) as u8) as char;
    format!("/dev/xvd{first}{second}")
}

/// A volume attached to the emulator's local instance.
#[derive(Debug, Clone)]
pub struct AttachedVolume {
    /// `vol-…`.
    pub volume_id: String,
    /// The device name EC2 was asked for (what the controller puts in the
    /// publish context as `devicePath`).
    pub device_name: String,
    /// The NVMe-style link in the emulator's device directory.
    pub link: PathBuf,
    /// Size in GiB when attached.
    pub size_gib: i32,
}

impl AttachedVolume {
    /// The real device node behind the link (`/dev/loopN`).
    pub fn device(&self) -> PathBuf {
        self.link
            .canonicalize()
            .unwrap_or_else(|e| panic!("link {} of {}: {e}", self.link.display(), self.volume_id))
    }
}

/// Polls `check` every 100 ms until it yields a value or `limit` passes.
async fn poll<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

impl Ec2Sim {
    /// An EC2 client of the emulator with test credentials.
    pub fn ec2_client(&self) -> ec2::Client {
        let config = ec2::Config::builder()
            .behavior_version(ec2::config::BehaviorVersion::latest())
            .endpoint_url(&self.endpoint)
            .region(ec2::config::Region::new(self.region.clone()))
            .credentials_provider(ec2::config::Credentials::new(
                "testing",
                "testing",
                None,
                None,
                "ec2sim-tests",
            ))
            .build();
        ec2::Client::from_conf(config)
    }

    /// Where the emulator links the device of `volume_id`.
    pub fn link_path(&self, volume_id: &str) -> PathBuf {
        self.device_dir.join(format!(
            "nvme-Amazon_Elastic_Block_Store_{}",
            volume_id.replace('-', "")
        ))
    }

    /// Creates a gp3 volume in the local instance's zone and waits until it
    /// is available.
    pub async fn create_volume(&self, size_gib: i32) -> String {
        let ec2 = self.ec2_client();
        let out = ec2
            .create_volume()
            .availability_zone(&self.zone)
            .size(size_gib)
            .volume_type(VolumeType::Gp3)
            .send()
            .await
            .expect("CreateVolume");
        let id = out.volume_id().expect("volume id").to_string();
        poll(
            &format!("{id} available"),
            Duration::from_secs(30),
            || async {
                let out = ec2.describe_volumes().volume_ids(&id).send().await.ok()?;
                let state = out.volumes().first()?.state()?.clone();
                (state == VolumeState::Available).then_some(())
            },
        )
        .await;
        id
    }

    /// Attaches `volume_id` to the local instance and waits for its device link.
    pub async fn attach(&self, volume_id: &str, size_gib: i32) -> AttachedVolume {
        let device_name = next_device_name();
        self.ec2_client()
            .attach_volume()
            .volume_id(volume_id)
            .instance_id(&self.instance_id)
            .device(&device_name)
            .send()
            .await
            .unwrap_or_else(|e| panic!("AttachVolume {volume_id} as {device_name}: {e:?}"));
        let link = self.link_path(volume_id);
        poll(
            &format!("link {}", link.display()),
            Duration::from_secs(30),
            || async { link.canonicalize().ok().map(|_| ()) },
        )
        .await;
        AttachedVolume {
            volume_id: volume_id.to_string(),
            device_name,
            link,
            size_gib,
        }
    }

    /// Creates a volume and attaches it to the local instance.
    pub async fn create_and_attach(&self, size_gib: i32) -> AttachedVolume {
        let id = self.create_volume(size_gib).await;
        self.attach(&id, size_gib).await
    }

    /// Grows the volume with ModifyVolume and waits until its device has the new size.
    pub async fn grow_volume(&self, volume: &AttachedVolume, size_gib: i32) {
        self.ec2_client()
            .modify_volume()
            .volume_id(&volume.volume_id)
            .size(size_gib)
            .send()
            .await
            .expect("ModifyVolume");
        let want = u64::try_from(size_gib).unwrap() << 30;
        let device = volume.device();
        poll(
            &format!("{} to grow", device.display()),
            Duration::from_secs(30),
            || async { (device_size(&device) >= want).then_some(()) },
        )
        .await;
    }
}

/// Size in bytes of a block device (or file).
pub fn device_size(path: &std::path::Path) -> u64 {
    use std::io::Seek;
    let mut f =
        std::fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    f.seek(std::io::SeekFrom::End(0)).expect("seek to end")
}
