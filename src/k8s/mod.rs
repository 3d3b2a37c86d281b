//! The Kubernetes API, for the three node features the reference driver
//! has and a cluster relies on: the node's identity from its Node object
//! when instance metadata is unreachable ([`identity`]), the removal of the
//! `ebs.csi.aws.com/agent-not-ready` startup taint ([`taint`]), and the
//! `pre-stop-hook` mode that holds a draining node's pod until its volumes
//! are detached ([`prestop`]).
//!
//! The client is kube-rs: the in-cluster service account by default,
//! `--kubeconfig PATH` otherwise, every request bounded so that an
//! unreachable API never hangs start-up. The node's name comes from
//! `CSI_NODE_NAME` (the downward API's `spec.nodeName`). The controller never
//! uses any of this.

pub mod identity;
pub mod prestop;
pub mod taint;

use std::path::PathBuf;
use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};

/// The environment variable naming this node's Node object.
pub const NODE_NAME_ENV: &str = "CSI_NODE_NAME";

/// How to reach the API server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApiConfig {
    /// `--kubeconfig`; None for the in-cluster configuration.
    pub kubeconfig: Option<PathBuf>,
    /// Bound on connecting and on each read.
    pub timeout: Duration,
}

/// A failed use of the Kubernetes API.
#[derive(Debug, thiserror::Error)]
pub enum K8sError {
    /// No configuration (not in a cluster, bad kubeconfig).
    #[error("Kubernetes API configuration: {0}")]
    Config(String),
    /// `CSI_NODE_NAME` is not set.
    #[error("{NODE_NAME_ENV} is not set (the node's name, from the downward API's spec.nodeName)")]
    NoNodeName,
    /// The API answered with an error Status.
    #[error("Kubernetes API {what}: {code} {reason}: {message}")]
    Status {
        /// What was asked (`get node ip-10-0-0-1`).
        what: String,
        /// HTTP code (403, 404, 422, …).
        code: u16,
        /// The Status reason (`Forbidden`, `NotFound`, `Invalid`, …).
        reason: String,
        /// The Status message.
        message: String,
    },
    /// The API server did not answer in time.
    #[error("Kubernetes API {what}: no answer within {limit:?}")]
    Timeout {
        /// What was asked.
        what: String,
        /// The bound.
        limit: Duration,
    },
    /// The API could not be reached or answered something unreadable.
    #[error("Kubernetes API {what}: {source}")]
    Transport {
        /// What was asked.
        what: String,
        /// Why.
        #[source]
        source: kube::Error,
    },
    /// The Node does not say what we need.
    #[error("Node {node}: {why}")]
    Node {
        /// The Node.
        node: String,
        /// What is missing or wrong.
        why: String,
    },
}

impl K8sError {
    /// Sorts a kube-rs error of the request described by `what`.
    pub fn from_kube(what: impl Into<String>, err: kube::Error) -> Self {
        let what = what.into();
        match err {
            kube::Error::Api(status) => K8sError::Status {
                what,
                code: status.code,
                reason: status.reason.clone(),
                message: status.message.clone(),
            },
            source => K8sError::Transport { what, source },
        }
    }

    /// The HTTP code of an API error Status, if that is what this is.
    pub fn code(&self) -> Option<u16> {
        match self {
            K8sError::Status { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// The node's name from `CSI_NODE_NAME`.
pub fn node_name() -> Result<String, K8sError> {
    std::env::var(NODE_NAME_ENV)
        .ok()
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty())
        .ok_or(K8sError::NoNodeName)
}

/// A client of the API server `cfg` names, requests bounded by its timeout.
pub async fn client(cfg: &ApiConfig) -> Result<kube::Client, K8sError> {
    // kube-rs and the AWS SDK both bring rustls; say which crypto it uses
    // (a second call finds it installed and changes nothing).
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mut config = match &cfg.kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path)
                .map_err(|e| K8sError::Config(format!("--kubeconfig {}: {e}", path.display())))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .map_err(|e| K8sError::Config(format!("--kubeconfig {}: {e}", path.display())))?
        }
        None => kube::Config::incluster().map_err(|e| {
            K8sError::Config(format!(
                "not running in a cluster (in-cluster configuration: {e}); pass --kubeconfig"
            ))
        })?,
    };
    // Connecting is bounded here; single requests by [`bounded`]. No read
    // timeout: a watch may be quiet for minutes.
    if !cfg.timeout.is_zero() {
        config.connect_timeout = Some(cfg.timeout);
    }
    config.read_timeout = None;
    kube::Client::try_from(config).map_err(|e| K8sError::Config(e.to_string()))
}

/// Runs one API request, failing it as unreachable after `limit`.
pub async fn bounded<T>(
    what: &str,
    limit: Duration,
    request: impl std::future::Future<Output = Result<T, kube::Error>>,
) -> Result<T, K8sError> {
    match tokio::time::timeout(limit, request).await {
        Ok(result) => result.map_err(|e| K8sError::from_kube(what, e)),
        Err(_) => Err(K8sError::Timeout {
            what: what.to_string(),
            limit,
        }),
    }
}
