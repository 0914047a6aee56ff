//! How verdicts and node answers look: a table for people, JSON for programs (one document,
//! or one object per line for streams: `watch`, `replay`).

use super::replay::Replayed;
use crate::client::{
    AlertItem, AppendReceipt, ChainsPage, ChainsQuery, NodeFinding, NodeInfo, Verification, Watched,
};
use comfy_table::{presets::UTF8_FULL, ContentArrangement, Table};
use ledger_core::bundle::{AnchorTrust, BundleReport};
use ledger_core::{Certificate, Coi, Event, PublicKey, Severity, SiteId, Timestamp, VerdictKind};
use ledger_report::celsius;
use serde_json::{json, Value};
use std::collections::HashMap;

/// A certificate the verdict rests on: issued by the trusted anchor, and how many of the
/// bundle's events its key signed while it was valid.
struct Basis<'a> {
    cert: &'a Certificate,
    events_signed: usize,
}

/// The certificates the trusted anchor issued, in the bundle's order, with the events each
/// one's key signed. Empty when no anchor was established.
fn basis(report: &BundleReport) -> Vec<Basis<'_>> {
    let (Some(bundle), Some(anchor)) = (&report.bundle, &report.anchor) else {
        return Vec::new();
    };
    let mut signed: HashMap<(&SiteId, &PublicKey), Vec<Timestamp>> = HashMap::new();
    for e in &bundle.events {
        signed
            .entry((e.author(), e.key()))
            .or_default()
            .push(e.recorded_at());
    }
    bundle
        .certificates
        .iter()
        .filter(|c| c.network == bundle.network && c.signed_by(anchor))
        .map(|cert| Basis {
            cert,
            events_signed: signed
                .get(&(&cert.site, &cert.key))
                .map_or(0, |at| at.iter().filter(|t| cert.valid_at(**t)).count()),
        })
        .collect()
}

fn anchor_source(trusted: &AnchorTrust) -> &'static str {
    match trusted {
        AnchorTrust::Key(_) => "the anchor key you gave",
        AnchorTrust::Fingerprint(_) => {
            "the anchor key the bundle carries, which matches the fingerprint you gave"
        }
        AnchorTrust::Unchecked => "nothing you gave: the anchor was NOT checked",
    }
}

/// The time span of the chain's events as recorded by their sites.
fn recorded_span(report: &BundleReport) -> Option<(Timestamp, Timestamp)> {
    let events = &report.bundle.as_ref()?.events;
    let first = events.iter().map(|e| e.recorded_at()).min()?;
    let last = events.iter().map(|e| e.recorded_at()).max()?;
    Some((first, last))
}

fn n_missing(report: &BundleReport) -> usize {
    report
        .verdict
        .findings
        .iter()
        .filter(|f| f.severity() == Severity::Missing)
        .count()
}

pub fn verdict_json(report: &BundleReport, trusted: &AnchorTrust) -> String {
    let v = &report.verdict;
    let (listed, left_out) =
        ledger_core::finding::shown(&v.findings, ledger_core::finding::FINDINGS_SHOWN_PER_CODE);
    let findings: Vec<_> = listed
        .iter()
        .map(|f| json!({ "code": f.code.as_str(), "events": f.events.iter().map(|e| e.to_hex()).collect::<Vec<_>>(), "message": f.message, "depends_on_missing": f.depends_on_missing }))
        .collect();
    let certificates: Vec<_> = basis(report)
        .iter()
        .map(|b| {
            json!({
                "site": b.cert.site.as_str(),
                "role": b.cert.role.as_str(),
                "key_fingerprint": b.cert.key.fingerprint(),
                "valid_from": b.cert.valid_from.to_string(),
                "valid_until": b.cert.valid_until.to_string(),
                "events_signed": b.events_signed,
            })
        })
        .collect();
    let bundle = report.bundle.as_ref();
    let doc = json!({
        "verdict": v.kind.as_str(),
        "status": v.status.as_str(),
        "coi": v.coi.as_ref().map(|c| c.as_str().to_owned()),
        "n_events": v.n_events,
        "findings": findings,
        "n_findings": v.findings.len(),
        "findings_not_listed": left_out
            .iter()
            .map(|(code, n)| json!({ "code": code.as_str(), "count": n }))
            .collect::<Vec<_>>(),
        "evidence_complete": n_missing(report) == 0,
        "rests_on": {
            "anchor_fingerprint": report.anchor.map(|a| a.fingerprint()),
            "anchor_from": match trusted {
                AnchorTrust::Key(_) => "key",
                AnchorTrust::Fingerprint(_) => "fingerprint",
                AnchorTrust::Unchecked => "unchecked",
            },
            "certificates": certificates,
            "revocations": bundle.map_or(0, |b| b.revocations.len()),
            "checkpoints": bundle.map_or(0, |b| b.checkpoints.len()),
            "exporter": bundle.map(|b| b.exporter.as_str().to_owned()),
            "exported_at": bundle.map(|b| b.exported_at.to_string()),
            "recorded_from": recorded_span(report).map(|(from, _)| from.to_string()),
            "recorded_to": recorded_span(report).map(|(_, to)| to.to_string()),
        },
    });
    doc.to_string()
}

/// The verdict for a person: the headline, the findings, then in plain words what was
/// verified and what that rests on.
pub fn verdict_text(report: &BundleReport, trusted: &AnchorTrust) -> String {
    let v = &report.verdict;
    let mut out = String::new();
    out.push_str(&format!("{}\n", headline(v.kind)));
    if let Some(coi) = &v.coi {
        out.push_str(&format!("chain:    {coi}\n"));
    }
    out.push_str(&format!("status:   {}\n", v.status.as_str()));
    out.push_str(&format!("events:   {}\n", v.n_events));
    if !v.findings.is_empty() {
        let mut table = Table::new();
        table
            .load_preset(UTF8_FULL)
            .set_content_arrangement(ContentArrangement::Dynamic)
            .set_width(120);
        table.set_header(vec!["code", "events", "finding"]);
        let (listed, left_out) =
            ledger_core::finding::shown(&v.findings, ledger_core::finding::FINDINGS_SHOWN_PER_CODE);
        for f in listed {
            let events: Vec<String> = f.events.iter().map(|e| e.short()).collect();
            let code = if f.depends_on_missing {
                format!("{} (?)", f.code)
            } else {
                f.code.as_str().to_owned()
            };
            table.add_row(vec![code, events.join("\n"), visible(&f.message)]);
        }
        for (code, n) in &left_out {
            table.add_row(vec![
                code.as_str().to_owned(),
                String::new(),
                format!(
                    "and {n} more {code} findings (only the first {} of each code are listed)",
                    ledger_core::finding::FINDINGS_SHOWN_PER_CODE
                ),
            ]);
        }
        out.push_str(&format!("{table}\n"));
    }
    let Some(bundle) = &report.bundle else {
        out.push_str("\nNothing was verified: the file is not a bundle.\n");
        return out;
    };
    out.push_str("\nWhat was verified, and what it rests on:\n");
    let Some(anchor) = report.anchor else {
        out.push_str(
            "- nothing: the anchor you trust could not be established from this bundle (see the finding above).\n",
        );
        return out;
    };
    out.push_str(&format!(
        "- The anchor {} is {}.\n",
        anchor.fingerprint(),
        anchor_source(trusted)
    ));
    let basis = basis(report);
    out.push_str(&format!(
        "- {} certificate(s) in the bundle were issued by that anchor{}\n",
        basis.len(),
        if basis.is_empty() { "." } else { ":" }
    ));
    for b in &basis {
        out.push_str(&format!(
            "    {:<14} {:<13} key {}…  valid {} to {}  signed {} event(s)\n",
            b.cert.site.as_str(),
            b.cert.role.as_str(),
            &b.cert.key.fingerprint()[..23],
            b.cert.valid_from,
            b.cert.valid_until,
            b.events_signed
        ));
    }
    let ignored = bundle.certificates.len() - basis.len();
    if ignored > 0 {
        out.push_str(&format!(
            "    and {ignored} certificate(s) NOT issued by it, ignored\n"
        ));
    }
    out.push_str(&format!(
        "- {} revocation(s) and {} checkpoint(s) were taken into account.\n",
        bundle.revocations.len(),
        bundle.checkpoints.len()
    ));
    match recorded_span(report) {
        Some((from, to)) => out.push_str(&format!(
            "- {} event(s), recorded from {from} to {to}, each checked for its signature, its \
             key's certificate at that time, its place in its site's feed and its parents, then \
             the chain of identity and custody as a whole.\n",
            bundle.events.len()
        )),
        None => out.push_str("- The bundle holds no event.\n"),
    }
    out.push_str(&format!(
        "- Exported by {} at {}; {}.\n",
        bundle.exporter,
        bundle.exported_at,
        if bundle.signature_valid() {
            "its signature over the whole bundle is valid"
        } else {
            "its signature over the bundle does NOT verify"
        }
    ));
    let missing = n_missing(report);
    if missing == 0 {
        out.push_str(
            "- The evidence is complete: every event the chain's stated heads reach is present.\n",
        );
    } else {
        out.push_str(&format!(
            "- The evidence is NOT complete: {missing} finding(s) above are about missing evidence.\n"
        ));
    }
    out
}

fn headline(kind: VerdictKind) -> &'static str {
    match kind {
        VerdictKind::Intact => "INTACT: every check passed, no finding",
        VerdictKind::Broken => "BROKEN: the evidence proves a break in the chain",
        VerdictKind::Incomplete => "INCOMPLETE: no break proven, but evidence is missing",
        VerdictKind::Unverifiable => {
            "UNVERIFIABLE: the evidence cannot be checked against your anchor; nothing is said about the chain"
        }
    }
}

fn table(header: Vec<&str>) -> Table {
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_width(120);
    table.set_header(header);
    table
}

pub fn receipt_json(r: &AppendReceipt, request_id: &str) -> Value {
    json!({
        "request_id": request_id,
        "event_id": r.event_id.to_hex(),
        "site": r.site.as_str(),
        "seq": r.seq.0,
        "recorded_at": r.recorded_at.to_string(),
        "duplicate": r.duplicate,
    })
}

pub fn receipt_text(r: &AppendReceipt) -> String {
    let duplicate = if r.duplicate {
        " (already appended: this is the original receipt)"
    } else {
        ""
    };
    format!(
        "{} {} seq {} recorded {}{duplicate}",
        r.event_id.to_hex(),
        r.site,
        r.seq.0,
        r.recorded_at
    )
}

pub fn replayed_json(r: &Replayed) -> Value {
    let mut doc = receipt_json(&r.receipt, &r.request_id);
    doc["step"] = json!(r.step);
    doc
}

pub fn replayed_text(r: &Replayed) -> String {
    format!("{:<24} {}", r.step, receipt_text(&r.receipt))
}

pub fn event_json(e: &Event, position: Option<u64>) -> Value {
    let signer = e.signer();
    let mut doc = json!({
        "event_id": e.id().to_hex(),
        "site": e.author().as_str(),
        "seq": e.seq().0,
        "coi": e.coi().as_str(),
        "kind": e.body().kind_name(),
        "summary": body_summary(e.body()),
        "occurred_at": e.occurred_at().to_string(),
        "recorded_at": e.recorded_at().to_string(),
        "operator": signer.operator.as_str(),
        "printed_name": signer.printed_name,
        "meaning": signer.meaning.as_str(),
        "parents": e.parents().iter().map(|p| p.to_hex()).collect::<Vec<_>>(),
    });
    if let Some(p) = position {
        doc["position"] = json!(p);
    }
    doc
}

pub fn chain_json(events: &[Event]) -> String {
    let events: Vec<Value> = events
        .iter()
        .enumerate()
        .map(|(i, e)| event_json(e, Some(i as u64 + 1)))
        .collect();
    json!({ "events": events }).to_string()
}

/// Signed text as a terminal should show it: a control or bidirectional-formatting
/// character (which nodes refuse in new events, but an older event or another
/// implementation's may hold) is shown as its `\u{..}` escape, so it cannot erase a
/// line or reorder what an auditor reads.
fn visible(text: &str) -> String {
    if ledger_core::event::unprintable(text).is_none() {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if ledger_core::event::is_unprintable(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

pub fn chain_text(coi: &Coi, events: &[Event]) -> String {
    let mut t = table(vec![
        "#",
        "event",
        "site",
        "seq",
        "kind",
        "what it recorded",
        "occurred",
        "signed by",
    ]);
    for (i, e) in events.iter().enumerate() {
        t.add_row(vec![
            (i + 1).to_string(),
            e.id().short(),
            e.author().to_string(),
            e.seq().0.to_string(),
            e.body().kind_name().to_owned(),
            body_summary(e.body()),
            e.occurred_at().to_string(),
            format!(
                "{} ({})",
                visible(&e.signer().printed_name),
                e.signer().meaning.as_str()
            ),
        ]);
    }
    format!("chain {coi}: {} events\n{t}\n", events.len())
}

pub fn watched_text(w: &Watched) -> String {
    let e = &w.event;
    format!(
        "{:>5} {} {} seq {} {} at {}: {}",
        w.position,
        e.id().short(),
        e.author(),
        e.seq().0,
        e.body().kind_name(),
        e.occurred_at(),
        body_summary(e.body())
    )
}

fn unit_list(units: &[ledger_core::UnitId]) -> String {
    units
        .iter()
        .map(|u| u.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// What an event recorded, in one line: units, shipper, from/to, seal, readings and
/// excursion, QC decision, approvals. Free text is shown with control characters escaped.
pub fn body_summary(b: &ledger_core::Body) -> String {
    use ledger_core::Body;
    match b {
        Body::Collection { units, dins } => {
            let u: Vec<String> = units
                .iter()
                .map(|n| {
                    format!(
                        "{} (deadline {}, {}..{})",
                        n.unit,
                        n.stability_deadline,
                        celsius(n.temp_min_centi),
                        celsius(n.temp_max_centi)
                    )
                })
                .collect();
            let d: Vec<&str> = dins.iter().map(|d| d.as_str()).collect();
            format!(
                "units {}{}",
                u.join(", "),
                if d.is_empty() {
                    String::new()
                } else {
                    format!("; DIN {}", d.join(", "))
                }
            )
        }
        Body::LabelVerification { unit, scanned_coi } => {
            format!("unit {unit}, scanned COI {scanned_coi}")
        }
        Body::Pack {
            shipper,
            units,
            seal,
        } => format!(
            "units {} into shipper {shipper}, seal {}",
            unit_list(units),
            visible(seal)
        ),
        Body::Unpack { shipper } => format!("shipper {shipper}"),
        Body::Dispatch { shipper, to } => format!("shipper {shipper} to {to}"),
        Body::Receipt {
            shipper,
            from,
            seal_intact,
            scanned_coi,
        } => format!(
            "shipper {shipper} from {from}, seal {}, scanned COI {scanned_coi}",
            if *seal_intact { "intact" } else { "BROKEN" }
        ),
        Body::Store { unit, location } => format!("unit {unit} at {}", visible(location)),
        Body::Retrieve { unit, location } => format!("unit {unit} from {}", visible(location)),
        Body::ManufacturingStep { units, .. } => format!("units {}", unit_list(units)),
        Body::Transformation { inputs, outputs } => {
            let o: Vec<&str> = outputs.iter().map(|n| n.unit.as_str()).collect();
            format!("{} -> {}", unit_list(inputs), o.join(", "))
        }
        Body::ConditionRecord {
            units,
            readings,
            min_centi,
            max_centi,
            excursion,
        } => format!(
            "units {}: {} reading(s), {}..{}{}",
            unit_list(units),
            readings.len(),
            celsius(*min_centi),
            celsius(*max_centi),
            if *excursion {
                ", EXCURSION flagged"
            } else {
                ""
            }
        ),
        Body::ExcursionDisposition {
            condition,
            accepted,
            reason,
        } => format!(
            "{} the excursion of {}: {}",
            if *accepted { "accepted" } else { "REJECTED" },
            condition.short(),
            visible(reason)
        ),
        Body::QcHold { units, reason } => format!("HOLD {}: {}", unit_list(units), visible(reason)),
        Body::QcRelease { units } => format!("RELEASED {}", unit_list(units)),
        Body::QcReject { units, reason } => {
            format!("REJECTED {}: {}", unit_list(units), visible(reason))
        }
        Body::Administration { unit, scanned_coi } => format!("unit {unit} to COI {scanned_coi}"),
        Body::Destruction { unit, reason, .. } => format!("unit {unit}: {}", visible(reason)),
        Body::Reassignment {
            from_coi,
            units,
            approvals,
            ..
        } => {
            let a: Vec<String> = approvals
                .iter()
                .map(|a| visible(a.operator.as_str()))
                .collect();
            format!(
                "units {} from chain {from_coi}, approved by {}",
                units
                    .iter()
                    .map(|n| n.unit.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                a.join(", ")
            )
        }
        Body::Correction { target, reason } => {
            format!("corrects {}: {}", target.short(), visible(reason))
        }
        Body::Note { text } => visible(text),
        Body::Unknown(u) => format!("unknown kind {}", u.kind()),
    }
}

pub fn alert_json(a: &AlertItem) -> Value {
    json!({
        "kind": a.kind,
        "severity": if a.critical { "critical" } else { "warning" },
        "coi": a.coi.as_ref().map(|c| c.as_str()),
        "unit": a.unit,
        "site": a.site.as_ref().map(|s| s.as_str()),
        "event": a.event.map(|e| e.to_hex()),
        "message": a.message,
        "since": optional_time(a.since),
        "raised": optional_time(a.raised),
        "cleared": optional_time(a.cleared),
    })
}

pub fn alerts_json(alerts: &[AlertItem]) -> String {
    json!({ "alerts": alerts.iter().map(alert_json).collect::<Vec<_>>() }).to_string()
}

pub fn alerts_text(alerts: &[AlertItem]) -> String {
    let mut t = table(vec![
        "severity", "kind", "chain", "unit", "site", "since", "state", "what",
    ]);
    for a in alerts {
        t.add_row(vec![
            if a.critical { "CRITICAL" } else { "warning" }.to_owned(),
            a.kind.clone(),
            a.coi.as_ref().map_or("-".to_owned(), ToString::to_string),
            a.unit.as_deref().map_or("-".to_owned(), visible),
            a.site.as_ref().map_or("-".to_owned(), ToString::to_string),
            a.since.map_or("-".to_owned(), |t| t.to_string()),
            a.cleared
                .map_or("open".to_owned(), |t| format!("cleared {t}")),
            visible(&a.message),
        ]);
    }
    let n_open = alerts.iter().filter(|a| a.cleared.is_none()).count();
    format!("{n_open} open alerts\n{t}\n")
}

pub fn alert_change_text(a: &AlertItem) -> String {
    match a.cleared {
        Some(t) => format!(
            "{t} CLEARED {} {}: {}",
            a.kind,
            a.coi.as_ref().map_or("-".to_owned(), ToString::to_string),
            visible(&a.message)
        ),
        None => format!(
            "{} RAISED {} {} {}: {}",
            a.raised.map_or("-".to_owned(), |t| t.to_string()),
            if a.critical { "CRITICAL" } else { "warning" },
            a.kind,
            a.coi.as_ref().map_or("-".to_owned(), ToString::to_string),
            visible(&a.message)
        ),
    }
}

/// Where a chain's live units are, in words.
fn places_text(c: &crate::client::ChainSummary) -> String {
    let v: Vec<String> = c
        .places
        .iter()
        .map(|p| match (&p.transit, &p.site) {
            (Some((from, to, since)), _) => format!(
                "{}: in transit {from} -> {to} since {since}",
                visible(&p.unit)
            ),
            (None, Some(site)) => match &p.location {
                Some(l) => format!("{}: {site} ({})", visible(&p.unit), visible(l)),
                None => format!("{}: {site}", visible(&p.unit)),
            },
            (None, None) => visible(&p.unit),
        })
        .collect();
    if v.is_empty() {
        "-".to_owned()
    } else {
        v.join("; ")
    }
}

/// "OVERDUE 3h 10m" or "4h 20m" until the deadline.
pub fn time_left_text(deadline: Option<Timestamp>, now: Timestamp) -> String {
    match deadline {
        None => "-".to_owned(),
        Some(d) if d <= now => format!("OVERDUE {}", ledger_core::Millis(now.0 - d.0)),
        Some(d) => ledger_core::Millis(d.0 - now.0).to_string(),
    }
}

fn finding_json(f: &NodeFinding) -> Value {
    json!({
        "code": f.code,
        "events": f.events.iter().map(|e| e.to_hex()).collect::<Vec<_>>(),
        "message": f.message,
        "depends_on_missing": f.depends_on_missing,
    })
}

pub fn verification_json(coi: &Coi, v: &Verification) -> String {
    json!({
        "verdict": v.verdict.as_str(),
        "status": v.status.as_str(),
        "coi": coi.as_str(),
        "n_events": v.n_events,
        "findings": v.findings.iter().map(finding_json).collect::<Vec<_>>(),
    })
    .to_string()
}

pub fn verification_text(coi: &Coi, node: &str, v: &Verification) -> String {
    let mut out = format!(
        "{}\nchain:    {coi}\nstatus:   {}\nevents:   {}\nverifier: the node at {node}\n",
        headline(v.verdict),
        v.status.as_str(),
        v.n_events
    );
    if !v.findings.is_empty() {
        let mut t = table(vec!["code", "events", "finding"]);
        for f in &v.findings {
            let events: Vec<String> = f.events.iter().map(|e| e.short()).collect();
            let code = if f.depends_on_missing {
                format!("{} (?)", f.code)
            } else {
                f.code.clone()
            };
            t.add_row(vec![code, events.join("\n"), visible(&f.message)]);
        }
        out.push_str(&format!("{t}\n"));
    }
    out
}

fn optional_time(t: Option<ledger_core::Timestamp>) -> Value {
    t.map_or(Value::Null, |t| json!(t.to_string()))
}

pub fn chains_json(page: &ChainsPage) -> String {
    let chains: Vec<Value> = page
        .chains
        .iter()
        .map(|c| {
            json!({
                "coi": c.coi.as_str(),
                "status": c.status.as_str(),
                "custodians": c.custodians.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
                "next_stability_deadline": optional_time(c.next_stability_deadline),
                "n_events": c.n_events,
                "n_open_findings": c.n_open_findings,
                "last_event_at": optional_time(c.last_event_at),
                "n_flagged_units": c.n_flagged_units,
                "n_open_alerts": c.n_open_alerts,
                "places": c.places.iter().map(|p| json!({
                    "unit": p.unit,
                    "site": p.site.as_ref().map(|s| s.as_str()),
                    "location": p.location,
                    "in_transit": p.transit.as_ref().map(|(f, t, since)| json!({"from": f.as_str(), "to": t.as_str(), "since": since.to_string()})),
                    "stability_deadline": optional_time(p.stability_deadline),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "chains": chains,
        "next_page_token": page.next_page_token.as_ref().map(|t| t.as_str()),
    })
    .to_string()
}

/// `status` and `page_size` are the options the page was asked with: the command that
/// fetches the next page repeats them, or it would list other chains in pages of another
/// size.
pub fn chains_text(page: &ChainsPage, query: &ChainsQuery, now: Timestamp) -> String {
    let mut t = table(vec![
        "chain",
        "status",
        "where",
        "next deadline",
        "time left",
        "alerts",
        "findings",
        "events",
        "last event",
    ]);
    let time = |t: Option<ledger_core::Timestamp>| t.map_or("-".to_owned(), |t| t.to_string());
    for c in &page.chains {
        t.add_row(vec![
            c.coi.to_string(),
            c.status.as_str().to_owned(),
            places_text(c),
            time(c.next_stability_deadline),
            time_left_text(c.next_stability_deadline, now),
            c.n_open_alerts.to_string(),
            c.n_open_findings.to_string(),
            c.n_events.to_string(),
            time(c.last_event_at),
        ]);
    }
    let mut out = format!("{} chains\n{t}\n", page.chains.len());
    if let Some(token) = &page.next_page_token {
        // The command for the next page repeats every option, or it would list other
        // chains (or refuse the token of another sort).
        out.push_str("more: ledger chains");
        if let Some(status) = query.status {
            out.push_str(&format!(" --status {}", status.as_str()));
        }
        if let Some(page_size) = query.page_size {
            out.push_str(&format!(" --page-size {page_size}"));
        }
        if query.by_deadline {
            out.push_str(" --sort deadline");
        }
        if let Some(site) = &query.site {
            out.push_str(&format!(" --site {site}"));
        }
        if query.needs_action {
            out.push_str(" --needs-action");
        }
        if query.live_only {
            out.push_str(" --live");
        }
        out.push_str(&format!(" --page-token {}\n", token.as_str()));
    }
    out
}

pub fn node_info_json(n: &NodeInfo) -> String {
    let sites: Vec<Value> = n
        .sites
        .iter()
        .map(|s| {
            json!({
                "site": s.site.as_str(),
                "role": s.role.as_str(),
                "public_key": s.public_key.to_hex(),
                "key_fingerprint": s.public_key.fingerprint(),
                "feed_seq": s.feed_seq.0,
                "feed_head": s.feed_head.map(|h| h.to_hex()),
            })
        })
        .collect();
    json!({
        "network": n.network.as_str(),
        "anchor_fingerprint": n.anchor_fingerprint,
        "version": n.version,
        "n_events": n.n_events,
        "sites": sites,
    })
    .to_string()
}

pub fn node_info_text(endpoint: &str, n: &NodeInfo) -> String {
    let mut out = format!(
        "node:     {endpoint}\nnetwork:  {}\nanchor:   {}\nversion:  {}\nevents:   {}\n",
        n.network, n.anchor_fingerprint, n.version, n.n_events
    );
    let mut t = table(vec!["site", "role", "key", "feed seq", "feed head"]);
    for s in &n.sites {
        t.add_row(vec![
            s.site.to_string(),
            s.role.as_str().to_owned(),
            s.public_key.fingerprint(),
            s.feed_seq.0.to_string(),
            s.feed_head.map_or("-".to_owned(), |h| h.short()),
        ]);
    }
    out.push_str(&format!("{t}\n"));
    out
}

#[cfg(test)]
mod visible_tests {
    use super::visible;

    #[test]
    fn control_and_bidi_characters_are_shown_escaped() {
        assert_eq!(visible("K. Kim RN, Zürich"), "K. Kim RN, Zürich");
        assert_eq!(
            visible("K. Kim\u{1b}[2K\r\u{1b}[32mINTACT"),
            "K. Kim\\u{1b}[2K\\u{d}\\u{1b}[32mINTACT"
        );
        assert_eq!(visible("rtl\u{202e}gnp"), "rtl\\u{202e}gnp");
    }
}
