//! AWS errors to step errors. Throttling, 5xx and transport trouble are
//! retryable (the SDK has already retried them with backoff); validation,
//! access and missing resources are permanent, with the AWS error code and
//! message the user can act on.

use aws_sdk_eks::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use esaas_core::backend::StepError;

/// Classifies an SDK error of operation `op`.
pub fn classify<E>(op: &str, err: SdkError<E, HttpResponse>) -> StepError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let http_status = match &err {
        SdkError::ServiceError(se) => Some(se.raw().status().as_u16()),
        _ => None,
    };
    let code = err.code().unwrap_or("").to_string();
    let message = err.message().unwrap_or("").to_string();
    match &err {
        SdkError::ServiceError(_) => {}
        SdkError::TimeoutError(_) => {
            // The source says which limit fired and after how long: "operation
            // timeout (all attempts including retries) occurred after 3s".
            let why = std::error::Error::source(&err)
                .map(ToString::to_string)
                .unwrap_or_else(|| "timed out".into());
            return StepError::retryable(
                "EKS_TIMEOUT",
                format!("{op}: EKS did not answer in time: {why}"),
            );
        }
        SdkError::DispatchFailure(e) if e.is_timeout() => {
            return StepError::retryable(
                "EKS_TIMEOUT",
                format!("{op}: could not connect to EKS in time: {e:?}"),
            );
        }
        SdkError::DispatchFailure(e) => {
            return StepError::retryable(
                "EKS_UNREACHABLE",
                format!("{op}: could not reach EKS: {e:?}"),
            );
        }
        SdkError::ResponseError(_) => {
            return StepError::retryable(
                "EKS_BAD_RESPONSE",
                format!("{op}: unreadable response from EKS"),
            );
        }
        _ => return StepError::retryable("EKS_ERROR", format!("{op}: {err}")),
    }
    let text = match (code.is_empty(), http_status) {
        (true, Some(status)) => format!("{op}: HTTP {status} without an AWS error code"),
        _ => format!("{op}: {code}: {message}"),
    };
    match code.as_str() {
        "ThrottlingException"
        | "TooManyRequestsException"
        | "RequestLimitExceeded"
        | "Throttling" => StepError::retryable("EKS_THROTTLED", text),
        "ServerException"
        | "ServiceUnavailableException"
        | "InternalFailure"
        | "InternalServerError" => StepError::retryable("EKS_SERVER_ERROR", text),
        "ResourceInUseException" => StepError::retryable("EKS_RESOURCE_IN_USE", text),
        // EKS says which is missing: "No cluster found for name: …" is the
        // platform's cluster itself; anything else is a node group.
        "ResourceNotFoundException" if message.contains("No cluster found") => {
            StepError::permanent(esaas_core::backend::PLATFORM_CLUSTER_GONE, text)
        }
        "ResourceNotFoundException" => StepError::permanent("EKS_NOT_FOUND", text),
        "AccessDeniedException" | "UnauthorizedException" | "UnrecognizedClientException" => {
            StepError::permanent("EKS_ACCESS_DENIED", text)
        }
        "InvalidParameterException" | "InvalidRequestException" | "ValidationException" => {
            StepError::permanent("EKS_INVALID_REQUEST", text)
        }
        "ResourceLimitExceededException" => StepError::permanent("EKS_LIMIT_EXCEEDED", text),
        _ => match http_status {
            Some(429) => StepError::retryable("EKS_THROTTLED", text),
            Some(s) if s >= 500 => StepError::retryable("EKS_SERVER_ERROR", text),
            _ => StepError::permanent("EKS_ERROR", text),
        },
    }
}
