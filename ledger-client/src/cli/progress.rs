//! Progress on long work, on standard error. indicatif draws nothing when standard error is
//! not a terminal (pipes, CI, scripts reading `--output json`), and the templates use no
//! colour, so `NO_COLOR` and dumb terminals get plain text. What a command prints on
//! standard output is never touched.

use indicatif::{ProgressBar, ProgressStyle};
use std::time::Duration;

/// A spinner with a message and the time spent, for work whose length is not known.
pub fn spinner(message: impl Into<String>) -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    // A dumb terminal cannot redraw a line in place.
    if std::env::var("TERM").is_ok_and(|t| t == "dumb") {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} ({elapsed})") {
        bar.set_style(style);
    }
    bar.set_message(message.into());
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// A spinner that also counts bytes (an export arriving from the node).
pub fn bytes(message: impl Into<String>) -> ProgressBar {
    let bar = spinner(message);
    if let Ok(style) =
        ProgressStyle::with_template("{spinner} {msg}: {bytes} ({binary_bytes_per_sec}, {elapsed})")
    {
        bar.set_style(style);
    }
    bar
}
