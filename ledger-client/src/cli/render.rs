//! How verdicts look: a table for people, JSON for programs.

use comfy_table::{presets::UTF8_FULL, ContentArrangement, Table};
use ledger_core::bundle::BundleReport;
use ledger_core::PublicKey;
use serde_json::json;

pub fn verdict_json(report: &BundleReport) -> String {
    let v = &report.verdict;
    let findings: Vec<_> = v
        .findings
        .iter()
        .map(|f| json!({ "code": f.code.as_str(), "events": f.events.iter().map(|e| e.to_hex()).collect::<Vec<_>>(), "message": f.message, "depends_on_missing": f.depends_on_missing }))
        .collect();
    let doc = json!({
        "verdict": v.kind.as_str(),
        "status": v.status.as_str(),
        "coi": v.coi.as_ref().map(|c| c.as_str().to_owned()),
        "n_events": v.n_events,
        "findings": findings,
    });
    doc.to_string()
}

pub fn verdict_text(report: &BundleReport, anchor: &PublicKey) -> String {
    let v = &report.verdict;
    let mut out = String::new();
    let headline = match v.kind {
        ledger_core::VerdictKind::Intact => "INTACT: every check passed, no finding",
        ledger_core::VerdictKind::Broken => "BROKEN: the evidence proves a break in the chain",
        ledger_core::VerdictKind::Incomplete => {
            "INCOMPLETE: no break proven, but evidence is missing"
        }
    };
    out.push_str(&format!("{headline}\n"));
    if let Some(coi) = &v.coi {
        out.push_str(&format!("chain:    {coi}\n"));
    }
    out.push_str(&format!("status:   {}\n", v.status.as_str()));
    out.push_str(&format!("events:   {}\n", v.n_events));
    out.push_str(&format!("anchor:   {}\n", anchor.fingerprint()));
    if let Some(b) = &report.bundle {
        out.push_str(&format!("exporter: {} at {}\n", b.exporter, b.exported_at));
        out.push_str(&format!(
            "certificates: {}, revocations: {}, checkpoints: {}\n",
            b.certificates.len(),
            b.revocations.len(),
            b.checkpoints.len()
        ));
        if let Some(p) = &v.projection {
            if let Some((from, to)) = p.span() {
                out.push_str(&format!("span:     {from} to {to}\n"));
            }
        }
    }
    if !v.findings.is_empty() {
        let mut table = Table::new();
        table
            .load_preset(UTF8_FULL)
            .set_content_arrangement(ContentArrangement::Dynamic)
            .set_width(120);
        table.set_header(vec!["code", "events", "finding"]);
        for f in &v.findings {
            let events: Vec<String> = f.events.iter().map(|e| e.short()).collect();
            let code = if f.depends_on_missing {
                format!("{} (?)", f.code)
            } else {
                f.code.as_str().to_owned()
            };
            table.add_row(vec![code, events.join("\n"), f.message.clone()]);
        }
        out.push_str(&format!("{table}\n"));
    }
    out
}
