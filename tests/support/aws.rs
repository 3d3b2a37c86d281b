//! An aws-sdk-ec2 client on the emulator, for tests that look behind the
//! driver's back (tags, counts) or set up EC2 state (other instances).

use aws_sdk_ec2::config::{BehaviorVersion, Credentials, Region};

use super::Ec2Sim;

impl Ec2Sim {
    /// An EC2 client talking to this emulator.
    pub fn sdk(&self) -> aws_sdk_ec2::Client {
        let config = aws_sdk_ec2::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(self.region.clone()))
            .endpoint_url(&self.endpoint)
            .credentials_provider(Credentials::new("testing", "testing", None, None, "ec2sim"))
            .build();
        aws_sdk_ec2::Client::from_conf(config)
    }

    /// Starts another instance (no devices) in `zone`; returns its id.
    pub async fn run_instance(&self, zone: &str) -> String {
        let out = self
            .sdk()
            .run_instances()
            .image_id("ami-760aaa0f")
            .instance_type(aws_sdk_ec2::types::InstanceType::M5Large)
            .min_count(1)
            .max_count(1)
            .placement(
                aws_sdk_ec2::types::Placement::builder()
                    .availability_zone(zone)
                    .build(),
            )
            .send()
            .await
            .expect("RunInstances");
        out.instances()[0].instance_id().unwrap().to_string()
    }

    /// Every snapshot this account owns, with its tags.
    pub async fn own_snapshots(&self) -> Vec<aws_sdk_ec2::types::Snapshot> {
        self.sdk()
            .describe_snapshots()
            .owner_ids("self")
            .send()
            .await
            .expect("DescribeSnapshots")
            .snapshots()
            .to_vec()
    }

    /// Every live volume EC2 has, with its tags.
    pub async fn all_volumes(&self) -> Vec<aws_sdk_ec2::types::Volume> {
        self.sdk()
            .describe_volumes()
            .send()
            .await
            .expect("DescribeVolumes")
            .volumes()
            .iter()
            .filter(|v| v.tags().iter().any(|t| t.key() == Some("CSIVolumeName")))
            .cloned()
            .collect()
    }
}
