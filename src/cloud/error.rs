//! The error type of the cloud layer: EC2's error codes sorted into the
//! cases the services act on, each keeping EC2's code and message.

use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};

/// A failed EC2 call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CloudError {
    /// The named volume, snapshot, instance or attachment does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The volume is attached, or being attached or detached (VolumeInUse).
    #[error("{0}")]
    InUse(String),
    /// Volume and instance are in different zones.
    #[error("{0}")]
    ZoneMismatch(String),
    /// The device name is already used on the instance.
    #[error("{0}")]
    DeviceInUse(String),
    /// A ClientToken was reused with different parameters.
    #[error("{0}")]
    IdempotentParameterMismatch(String),
    /// The resource is in a state that does not allow the call.
    #[error("{0}")]
    IncorrectState(String),
    /// EC2 rejected a parameter.
    #[error("{0}")]
    InvalidParameter(String),
    /// EC2 throttled us and the SDK's retries ran out.
    #[error("{0}")]
    Throttled(String),
    /// The credentials may not do this (IAM).
    #[error("{0}")]
    Unauthorized(String),
    /// A quota (volumes, snapshots, attachments) is exhausted.
    #[error("{0}")]
    LimitExceeded(String),
    /// A wait ran past its bound.
    #[error("{0}")]
    Timeout(String),
    /// EC2 could not be reached or answered a server error.
    #[error("{0}")]
    Unavailable(String),
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

impl CloudError {
    /// Sorts an SDK error of `action` by EC2's error code.
    pub fn from_sdk<E, R>(action: &str, err: SdkError<E, R>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug,
    {
        match &err {
            SdkError::ServiceError(service) => {
                let e = service.err();
                Self::from_code(
                    action,
                    e.code().unwrap_or("Unknown"),
                    e.message().unwrap_or(""),
                )
            }
            SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) => {
                Self::Unavailable(format!("EC2 {action}: EC2 unreachable: {}", chain(&err)))
            }
            _ => Self::Other(format!("EC2 {action}: {}", chain(&err))),
        }
    }

    /// Sorts an EC2 error code and message.
    pub fn from_code(action: &str, code: &str, message: &str) -> Self {
        let text = format!("EC2 {action} failed: {code}: {message}");
        match code {
            c if c.ends_with(".NotFound") || c == "InvalidAttachment.NotFound" => {
                Self::NotFound(text)
            }
            "VolumeInUse" => Self::InUse(text),
            "InvalidVolume.ZoneMismatch" => Self::ZoneMismatch(text),
            "InvalidParameterValue" if message.contains("already in use") => {
                Self::DeviceInUse(text)
            }
            "IdempotentParameterMismatch" => Self::IdempotentParameterMismatch(text),
            "IncorrectState"
            | "IncorrectModificationState"
            | "IncorrectInstanceState"
            | "InvalidVolume.NotAvailable" => Self::IncorrectState(text),
            "RequestLimitExceeded" | "Throttling" | "ThrottlingException" => Self::Throttled(text),
            "UnauthorizedOperation" | "AuthFailure" | "Blocked" | "OptInRequired" => {
                Self::Unauthorized(text)
            }
            c if c.ends_with("LimitExceeded") || c == "AttachmentLimitExceeded" => {
                Self::LimitExceeded(text)
            }
            "InternalError" | "InternalFailure" | "Unavailable" | "ServiceUnavailable" => {
                Self::Unavailable(text)
            }
            c if c.starts_with("InvalidParameter")
                || c.starts_with("Invalid")
                || c == "MissingParameter"
                || c == "UnsupportedOperation" =>
            {
                Self::InvalidParameter(text)
            }
            _ => Self::Other(text),
        }
    }

    /// EC2's message (with the action and code) for logs and CSI errors.
    pub fn message(&self) -> &str {
        match self {
            Self::NotFound(m)
            | Self::InUse(m)
            | Self::ZoneMismatch(m)
            | Self::DeviceInUse(m)
            | Self::IdempotentParameterMismatch(m)
            | Self::IncorrectState(m)
            | Self::InvalidParameter(m)
            | Self::Throttled(m)
            | Self::Unauthorized(m)
            | Self::LimitExceeded(m)
            | Self::Timeout(m)
            | Self::Unavailable(m)
            | Self::Other(m) => m,
        }
    }
}

/// The error and its sources, joined: SDK errors hide the useful part in
/// `source()`.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The cloud layer's result type.
pub type CloudResult<T> = std::result::Result<T, CloudError>;
