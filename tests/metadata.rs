//! The IMDSv2 client path in-process, against the emulator's IMDS and
//! against endpoints that refuse or never answer: values, bounds, messages.

mod support;

use std::time::{Duration, Instant};

use clap::Parser;
use ebs_csi_driver::metadata::{Imds, Metadata, MetadataError, load_from};
use ebs_csi_driver::options::Options;
use support::{Ec2Sim, SimOptions};

fn no_flags() -> ebs_csi_driver::metadata::MetadataConfig {
    // Explicit empty values so the test process's environment cannot fill them.
    let opts = Options::try_parse_from([
        "ebs-csi-driver",
        "--instance-id=",
        "--availability-zone=",
        "--instance-type=",
        "--region=",
    ])
    .unwrap();
    ebs_csi_driver::driver::metadata_config(&opts)
}

#[tokio::test]
async fn imds_client_reads_the_emulators_instance() {
    let sim = tokio::task::spawn_blocking(|| {
        Ec2Sim::start_with(SimOptions {
            instance_type: "c6i.xlarge".into(),
            ..SimOptions::default()
        })
    })
    .await
    .unwrap();
    let endpoint = sim.info["imds_endpoint"].as_str().unwrap().to_string();
    let imds = Imds::with_endpoint(&endpoint, Duration::from_secs(2)).unwrap();
    assert_eq!(imds.endpoint(), endpoint);
    let info = load_from(&no_flags(), &imds).await.unwrap();
    assert_eq!(info.instance_id, sim.instance_id);
    assert_eq!(info.availability_zone, sim.zone);
    assert_eq!(info.region, sim.region);
    assert_eq!(info.instance_type, "c6i.xlarge");
    assert_eq!(info.enis, 1, "no interface listing: one ENI assumed");
    assert_eq!(info.extra_mappings, 0, "ami and root only");
    assert_eq!(
        imds.get("no/such/path").await.unwrap(),
        None,
        "404 is absence, not failure"
    );
}

#[tokio::test]
async fn a_refused_endpoint_fails_fast_naming_it() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let imds = Imds::with_endpoint(&endpoint, Duration::from_secs(2)).unwrap();
    let start = Instant::now();
    let err = load_from(&no_flags(), &imds).await.unwrap_err();
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert!(matches!(err, MetadataError::Unreachable { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains(&endpoint) && msg.contains("hop limit"),
        "{msg}"
    );
}

#[tokio::test]
async fn a_silent_endpoint_is_bounded_by_the_timeout() {
    // Accepts connections and never answers: what a blocked hop looks like.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = listener.accept().await {
            held.push(conn);
        }
    });
    let imds = Imds::with_endpoint(&endpoint, Duration::from_millis(800)).unwrap();
    let start = Instant::now();
    let err = load_from(&no_flags(), &imds).await.unwrap_err();
    let took = start.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "bounded by the timeout, took {took:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains(&endpoint) && msg.contains("hop limit"),
        "{msg}"
    );
    holder.abort();
}

#[test]
fn a_malformed_endpoint_is_refused_naming_it() {
    let err = Imds::with_endpoint("not a url", Duration::from_secs(1)).unwrap_err();
    assert!(matches!(err, MetadataError::BadEndpoint { .. }), "{err:?}");
    assert!(err.to_string().contains("\"not a url\""), "{err}");
}
