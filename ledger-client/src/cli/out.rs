//! Standard output for every command. When the reader goes away (`ledger chains | head`)
//! the rest of the output is dropped instead of panicking, and the command still ends
//! with the exit code its result calls for: a verdict is never turned into a success by a
//! closed pipe.

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
            eprintln!("ledger: writing to standard output: {e}; the rest of the output is dropped");
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
