//! The domain error. Every adapter maps its own failures into it, and the API
//! maps it, in one place, to a gRPC status with AIP-193 details.

use std::time::Duration;

/// Result with the domain error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

text_enum!(
    /// The gRPC status codes the domain speaks of, by name (the API maps
    /// them to numbers); an operation's error carries one.
    Code {
        /// The request is malformed.
        InvalidArgument = "INVALID_ARGUMENT",
        /// The state does not allow it; another attempt will not help
        /// until something changes.
        FailedPrecondition = "FAILED_PRECONDITION",
        /// Transient: another attempt may succeed.
        Unavailable = "UNAVAILABLE",
        /// Stopped before it was done.
        Cancelled = "CANCELLED",
        /// A bug or an unexpected failure.
        Internal = "INTERNAL",
    }
);

/// One bad field of a request: its path (as in the request, `cluster.spec.node_sets[0].count`)
/// and why it is bad.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// Path of the field in the request.
    pub field: String,
    /// What is wrong and what would be right.
    pub description: String,
}

impl FieldViolation {
    /// A violation of `field`.
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            description: description.into(),
        }
    }
}

/// One exceeded quota limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaViolation {
    /// What the limit applies to, for example `tenants/search:nodes`.
    pub subject: String,
    /// The limit, what is used and what the request would add.
    pub description: String,
}

/// One unmet precondition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreconditionViolation {
    /// A stable type, for example `STATE`.
    pub kind: String,
    /// The resource, for example `tenants/search/clusters/logs`.
    pub subject: String,
    /// What is wrong.
    pub description: String,
}

/// Everything that can go wrong, in the terms a caller can act on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed; each violation names a field.
    #[error("invalid argument: {}", describe(.0))]
    InvalidArgument(Vec<FieldViolation>),
    /// The resource does not exist, or belongs to another tenant.
    #[error("{name} not found")]
    NotFound {
        /// Resource type, for example `Cluster`.
        kind: &'static str,
        /// Resource name.
        name: String,
    },
    /// A resource with that name exists already.
    #[error("{name} already exists")]
    AlreadyExists {
        /// Resource type.
        kind: &'static str,
        /// Resource name.
        name: String,
    },
    /// The etag sent does not match the resource's current one.
    #[error("etag mismatch on {name}: the resource changed since it was read")]
    EtagMismatch {
        /// Resource name.
        name: String,
    },
    /// The request is valid but the resource is not in a state that allows it.
    #[error("failed precondition: {}", .0.iter().map(|v| v.description.as_str()).collect::<Vec<_>>().join("; "))]
    FailedPrecondition(Vec<PreconditionViolation>),
    /// The request would exceed the tenant's quota.
    #[error("quota exceeded: {}", .0.iter().map(|v| v.description.as_str()).collect::<Vec<_>>().join("; "))]
    QuotaExceeded(Vec<QuotaViolation>),
    /// The caller is known but its role does not allow this.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// The caller could not be identified.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// A request id was reused with a different request.
    #[error("invalid argument: request_id {request_id} was already used with a different request")]
    RequestIdReused {
        /// The reused id.
        request_id: String,
    },
    /// The caller sent more requests than its rate allows; try again after the delay.
    #[error("rate limit exceeded for {scope}: retry in {} ms", retry_after.as_millis())]
    RateLimited {
        /// Whose rate: `tenants/{tenant}`, or a platform key.
        scope: String,
        /// When a request will be admitted again.
        retry_after: Duration,
    },
    /// A dependency is unavailable for now; try again after the delay.
    #[error("unavailable: {message}")]
    Unavailable {
        /// What is unavailable.
        message: String,
        /// When to try again.
        retry_after: Duration,
    },
    /// A watch asked for events after a revision whose successors have
    /// expired: it cannot be told what it missed, and must resynchronise.
    #[error(
        "out of range: the events of {name} after revision {since} have expired; the oldest revision kept is {oldest}: \
         read the cluster (GetCluster) and watch again from the revision it returns"
    )]
    RevisionExpired {
        /// The cluster.
        name: String,
        /// The revision the watch asked to resume after.
        since: i64,
        /// The oldest revision still kept.
        oldest: i64,
    },
    /// A bug or an unexpected failure; the message is logged, not shown.
    #[error("internal error: {0}")]
    Internal(String),
}

fn describe(violations: &[FieldViolation]) -> String {
    violations
        .iter()
        .map(|v| format!("{}: {}", v.field, v.description))
        .collect::<Vec<_>>()
        .join("; ")
}

impl Error {
    /// A single field violation.
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        Error::InvalidArgument(vec![FieldViolation::new(field, description)])
    }

    /// A state precondition on `subject`.
    pub fn precondition(subject: impl Into<String>, description: impl Into<String>) -> Self {
        Error::FailedPrecondition(vec![PreconditionViolation {
            kind: "STATE".into(),
            subject: subject.into(),
            description: description.into(),
        }])
    }

    /// The stable reason of `ErrorInfo`.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::InvalidArgument(_) => "INVALID_ARGUMENT",
            Error::NotFound { .. } => "NOT_FOUND",
            Error::AlreadyExists { .. } => "ALREADY_EXISTS",
            Error::EtagMismatch { .. } => "ETAG_MISMATCH",
            Error::FailedPrecondition(_) => "FAILED_PRECONDITION",
            Error::QuotaExceeded(_) => "QUOTA_EXCEEDED",
            Error::PermissionDenied(_) => "PERMISSION_DENIED",
            Error::Unauthenticated(_) => "UNAUTHENTICATED",
            Error::RequestIdReused { .. } => "REQUEST_ID_REUSED",
            Error::RateLimited { .. } => "RATE_LIMITED",
            Error::Unavailable { .. } => "UNAVAILABLE",
            Error::RevisionExpired { .. } => "REVISION_EXPIRED",
            Error::Internal(_) => "INTERNAL",
        }
    }
}

/// Most field violations one answer lists: enough to fix a request, and a
/// bound on what a hostile one can make the server build. The message and
/// its details travel in HTTP/2 headers, which clients cap at 16 KiB or so.
pub const MAX_VIOLATIONS: usize = 20;

/// Most items of a repeated request field that are looked at one by one;
/// a longer list is refused as a whole before it is walked.
pub const MAX_REPEATED: usize = 64;

/// Collects field violations and turns them into one error: at most
/// [`MAX_VIOLATIONS`], then one that says how many more there were.
#[derive(Debug, Default)]
pub struct Violations {
    list: Vec<FieldViolation>,
    more: usize,
}

impl Violations {
    /// Adds a violation.
    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.push(FieldViolation::new(field, description));
    }

    fn push(&mut self, violation: FieldViolation) {
        if self.list.len() < MAX_VIOLATIONS {
            self.list.push(violation);
        } else {
            self.more += 1;
        }
    }

    /// Whether the answer is full: later checks may be skipped.
    pub fn is_full(&self) -> bool {
        self.list.len() >= MAX_VIOLATIONS
    }

    /// Adds the violations of an error if it is an `InvalidArgument`; other errors pass through.
    pub fn absorb<T>(&mut self, result: Result<T>) -> Result<Option<T>> {
        match result {
            Ok(v) => Ok(Some(v)),
            Err(Error::InvalidArgument(vs)) => {
                vs.into_iter().for_each(|fv| self.push(fv));
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Refuses the repeated field `field` as a whole when it has more than
    /// `max` items; `true` when it did (the caller then does not walk it).
    pub fn too_many(&mut self, field: &str, len: usize, max: usize) -> bool {
        if len <= max {
            return false;
        }
        self.add(field, format!("must have at most {max} items, got {len}"));
        true
    }

    /// `Ok` when nothing was added.
    pub fn finish(self) -> Result<()> {
        if self.list.is_empty() {
            return Ok(());
        }
        Err(self.into_error())
    }

    /// The violations added so far, as the error to answer now.
    pub fn into_error(mut self) -> Error {
        if self.more > 0 {
            self.list.push(FieldViolation::new(
                "",
                format!(
                    "{} more violations are not listed; fix these first",
                    self.more
                ),
            ));
        }
        Error::InvalidArgument(self.list)
    }
}

/// Longest piece of a caller's value that an error message repeats.
const SHOWN_MAX: usize = 48;

/// A caller's value as an error message shows it: quoted, and cut short, so
/// that an answer about a huge value stays small (gRPC carries the message
/// and its details in HTTP/2 headers).
pub fn shown(value: &str) -> String {
    if value.len() <= SHOWN_MAX {
        return format!("{value:?}");
    }
    let mut end = SHOWN_MAX;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}… ({} bytes)", &value[..end], value.len())
}

#[cfg(test)]
mod shown_tests {
    use super::shown;

    #[test]
    fn long_values_are_cut() {
        assert_eq!(shown("abc"), "\"abc\"");
        let long = "é".repeat(1000);
        let s = shown(&long);
        assert!(s.len() < 80, "{s}");
        assert!(s.ends_with("(2000 bytes)"));
    }
}

#[cfg(test)]
mod bounds {
    use super::*;

    #[test]
    fn an_answer_lists_at_most_max_violations_then_the_count_of_the_rest() {
        let mut v = Violations::default();
        for i in 0..MAX_VIOLATIONS + 7 {
            v.add(format!("f{i}"), "bad");
        }
        assert!(v.is_full());
        match v.finish() {
            Err(Error::InvalidArgument(list)) => {
                assert_eq!(list.len(), MAX_VIOLATIONS + 1);
                assert_eq!(list[MAX_VIOLATIONS].field, "");
                assert!(list[MAX_VIOLATIONS].description.starts_with("7 more"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_repeated_field_too_long_is_refused_as_a_whole() {
        let mut v = Violations::default();
        assert!(!v.too_many("xs", MAX_REPEATED, MAX_REPEATED));
        assert!(v.too_many("xs", MAX_REPEATED + 1, MAX_REPEATED));
        match v.finish() {
            Err(Error::InvalidArgument(list)) => {
                assert_eq!(list.len(), 1);
                assert_eq!(list[0].field, "xs");
            }
            other => panic!("{other:?}"),
        }
    }
}
