//! Standard output and standard error for every command. When the reader goes away
//! (`ledger chains | head`, `ledger replay ... 2>&1 | head -3`) the rest of the output is
//! dropped instead of panicking, and the command still ends with the exit code its result
//! calls for: a verdict or an error is never turned into a success, nor into a panic's
//! 101, by a closed pipe.
//!
//! `eprintln!` is refused by clippy in this crate (`clippy.toml`): it panics when standard
//! error is closed.

use std::io::{ErrorKind, Write};
use std::sync::atomic::{AtomicBool, Ordering};

static CLOSED: AtomicBool = AtomicBool::new(false);

/// Writes `text` as is, unless standard output was found closed.
pub(crate) fn print(text: impl std::fmt::Display) {
    if closed() {
        return;
    }
    let mut out = std::io::stdout().lock();
    if let Err(e) = write!(out, "{text}").and_then(|()| out.flush()) {
        if e.kind() != ErrorKind::BrokenPipe {
            eprintln(format_args!(
                "ledger: writing to standard output: {e}; the rest of the output is dropped"
            ));
        }
        CLOSED.store(true, Ordering::Relaxed);
    }
}

/// [`print`] with a newline.
pub(crate) fn println(text: impl std::fmt::Display) {
    print(format_args!("{text}\n"));
}

/// Whether standard output is closed (commands that stream until stopped, like `watch`,
/// end then).
pub(crate) fn closed() -> bool {
    CLOSED.load(Ordering::Relaxed)
}

/// Writes `text` to standard error as is. A failed write is dropped: standard error is
/// where the failure would have to be reported, so there is nowhere left to say it, and
/// the exit code still tells how the command ended.
pub(crate) fn eprint(text: impl std::fmt::Display) {
    let _ = write!(std::io::stderr().lock(), "{text}");
}

/// [`eprint`] with a newline.
pub(crate) fn eprintln(text: impl std::fmt::Display) {
    eprint(format_args!("{text}\n"));
}
