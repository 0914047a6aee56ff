//! Page building: the report's values, computed from a [`Checked`] bundle, and the
//! template they fill. Every field is a plain value (text, number, flag); the template adds
//! all markup and escapes every value.

use crate::{celsius, Checked, Frame};
use askama::Template;
use ledger_core::bundle::Bundle;
use ledger_core::{
    Body, Event, EventId, Finding, Millis, NewUnit, PublicKey, Scope, Severity, ShipperId, SiteId,
    Timestamp, UnitId, Verdict, VerdictKind,
};
use std::collections::{BTreeSet, HashMap, HashSet};

// ---- The page's values ----------------------------------------------------------------

/// A coordinate in the timeline, printed with one decimal to keep a long chain's page small.
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd)]
struct Px(f64);

impl std::fmt::Display for Px {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.1}", self.0)
    }
}

#[derive(Debug, Template)]
#[template(path = "report.html", whitespace = "minimize")]
pub(crate) struct Page {
    version: &'static str,
    coi: String,
    verdict: VerdictView,
    anchor_fingerprint: Option<String>,
    /// The anchor the bundle names (format 2), shown when it was not checked.
    named_anchor: Option<String>,
    status: &'static str,
    exporter: String,
    exported_at: String,
    exporter_key: String,
    network: String,
    n_events: usize,
    n_undecodable: usize,
    span: String,
    scope: &'static str,
    n_breaks: usize,
    n_missing: usize,
    findings: Vec<FindingView>,
    tl: Timeline,
    rows: Vec<Row>,
    certificates: Vec<CertificateView>,
    revocations: Vec<RevocationView>,
    checkpoints: Vec<CheckpointView>,
    defects: Vec<String>,
    /// A server's links and note above the verdict; `None` for the self-contained page and
    /// for a frame that has neither.
    nav: Option<Nav>,
    /// A server's script (see [`Frame::script_src`]).
    script_src: Option<String>,
}

impl Page {
    /// Puts the frame's parts in the page; an empty frame changes nothing.
    pub(crate) fn set_frame(&mut self, frame: &Frame) {
        let has_nav = !frame.links.is_empty() || frame.note.is_some();
        self.nav = has_nav.then(|| Nav {
            links: frame
                .links
                .iter()
                .map(|(label, href)| NavLink {
                    label: label.clone(),
                    href: href.clone(),
                })
                .collect(),
            note: frame.note.clone(),
        });
        self.script_src = frame.script_src.clone();
    }
}

#[derive(Debug)]
struct Nav {
    links: Vec<NavLink>,
    note: Option<String>,
}

#[derive(Debug)]
struct NavLink {
    label: String,
    href: String,
}

#[derive(Debug)]
struct VerdictView {
    word: &'static str,
    class: &'static str,
    headline: &'static str,
    sentence: &'static str,
}

fn verdict_view(kind: VerdictKind) -> VerdictView {
    match kind {
        VerdictKind::Intact => VerdictView {
            word: "INTACT",
            class: "intact",
            headline: "every check passed, no finding",
            sentence: "Every event is signed by a certified site, the sites' feeds and the causal order are unbroken, and identity, custody and condition hold at every step: this patient's chain can be relied on as recorded.",
        },
        VerdictKind::Broken => VerdictView {
            word: "BROKEN",
            class: "broken",
            headline: "the evidence proves a break in the chain",
            sentence: "At least one finding proves that identity, custody, condition or the record itself is wrong: this patient's chain cannot be relied on past the flagged events until every finding below has been investigated.",
        },
        VerdictKind::Unverifiable => VerdictView {
            word: "UNVERIFIABLE",
            class: "unverifiable",
            headline: "the evidence cannot be checked against your anchor",
            sentence: "This bundle was not made under the anchor given (another network's anchor, a fingerprint that matches nothing, or a secret key given in place of the public key): nothing below says whether this patient's chain is intact or broken. Check it again with the right anchor.",
        },
        VerdictKind::Incomplete => VerdictView {
            word: "INCOMPLETE",
            class: "incomplete",
            headline: "no break proven, but evidence is missing",
            sentence: "Nothing proves a break, but events are missing from the evidence: this patient's chain cannot be shown intact until the missing events listed below are produced and the chain is checked again.",
        },
    }
}

#[derive(Debug)]
struct EventRef {
    row: usize,
    href: Option<String>,
    short: String,
    full: String,
}

#[derive(Debug)]
struct FindingView {
    anchor: String,
    code: &'static str,
    severity: &'static str,
    class: &'static str,
    breaks: bool,
    message: String,
    events: Vec<EventRef>,
}

#[derive(Debug)]
struct Field {
    k: &'static str,
    v: String,
    href: Option<String>,
    bad: bool,
}

fn field(k: &'static str, v: impl Into<String>) -> Field {
    Field {
        k,
        v: v.into(),
        href: None,
        bad: false,
    }
}

fn bad_field(k: &'static str, v: impl Into<String>) -> Field {
    Field {
        bad: true,
        ..field(k, v)
    }
}

/// One finding as shown in the row of an event it concerns.
#[derive(Debug)]
struct RowFinding {
    anchor: String,
    code: &'static str,
    breaks: bool,
    message: String,
}

#[derive(Debug)]
struct Row {
    n: usize,
    time: String,
    recorded: Option<String>,
    site: String,
    seq: u64,
    operator: String,
    printed_name: String,
    meaning: &'static str,
    kind: &'static str,
    fields: Vec<Field>,
    id_short: String,
    id_full: String,
    findings: Vec<RowFinding>,
    /// Whether any finding of this row proves a break (else they are all missing evidence).
    breaks: bool,
}

#[derive(Debug)]
struct CertificateView {
    site: String,
    role: &'static str,
    network: String,
    key: String,
    from: String,
    until: String,
    anchor: &'static str,
    bad: bool,
    n_events: usize,
}

#[derive(Debug)]
struct RevocationView {
    site: String,
    key: String,
    from: String,
    reason: String,
    anchor: &'static str,
    bad: bool,
}

#[derive(Debug)]
struct CheckpointView {
    site: String,
    seq: u64,
    head: String,
    head_full: String,
    href: Option<String>,
    at: String,
    key: String,
    signature_valid: bool,
}

fn finding_anchor(idx: usize) -> String {
    format!("f-{}", idx + 1)
}

fn row_href(row: usize) -> String {
    format!("#ev-{row}")
}

pub(crate) fn page(c: &Checked) -> Page {
    let bundle = &c.bundle;
    let verdict = &c.verdict;
    let by_id: HashMap<EventId, &Event> = bundle.events.iter().map(|e| (e.id(), e)).collect();
    // Rows follow the verifier's causal order; it lists every distinct event once.
    let ordered: Vec<&Event> = verdict
        .order
        .iter()
        .filter_map(|id| by_id.get(id).copied())
        .collect();
    let row_of: HashMap<EventId, usize> = ordered
        .iter()
        .enumerate()
        .map(|(i, e)| (e.id(), i + 1))
        .collect();
    let event_ref = |id: &EventId| {
        let row = row_of.get(id).copied();
        EventRef {
            row: row.unwrap_or(0),
            href: row.map(row_href),
            short: id.short(),
            full: id.to_hex(),
        }
    };
    let mut findings_of: HashMap<EventId, Vec<usize>> = HashMap::new();
    let findings: Vec<FindingView> = verdict
        .findings
        .iter()
        .enumerate()
        .map(|(idx, f)| {
            let mut seen = HashSet::new();
            for id in &f.events {
                if seen.insert(*id) {
                    findings_of.entry(*id).or_default().push(idx);
                }
            }
            let breaks = f.severity() == Severity::Break;
            FindingView {
                anchor: finding_anchor(idx),
                code: f.code.as_str(),
                severity: severity_word(f),
                class: if breaks { "break" } else { "miss" },
                breaks,
                message: f.message.clone(),
                events: f.events.iter().map(event_ref).collect(),
            }
        })
        .collect();
    let excursions = excursion_records(verdict, &ordered);
    let rows: Vec<Row> = ordered
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let on_row: Vec<RowFinding> = findings_of
                .get(&e.id())
                .into_iter()
                .flatten()
                .map(|&idx| {
                    let f = &verdict.findings[idx];
                    RowFinding {
                        anchor: finding_anchor(idx),
                        code: f.code.as_str(),
                        breaks: f.severity() == Severity::Break,
                        message: f.message.clone(),
                    }
                })
                .collect();
            let signer = e.signer();
            Row {
                n: i + 1,
                time: e.occurred_at().to_string(),
                recorded: (e.recorded_at() != e.occurred_at()).then(|| e.recorded_at().to_string()),
                site: e.author().to_string(),
                seq: e.seq().0,
                operator: signer.operator.to_string(),
                printed_name: signer.printed_name.clone(),
                meaning: signer.meaning.as_str(),
                kind: e.body().kind_name(),
                fields: fields(e, &row_of, excursions.contains(&e.id())),
                id_short: e.id().short(),
                id_full: e.id().to_hex(),
                breaks: on_row.iter().any(|f| f.breaks),
                findings: on_row,
            }
        })
        .collect();
    let n_breaks = findings.iter().filter(|f| f.breaks).count();
    let anchored = |signed_by: bool| match (c.anchor.is_some(), signed_by) {
        (false, _) => ("not checked (no anchor given)", false),
        (true, true) => ("yes", false),
        (true, false) => ("NO: not signed by this anchor; ignored", true),
    };
    // When each (site, key) signed, to count the events each certificate covers.
    let mut signed_at: HashMap<(&SiteId, &PublicKey), Vec<Timestamp>> = HashMap::new();
    for e in &ordered {
        signed_at
            .entry((e.author(), e.key()))
            .or_default()
            .push(e.recorded_at());
    }
    let certificates = bundle
        .certificates
        .iter()
        .map(|cert| {
            let signed = c.anchor.is_some_and(|a| cert.signed_by(&a));
            let (anchor, bad) = anchored(signed && cert.network == bundle.network);
            CertificateView {
                site: cert.site.to_string(),
                role: cert.role.as_str(),
                network: cert.network.to_string(),
                key: cert.key.fingerprint(),
                from: cert.valid_from.to_string(),
                until: cert.valid_until.to_string(),
                anchor,
                bad,
                n_events: signed_at
                    .get(&(&cert.site, &cert.key))
                    .into_iter()
                    .flatten()
                    .filter(|&&at| cert.valid_at(at))
                    .count(),
            }
        })
        .collect();
    let revocations = bundle
        .revocations
        .iter()
        .map(|r| {
            let signed = c.anchor.is_some_and(|a| r.signed_by(&a));
            let (anchor, bad) = anchored(signed && r.network == bundle.network);
            RevocationView {
                site: r.site.to_string(),
                key: r.key.fingerprint(),
                from: r.effective_from.to_string(),
                reason: r.reason.clone(),
                anchor,
                bad,
            }
        })
        .collect();
    let checkpoints = bundle
        .checkpoints
        .iter()
        .map(|cp| CheckpointView {
            site: cp.site.to_string(),
            seq: cp.seq.0,
            head: cp.head.short(),
            head_full: cp.head.to_hex(),
            href: row_of.get(&cp.head).copied().map(row_href),
            at: cp.at.to_string(),
            key: cp.key.fingerprint(),
            signature_valid: cp.signature_valid(),
        })
        .collect();
    Page {
        version: env!("CARGO_PKG_VERSION"),
        coi: bundle.coi.to_string(),
        // Without an anchor, "every check passed" rests on keys the bundle vouches for
        // itself: never shown as intact.
        verdict: match (verdict.kind, c.anchor) {
            (VerdictKind::Intact, None) => VerdictView {
                word: "UNVERIFIED",
                class: "unverified",
                headline: "no anchor was given, so who signed could not be checked",
                sentence: "Every check that needs no anchor passed, but the certificates were judged only by the bundle's own word: this page does not show that the chain is intact. Make it again with the network's anchor (ledger report --anchor).",
            },
            (kind, _) => verdict_view(kind),
        },
        anchor_fingerprint: c.anchor.map(|a| a.fingerprint()),
        named_anchor: bundle.anchor.map(|a| a.fingerprint()),
        status: verdict.status.as_str(),
        exporter: bundle.exporter.to_string(),
        exported_at: bundle.exported_at.to_string(),
        exporter_key: bundle.exporter_key.fingerprint(),
        network: bundle.network.to_string(),
        n_events: verdict.n_events,
        n_undecodable: bundle.defects.len(),
        span: span_text(&ordered),
        scope: match c.scope {
            Scope::CoiExport => "this chain's share of each site's feed (a node's export: gaps between a site's events are expected)",
            Scope::WholeFeeds => "whole feeds (every seq of each site must be present: gaps are findings)",
        },
        n_breaks,
        n_missing: findings.len() - n_breaks,
        findings,
        tl: timeline(bundle, &ordered, &row_of, &findings_of, verdict, &excursions),
        rows,
        certificates,
        revocations,
        checkpoints,
        defects: bundle.defects.clone(),
        nav: None,
        script_src: None,
    }
}

fn severity_word(f: &Finding) -> &'static str {
    match (f.severity(), f.depends_on_missing) {
        (Severity::Break, _) => "break",
        (Severity::Unverifiable, _) => "cannot be checked",
        (Severity::Missing, true) => "missing evidence (judged without part of its past)",
        (Severity::Missing, false) => "missing evidence",
    }
}

fn span_text(events: &[&Event]) -> String {
    let first = events.iter().map(|e| e.occurred_at()).min();
    let last = events.iter().map(|e| e.occurred_at()).max();
    match (first, last) {
        (Some(a), Some(b)) => format!(
            "{a} to {b} ({}), by scan time",
            Millis(b.0.saturating_sub(a.0))
        ),
        _ => "no events".to_owned(),
    }
}

/// Condition records that are excursions: those the fold counted for a unit (a reading out
/// of the unit's range), plus any flagged by the site itself.
fn excursion_records(verdict: &Verdict, events: &[&Event]) -> HashSet<EventId> {
    let mut out: HashSet<EventId> = verdict
        .projection
        .iter()
        .flat_map(|p| p.units())
        .flat_map(|u| u.excursions.iter().copied())
        .collect();
    for e in events {
        if let Body::ConditionRecord {
            excursion: true, ..
        } = e.body()
        {
            out.insert(e.id());
        }
    }
    out
}

fn units_text(units: &[UnitId]) -> String {
    units
        .iter()
        .map(UnitId::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

fn new_units_text(units: &[NewUnit]) -> String {
    units
        .iter()
        .map(|u| {
            format!(
                "{} (deadline {}, {} to {})",
                u.unit,
                u.stability_deadline,
                celsius(u.temp_min_centi),
                celsius(u.temp_max_centi)
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn linked(k: &'static str, id: &EventId, row_of: &HashMap<EventId, usize>) -> Field {
    match row_of.get(id) {
        Some(&row) => Field {
            href: Some(row_href(row)),
            ..field(k, format!("#{row} {}", id.short()))
        },
        None => bad_field(k, format!("{} (not in the bundle)", id.short())),
    }
}

/// The key fields of an event's body, for its row.
fn fields(e: &Event, row_of: &HashMap<EventId, usize>, excursion: bool) -> Vec<Field> {
    let coi_scan = |scanned: &ledger_core::Coi| {
        if scanned == e.coi() {
            field("scanned COI", scanned.to_string())
        } else {
            bad_field(
                "scanned COI",
                format!("{scanned} (the event's chain is {})", e.coi()),
            )
        }
    };
    let mut out = match e.body() {
        Body::Collection { units, dins } => {
            let mut f = vec![field("creates", new_units_text(units))];
            if !dins.is_empty() {
                let dins: Vec<&str> = dins.iter().map(|d| d.as_str()).collect();
                f.push(field("DIN", dins.join(", ")));
            }
            f
        }
        Body::LabelVerification { unit, scanned_coi } => {
            vec![field("unit", unit.to_string()), coi_scan(scanned_coi)]
        }
        Body::Pack {
            shipper,
            units,
            seal,
        } => vec![
            field("shipper", shipper.to_string()),
            field("units", units_text(units)),
            field("seal", seal.clone()),
        ],
        Body::Unpack { shipper } => vec![field("shipper", shipper.to_string())],
        Body::Dispatch { shipper, to } => vec![
            field("shipper", shipper.to_string()),
            field("to", to.to_string()),
        ],
        Body::Receipt {
            shipper,
            from,
            seal_intact,
            scanned_coi,
        } => vec![
            field("shipper", shipper.to_string()),
            field("from", from.to_string()),
            if *seal_intact {
                field("seal", "intact")
            } else {
                bad_field("seal", "BROKEN")
            },
            coi_scan(scanned_coi),
        ],
        Body::Store { unit, location } | Body::Retrieve { unit, location } => vec![
            field("unit", unit.to_string()),
            field("location", location.clone()),
        ],
        Body::ManufacturingStep { units, step } => vec![
            field("units", units_text(units)),
            field("step", step.clone()),
        ],
        Body::Transformation { inputs, outputs } => vec![
            field("consumes", units_text(inputs)),
            field("creates", new_units_text(outputs)),
        ],
        Body::ConditionRecord {
            units,
            readings,
            min_centi,
            max_centi,
            excursion: flagged,
        } => {
            let mut f = vec![
                field("units", units_text(units)),
                field("readings", readings.len().to_string()),
                field("min", celsius(*min_centi)),
                field("max", celsius(*max_centi)),
            ];
            if let (Some(first), Some(last)) = (
                readings.iter().map(|r| r.at).min(),
                readings.iter().map(|r| r.at).max(),
            ) {
                f.push(field("logged", format!("{first} to {last}")));
            }
            if excursion {
                f.push(bad_field(
                    "EXCURSION",
                    if *flagged {
                        "flagged by the site"
                    } else {
                        "out of the unit's range"
                    },
                ));
            }
            f
        }
        Body::ExcursionDisposition {
            condition,
            accepted,
            reason,
        } => vec![
            linked("record", condition, row_of),
            if *accepted {
                field("decision", "accepted")
            } else {
                bad_field("decision", "REJECTED")
            },
            field("reason", reason.clone()),
        ],
        Body::QcHold { units, reason } => vec![
            field("units", units_text(units)),
            bad_field("QC", "hold"),
            field("reason", reason.clone()),
        ],
        Body::QcRelease { units } => {
            vec![field("units", units_text(units)), field("QC", "release")]
        }
        Body::QcReject { units, reason } => vec![
            field("units", units_text(units)),
            bad_field("QC", "REJECT"),
            field("reason", reason.clone()),
        ],
        Body::Administration { unit, scanned_coi } => {
            vec![field("unit", unit.to_string()), coi_scan(scanned_coi)]
        }
        Body::Destruction {
            unit,
            reason,
            witness,
        } => {
            let mut f = vec![
                field("unit", unit.to_string()),
                field("reason", reason.clone()),
            ];
            match witness {
                Some(w) => f.push(field(
                    "witness",
                    format!("{} ({})", w.printed_name, w.operator),
                )),
                None => f.push(field("witness", "none")),
            }
            f
        }
        Body::Reassignment {
            from_coi,
            units,
            reason,
            approvals,
        } => {
            let approvals: Vec<String> = approvals
                .iter()
                .map(|a| {
                    format!(
                        "{} ({}){}",
                        a.printed_name,
                        a.operator,
                        if a.qa { ", QA" } else { "" }
                    )
                })
                .collect();
            vec![
                field("from COI", from_coi.to_string()),
                field("creates", new_units_text(units)),
                field("reason", reason.clone()),
                field("approved by", approvals.join("; ")),
            ]
        }
        Body::Correction { target, reason } => vec![
            linked("corrects", target, row_of),
            field("reason", reason.clone()),
        ],
        Body::Note { text } => vec![field("note", text.clone())],
        Body::Unknown(u) => vec![bad_field(
            "unknown kind",
            format!("{} (from a newer version; not judged)", u.kind()),
        )],
    };
    if e.parents().is_empty() {
        out.push(field("parents", "none"));
    }
    out
}

// ---- The timeline -----------------------------------------------------------------------

/// Sites beyond this many share the last lane, so a page stays readable whatever the input.
const TIMELINE_LANES_MAX: usize = 24;
/// Marks are numbered in the chart only up to this many events; beyond, numbers overlap
/// into noise (the marks still link to their rows).
const TIMELINE_NUMBERED_MAX: usize = 200;
const TIMELINE_WIDTH: f64 = 1200.0;
const PLOT_LEFT: f64 = 150.0;
const PLOT_RIGHT: f64 = TIMELINE_WIDTH - 40.0;
const TOP: f64 = 34.0;
const LANE_H: f64 = 84.0;
/// Marks that would overlap in a lane stack up in this many rows, this far apart.
const STACK_LEVELS: usize = 3;
const STACK_PX: f64 = 14.0;

#[derive(Debug)]
struct Timeline {
    width: Px,
    height: Px,
    lane_h: Px,
    top: Px,
    bottom: Px,
    deadline_top: Px,
    tick_label_y: Px,
    lanes: Vec<Lane>,
    ticks: Vec<Tick>,
    deadlines: Vec<Deadline>,
    handoffs: Vec<Handoff>,
    marks: Vec<Mark>,
    labels: Vec<MarkLabel>,
    notes: Vec<String>,
}

#[derive(Debug)]
struct MarkLabel {
    x: Px,
    y: Px,
    text: String,
}

#[derive(Debug)]
struct Lane {
    y: Px,
    label_y: Px,
    role_y: Px,
    class: &'static str,
    label: String,
    role: String,
}

#[derive(Debug)]
struct Tick {
    x: Px,
    label: String,
}

#[derive(Debug)]
struct Deadline {
    x: Px,
    label_x: Px,
    label_y: Px,
    label: String,
    title: String,
}

#[derive(Debug)]
struct Handoff {
    x1: Px,
    y1: Px,
    x2: Px,
    y2: Px,
    class: &'static str,
    title: String,
}

#[derive(Debug)]
struct Mark {
    row: usize,
    lane: usize,
    x: Px,
    y: Px,
    shape: &'static str,
    flagged: bool,
    title: String,
}

fn shape(e: &Event, excursion: bool) -> &'static str {
    match e.body() {
        Body::Collection { .. }
        | Body::Transformation { .. }
        | Body::Reassignment { .. }
        | Body::Administration { .. }
        | Body::Destruction { .. } => "mile",
        Body::Dispatch { .. } => "dispatch",
        Body::Receipt { .. } => "receipt",
        Body::ConditionRecord { .. } if excursion => "exc",
        Body::ConditionRecord { .. } => "record",
        Body::ExcursionDisposition { accepted: true, .. } => "acc",
        Body::ExcursionDisposition {
            accepted: false, ..
        } => "rej",
        Body::QcHold { .. } | Body::QcRelease { .. } | Body::QcReject { .. } => "qc",
        _ => "step",
    }
}

/// Drawing order of mark shapes: routine steps first, then handoffs, milestones and
/// decisions, condition excursions last.
fn draw_rank(shape: &str) -> u8 {
    match shape {
        "step" | "record" => 0,
        "dispatch" | "receipt" => 1,
        "mile" => 2,
        "qc" => 3,
        "acc" | "rej" => 4,
        _ => 5,
    }
}

/// Maps times to x over `[t0, t1]` (f64 throughout: no timestamp can overflow it).
#[derive(Clone, Copy, Debug)]
struct Scale {
    t0: f64,
    t1: f64,
}

impl Scale {
    fn x(&self, t: Timestamp) -> f64 {
        let frac = (t.0 as f64 - self.t0) / (self.t1 - self.t0);
        PLOT_LEFT + frac.clamp(0.0, 1.0) * (PLOT_RIGHT - PLOT_LEFT)
    }

    fn contains(&self, t: Timestamp) -> bool {
        (self.t0..=self.t1).contains(&(t.0 as f64))
    }
}

fn timeline(
    bundle: &Bundle,
    events: &[&Event],
    row_of: &HashMap<EventId, usize>,
    findings_of: &HashMap<EventId, Vec<usize>>,
    verdict: &Verdict,
    excursions: &HashSet<EventId>,
) -> Timeline {
    // Lanes: sites in order of first appearance (authors, and sites named as destinations).
    let mut sites: Vec<String> = Vec::new();
    let mut lane_of: HashMap<String, usize> = HashMap::new();
    let mut add_site = |site: &str, sites: &mut Vec<String>| {
        if !lane_of.contains_key(site) {
            let lane = sites.len().min(TIMELINE_LANES_MAX - 1);
            lane_of.insert(site.to_owned(), lane);
            sites.push(site.to_owned());
        }
    };
    for e in events {
        add_site(e.author().as_str(), &mut sites);
        if let Body::Dispatch { to, .. } = e.body() {
            add_site(to.as_str(), &mut sites);
        }
    }
    let n_lanes = sites.len().clamp(1, TIMELINE_LANES_MAX);
    let lane_of = |site: &str| lane_of.get(site).copied().unwrap_or(0);
    let lane_y = |lane: usize| TOP + lane as f64 * LANE_H;
    let mark_y = |lane: usize| lane_y(lane) + LANE_H - 14.0;
    let bottom = TOP + n_lanes as f64 * LANE_H;

    let roles: HashMap<&str, BTreeSet<&str>> =
        bundle.certificates.iter().fold(HashMap::new(), |mut m, c| {
            m.entry(c.site.as_str())
                .or_default()
                .insert(c.role.as_str());
            m
        });
    let lanes = (0..n_lanes)
        .map(|lane| {
            let (label, role) =
                if lane == TIMELINE_LANES_MAX - 1 && sites.len() > TIMELINE_LANES_MAX {
                    (
                        format!("{} more sites", sites.len() - lane),
                        "(sharing this lane)".to_owned(),
                    )
                } else {
                    let site = sites.get(lane).cloned().unwrap_or_default();
                    let role = match roles.get(site.as_str()) {
                        Some(r) => r.iter().copied().collect::<Vec<_>>().join(", "),
                        None => "no certificate in the bundle".to_owned(),
                    };
                    (site, role)
                };
            let y = lane_y(lane);
            Lane {
                y: Px(y),
                label_y: Px(y + 22.0),
                role_y: Px(y + 37.0),
                class: if lane % 2 == 0 { "lane-a" } else { "lane-b" },
                label,
                role,
            }
        })
        .collect();

    // Time axis: the events' scan times, stretched to show a stability deadline that falls
    // near them (within half the span); farther deadlines are listed under the chart.
    let times: Vec<f64> = events.iter().map(|e| e.occurred_at().0 as f64).collect();
    let (mut t0, mut t1) = times
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), &t| (a.min(t), b.max(t)));
    if times.is_empty() {
        (t0, t1) = (0.0, Millis::HOUR.0 as f64);
    }
    if t1 - t0 < Millis::HOUR.0 as f64 {
        let mid = (t0 + t1) / 2.0;
        (t0, t1) = (
            mid - Millis::HOUR.0 as f64 / 2.0,
            mid + Millis::HOUR.0 as f64 / 2.0,
        );
    }
    let deadlines_all = stability_deadlines(events);
    let reach = (t1 - t0) / 2.0;
    for (t, _) in &deadlines_all {
        let t = t.0 as f64;
        if t >= t0 - reach && t <= t1 + reach {
            t0 = t0.min(t);
            t1 = t1.max(t);
        }
    }
    // A little room at both ends so edge marks are not cut.
    let pad = (t1 - t0) * 0.02;
    let scale = Scale {
        t0: t0 - pad,
        t1: t1 + pad,
    };

    let ticks = ticks(&scale);
    let mut notes = Vec::new();
    let mut deadlines = Vec::new();
    for (t, units) in &deadlines_all {
        let label = format!("deadline {}", units.join(", "));
        if scale.contains(*t) {
            let x = scale.x(*t);
            deadlines.push(Deadline {
                x: Px(x),
                label_x: Px(x - 4.0),
                label_y: Px(TOP - 8.0 - 11.0 * (deadlines.len() % 2) as f64),
                title: format!("stability deadline of {} at {t}", units.join(", ")),
                label,
            });
        } else {
            notes.push(format!(
                "Stability deadline of {} at {t}: outside the chart's time range.",
                units.join(", ")
            ));
        }
    }

    // Marks, numbered as the table's rows.
    let mut marks: Vec<Mark> = events
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let row = i + 1;
            let lane = lane_of(e.author().as_str());
            let codes: Vec<&str> = findings_of
                .get(&e.id())
                .into_iter()
                .flatten()
                .map(|&idx| verdict.findings[idx].code.as_str())
                .collect();
            let mut title = format!(
                "#{row} {} by {} at {}",
                e.body().kind_name(),
                e.author(),
                e.occurred_at()
            );
            if !codes.is_empty() {
                title.push_str(&format!("; findings: {}", codes.join(", ")));
            }
            Mark {
                row,
                lane,
                x: Px(scale.x(e.occurred_at())),
                y: Px(mark_y(lane)),
                shape: shape(e, excursions.contains(&e.id())),
                flagged: !codes.is_empty(),
                title,
            }
        })
        .collect();
    stack(&mut marks);
    // Handoffs: each dispatch to the first later receipt of the same shipper from the same
    // site (in causal order), as the custody rule matches them.
    let mut handoffs = Vec::new();
    // Receipts by (shipper, from), in row order, each taken by at most one dispatch.
    let mut receipts: HashMap<(&ShipperId, &SiteId), std::collections::VecDeque<usize>> =
        HashMap::new();
    for (j, r) in events.iter().enumerate() {
        if let Body::Receipt { shipper, from, .. } = r.body() {
            receipts.entry((shipper, from)).or_default().push_back(j);
        }
    }
    for (i, d) in events.iter().enumerate() {
        let Body::Dispatch { shipper, to } = d.body() else {
            continue;
        };
        // Marks are still in row order here: event i is marks[i].
        let (x1, y1) = (marks[i].x.0, marks[i].y.0);
        let receipt = receipts.get_mut(&(shipper, d.author())).and_then(|queue| {
            while queue.front().is_some_and(|&j| j <= i) {
                queue.pop_front();
            }
            queue.pop_front()
        });
        match receipt {
            Some(j) => {
                let r = events[j];
                let (x2, y2) = (marks[j].x.0, marks[j].y.0);
                let (x1, y1, x2, y2) = shorten(x1, y1, x2, y2, 9.0);
                handoffs.push(Handoff {
                    x1: Px(x1),
                    y1: Px(y1),
                    x2: Px(x2),
                    y2: Px(y2),
                    class: "handoff",
                    title: format!(
                        "{shipper}: {} to {}, dispatched {} (#{}), received {} (#{})",
                        d.author(),
                        r.author(),
                        d.occurred_at(),
                        row_of.get(&d.id()).copied().unwrap_or(0),
                        r.occurred_at(),
                        row_of.get(&r.id()).copied().unwrap_or(0),
                    ),
                });
            }
            None => {
                let y2 = mark_y(lane_of(to.as_str()));
                let (x1, y1, x2, y2) = shorten(x1, y1, x1 + 28.0, y2, 9.0);
                handoffs.push(Handoff {
                    x1: Px(x1),
                    y1: Px(y1),
                    x2: Px(x2),
                    y2: Px(y2),
                    class: "handoff open",
                    title: format!(
                        "{shipper}: dispatched by {} to {to} at {}; no receipt in the bundle",
                        d.author(),
                        d.occurred_at()
                    ),
                });
            }
        }
    }

    let numbered = events.len() <= TIMELINE_NUMBERED_MAX;
    let labels = if numbered {
        mark_labels(&mut marks)
    } else {
        Vec::new()
    };
    // Where marks overlap, the one drawn last shows: draw what a reviewer must see last.
    marks.sort_by_key(|m| (m.flagged, draw_rank(m.shape)));
    if !numbered {
        notes.push(format!(
            "{} events: marks are not numbered above {TIMELINE_NUMBERED_MAX} events; each still links to its row.",
            events.len()
        ));
    }
    if sites.len() > TIMELINE_LANES_MAX {
        notes.push(format!(
            "{} sites: the last lane holds every site after the first {}.",
            sites.len(),
            TIMELINE_LANES_MAX - 1
        ));
    }
    Timeline {
        width: Px(TIMELINE_WIDTH),
        height: Px(bottom + 26.0),
        lane_h: Px(LANE_H),
        top: Px(TOP),
        bottom: Px(bottom),
        deadline_top: Px(TOP - 30.0),
        tick_label_y: Px(bottom + 16.0),
        lanes,
        ticks,
        deadlines,
        handoffs,
        marks,
        labels,
        notes,
    }
}

/// Lifts a mark that would overlap an earlier one in its lane onto the lowest free row
/// (up to [`STACK_LEVELS`]; past that they overlap), so close events stay visible. Time
/// stays on x: only y moves.
fn stack(marks: &mut [Mark]) {
    const GAP_PX: f64 = 12.0;
    let mut order: Vec<usize> = (0..marks.len()).collect();
    order.sort_by(|&a, &b| {
        (marks[a].lane, marks[a].x, marks[a].row)
            .partial_cmp(&(marks[b].lane, marks[b].x, marks[b].row))
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    let mut last_x: HashMap<usize, [f64; STACK_LEVELS]> = HashMap::new();
    for i in order {
        let m = &mut marks[i];
        let rows = last_x
            .entry(m.lane)
            .or_insert([f64::NEG_INFINITY; STACK_LEVELS]);
        let level = (0..STACK_LEVELS)
            .find(|&l| rows[l] + GAP_PX <= m.x.0)
            .unwrap_or_else(|| {
                (0..STACK_LEVELS)
                    .min_by(|&a, &b| rows[a].total_cmp(&rows[b]))
                    .unwrap_or(0)
            });
        rows[level] = m.x.0;
        m.y = Px(m.y.0 - STACK_PX * level as f64);
    }
}

/// Row numbers above the marks. Marks closer than a label's width share one label
/// ("3-5", "6, 9"); a label that would still touch its neighbour moves up a level.
fn mark_labels(marks: &mut [Mark]) -> Vec<MarkLabel> {
    const CLUSTER_PX: f64 = 14.0;
    const CHAR_PX: f64 = 6.0;
    marks.sort_by(|a, b| {
        (a.lane, a.x, a.row)
            .partial_cmp(&(b.lane, b.x, b.row))
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    let mut labels = Vec::new();
    let mut i = 0;
    // The right edge and level of the previous label in the same lane.
    let mut previous: Option<(usize, f64, usize)> = None;
    while i < marks.len() {
        let (lane, x0) = (marks[i].lane, marks[i].x.0);
        let mut j = i;
        while j < marks.len() && marks[j].lane == lane && marks[j].x.0 - x0 <= CLUSTER_PX {
            j += 1;
        }
        let mut rows: Vec<usize> = marks[i..j].iter().map(|m| m.row).collect();
        rows.sort_unstable();
        let text = rows_text(&rows);
        let x = (x0 + marks[j - 1].x.0) / 2.0;
        let top = marks[i..j]
            .iter()
            .map(|m| m.y.0)
            .fold(f64::INFINITY, f64::min);
        let half = text.chars().count() as f64 * CHAR_PX / 2.0;
        let level = match previous {
            Some((l, right, level)) if l == lane && right + 2.0 > x - half => (level + 1) % 3,
            _ => 0,
        };
        previous = Some((lane, x + half, level));
        labels.push(MarkLabel {
            x: Px(x),
            y: Px(top - 16.0 - 10.0 * level as f64),
            text,
        });
        i = j;
    }
    labels
}

/// "4", "3-6", "6, 9", "2, 5, 7 +4".
fn rows_text(rows: &[usize]) -> String {
    match rows {
        [] => String::new(),
        [one] => one.to_string(),
        [first, .., last] if last - first + 1 == rows.len() => format!("{first}-{last}"),
        _ if rows.len() <= 3 => rows
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        _ => format!("{}, {}, {} +{}", rows[0], rows[1], rows[2], rows.len() - 3),
    }
}

/// Pulls both ends of a segment in by `by` so an arrow stops at the edge of a mark.
fn shorten(x1: f64, y1: f64, x2: f64, y2: f64, by: f64) -> (f64, f64, f64, f64) {
    let (dx, dy) = (x2 - x1, y2 - y1);
    let len = (dx * dx + dy * dy).sqrt();
    if len <= 2.0 * by {
        return (x1, y1, x2, y2);
    }
    let (ux, uy) = (dx / len * by, dy / len * by);
    (x1 + ux, y1 + uy, x2 - ux, y2 - uy)
}

/// Every stability deadline the events set (collections, transformation outputs,
/// reassignments), with the units that share it.
fn stability_deadlines(events: &[&Event]) -> Vec<(Timestamp, Vec<String>)> {
    let mut by_time: std::collections::BTreeMap<Timestamp, Vec<String>> = Default::default();
    for e in events {
        let units: &[NewUnit] = match e.body() {
            Body::Collection { units, .. } => units,
            Body::Transformation { outputs, .. } => outputs,
            Body::Reassignment { units, .. } => units,
            _ => continue,
        };
        for u in units {
            let names = by_time.entry(u.stability_deadline).or_default();
            if !names.contains(&u.unit.to_string()) {
                names.push(u.unit.to_string());
            }
        }
    }
    by_time.into_iter().collect()
}

/// Grid lines at round times (whole minutes, hours or days in UTC), at most about ten.
fn ticks(scale: &Scale) -> Vec<Tick> {
    const MINUTE: i64 = 60_000;
    const HOUR: i64 = 60 * MINUTE;
    const DAY: i64 = 24 * HOUR;
    let steps = [
        MINUTE,
        5 * MINUTE,
        15 * MINUTE,
        30 * MINUTE,
        HOUR,
        3 * HOUR,
        6 * HOUR,
        12 * HOUR,
        DAY,
        2 * DAY,
        7 * DAY,
        14 * DAY,
        30 * DAY,
        91 * DAY,
        365 * DAY,
    ];
    let span = scale.t1 - scale.t0;
    let step = steps
        .iter()
        .copied()
        .find(|&s| span / s as f64 <= 10.0)
        .unwrap_or_else(|| (span / 10.0).max(DAY as f64) as i64);
    let first = (scale.t0 / step as f64).ceil() * step as f64;
    (0..12)
        .map(|k| first + k as f64 * step as f64)
        .take_while(|&t| t <= scale.t1)
        .map(|t| {
            let ts = Timestamp(t as i64);
            let text = ts.to_string();
            let label = if step < DAY {
                // "03-02 08:00"
                text.get(5..16).unwrap_or(&text).replace('T', " ")
            } else {
                text.get(..10).unwrap_or(&text).to_owned()
            };
            Tick {
                x: Px(scale.x(ts)),
                label,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_few() {
        let t0 = Timestamp::parse_rfc3339("2026-03-02T08:10:00Z").expect("time");
        let t1 = t0.plus(Millis(14 * 86_400_000));
        let t = ticks(&Scale {
            t0: t0.0 as f64,
            t1: t1.0 as f64,
        });
        let labels: Vec<&str> = t.iter().map(|t| t.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "2026-03-04",
                "2026-03-06",
                "2026-03-08",
                "2026-03-10",
                "2026-03-12",
                "2026-03-14",
                "2026-03-16"
            ]
        );
        // Extreme timestamps neither panic nor produce more than a dozen ticks.
        let wide = ticks(&Scale {
            t0: i64::MIN as f64,
            t1: i64::MAX as f64,
        });
        assert!(wide.len() <= 12, "{}", wide.len());
    }
}
