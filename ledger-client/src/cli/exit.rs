//! The CLI's exit codes, mapped once from every error and verdict.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | intact / ok |
//! | 1 | verification found a break |
//! | 2 | usage error (bad flag, bad argument, invalid journey or step file), or the node refused the call (its message is printed) |
//! | 3 | file (or node) unreadable or unreachable, or the node failed to answer properly |
//! | 4 | evidence incomplete |
//! | 5 | the evidence cannot be checked against the anchor given (another network's, a fingerprint that matches nothing, a secret key given as the anchor) |

use super::replay::ReplayError;
use crate::client;
use ledger_core::VerdictKind;
use std::process::ExitCode;

/// Why a command failed before it could give a verdict.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error("{path}: {reason}")]
    Unreadable { path: String, reason: String },
    #[error("{path}: cannot write: {reason}")]
    Unwritable { path: String, reason: String },
    #[error("{0}")]
    Node(#[from] client::Error),
    #[error("{0}")]
    Replay(#[from] ReplayError),
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

pub const OK: u8 = 0;
pub const BROKEN: u8 = 1;
pub const USAGE: u8 = 2;
pub const UNREADABLE: u8 = 3;
pub const INCOMPLETE: u8 = 4;
pub const UNVERIFIABLE: u8 = 5;

pub fn for_error(err: &CliError) -> ExitCode {
    ExitCode::from(code_for_error(err))
}

/// The one mapping from errors to exit codes. Every match is exhaustive with no catch-all
/// arm, so a new error variant does not compile until someone picks its code.
pub fn code_for_error(err: &CliError) -> u8 {
    let node_error = match err {
        CliError::Usage(_) => return USAGE,
        CliError::Unreadable { .. } | CliError::Unwritable { .. } | CliError::Runtime(_) => {
            return UNREADABLE
        }
        CliError::Replay(ReplayError::Journey(_) | ReplayError::NotReplayable { .. }) => {
            return USAGE
        }
        CliError::Node(e) | CliError::Replay(ReplayError::Append { source: e, .. }) => e,
    };
    match node_error {
        // The caller has to change something: the address, the token, the request.
        client::Error::InvalidEndpoint { .. }
        | client::Error::InvalidToken
        | client::Error::Rejected { .. } => USAGE,
        // The node could not be reached or did not answer usably.
        client::Error::Unreachable { .. }
        | client::Error::Timeout { .. }
        | client::Error::TimeoutRetried { .. }
        | client::Error::Failed { .. }
        | client::Error::BadResponse { .. }
        | client::Error::ExportLength { .. }
        | client::Error::TooLarge { .. } => UNREADABLE,
        // The bundle file could not be written.
        client::Error::Write(_) => UNREADABLE,
    }
}

pub fn for_verdict(kind: VerdictKind) -> ExitCode {
    ExitCode::from(code_for_verdict(kind))
}

pub fn code_for_verdict(kind: VerdictKind) -> u8 {
    match kind {
        VerdictKind::Intact => OK,
        VerdictKind::Broken => BROKEN,
        VerdictKind::Incomplete => INCOMPLETE,
        VerdictKind::Unverifiable => UNVERIFIABLE,
    }
}
