//! An Amazon EBS driver for the Container Storage Interface (CSI).
//!
//! One binary serves the CSI Identity, Controller and Node services over a
//! Unix socket; see DESIGN.md for the compatibility contract and layout.

/// Code generated from `proto/csi.proto` (CSI spec v1.12.0).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod csi {
    tonic::include_proto!("csi.v1");
}

pub mod cloud;
pub mod contract;
pub mod controller;
pub mod driver;
pub mod error;
pub mod identity;
pub mod inflight;
pub mod k8s;
pub mod logging;
pub mod metadata;
pub mod metrics;
pub mod node;
pub mod options;
pub mod readiness;
pub mod residency;
pub mod rpc;
pub mod server;
pub mod sync;
