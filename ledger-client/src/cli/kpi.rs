//! `ledger kpi --from T --to T`: the node's partner KPIs for a period, as a readable
//! summary, one JSON object, or long-format CSV.
//!
//! Rendering only: the figures are the node's (`ledger_core::kpi` defines them) and are
//! printed as they came. Spans are human (`14d 1h`) in text and whole milliseconds in JSON
//! and CSV; a rate is a decimal fraction in JSON and CSV and a percentage in text, and is
//! absent when nothing was counted to take it of.

use crate::client::{FindingCount, Kpis};
use comfy_table::{presets::UTF8_FULL, ContentArrangement, Table};
use ledger_core::kpi::Durations;
use ledger_core::Timestamp;
use serde_json::{json, Map, Value};

/// How `ledger kpi` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KpiOutput {
    /// A readable summary with a table per site and per lane.
    Text,
    /// One JSON object; spans in milliseconds.
    Json,
    /// Long format, one figure a row: scope,site,from_site,to_site,metric,value.
    Csv,
}

/// `--from` and `--to`: a UTC day (`2026-03-01`, its midnight) or an RFC 3339 UTC time.
pub fn parse_instant(text: &str) -> Result<Timestamp, String> {
    Timestamp::parse_day_or_rfc3339(text)
        .ok_or_else(|| {
            "expected a UTC day like 2026-03-01 (its midnight) or an RFC 3339 UTC time like 2026-03-01T08:00:00Z".to_owned()
        })
}

/// A decimal fraction, `None` when there is nothing to take it of.
fn rate(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

fn percent(part: u64, whole: u64) -> String {
    rate(part, whole).map_or("-".to_owned(), |r| format!("{:.1}%", r * 100.0))
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

fn findings_text(findings: &[FindingCount]) -> String {
    if findings.is_empty() {
        return "-".to_owned();
    }
    findings
        .iter()
        .map(|f| format!("{} {}", f.code, f.n))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `median 14d 1h, p90 14d 2h, min 14d 1h, max 14d 2h (2 chains)`.
fn vein_to_vein_text(d: Option<&Durations>) -> String {
    match d {
        None => "none (no administration in the period)".to_owned(),
        Some(d) => format!(
            "median {}, p90 {}, min {}, max {} ({} {})",
            d.median,
            d.p90,
            d.min,
            d.max,
            d.count,
            if d.count == 1 { "chain" } else { "chains" }
        ),
    }
}

pub fn text(k: &Kpis) -> String {
    let mut out = format!(
        "KPIs from {} to {} (end excluded), computed {}\n",
        k.period.from(),
        k.period.to(),
        k.computed_at
    );
    out.push_str(&format!(
        "chains:        {} counted ({} incomplete), {} broken and left out of every time and rate\n",
        k.n_chains_counted,
        k.n_chains_incomplete,
        k.chains_broken.len()
    ));
    if !k.chains_broken.is_empty() {
        let cois: Vec<String> = k.chains_broken.iter().map(ToString::to_string).collect();
        out.push_str(&format!("broken:        {}\n", cois.join(", ")));
    }
    out.push_str(&format!(
        "vein-to-vein:  {}\n",
        vein_to_vein_text(k.vein_to_vein.as_ref())
    ));
    if !k.findings_unplaced.is_empty() {
        let f: Vec<String> = k
            .findings_unplaced
            .iter()
            .map(|f| format!("{} {}", f.code, f.n))
            .collect();
        out.push_str(&format!("unplaced findings: {}\n", f.join(", ")));
    }
    if !k.sites.is_empty() {
        let mut t = table(vec![
            "site",
            "stays",
            "dwell median",
            "dwell p90",
            "dwell max",
            "condition records",
            "excursions",
            "findings",
        ]);
        for s in &k.sites {
            let span = |f: fn(&Durations) -> ledger_core::Millis| {
                s.dwell
                    .as_ref()
                    .map_or("-".to_owned(), |d| f(d).to_string())
            };
            t.add_row(vec![
                s.site.to_string(),
                s.dwell.map_or(0, |d| d.count).to_string(),
                span(|d| d.median),
                span(|d| d.p90),
                span(|d| d.max),
                s.n_condition_records.to_string(),
                format!(
                    "{} ({})",
                    s.n_excursions,
                    percent(s.n_excursions, s.n_condition_records)
                ),
                findings_text(&s.findings),
            ]);
        }
        out.push_str(&format!("\nsites\n{t}\n"));
    }
    if !k.lanes.is_empty() {
        let mut t = table(vec![
            "from",
            "to",
            "handoffs",
            "median",
            "p90",
            "max",
            "limit",
            "late",
            "with excursion",
        ]);
        for l in &k.lanes {
            let n = l.handoff.map_or(0, |d| d.count);
            let span = |f: fn(&Durations) -> ledger_core::Millis| {
                l.handoff
                    .as_ref()
                    .map_or("-".to_owned(), |d| f(d).to_string())
            };
            t.add_row(vec![
                l.from.to_string(),
                l.to.to_string(),
                n.to_string(),
                span(|d| d.median),
                span(|d| d.p90),
                span(|d| d.max),
                l.limit.to_string(),
                format!("{} ({})", l.n_late, percent(l.n_late, n)),
                format!(
                    "{} ({})",
                    l.n_with_excursion,
                    percent(l.n_with_excursion, n)
                ),
            ]);
        }
        out.push_str(&format!("\nlanes\n{t}\n"));
    }
    out
}

fn durations_json(d: Option<&Durations>) -> Value {
    d.map_or(Value::Null, |d| {
        json!({
            "count": d.count,
            "min_ms": d.min.0,
            "median_ms": d.median.0,
            "p90_ms": d.p90.0,
            "max_ms": d.max.0,
            "mean_ms": d.mean.0,
        })
    })
}

fn findings_json(findings: &[FindingCount]) -> Value {
    Value::Object(
        findings
            .iter()
            .map(|f| (f.code.clone(), json!(f.n)))
            .collect::<Map<String, Value>>(),
    )
}

pub fn json(k: &Kpis) -> String {
    let sites: Vec<Value> = k
        .sites
        .iter()
        .map(|s| {
            json!({
                "site": s.site.as_str(),
                "dwell": durations_json(s.dwell.as_ref()),
                "condition_records": s.n_condition_records,
                "excursions": s.n_excursions,
                "excursion_rate": rate(s.n_excursions, s.n_condition_records),
                "findings": findings_json(&s.findings),
            })
        })
        .collect();
    let lanes: Vec<Value> = k
        .lanes
        .iter()
        .map(|l| {
            let n = l.handoff.map_or(0, |d| d.count);
            json!({
                "from": l.from.as_str(),
                "to": l.to.as_str(),
                "limit_ms": l.limit.0,
                "handoff": durations_json(l.handoff.as_ref()),
                "late": l.n_late,
                "with_excursion": l.n_with_excursion,
                "excursion_rate": rate(l.n_with_excursion, n),
            })
        })
        .collect();
    json!({
        "from": k.period.from().to_string(),
        "to": k.period.to().to_string(),
        "computed_at": k.computed_at.to_string(),
        "chains_counted": k.n_chains_counted,
        "chains_incomplete": k.n_chains_incomplete,
        "chains_broken": k.chains_broken.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
        "vein_to_vein": durations_json(k.vein_to_vein.as_ref()),
        "sites": sites,
        "lanes": lanes,
        "findings_unplaced": findings_json(&k.findings_unplaced),
    })
    .to_string()
}

/// One field, quoted as RFC 4180 asks when it holds a comma, a quote or a line break.
fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

/// Rows of one scope: (scope, site, from_site, to_site).
struct CsvRows {
    out: String,
}

impl CsvRows {
    fn row(&mut self, key: [&str; 4], metric: &str, value: impl std::fmt::Display) {
        let fields: Vec<String> = key
            .iter()
            .copied()
            .chain([metric, value.to_string().as_str()])
            .map(csv_field)
            .collect();
        self.out.push_str(&fields.join(","));
        self.out.push_str("\r\n");
    }

    fn durations(&mut self, key: [&str; 4], prefix: &str, d: Option<&Durations>) {
        let Some(d) = d else {
            self.row(key, &format!("{prefix}_count"), 0);
            return;
        };
        self.row(key, &format!("{prefix}_count"), d.count);
        for (name, v) in [
            ("min", d.min),
            ("median", d.median),
            ("p90", d.p90),
            ("max", d.max),
            ("mean", d.mean),
        ] {
            self.row(key, &format!("{prefix}_{name}_ms"), v.0);
        }
    }

    fn findings(&mut self, key: [&str; 4], prefix: &str, findings: &[FindingCount]) {
        for f in findings {
            self.row(key, &format!("{prefix}.{}", f.code), f.n);
        }
    }
}

/// Long format: one figure a row, `scope` network, site or lane; a rate is left out when
/// nothing was counted to take it of. Lines end in CRLF (RFC 4180).
pub fn csv(k: &Kpis) -> String {
    let mut rows = CsvRows {
        out: "scope,site,from_site,to_site,metric,value\r\n".to_owned(),
    };
    let network = ["network", "", "", ""];
    rows.row(network, "chains_counted", k.n_chains_counted);
    rows.row(network, "chains_incomplete", k.n_chains_incomplete);
    rows.row(network, "chains_broken", k.chains_broken.len());
    rows.durations(network, "vein_to_vein", k.vein_to_vein.as_ref());
    rows.findings(network, "findings_unplaced", &k.findings_unplaced);
    for s in &k.sites {
        let key = ["site", s.site.as_str(), "", ""];
        rows.durations(key, "dwell", s.dwell.as_ref());
        rows.row(key, "condition_records", s.n_condition_records);
        rows.row(key, "excursions", s.n_excursions);
        if let Some(r) = rate(s.n_excursions, s.n_condition_records) {
            rows.row(key, "excursion_rate", r);
        }
        rows.findings(key, "findings", &s.findings);
    }
    for l in &k.lanes {
        let key = ["lane", "", l.from.as_str(), l.to.as_str()];
        let n = l.handoff.map_or(0, |d| d.count);
        rows.row(key, "limit_ms", l.limit.0);
        rows.durations(key, "handoff", l.handoff.as_ref());
        rows.row(key, "late", l.n_late);
        rows.row(key, "with_excursion", l.n_with_excursion);
        if let Some(r) = rate(l.n_with_excursion, n) {
            rows.row(key, "excursion_rate", r);
        }
    }
    rows.out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{LaneKpis, SiteKpis};
    use expect_test::expect;
    use ledger_core::kpi::Period;
    use ledger_core::{Coi, Millis, SiteId};

    const H: i64 = 3_600_000;

    fn t(text: &str) -> Timestamp {
        Timestamp::parse_rfc3339(text).expect("time")
    }

    fn spans(count: u64, min: i64, median: i64, p90: i64, max: i64, mean: i64) -> Durations {
        Durations {
            count,
            min: Millis(min),
            median: Millis(median),
            p90: Millis(p90),
            max: Millis(max),
            mean: Millis(mean),
        }
    }

    fn site(s: &str) -> SiteId {
        SiteId::parse(s).expect("site")
    }

    fn kpis() -> Kpis {
        Kpis {
            period: Period::new(t("2026-03-01T00:00:00Z"), t("2026-04-01T00:00:00Z"))
                .expect("period"),
            computed_at: t("2026-04-02T09:30:00Z"),
            n_chains_counted: 2,
            n_chains_incomplete: 1,
            chains_broken: vec![Coi::parse("CHA999926ABC123").expect("coi")],
            vein_to_vein: Some(spans(
                2,
                337 * H,
                337 * H,
                338 * H,
                338 * H,
                337 * H + H / 2,
            )),
            sites: vec![SiteKpis {
                site: site("mfg-1"),
                dwell: Some(spans(1, 29 * H, 29 * H, 29 * H, 29 * H, 29 * H)),
                n_condition_records: 3,
                n_excursions: 1,
                findings: vec![FindingCount {
                    code: "custody.seal_broken".into(),
                    n: 1,
                }],
            }],
            lanes: vec![LaneKpis {
                from: site("clinic-a"),
                to: site("mfg-1"),
                limit: Millis(48 * H),
                handoff: Some(spans(1, 18 * H, 18 * H, 18 * H, 18 * H, 18 * H)),
                n_late: 0,
                n_with_excursion: 0,
            }],
            findings_unplaced: vec![],
        }
    }

    #[test]
    fn instants_are_utc_days_or_rfc3339_times() {
        assert_eq!(parse_instant("2026-03-01"), Ok(t("2026-03-01T00:00:00Z")));
        assert_eq!(
            parse_instant("2026-03-01T08:00:00Z"),
            Ok(t("2026-03-01T08:00:00Z"))
        );
        for bad in [
            "2026-02-30",
            "2026-3-01",
            "01/03/2026",
            "2026-03-01T08:00:00+01:00",
            "",
        ] {
            assert!(parse_instant(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn csv_is_long_format_with_one_figure_a_row() {
        expect![[r#"
            scope,site,from_site,to_site,metric,value
            network,,,,chains_counted,2
            network,,,,chains_incomplete,1
            network,,,,chains_broken,1
            network,,,,vein_to_vein_count,2
            network,,,,vein_to_vein_min_ms,1213200000
            network,,,,vein_to_vein_median_ms,1213200000
            network,,,,vein_to_vein_p90_ms,1216800000
            network,,,,vein_to_vein_max_ms,1216800000
            network,,,,vein_to_vein_mean_ms,1215000000
            site,mfg-1,,,dwell_count,1
            site,mfg-1,,,dwell_min_ms,104400000
            site,mfg-1,,,dwell_median_ms,104400000
            site,mfg-1,,,dwell_p90_ms,104400000
            site,mfg-1,,,dwell_max_ms,104400000
            site,mfg-1,,,dwell_mean_ms,104400000
            site,mfg-1,,,condition_records,3
            site,mfg-1,,,excursions,1
            site,mfg-1,,,excursion_rate,0.3333333333333333
            site,mfg-1,,,findings.custody.seal_broken,1
            lane,,clinic-a,mfg-1,limit_ms,172800000
            lane,,clinic-a,mfg-1,handoff_count,1
            lane,,clinic-a,mfg-1,handoff_min_ms,64800000
            lane,,clinic-a,mfg-1,handoff_median_ms,64800000
            lane,,clinic-a,mfg-1,handoff_p90_ms,64800000
            lane,,clinic-a,mfg-1,handoff_max_ms,64800000
            lane,,clinic-a,mfg-1,handoff_mean_ms,64800000
            lane,,clinic-a,mfg-1,late,0
            lane,,clinic-a,mfg-1,with_excursion,0
            lane,,clinic-a,mfg-1,excursion_rate,0
        "#]]
        .assert_eq(&csv(&kpis()).replace("\r\n", "\n"));
        assert!(csv(&kpis()).ends_with("excursion_rate,0\r\n"));
    }

    #[test]
    fn csv_fields_are_quoted_as_rfc_4180_asks() {
        assert_eq!(csv_field("mfg-1"), "mfg-1");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("two\nlines"), "\"two\nlines\"");
    }

    #[test]
    fn json_gives_spans_in_milliseconds_and_rates_as_fractions() {
        let v: Value = serde_json::from_str(&json(&kpis())).expect("json");
        assert_eq!(v["vein_to_vein"]["median_ms"], 337 * H);
        assert_eq!(v["chains_broken"], json!(["CHA999926ABC123"]));
        assert_eq!(v["sites"][0]["findings"]["custody.seal_broken"], 1);
        assert_eq!(v["lanes"][0]["handoff"]["count"], 1);
        assert_eq!(v["lanes"][0]["excursion_rate"], 0.0);
        let mut none = kpis();
        none.vein_to_vein = None;
        none.sites[0].n_condition_records = 0;
        none.sites[0].n_excursions = 0;
        let v: Value = serde_json::from_str(&json(&none)).expect("json");
        assert_eq!(v["vein_to_vein"], Value::Null);
        assert_eq!(v["sites"][0]["excursion_rate"], Value::Null);
    }

    #[test]
    fn text_lists_broken_chains_and_gives_human_spans() {
        let out = text(&kpis());
        assert!(
            out.starts_with(
                "KPIs from 2026-03-01T00:00:00Z to 2026-04-01T00:00:00Z (end excluded), computed 2026-04-02T09:30:00Z\n\
                 chains:        2 counted (1 incomplete), 1 broken and left out of every time and rate\n\
                 broken:        CHA999926ABC123\n\
                 vein-to-vein:  median 14d 1h, p90 14d 2h, min 14d 1h, max 14d 2h (2 chains)\n"
            ),
            "{out}"
        );
        assert!(out.contains("custody.seal_broken 1"), "{out}");
        assert!(out.contains("1 (33.3%)"), "{out}");
        let mut one = kpis();
        one.vein_to_vein = Some(spans(1, 337 * H, 337 * H, 337 * H, 337 * H, 337 * H));
        assert!(
            text(&one).contains("max 14d 1h (1 chain)\n"),
            "{}",
            text(&one)
        );
        one.vein_to_vein = None;
        assert!(
            text(&one).contains("vein-to-vein:  none (no administration in the period)\n"),
            "{}",
            text(&one)
        );
    }
}
