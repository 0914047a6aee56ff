//! The page's views: values only, ready for the templates in `templates/web/`, which
//! escape every one of them. Nothing here decides; it words what the worklist and the
//! board of alerts say.

use super::{pct, time_left, WorklistFilter};
use crate::alerts::Held;
use crate::network::{LocalSite, Principal};
use crate::worklist::{Place, Row};
use askama::Template;
use ledger_core::{AlertSeverity, Millis, Status, Timestamp};

/// Renders a page; the error is askama's (a value whose formatting failed).
pub trait RenderPage {
    fn render_page(&self) -> Result<String, askama::Error>;
}

impl<T: Template> RenderPage for T {
    fn render_page(&self) -> Result<String, askama::Error> {
        self.render()
    }
}

#[derive(Debug, Template)]
#[template(path = "web/signin.html")]
pub struct SignIn {
    pub message: Option<&'static str>,
    pub next: String,
}

#[derive(Debug, Template)]
#[template(path = "web/error.html")]
pub struct ErrorPage {
    pub status: u16,
    pub reason: &'static str,
    pub message: String,
}

/// The time as the page prints it: minutes, UTC.
pub fn when(t: Timestamp) -> String {
    let s = t.to_string();
    // 2026-12-07T10:00:00Z -> 2026-12-07 10:00 UTC
    match (s.get(..10), s.get(11..16)) {
        (Some(d), Some(hm)) => format!("{d} {hm} UTC"),
        _ => s,
    }
}

#[derive(Debug)]
pub struct RowView {
    pub coi: String,
    pub href: String,
    pub status: &'static str,
    /// "OVERDUE", "DUE SOON" or empty: the word beside the colour.
    pub urgency: &'static str,
    /// CSS class of the row: `overdue`, `soon` or empty.
    pub class: &'static str,
    pub places: Vec<String>,
    pub deadline: String,
    /// The deadline in Unix milliseconds, for programs reading the page; empty if none.
    pub deadline_ms: String,
    pub left: String,
    pub n_findings: usize,
    pub n_alerts: usize,
    pub n_events: u64,
}

#[derive(Debug)]
pub struct AlertView {
    pub severity: &'static str,
    pub kind: &'static str,
    pub coi: Option<String>,
    pub href: Option<String>,
    pub site: Option<String>,
    pub message: String,
    pub since: String,
}

#[derive(Debug)]
pub struct Choice {
    pub value: String,
    pub label: String,
    pub selected: bool,
}

#[derive(Debug, Template)]
#[template(path = "web/worklist.html")]
pub struct Worklist {
    pub who: String,
    pub signers: String,
    pub now: String,
    pub sites: Vec<Choice>,
    pub statuses: Vec<Choice>,
    pub needs_action: bool,
    pub all: bool,
    pub rows: Vec<RowView>,
    pub n_overdue: usize,
    pub next_href: Option<String>,
    pub first_href: Option<String>,
    pub alerts: Vec<AlertView>,
    pub n_alerts: usize,
}

#[derive(Debug)]
pub struct WorklistInput<'a> {
    pub who: &'a Principal,
    pub node_sites: &'a [LocalSite],
    pub now: Timestamp,
    pub imminent: Millis,
    pub filter: &'a WorklistFilter,
    pub rows: &'a [Row],
    pub next_query: Option<String>,
    pub first_query: Option<String>,
    pub alerts: &'a [Held],
    pub n_alerts: usize,
    pub sites: &'a [String],
}

pub fn place_text(p: &Place) -> String {
    match p {
        Place::Held {
            site,
            location: Some(l),
        } => format!("held by {site} at {l}"),
        Place::Held {
            site,
            location: None,
        } => format!("held by {site}"),
        Place::InTransit { from, to, since } => {
            format!("in transit from {from} to {to} since {}", when(*since))
        }
    }
}

fn alert_view(h: &Held) -> AlertView {
    let a = &h.alert;
    AlertView {
        severity: match a.key.kind.severity() {
            AlertSeverity::Critical => "critical",
            AlertSeverity::Warning => "warning",
        },
        kind: a.key.kind.as_str(),
        coi: a.key.coi.as_ref().map(ToString::to_string),
        href: a
            .key
            .coi
            .as_ref()
            .map(|c| format!("/chains/{}", pct(c.as_str()))),
        site: a.key.site.as_ref().map(ToString::to_string),
        message: a.message.clone(),
        since: when(a.since),
    }
}

impl Worklist {
    pub fn new(i: WorklistInput<'_>) -> Worklist {
        let rows: Vec<RowView> = i
            .rows
            .iter()
            .map(|r| {
                let (urgency, class, deadline, left) = match r.next_deadline {
                    None => ("", "", "-".to_owned(), "-".to_owned()),
                    Some(d) => {
                        let (overdue, left) = time_left(d, i.now);
                        let (urgency, class) = if overdue {
                            ("OVERDUE", "overdue")
                        } else if d.0 - i.now.0 <= i.imminent.0 {
                            ("DUE SOON", "soon")
                        } else {
                            ("", "")
                        };
                        (urgency, class, when(d), left)
                    }
                };
                RowView {
                    coi: r.coi.to_string(),
                    href: format!("/chains/{}", pct(r.coi.as_str())),
                    status: r.status.as_str(),
                    urgency,
                    class,
                    places: r
                        .units
                        .iter()
                        .map(|u| format!("{}: {}", u.unit, place_text(&u.place)))
                        .collect(),
                    deadline,
                    deadline_ms: r.next_deadline.map(|d| d.0.to_string()).unwrap_or_default(),
                    left,
                    n_findings: r.n_findings,
                    n_alerts: r.n_alerts,
                    n_events: r.n_events,
                }
            })
            .collect();
        let site_now = i.filter.site.as_ref().map(ToString::to_string);
        let mut sites = vec![Choice {
            value: String::new(),
            label: "every site".to_owned(),
            selected: site_now.is_none(),
        }];
        sites.extend(i.sites.iter().map(|s| Choice {
            value: s.clone(),
            label: s.clone(),
            selected: site_now.as_deref() == Some(s.as_str()),
        }));
        let mut statuses = vec![Choice {
            value: String::new(),
            label: "any status".to_owned(),
            selected: i.filter.status.is_none(),
        }];
        statuses.extend(
            Status::ALL
                .iter()
                .filter(|s| **s != Status::Empty)
                .map(|s| Choice {
                    value: s.as_str().to_owned(),
                    label: s.as_str().replace('_', " "),
                    selected: i.filter.status == Some(*s),
                }),
        );
        Worklist {
            who: i.who.to_string(),
            signers: i
                .node_sites
                .iter()
                .map(|s| s.id.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            now: when(i.now),
            sites,
            statuses,
            needs_action: i.filter.needs_action,
            all: i.filter.all,
            n_overdue: rows.iter().filter(|r| r.class == "overdue").count(),
            rows,
            next_href: i.next_query.map(|q| format!("/?{q}")),
            first_href: i.first_query.map(|q| {
                if q.is_empty() {
                    "/".to_owned()
                } else {
                    format!("/?{q}")
                }
            }),
            alerts: i.alerts.iter().map(alert_view).collect(),
            n_alerts: i.n_alerts,
        }
    }
}

/// One duration summary, in words.
#[derive(Debug)]
pub struct DurView {
    pub count: u64,
    pub min: String,
    pub median: String,
    pub p90: String,
    pub max: String,
    pub mean: String,
}

fn dur_view(d: &ledger_core::kpi::Durations) -> DurView {
    DurView {
        count: d.count,
        min: d.min.to_string(),
        median: d.median.to_string(),
        p90: d.p90.to_string(),
        max: d.max.to_string(),
        mean: d.mean.to_string(),
    }
}

/// `n` of `of` as a percentage with one decimal, or `-` when there is nothing to divide.
pub fn rate(n: u64, of: u64) -> String {
    if of == 0 {
        "-".to_owned()
    } else {
        format!("{:.1}%", n as f64 * 100.0 / of as f64)
    }
}

fn findings_text(f: &std::collections::BTreeMap<ledger_core::Code, u64>) -> String {
    f.iter()
        .map(|(c, n)| format!("{} \u{d7}{n}", c.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

#[derive(Debug)]
pub struct SiteView {
    pub site: String,
    pub dwell: Option<DurView>,
    pub condition_records: u64,
    pub excursions: u64,
    pub excursion_rate: String,
    pub n_findings: u64,
    pub findings: String,
}

#[derive(Debug)]
pub struct LaneView {
    pub from: String,
    pub to: String,
    pub limit: String,
    pub handoff: Option<DurView>,
    pub late: u64,
    pub with_excursion: u64,
    pub excursion_rate: String,
}

#[derive(Debug, Template)]
#[template(path = "web/kpi.html")]
pub struct KpiPage {
    pub who: String,
    pub from_value: String,
    pub to_value: String,
    pub period: String,
    pub computed: String,
    pub chains_counted: u64,
    pub chains_incomplete: u64,
    pub broken: Vec<(String, String)>,
    pub vein_to_vein: Option<DurView>,
    pub sites: Vec<SiteView>,
    pub lanes: Vec<LaneView>,
    pub unplaced: String,
}

impl KpiPage {
    pub fn new(
        who: &Principal,
        r: &ledger_core::kpi::KpiReport,
        from_value: String,
        to_value: String,
        now: Timestamp,
    ) -> KpiPage {
        KpiPage {
            who: who.to_string(),
            from_value,
            to_value,
            period: format!(
                "{} to {} (end excluded)",
                when(r.period.from()),
                when(r.period.to())
            ),
            computed: when(now),
            chains_counted: r.chains_counted,
            chains_incomplete: r.chains_incomplete,
            broken: r
                .chains_broken
                .iter()
                .map(|c| (c.to_string(), format!("/chains/{}", pct(c.as_str()))))
                .collect(),
            vein_to_vein: r.vein_to_vein.as_ref().map(dur_view),
            sites: r
                .sites
                .iter()
                .map(|s| SiteView {
                    site: s.site.to_string(),
                    dwell: s.dwell.as_ref().map(dur_view),
                    condition_records: s.condition_records,
                    excursions: s.excursions,
                    excursion_rate: rate(s.excursions, s.condition_records),
                    n_findings: s.findings.values().sum(),
                    findings: findings_text(&s.findings),
                })
                .collect(),
            lanes: r
                .lanes
                .iter()
                .map(|l| {
                    let n = l.handoff.as_ref().map_or(0, |h| h.count);
                    LaneView {
                        from: l.from.to_string(),
                        to: l.to.to_string(),
                        limit: l.limit.to_string(),
                        handoff: l.handoff.as_ref().map(dur_view),
                        late: l.late,
                        with_excursion: l.with_excursion,
                        excursion_rate: rate(l.with_excursion, n),
                    }
                })
                .collect(),
            unplaced: findings_text(&r.findings_unplaced),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_have_one_decimal_and_no_division_by_zero() {
        assert_eq!(rate(1, 8), "12.5%");
        assert_eq!(rate(0, 3), "0.0%");
        assert_eq!(rate(0, 0), "-");
    }

    #[test]
    fn times_print_to_the_minute_in_utc() {
        assert_eq!(
            when(Timestamp::from_utc(2026, 12, 7, 10, 5, 9, 0).expect("valid")),
            "2026-12-07 10:05 UTC"
        );
    }
}
