//! The error type of the CSI service layer.
//!
//! Lower layers (EC2, mount) have error types of their own; the services map
//! them into this one, and [`crate::rpc`] turns it into a `tonic::Status` —
//! the only place in the driver where that conversion happens, so every
//! error is logged exactly once with the code the caller sees.

use tonic::Code;

use crate::cloud::CloudError;

/// A failed CSI call: the gRPC code the CSI spec mandates, and a message that
/// names what was wrong and the value that was given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A required field is missing or a value is malformed or out of range.
    #[error("{0}")]
    InvalidArgument(String),
    /// The volume, snapshot or node named in the request does not exist.
    #[error("{0}")]
    NotFound(String),
    /// An object of that name exists but is incompatible with the request.
    #[error("{0}")]
    AlreadyExists(String),
    /// The request is valid but the system is not in a state to honour it.
    #[error("{0}")]
    FailedPrecondition(String),
    /// A requested size is outside what the backend can provide.
    #[error("{0}")]
    OutOfRange(String),
    /// A quota or limit was hit (attachments per node, for instance).
    #[error("{0}")]
    ResourceExhausted(String),
    /// An operation on the same key is already in flight; the caller retries.
    #[error("{0}")]
    Aborted(String),
    /// A dependency is not reachable or not ready yet; the caller retries.
    #[error("{0}")]
    Unavailable(String),
    /// A wait ran past its bound; the caller retries.
    #[error("{0}")]
    DeadlineExceeded(String),
    /// The RPC is not implemented by this driver.
    #[error("{0}")]
    Unimplemented(String),
    /// Anything else: a bug or an unexpected answer from a dependency.
    #[error("{0}")]
    Internal(String),
}

impl Error {
    /// The gRPC code this error is reported with.
    pub fn code(&self) -> Code {
        match self {
            Error::InvalidArgument(_) => Code::InvalidArgument,
            Error::NotFound(_) => Code::NotFound,
            Error::AlreadyExists(_) => Code::AlreadyExists,
            Error::FailedPrecondition(_) => Code::FailedPrecondition,
            Error::OutOfRange(_) => Code::OutOfRange,
            Error::ResourceExhausted(_) => Code::ResourceExhausted,
            Error::Aborted(_) => Code::Aborted,
            Error::Unavailable(_) => Code::Unavailable,
            Error::DeadlineExceeded(_) => Code::DeadlineExceeded,
            Error::Unimplemented(_) => Code::Unimplemented,
            Error::Internal(_) => Code::Internal,
        }
    }

    /// Shorthand for the very common "field X is required" case.
    pub fn missing(field: &str) -> Self {
        Error::InvalidArgument(format!("{field} is required"))
    }
}

/// The default mapping of EC2 failures to CSI codes; operations that know
/// better (a NotFound that means "already deleted") match first. It lives
/// here, in the service layer, because what an EC2 error means to the CO is
/// the services' business, not the cloud layer's.
impl From<CloudError> for Error {
    fn from(err: CloudError) -> Self {
        match err {
            CloudError::NotFound(m) => Error::NotFound(m),
            CloudError::InUse(m) | CloudError::ZoneMismatch(m) | CloudError::IncorrectState(m) => {
                Error::FailedPrecondition(m)
            }
            CloudError::DeviceInUse(m) | CloudError::Throttled(m) | CloudError::Unavailable(m) => {
                Error::Unavailable(m)
            }
            CloudError::IdempotentParameterMismatch(m) => Error::AlreadyExists(m),
            CloudError::InvalidParameter(m) => Error::InvalidArgument(m),
            CloudError::Unauthorized(m) => Error::FailedPrecondition(format!(
                "{m} (check the driver's IAM policy, see docs/iam-policy.json)"
            )),
            CloudError::LimitExceeded(m) => Error::ResourceExhausted(m),
            CloudError::Timeout(m) => Error::DeadlineExceeded(m),
            CloudError::Other(m) => Error::Internal(m),
        }
    }
}

/// The result type of the service layer.
pub type Result<T> = std::result::Result<T, Error>;
