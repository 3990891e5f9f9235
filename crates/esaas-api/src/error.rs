//! The one place where domain errors become gRPC statuses (AIP-193): a
//! stable `ErrorInfo` reason on every error, plus `BadRequest`,
//! `QuotaFailure`, `PreconditionFailure`, `ResourceInfo` or `RetryInfo` as fits.
//! Internal errors are logged here, once, and the caller gets no internals.

use std::collections::HashMap;

use esaas_core::Error;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// `ErrorInfo.domain` of every error.
pub const ERROR_DOMAIN: &str = "esaas.io";

/// Converts a domain error into a status with rich details.
pub fn to_status(err: Error) -> Status {
    let mut details = ErrorDetails::new();
    let mut metadata = HashMap::new();
    let code = match &err {
        Error::InvalidArgument(violations) => {
            for v in violations {
                details.add_bad_request_violation(&v.field, &v.description);
            }
            Code::InvalidArgument
        }
        Error::NotFound { kind, name } => {
            details.set_resource_info(*kind, name, "", "not found");
            Code::NotFound
        }
        Error::AlreadyExists { kind, name } => {
            details.set_resource_info(*kind, name, "", "already exists");
            Code::AlreadyExists
        }
        Error::EtagMismatch { name } => {
            details.add_precondition_failure_violation(
                "ETAG",
                name,
                "the etag does not match: read the resource again and retry with its current etag",
            );
            Code::Aborted
        }
        Error::FailedPrecondition(violations) => {
            for v in violations {
                details.add_precondition_failure_violation(&v.kind, &v.subject, &v.description);
            }
            Code::FailedPrecondition
        }
        Error::QuotaExceeded(violations) => {
            for v in violations {
                details.add_quota_failure_violation(&v.subject, &v.description);
            }
            Code::ResourceExhausted
        }
        Error::PermissionDenied(_) => Code::PermissionDenied,
        Error::Unauthenticated(_) => Code::Unauthenticated,
        Error::RequestIdReused { request_id } => {
            details.add_bad_request_violation(
                "request_id",
                format!("{request_id} was already used with a different request; use a new UUID for a new request"),
            );
            Code::InvalidArgument
        }
        Error::RateLimited { scope, retry_after } => {
            details.set_retry_info(Some(*retry_after));
            details.add_quota_failure_violation(scope, "requests per second");
            Code::ResourceExhausted
        }
        Error::Unavailable { retry_after, .. } => {
            details.set_retry_info(Some(*retry_after));
            Code::Unavailable
        }
        Error::RevisionExpired { since, oldest, .. } => {
            details.add_bad_request_violation(
                "since_revision",
                format!(
                    "the events after {since} have expired; the oldest kept is {oldest}: \
                     read the cluster and watch from its revision"
                ),
            );
            metadata.insert("oldest_revision".to_string(), oldest.to_string());
            metadata.insert("since_revision".to_string(), since.to_string());
            Code::OutOfRange
        }
        Error::Internal(message) => {
            tracing::error!(error = %message, "internal error");
            metadata.insert(
                "hint".to_string(),
                "the failure is logged by the control plane".to_string(),
            );
            Code::Internal
        }
    };
    details.set_error_info(err.reason(), ERROR_DOMAIN, metadata);
    let message = match &err {
        Error::Internal(_) => "internal error".to_string(),
        other => other.to_string(),
    };
    Status::with_error_details(code, message, details)
}

/// `Result` of a handler.
pub type ApiResult<T> = Result<tonic::Response<T>, Status>;

#[cfg(test)]
mod tests {
    use super::*;
    use esaas_core::FieldViolation;

    #[test]
    fn field_violations_and_reason_travel() {
        let status = to_status(Error::InvalidArgument(vec![FieldViolation::new(
            "cluster_id",
            "is required",
        )]));
        assert_eq!(status.code(), Code::InvalidArgument);
        let d = status.get_error_details();
        let br = d.bad_request().expect("bad request details");
        assert_eq!(br.field_violations[0].field, "cluster_id");
        assert_eq!(
            d.error_info().map(|e| e.reason.as_str()),
            Some("INVALID_ARGUMENT")
        );
    }

    #[test]
    fn an_expired_revision_names_the_oldest_kept() {
        let status = to_status(Error::RevisionExpired {
            name: "tenants/t/clusters/c".into(),
            since: 3,
            oldest: 30,
        });
        assert_eq!(status.code(), Code::OutOfRange);
        let d = status.get_error_details();
        let info = d.error_info().expect("error info");
        assert_eq!(info.reason, "REVISION_EXPIRED");
        assert_eq!(
            info.metadata.get("oldest_revision").map(String::as_str),
            Some("30")
        );
        assert!(
            status.message().contains("GetCluster"),
            "{}",
            status.message()
        );
    }

    #[test]
    fn internal_errors_hide_their_cause() {
        let status = to_status(Error::Internal("password=hunter2 in a query".into()));
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("hunter2"));
    }
}
