//! The Unix-socket gRPC listener: endpoint parsing, safe binding, and a
//! graceful, bounded shutdown.

use std::future::Future;
use std::io;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nix::unistd::{AccessFlags, access};
use tokio::net::UnixListener;
use tokio::sync::Notify;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::server::Router;

/// Why the server could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The `--endpoint` value is not a usable Unix socket address.
    #[error("invalid --endpoint {value:?}: {reason}")]
    Endpoint {
        /// The value given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The socket path cannot be used.
    #[error("cannot listen on {path}: {reason}")]
    Socket {
        /// The socket path.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A flag other than the endpoint is unusable.
    #[error("{0}")]
    Config(String),
    /// The gRPC server failed while serving.
    #[error("gRPC server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// Parses `--endpoint`: `unix:///abs/path`, `unix:/abs/path`, `unix://rel`
/// or a plain path. Other schemes are refused; CSI runs over Unix sockets.
pub fn parse_endpoint(value: &str) -> Result<PathBuf, ServerError> {
    let bad = |reason: &str| ServerError::Endpoint {
        value: value.to_string(),
        reason: reason.to_string(),
    };
    let path = if let Some(rest) = value.strip_prefix("unix://") {
        rest
    } else if let Some(rest) = value.strip_prefix("unix:") {
        rest
    } else if let Some((scheme, _)) = value.split_once("://") {
        return Err(bad(&format!(
            "scheme {scheme:?} is not supported; use unix:///path/to/csi.sock"
        )));
    } else {
        value
    };
    if path.is_empty() {
        return Err(bad("no socket path given"));
    }
    if path.contains('\0') {
        return Err(bad("the path contains a NUL byte"));
    }
    if path.ends_with('/') {
        return Err(bad("the path names a directory, not a socket file"));
    }
    Ok(PathBuf::from(path))
}

/// Binds the socket at `path`, removing a stale socket left by a previous
/// run. Refuses a path that is not a socket, a socket another process still
/// serves on, and a missing or read-only directory.
pub fn bind(path: &Path) -> Result<UnixListener, ServerError> {
    let fail = |reason: String| ServerError::Socket {
        path: path.to_path_buf(),
        reason,
    };
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(fail(format!("directory {} does not exist", dir.display())));
    }
    if let Err(errno) = access(dir, AccessFlags::W_OK | AccessFlags::X_OK) {
        return Err(fail(format!(
            "directory {} is not writable: {errno}",
            dir.display()
        )));
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(fail(
                    "another process is serving on this socket".to_string(),
                ));
            }
            tracing::info!(path = %path.display(), "removing stale socket");
            std::fs::remove_file(path)
                .map_err(|e| fail(format!("cannot remove stale socket: {e}")))?;
        }
        Ok(_) => {
            return Err(fail(
                "the path exists and is not a socket; refusing to remove it".to_string(),
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(fail(e.to_string())),
    }
    UnixListener::bind(path).map_err(|e| fail(e.to_string()))
}

/// Serves `router` on `listener` until `shutdown` resolves, then stops
/// accepting, gives in-flight RPCs up to `drain` to finish, and removes the
/// socket file.
pub async fn serve<S>(
    router: Router,
    listener: UnixListener,
    path: &Path,
    shutdown: S,
    drain: Duration,
) -> Result<(), ServerError>
where
    S: Future<Output = ()> + Send + 'static,
{
    let signalled = Arc::new(Notify::new());
    let notify = signalled.clone();
    let signal = async move {
        shutdown.await;
        tracing::info!(
            drain_secs = drain.as_secs_f64(),
            "shutting down: no new connections, draining in-flight RPCs"
        );
        notify.notify_one();
    };
    tracing::info!(endpoint = %path.display(), "serving CSI");
    let server = router.serve_with_incoming_shutdown(UnixListenerStream::new(listener), signal);
    let deadline = async {
        signalled.notified().await;
        tokio::time::sleep(drain).await;
    };
    let result = tokio::select! {
        result = server => result.map_err(ServerError::from),
        () = deadline => {
            tracing::warn!("in-flight RPCs did not finish within the drain bound; exiting anyway");
            Ok(())
        }
    };
    remove_socket(path);
    result
}

/// Removes our socket file, if it is still a socket.
fn remove_socket(path: &Path) {
    if let Ok(meta) = std::fs::symlink_metadata(path)
        && meta.file_type().is_socket()
        && let Err(e) = std::fs::remove_file(path)
    {
        tracing::warn!(path = %path.display(), error = %e, "cannot remove socket");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse() {
        assert_eq!(
            parse_endpoint("unix:///tmp/csi.sock").unwrap(),
            PathBuf::from("/tmp/csi.sock")
        );
        assert_eq!(
            parse_endpoint("unix:/csi/csi.sock").unwrap(),
            PathBuf::from("/csi/csi.sock")
        );
        assert_eq!(
            parse_endpoint("/var/run/csi.sock").unwrap(),
            PathBuf::from("/var/run/csi.sock")
        );
        assert_eq!(
            parse_endpoint("csi.sock").unwrap(),
            PathBuf::from("csi.sock")
        );
    }

    #[test]
    fn bad_endpoints_name_the_value() {
        for bad in ["tcp://127.0.0.1:10000", "unix://", "", "unix:///tmp/dir/"] {
            let err = parse_endpoint(bad).unwrap_err().to_string();
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[tokio::test]
    async fn refuses_a_regular_file_and_a_missing_directory() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-socket");
        std::fs::write(&file, b"data").unwrap();
        let err = bind(&file).unwrap_err().to_string();
        assert!(err.contains("not a socket"), "{err}");
        assert_eq!(
            std::fs::read(&file).unwrap(),
            b"data",
            "the file must be left alone"
        );

        let err = bind(&dir.path().join("missing/csi.sock"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not exist"), "{err}");
    }

    #[tokio::test]
    async fn replaces_a_stale_socket_but_not_a_live_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("csi.sock");
        let live = bind(&path).unwrap();
        let err = bind(&path).unwrap_err().to_string();
        assert!(err.contains("another process"), "{err}");
        drop(live); // the file stays behind, as after a crash
        assert!(path.exists());
        bind(&path).expect("a stale socket is replaced");
    }
}
