//! Errors: what the server said, decoded from its `google.rpc` details, or why no
//! call could be made.

use std::time::Duration;

use tonic::Code;
use tonic_types::{
    ErrorDetails, FieldViolation, PreconditionViolation, QuotaViolation, ResourceInfo, StatusExt,
};

use crate::v1;

/// The result of every call of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a call failed.
///
/// ```no_run
/// # async fn run(client: esaas_client::Client) {
/// use esaas_client::Error;
/// match client.get_cluster("tenants/search/clusters/logs").await {
///     Ok(c) => println!("{}", c.name),
///     Err(Error::Api(e)) if e.code() == tonic::Code::NotFound => println!("no such cluster"),
///     Err(e) => eprintln!("{e}"),
/// }
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server answered with an error status (after any retries).
    #[error("{0}")]
    Api(Box<ApiError>),
    /// The client is misconfigured (no address, a malformed URL or key).
    #[error("client configuration: {0}")]
    Config(String),
    /// The server could not be reached when connecting.
    #[error("cannot connect to {url}: {source}")]
    Connect {
        /// The URL.
        url: String,
        /// Why.
        #[source]
        source: tonic::transport::Error,
    },
    /// An operation that was waited for ended FAILED or CANCELLED; it is here whole.
    #[error("{} ended {}: {}", .0.name, state_name(.0), failure_message(.0))]
    OperationFailed(Box<v1::Operation>),
}

impl Error {
    /// The gRPC code of a server's answer.
    ///
    /// ```
    /// let e = esaas_client::Error::from(tonic::Status::not_found("tenants/a/clusters/x"));
    /// assert_eq!(e.code(), Some(tonic::Code::NotFound));
    /// ```
    pub fn code(&self) -> Option<Code> {
        match self {
            Error::Api(e) => Some(e.code()),
            _ => None,
        }
    }

    /// The server's answer, if there was one.
    ///
    /// ```
    /// let e = esaas_client::Error::from(tonic::Status::aborted("stale etag"));
    /// assert_eq!(e.api().map(|a| a.message()), Some("stale etag"));
    /// ```
    pub fn api(&self) -> Option<&ApiError> {
        match self {
            Error::Api(e) => Some(e),
            _ => None,
        }
    }
}

impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Self {
        Error::Api(Box::new(ApiError::new(status)))
    }
}

fn state_name(op: &v1::Operation) -> &'static str {
    match op.state() {
        v1::OperationState::Failed => "FAILED",
        v1::OperationState::Cancelled => "CANCELLED",
        v1::OperationState::Succeeded => "SUCCEEDED",
        v1::OperationState::Stalled => "STALLED",
        v1::OperationState::Running => "RUNNING",
        v1::OperationState::Queued => "QUEUED",
        v1::OperationState::Unspecified => "in an unknown state",
    }
}

fn failure_message(op: &v1::Operation) -> &str {
    match &op.error {
        Some(e) if !e.message.is_empty() => &e.message,
        _ => &op.message,
    }
}

/// An error status from the server, with its `google.rpc` details decoded
/// (AIP-193): a stable reason, the fields at fault, the quota or precondition that
/// failed, and when to retry.
///
/// ```
/// use tonic_types::{ErrorDetails, StatusExt};
/// let status = tonic::Status::with_error_details(
///     tonic::Code::InvalidArgument,
///     "cluster_id: must start with a letter",
///     ErrorDetails::with_bad_request_violation("cluster_id", "must start with a letter"),
/// );
/// let e = esaas_client::ApiError::new(status);
/// assert_eq!(e.field_violations()[0].field, "cluster_id");
/// assert_eq!(e.to_string(), "INVALID_ARGUMENT: cluster_id: must start with a letter");
/// ```
#[derive(Debug)]
pub struct ApiError {
    status: tonic::Status,
    details: ErrorDetails,
}

impl ApiError {
    /// Decodes `status`'s details.
    ///
    /// ```
    /// let e = esaas_client::ApiError::new(tonic::Status::unavailable("database unreachable"));
    /// assert_eq!(e.code(), tonic::Code::Unavailable);
    /// ```
    pub fn new(status: tonic::Status) -> Self {
        let details = status.get_error_details();
        Self { status, details }
    }

    /// The gRPC code.
    ///
    /// ```
    /// let e = esaas_client::ApiError::new(tonic::Status::permission_denied("viewer"));
    /// assert_eq!(e.code(), tonic::Code::PermissionDenied);
    /// ```
    pub fn code(&self) -> Code {
        self.status.code()
    }

    /// The server's message.
    ///
    /// ```
    /// let e = esaas_client::ApiError::new(tonic::Status::not_found("tenants/a"));
    /// assert_eq!(e.message(), "tenants/a");
    /// ```
    pub fn message(&self) -> &str {
        self.status.message()
    }

    /// The stable, machine-readable reason (`google.rpc.ErrorInfo.reason`), for
    /// example `QUOTA_EXCEEDED` or `REQUEST_ID_REUSED`.
    ///
    /// ```
    /// use tonic_types::{ErrorDetails, StatusExt};
    /// let s = tonic::Status::with_error_details(tonic::Code::Aborted, "stale",
    ///     ErrorDetails::with_error_info("ETAG_MISMATCH", "esaas.io", []));
    /// assert_eq!(esaas_client::ApiError::new(s).reason(), Some("ETAG_MISMATCH"));
    /// ```
    pub fn reason(&self) -> Option<&str> {
        self.details.error_info().map(|i| i.reason.as_str())
    }

    /// The fields of the request at fault (`google.rpc.BadRequest`).
    ///
    /// ```
    /// let e = esaas_client::ApiError::new(tonic::Status::invalid_argument("bad"));
    /// assert!(e.field_violations().is_empty());
    /// ```
    pub fn field_violations(&self) -> &[FieldViolation] {
        self.details
            .bad_request()
            .map(|b| b.field_violations.as_slice())
            .unwrap_or_default()
    }

    /// The limits a request would exceed (`google.rpc.QuotaFailure`).
    ///
    /// ```
    /// use tonic_types::{ErrorDetails, StatusExt};
    /// let s = tonic::Status::with_error_details(tonic::Code::ResourceExhausted, "over quota",
    ///     ErrorDetails::with_quota_failure_violation("tenants/a", "max_nodes 12, would be 15"));
    /// assert_eq!(esaas_client::ApiError::new(s).quota_violations()[0].subject, "tenants/a");
    /// ```
    pub fn quota_violations(&self) -> &[QuotaViolation] {
        self.details
            .quota_failure()
            .map(|q| q.violations.as_slice())
            .unwrap_or_default()
    }

    /// The preconditions that failed (`google.rpc.PreconditionFailure`): a stale etag,
    /// a state that forbids the change.
    ///
    /// ```
    /// let e = esaas_client::ApiError::new(tonic::Status::failed_precondition("deleting"));
    /// assert!(e.precondition_violations().is_empty());
    /// ```
    pub fn precondition_violations(&self) -> &[PreconditionViolation] {
        self.details
            .precondition_failure()
            .map(|p| p.violations.as_slice())
            .unwrap_or_default()
    }

    /// The resource the error is about (`google.rpc.ResourceInfo`).
    ///
    /// ```
    /// let e = esaas_client::ApiError::new(tonic::Status::not_found("x"));
    /// assert!(e.resource().is_none());
    /// ```
    pub fn resource(&self) -> Option<&ResourceInfo> {
        self.details.resource_info()
    }

    /// How long the server asks the client to wait before retrying (`google.rpc.RetryInfo`).
    ///
    /// ```
    /// use std::time::Duration;
    /// use tonic_types::{ErrorDetails, StatusExt};
    /// let s = tonic::Status::with_error_details(tonic::Code::Unavailable, "overloaded",
    ///     ErrorDetails::with_retry_info(Some(Duration::from_millis(100))));
    /// assert_eq!(esaas_client::ApiError::new(s).retry_delay(), Some(Duration::from_millis(100)));
    /// ```
    pub fn retry_delay(&self) -> Option<Duration> {
        retry_delay(&self.details)
    }

    /// Every decoded detail.
    ///
    /// ```
    /// let e = esaas_client::ApiError::new(tonic::Status::internal("x"));
    /// assert!(e.details().error_info().is_none());
    /// ```
    pub fn details(&self) -> &ErrorDetails {
        &self.details
    }

    /// The status as received.
    ///
    /// ```
    /// let e = esaas_client::ApiError::new(tonic::Status::internal("x"));
    /// assert_eq!(e.status().message(), "x");
    /// ```
    pub fn status(&self) -> &tonic::Status {
        &self.status
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", code_name(self.code()), self.message())
    }
}

impl std::error::Error for ApiError {}

pub(crate) fn retry_delay(details: &ErrorDetails) -> Option<Duration> {
    details.retry_info().and_then(|r| r.retry_delay)
}

/// The canonical name of a gRPC code, as the protos and AIP-193 spell it.
///
/// ```
/// assert_eq!(esaas_client::code_name(tonic::Code::FailedPrecondition), "FAILED_PRECONDITION");
/// ```
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}
