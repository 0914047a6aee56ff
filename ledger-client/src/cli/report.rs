//! `ledger report`: an exported bundle rendered for people as one self-contained HTML file.
//! The page and the verdict on it are ledger-report's (the node's web page renders the
//! same page); this command only reads the bundle, writes the file and reports what it
//! wrote.

use super::exit::{self, CliError};
use ledger_core::{Scope, VerdictKind};
use std::path::Path;
use std::process::ExitCode;

pub use ledger_report::{check, Checked, NotABundle};

/// `ledger report`: checks the bundle, writes the page, exits 0 whatever the verdict (the
/// verdict is the page's subject, not the command's outcome); a file that is not a bundle
/// writes nothing and exits 1 like `verify-bundle`.
pub(super) fn run(
    bundle_path: &Path,
    out: &Path,
    anchor: Option<&super::AnchorArg>,
    whole_feeds: bool,
    output: super::Output,
) -> Result<ExitCode, CliError> {
    let anchor = anchor.map(super::AnchorArg::resolve).transpose()?;
    let bytes = super::read(bundle_path)?;
    let scope = if whole_feeds {
        Scope::WholeFeeds
    } else {
        Scope::CoiExport
    };
    let working =
        super::progress::spinner(format!("verifying and rendering {}", bundle_path.display()));
    let outcome = check(&bytes, anchor, scope).map(|c| {
        let html = c.to_html();
        (c, html)
    });
    working.finish_and_clear();
    let (checked, html) = match outcome {
        Ok(done) => done,
        Err(e) => {
            let code = exit::code_for_verdict(VerdictKind::Broken);
            match output {
                super::Output::Json => super::out::println(
                    serde_json::json!({
                        "error": format!("{}: {e}; no report written", bundle_path.display()),
                        "exit_code": code,
                        "written": null,
                    })
                    .to_string(),
                ),
                super::Output::Text => {
                    super::out::eprintln(format_args!(
                        "ledger: {}: {e}; no report written",
                        bundle_path.display()
                    ));
                }
            }
            return Ok(ExitCode::from(code));
        }
    };
    let html = html.map_err(|e| CliError::Unwritable {
        path: out.display().to_string(),
        reason: format!("the report could not be rendered: {e}"),
    })?;
    super::write(out, html.as_bytes())?;
    let v = checked.verdict();
    if output == super::Output::Json {
        super::out::println(
            serde_json::json!({
                "written": out.display().to_string(),
                "bytes": html.len(),
                "verdict": v.kind.as_str(),
                "status": v.status.as_str(),
                "n_events": v.n_events,
                "n_findings": v.findings.len(),
                "anchor_fingerprint": checked.anchor().map(|a| a.fingerprint()),
            })
            .to_string(),
        );
        return Ok(ExitCode::SUCCESS);
    }
    super::out::eprintln(format_args!(
        "wrote {} ({}, {} events, {} findings{})",
        out.display(),
        v.kind.as_str(),
        v.n_events,
        v.findings.len(),
        if checked.anchor().is_some() {
            ""
        } else {
            "; anchor NOT checked: pass --anchor"
        }
    ));
    Ok(ExitCode::SUCCESS)
}
