//! The CLI's exit codes, mapped once from every error and verdict.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | intact / ok |
//! | 1 | verification found a break |
//! | 2 | usage error (bad flag, bad argument, invalid journey file) |
//! | 3 | file (or node) unreadable or unreachable |
//! | 4 | evidence incomplete |

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
}

pub const OK: u8 = 0;
pub const BROKEN: u8 = 1;
pub const USAGE: u8 = 2;
pub const UNREADABLE: u8 = 3;
pub const INCOMPLETE: u8 = 4;

pub fn for_error(err: &CliError) -> ExitCode {
    ExitCode::from(match err {
        CliError::Usage(_) => USAGE,
        CliError::Unreadable { .. } | CliError::Unwritable { .. } => UNREADABLE,
    })
}

pub fn for_verdict(kind: VerdictKind) -> ExitCode {
    ExitCode::from(match kind {
        VerdictKind::Intact => OK,
        VerdictKind::Broken => BROKEN,
        VerdictKind::Incomplete => INCOMPLETE,
    })
}
