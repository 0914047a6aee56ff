//! The one mapping from the node's errors to gRPC status codes. Every match is exhaustive
//! with no catch-all arm, so a new error variant does not compile until someone decides
//! its code.

use crate::kpi::KpiFailure;
use crate::ledger::AppendError;
use crate::store::StoreError;
use ledger_core::KpiError;
use proto::convert::ConvertError;
use tonic::{Code, Status};

pub fn append_error(e: &AppendError) -> Status {
    let code = match e {
        AppendError::NotLocalSite { .. }
        | AppendError::KeyNotUsable { .. }
        | AppendError::NoCollection { .. }
        | AppendError::Refused { .. } => Code::FailedPrecondition,
        AppendError::ScanInFuture { .. } => Code::InvalidArgument,
        AppendError::RequestIdReused { .. } => Code::AlreadyExists,
        AppendError::TooLarge { .. } | AppendError::QueueFull { .. } => Code::ResourceExhausted,
        AppendError::InFlight
        | AppendError::Stopped
        | AppendError::Closing
        | AppendError::IndexBehind { .. }
        | AppendError::CommitFailed { .. }
        | AppendError::FeedNotLearned { .. } => Code::Unavailable,
        AppendError::Storage(_) => Code::Internal,
    };
    Status::new(code, e.to_string())
}

pub fn invalid(e: &ConvertError) -> Status {
    Status::invalid_argument(e.to_string())
}

pub fn store_error(e: &StoreError) -> Status {
    Status::internal(format!("storage: {e}"))
}

pub fn kpi_failure(e: &KpiFailure) -> Status {
    let code = match e {
        KpiFailure::ChainTooLong { .. } | KpiFailure::TooManyEvents { .. } => {
            Code::ResourceExhausted
        }
        KpiFailure::Store { .. } | KpiFailure::Task(_) => Code::Internal,
        // The request's period is checked before the report is made.
        KpiFailure::Kpi(KpiError::EmptyPeriod { .. }) => Code::InvalidArgument,
        // A stored event's scan time so far off that a span overflows: the caller can
        // only ask for a period without it until that chain is corrected.
        KpiFailure::Kpi(KpiError::SpanOutOfRange { .. }) => Code::FailedPrecondition,
        // The node passes each chain once; twice is a bug here.
        KpiFailure::Kpi(KpiError::DuplicateChain { .. }) => Code::Internal,
    };
    Status::new(code, e.to_string())
}

/// gRPC's convention (and every other implementation's) for a message over the size limit
/// is RESOURCE_EXHAUSTED; tonic's decoder says OUT_OF_RANGE. This response layer turns
/// exactly that case into RESOURCE_EXHAUSTED, keeping tonic's message (which gives both
/// sizes).
pub fn remap_size_errors<B>(mut resp: http::Response<B>) -> http::Response<B> {
    let too_large = resp.headers().get("grpc-status").is_some_and(|v| v == "11")
        && resp
            .headers()
            .get("grpc-message")
            .and_then(|m| m.to_str().ok())
            .is_some_and(|m| m.contains("length too large") || m.contains("length%20too%20large"));
    if too_large {
        resp.headers_mut()
            .insert("grpc-status", http::HeaderValue::from_static("8"));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client retries UNAVAILABLE; the message says whether the node failed, is stopping
    /// or is only behind, since each asks something different of whoever reads it.
    #[test]
    fn why_an_append_or_read_is_unavailable_is_said_precisely() {
        for (e, message) in [
            (
                AppendError::Stopped,
                "the node stopped accepting appends after a storage failure; restart it",
            ),
            (
                AppendError::Closing,
                "the node is stopping; retry with the same request id once it is back",
            ),
            (
                AppendError::IndexBehind { waited_s: 10 },
                "the node's index has not caught up with the appends it answered after 10 s; retry",
            ),
        ] {
            let s = append_error(&e);
            assert_eq!((s.code(), s.message()), (Code::Unavailable, message));
        }
    }
}
