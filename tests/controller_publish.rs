//! ControllerPublish/Unpublish against the EC2 emulator, and the
//! controller under concurrency, throttling and a crash.

mod support;

use std::time::{Duration, Instant};

use support::csi::*;
use support::{Driver, DriverConfig, Harness, SimOptions};
use tonic::Code;

async fn controller(delays: &'static str, args: Vec<String>) -> Harness {
    let h = Harness::start_with(
        "controller",
        SimOptions {
            delays,
            ..SimOptions::default()
        },
        args,
    )
    .await;
    h.wait_ready().await;
    h
}

#[tokio::test]
async fn publish_rules() {
    let h = controller("realistic", vec![]).await;
    let mut c = h.driver.controller().await;
    let vol = c
        .create_volume(create_req("pvc-pub", 1, params(&[])))
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    let vol = vol.volume_id;
    let node = h.sim.run_instance("us-east-1a").await;
    let other = h.sim.run_instance("us-east-1a").await;
    let far = h.sim.run_instance("us-east-1b").await;

    let err = c
        .controller_publish_volume(publish_req("vol-0000000000000dead", &node))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = c
        .controller_publish_volume(publish_req(&vol, "i-0000000000000dead"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains("i-0000000000000dead"));
    let err = c
        .controller_publish_volume(publish_req(&vol, &far))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains("us-east-1a") && err.message().contains("us-east-1b"),
        "{}",
        err.message()
    );
    let mut no_cap = publish_req(&vol, &node);
    no_cap.volume_capability = None;
    assert_eq!(
        c.controller_publish_volume(no_cap)
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );

    let first = c
        .controller_publish_volume(publish_req(&vol, &node))
        .await
        .unwrap()
        .into_inner();
    let device = first.publish_context["devicePath"].clone();
    assert!(device.starts_with("/dev/xvd"), "{device}");
    let again = c
        .controller_publish_volume(publish_req(&vol, &node))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        again.publish_context["devicePath"], device,
        "same devicePath when already attached"
    );

    let err = c
        .controller_publish_volume(publish_req(&vol, &other))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains(&node), "{}", err.message());

    c.controller_unpublish_volume(unpublish_req(&vol, &node))
        .await
        .expect("unpublish");
    c.controller_unpublish_volume(unpublish_req(&vol, &node))
        .await
        .expect("unpublish again");
    c.controller_unpublish_volume(unpublish_req(&vol, "i-0000000000000dead"))
        .await
        .expect("unknown node");
    c.controller_unpublish_volume(unpublish_req("vol-0000000000000dead", &node))
        .await
        .expect("unknown volume");

    // Now free, it can go to the other node.
    c.controller_publish_volume(publish_req(&vol, &other))
        .await
        .expect("publish elsewhere");
}

#[tokio::test]
async fn distinct_device_names_per_node_under_concurrency() {
    let h = controller("fast", vec![]).await;
    let node = h.sim.run_instance("us-east-1a").await;
    let mut c = h.driver.controller().await;
    let mut vols = Vec::new();
    for i in 0..8 {
        let v = c
            .create_volume(create_req(&format!("pvc-d{i}"), 1, params(&[])))
            .await
            .unwrap();
        vols.push(v.into_inner().volume.unwrap().volume_id);
    }
    let mut tasks = Vec::new();
    for v in vols {
        let mut c = h.driver.controller().await;
        let node = node.clone();
        tasks.push(tokio::spawn(async move {
            c.controller_publish_volume(publish_req(&v, &node))
                .await
                .map(|r| r.into_inner())
        }));
    }
    let mut devices = Vec::new();
    for t in tasks {
        devices.push(t.await.unwrap().expect("publish").publish_context["devicePath"].clone());
    }
    let mut unique = devices.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        devices.len(),
        "device names reused: {devices:?}"
    );
}

#[tokio::test]
async fn stuck_attachment_is_detached_and_retried() {
    let h = controller("fast", vec!["--attach-timeout=2".into()]).await;
    let node = h.sim.run_instance("us-east-1a").await;
    let mut c = h.driver.controller().await;
    let vol = c
        .create_volume(create_req("pvc-stuck", 1, params(&[])))
        .await
        .unwrap();
    let vol = vol.into_inner().volume.unwrap().volume_id;
    // The first attachment takes far longer than the driver's bound...
    h.sim
        .post("config", &serde_json::json!({"delays": {"attach": 60}}));
    let sim_endpoint = h.sim.endpoint.clone();
    let relax = tokio::spawn(async move {
        // ...then attachments become quick again, as after an EC2 hiccup.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let _ = sim_endpoint;
    });
    let started = Instant::now();
    let publish = {
        let mut c = h.driver.controller().await;
        let vol = vol.clone();
        let node = node.clone();
        tokio::spawn(async move { c.controller_publish_volume(publish_req(&vol, &node)).await })
    };
    relax.await.unwrap();
    h.sim
        .post("config", &serde_json::json!({"delays": {"attach": 0.2}}));
    let reply = publish
        .await
        .unwrap()
        .expect("publish succeeds after a retry")
        .into_inner();
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "waited for the bound first"
    );
    assert!(
        h.sim.calls("DetachVolume") >= 1,
        "the stuck attachment was detached"
    );
    assert!(h.sim.calls("AttachVolume") >= 2, "and attached again");
    assert!(reply.publish_context["devicePath"].starts_with("/dev/xvd"));
}

#[tokio::test]
async fn fifty_creates_with_ten_names_make_ten_volumes() {
    let h = controller("realistic", vec![]).await;
    let mut tasks = Vec::new();
    for i in 0..50 {
        let mut c = h.driver.controller().await;
        tasks.push(tokio::spawn(async move {
            let name = format!("pvc-race-{}", i % 10);
            // The CO retries Aborted; so do we, until each call succeeds.
            let mut aborted = 0;
            loop {
                match c.create_volume(create_req(&name, 1, params(&[]))).await {
                    Ok(r) => return (name, r.into_inner().volume.unwrap().volume_id, aborted),
                    Err(e) if e.code() == Code::Aborted => {
                        aborted += 1;
                        tokio::time::sleep(Duration::from_millis(200)).await
                    }
                    Err(e) => panic!("{name}: {e:?}"),
                }
            }
        }));
    }
    let mut by_name = std::collections::HashMap::new();
    let mut aborted = 0;
    for t in tasks {
        let (name, id, a) = t.await.unwrap();
        aborted += a;
        let prev = by_name.insert(name.clone(), id.clone());
        assert!(prev.is_none() || prev == Some(id), "{name} got two ids");
    }
    assert_eq!(by_name.len(), 10);
    assert!(
        aborted >= 1,
        "a create for a name already in flight is Aborted"
    );
    assert_eq!(
        h.sim.all_volumes().await.len(),
        10,
        "exactly ten volumes in EC2"
    );
    assert_eq!(h.sim.calls("CreateVolume"), 10, "one CreateVolume per name");
}

#[tokio::test]
async fn hundred_creates_and_publishes_under_throttling() {
    let h = controller("realistic", vec![]).await;
    // Four nodes, 25 volumes each (an instance has ~100 device names).
    let mut nodes = Vec::new();
    for _ in 0..4 {
        nodes.push(h.sim.run_instance("us-east-1a").await);
    }
    h.sim.reset_counters();
    // One connection, as external-provisioner and external-attacher use.
    let client = h.driver.controller().await;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..100 {
        let mut c = client.clone();
        let node = nodes[i % 4].clone();
        tasks.push(tokio::spawn(async move {
            let vol = c
                .create_volume(create_req(&format!("pvc-scale-{i}"), 1, params(&[])))
                .await
                .expect("create")
                .into_inner()
                .volume
                .unwrap()
                .volume_id;
            c.controller_publish_volume(publish_req(&vol, &node))
                .await
                .expect("publish");
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let took = started.elapsed();
    let counters = h.sim.get("counters");
    let calls = &counters["calls"];
    let describes: u64 = calls
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| k.starts_with("Describe"))
        .map(|(_, v)| v.as_u64().unwrap())
        .sum();
    println!(
        "100 create+publish (realistic delays, throttling on): {took:.1?}, \
         {describes} Describe calls ({:.2} per volume), calls {calls}, throttled {}",
        describes as f64 / 100.0,
        counters["throttled"]
    );
    if std::env::var("SHOW_LOG").is_ok() {
        println!("{}", h.driver.log_text());
    }
    // The waits tick as fast as a quarter of the Describe bucket's refill
    // allows (20/s at EC2's defaults), never faster: coalescing keeps the
    // count per volume well below one.
    let per_second = describes as f64 / took.as_secs_f64();
    assert!(
        per_second <= 5.0,
        "{describes} Describe calls in {took:.1?}: {per_second:.2}/s, over the 5/s budget"
    );
    assert!(
        describes as f64 / 100.0 <= 0.6,
        "{describes} Describe calls for 100 volumes"
    );
    assert_eq!(calls["CreateVolume"], 100);
    assert_eq!(calls["AttachVolume"], 100);
}

#[tokio::test]
async fn killed_mid_create_then_retried_makes_one_volume() {
    let h = controller("realistic", vec![]).await;
    let mut c = h.driver.controller().await;
    let create = tokio::spawn(async move {
        c.create_volume(create_req("pvc-crash", 4, params(&[])))
            .await
    });
    // Kill the driver once CreateVolume has reached EC2 but before the
    // volume is available (realistic creation takes seconds).
    let deadline = Instant::now() + Duration::from_secs(20);
    while h.sim.calls("CreateVolume") == 0 {
        assert!(Instant::now() < deadline, "CreateVolume never reached EC2");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let Harness { mut driver, sim } = h;
    driver.child.kill().unwrap();
    driver.child.wait().unwrap();
    assert!(create.await.unwrap().is_err(), "the interrupted call fails");

    let driver = Driver::start_with(DriverConfig {
        mode: "controller",
        env: sim.driver_env(),
        ..DriverConfig::default()
    })
    .await;
    let h = Harness { driver, sim };
    h.wait_ready().await;
    let mut c = h.driver.controller().await;
    let vol = c
        .create_volume(create_req("pvc-crash", 4, params(&[])))
        .await
        .expect("retry")
        .into_inner();
    let vols = h.sim.all_volumes().await;
    assert_eq!(vols.len(), 1, "one volume after crash and retry");
    assert_eq!(
        vols[0].volume_id(),
        Some(vol.volume.unwrap().volume_id.as_str())
    );
}

#[tokio::test]
async fn throttled_and_failing_ec2_calls_are_retried_not_surfaced() {
    // Describe and Attach calls throttled, creates failing with 500 after
    // doing the work: every operation still succeeds, and the retried
    // CreateVolume's ClientToken makes no second volume.
    let h = Harness::start_with(
        "controller",
        SimOptions {
            // Counts cap each fault below the driver's retry budget (10 tries
            // for throttles, 4 for server errors), so the outcome is certain.
            faults: "DescribeVolumes:throttle:0.3:9,AttachVolume:throttle:0.3:9,CreateVolume:internal-after:0.3:3".into(),
            ..SimOptions::default()
        },
        vec![],
    )
    .await;
    h.wait_ready().await;
    let node = h.sim.run_instance("us-east-1a").await;
    let mut tasks = Vec::new();
    for i in 0..10 {
        let mut c = h.driver.controller().await;
        let node = node.clone();
        tasks.push(tokio::spawn(async move {
            let vol = c
                .create_volume(create_req(&format!("pvc-flaky-{i}"), 1, params(&[])))
                .await
                .expect("create despite faults")
                .into_inner()
                .volume
                .unwrap()
                .volume_id;
            c.controller_publish_volume(publish_req(&vol, &node))
                .await
                .expect("publish despite throttling");
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let counters = h.sim.get("counters");
    println!("faults injected: {}", counters["faults"]);
    assert!(
        counters["faults"]
            .as_object()
            .is_some_and(|f| !f.is_empty()),
        "faults were injected"
    );
    assert_eq!(
        h.sim.all_volumes().await.len(),
        10,
        "no volume leaked by a retried create"
    );
}

#[tokio::test]
async fn publishing_past_the_instance_limit_is_resource_exhausted() {
    // The local instance is an m5.large: 27 shared EBS attachments with one
    // ENI, the root volume among them, so 26 data volumes fit and the 27th
    // is refused by EC2 (the emulator enforces the same table).
    let h = controller("fast", vec![]).await;
    let mut c = h.driver.controller().await;
    let node = h.sim.instance_id.clone();
    let mut volumes = Vec::new();
    for i in 0..27 {
        let v = c
            .create_volume(create_req(&format!("pvc-limit-{i}"), 1, params(&[])))
            .await
            .unwrap()
            .into_inner()
            .volume
            .unwrap()
            .volume_id;
        volumes.push(v);
    }
    for v in &volumes[..26] {
        c.controller_publish_volume(publish_req(v, &node))
            .await
            .unwrap_or_else(|e| panic!("publish {v}: {e:?}"));
    }
    let err = c
        .controller_publish_volume(publish_req(&volumes[26], &node))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{}", err.message());
    let msg = err.message();
    assert!(
        msg.contains(&node) && msg.contains("m5.large") && msg.contains("27 EBS attachments"),
        "{msg}"
    );
    assert!(msg.contains("AttachmentLimitExceeded"), "{msg}");
    // A slot freed is usable again.
    c.controller_unpublish_volume(unpublish_req(&volumes[0], &node))
        .await
        .unwrap();
    c.controller_publish_volume(publish_req(&volumes[26], &node))
        .await
        .expect("publish after a detach");
}

#[tokio::test]
async fn volumes_published_one_by_one_describe_their_node_once() {
    // Create-then-publish, one volume after another, as a StatefulSet's
    // pods come up: nothing runs concurrently, so nothing coalesces. The
    // node's view is read once (within its TTL) and kept by our own
    // attaches; a volume just created is attached without describing it.
    let h = controller("fast", vec![]).await;
    let node = h.sim.run_instance("us-east-1a").await;
    let mut c = h.driver.controller().await;
    h.sim.reset_counters();
    let n = 20;
    let mut devices = Vec::new();
    for i in 0..n {
        let vol = c
            .create_volume(create_req(&format!("pvc-seq-{i}"), 1, params(&[])))
            .await
            .expect("create")
            .into_inner()
            .volume
            .unwrap()
            .volume_id;
        let published = c
            .controller_publish_volume(publish_req(&vol, &node))
            .await
            .expect("publish")
            .into_inner();
        devices.push(published.publish_context["devicePath"].clone());
    }
    let counters = h.sim.get("counters");
    let calls = &counters["calls"];
    println!(
        "{n} create+publish one by one: {:.2} DescribeVolumes and {:.2} DescribeInstances per volume, calls {calls}",
        calls["DescribeVolumes"].as_u64().unwrap_or(0) as f64 / n as f64,
        calls["DescribeInstances"].as_u64().unwrap_or(0) as f64 / n as f64,
    );
    assert_eq!(calls["DescribeInstances"], 1, "{calls}");
    assert_eq!(calls["AttachVolume"], n, "no device name refused: {calls}");
    let mut unique = devices.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), n as usize, "{devices:?}");
}
