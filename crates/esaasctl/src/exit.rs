//! Exit codes that scripts can rely on, one per kind of outcome. `esaasctl --help` lists
//! them too ([`HELP`]).

use std::process::ExitCode;

use esaas_client::{Error, code_name};
use tonic::Code;

/// The exit codes, as `--help` shows them.
pub const HELP: &str = "\
Exit codes:
  0  success (a waited-for operation SUCCEEDED)
  1  any other failure (a server bug, an unexpected answer)
  2  the command line is wrong (clap's usage errors)
  3  not allowed: UNAUTHENTICATED or PERMISSION_DENIED
  4  not found: NOT_FOUND (also another tenant's resource)
  5  refused: INVALID_ARGUMENT, ALREADY_EXISTS, FAILED_PRECONDITION, ABORTED (stale etag),
     RESOURCE_EXHAUSTED (quota, rate), OUT_OF_RANGE, UNIMPLEMENTED
  6  the operation waited for ended FAILED or CANCELLED
  7  unreachable: cannot connect, UNAVAILABLE, DEADLINE_EXCEEDED (after retries)
  130 interrupted (Ctrl-C); an operation being waited for goes on";

/// Success.
pub const OK: u8 = 0;
/// Anything not below.
pub const OTHER: u8 = 1;
/// Not allowed.
pub const DENIED: u8 = 3;
/// Not found.
pub const NOT_FOUND: u8 = 4;
/// Refused.
pub const REFUSED: u8 = 5;
/// The operation failed.
pub const OPERATION_FAILED: u8 = 6;
/// Unreachable.
pub const UNREACHABLE: u8 = 7;
/// Interrupted.
pub const INTERRUPTED: u8 = 130;

/// How a command ended when it did not simply succeed.
#[derive(Debug)]
pub enum Failure {
    /// An error of the client or the server.
    Client(Error),
    /// Anything else (a file that cannot be read, a bad spec file).
    Other(anyhow::Error),
    /// Ctrl-C while waiting; the message says how to pick up again.
    Interrupted(String),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Client(e)
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Other(e)
    }
}

/// The exit code of a gRPC code.
pub fn code_of(code: Code) -> u8 {
    match code {
        Code::Ok => OK,
        Code::Unauthenticated | Code::PermissionDenied => DENIED,
        Code::NotFound => NOT_FOUND,
        Code::InvalidArgument
        | Code::AlreadyExists
        | Code::FailedPrecondition
        | Code::Aborted
        | Code::ResourceExhausted
        | Code::OutOfRange
        | Code::Unimplemented => REFUSED,
        Code::Unavailable | Code::DeadlineExceeded => UNREACHABLE,
        _ => OTHER,
    }
}

/// The exit code of a failure.
pub fn exit_code(f: &Failure) -> u8 {
    match f {
        Failure::Client(Error::Api(e)) => code_of(e.code()),
        Failure::Client(Error::Connect { .. }) => UNREACHABLE,
        Failure::Client(Error::OperationFailed(_)) => OPERATION_FAILED,
        Failure::Client(Error::Config(_)) => exit_usage(),
        Failure::Client(_) | Failure::Other(_) => OTHER,
        Failure::Interrupted(_) => INTERRUPTED,
    }
}

/// A misconfiguration (no address, a bad key) is a usage error, as clap's are.
fn exit_usage() -> u8 {
    2
}

/// Prints a failure on stderr, with the details that help (each field at fault, each
/// quota, each precondition), and returns its exit code.
pub fn report(outcome: Result<(), Failure>) -> ExitCode {
    let Err(failure) = outcome else {
        return ExitCode::from(OK);
    };
    if let Failure::Other(e) = &failure
        && e.is::<crate::output::StdoutClosed>()
    {
        // The reader had what it wanted (`| head`): not a failure.
        return ExitCode::from(OK);
    }
    match &failure {
        Failure::Client(Error::Api(e)) => {
            eprintln!("error: {}: {}", code_name(e.code()), e.message());
            for v in e.field_violations() {
                eprintln!("  field {}: {}", v.field, v.description);
            }
            for v in e.quota_violations() {
                eprintln!("  quota {}: {}", v.subject, v.description);
            }
            for v in e.precondition_violations() {
                eprintln!(
                    "  precondition {} on {}: {}",
                    v.r#type, v.subject, v.description
                );
            }
            if let Some(reason) = e.reason() {
                eprintln!("  reason: {reason}");
            }
        }
        Failure::Client(Error::OperationFailed(op)) => {
            eprintln!("error: {}", Error::OperationFailed(op.clone()));
            eprintln!("  details: esaasctl operations get {}", op.name);
        }
        Failure::Client(e) => eprintln!("error: {e}"),
        Failure::Other(e) => eprintln!("error: {e:#}"),
        Failure::Interrupted(msg) => eprintln!("{msg}"),
    }
    ExitCode::from(exit_code(&failure))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_its_documented_exit_code() {
        let cases = [
            (Code::Unauthenticated, 3),
            (Code::PermissionDenied, 3),
            (Code::NotFound, 4),
            (Code::InvalidArgument, 5),
            (Code::AlreadyExists, 5),
            (Code::FailedPrecondition, 5),
            (Code::Aborted, 5),
            (Code::ResourceExhausted, 5),
            (Code::Unimplemented, 5),
            (Code::Unavailable, 7),
            (Code::DeadlineExceeded, 7),
            (Code::Internal, 1),
            (Code::Unknown, 1),
        ];
        for (code, exit) in cases {
            assert_eq!(code_of(code), exit, "{code:?}");
            assert!(
                HELP.contains(&format!("  {exit}  ")),
                "{exit} is documented"
            );
        }
    }
}
