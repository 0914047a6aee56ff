//! Alerts: what needs someone's attention *now*, judged from a chain's folded state and an
//! instant that comes in as a parameter.
//!
//! The verifier answers "was the past kept"; alerts answer "which patient's cells are at
//! risk right now". Both read the same [`Projection`], so an alert never contradicts the
//! verdict. This module decides; the node owns the clock, keeps the set of open alerts,
//! stamps raise and clear times and publishes the changes.
//!
//! # Rules
//!
//! Every alert is judged on event and deadline times only, never on when the node happened
//! to look, so the same state and instant always give the same alerts:
//!
//! - `deadline_near`, `deadline_imminent`, `deadline_overdue`: a live unit (not consumed,
//!   administered or destroyed) whose stability deadline is within the wide window
//!   (default 24 h), within the narrow window (default 4 h), or reached (`now >=
//!   deadline`). A unit has at most one of the three: the alert escalates.
//! - `excursion_undisposed`: a condition record flagged an excursion on a live unit, no
//!   quality disposition of any kind exists for it, and `now >= recorded + grace`
//!   (default 2 h). A rejecting disposition ends the alert: the decision was made, and
//!   moving the unit on is then a finding of the verifier.
//! - `transit_overdue`: a unit dispatched and not yet received, `now >= dispatch + limit`
//!   of its lane (from, to), 48 h unless configured per lane.
//! - `chain_broken`: a live chain (some unit live) that has a break finding.
//! - `feed_fork`: a site proven to have signed two events for one seq.
//! - `site_silent`: a site not heard from (by replication) for longer than the configured
//!   time since the last thing received from it.
//!
//! An alert clears when its rule no longer holds: a receipt ends `transit_overdue`, an
//! accepting (or rejecting) disposition `excursion_undisposed`, an administration,
//! consumption or destruction every deadline alert of the unit.

use crate::finding::{Finding, Severity as FindingSeverity};
use crate::ids::{Coi, EventId, SiteId, UnitId};
use crate::projection::{Custody, Projection};
use crate::time::{Millis, Timestamp};
use std::collections::BTreeMap;
use std::fmt;

macro_rules! kinds {
    ($( $(#[$doc:meta])* $variant:ident = $name:literal, $sev:ident; )*) => {
        /// Every alert kind; the names are a stable contract (API, metrics, NATS subjects).
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
        pub enum AlertKind { $( $(#[$doc])* $variant, )* }

        impl AlertKind {
            pub const ALL: &'static [AlertKind] = &[ $( AlertKind::$variant, )* ];

            pub fn as_str(self) -> &'static str {
                match self { $( AlertKind::$variant => $name, )* }
            }

            pub fn severity(self) -> AlertSeverity {
                match self { $( AlertKind::$variant => AlertSeverity::$sev, )* }
            }

            pub fn parse(text: &str) -> Option<AlertKind> {
                match text { $( $name => Some(AlertKind::$variant), )* _ => None }
            }
        }
    };
}

kinds! {
    /// A live unit's stability deadline is within the wide window.
    DeadlineNear = "deadline_near", Warning;
    /// A live unit's stability deadline is within the narrow window.
    DeadlineImminent = "deadline_imminent", Critical;
    /// A live unit is past its stability deadline.
    DeadlineOverdue = "deadline_overdue", Critical;
    /// An excursion has had no quality disposition for longer than the grace time.
    ExcursionUndisposed = "excursion_undisposed", Critical;
    /// A shipment has been in transit longer than its lane allows.
    TransitOverdue = "transit_overdue", Critical;
    /// A live chain has a break finding.
    ChainBroken = "chain_broken", Critical;
    /// A site signed two events for one seq.
    FeedFork = "feed_fork", Critical;
    /// Nothing has been received from a site for longer than allowed.
    SiteSilent = "site_silent", Warning;
}

impl fmt::Display for AlertKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum AlertSeverity {
    Warning,
    Critical,
}

impl AlertSeverity {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertSeverity::Warning => "warning",
            AlertSeverity::Critical => "critical",
        }
    }
}

/// What an alert is about; two alerts with the same key are the same alert (raised once,
/// cleared once).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct AlertKey {
    pub kind: AlertKind,
    pub coi: Option<Coi>,
    pub unit: Option<UnitId>,
    pub site: Option<SiteId>,
    /// The event the alert rests on (the condition record, the dispatch), when there is one.
    pub event: Option<EventId>,
}

/// One alert as judged at an instant.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Alert {
    pub key: AlertKey,
    /// When the condition began (the deadline, the dispatch plus the lane's limit, ...):
    /// an alert judged late still says when it started to hold.
    pub since: Timestamp,
    /// A sentence a person understands.
    pub message: String,
}

/// The thresholds alerts use. All spans are positive (checked where configuration is
/// read).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlertPolicy {
    /// `deadline_near` within this span of the deadline (default 24 h).
    pub deadline_near: Millis,
    /// `deadline_imminent` within this span (default 4 h); not wider than `deadline_near`.
    pub deadline_imminent: Millis,
    /// `excursion_undisposed` once a flagged excursion waited this long (default 2 h).
    pub excursion_grace: Millis,
    /// `transit_overdue` after this long in transit, unless the lane has its own limit.
    pub transit_default: Millis,
    /// Limits per lane (from, to).
    pub transit_lanes: BTreeMap<(SiteId, SiteId), Millis>,
    /// `site_silent` after this long without hearing from a site (default 15 min).
    pub site_silence: Millis,
}

impl Default for AlertPolicy {
    fn default() -> AlertPolicy {
        AlertPolicy {
            deadline_near: Millis(24 * Millis::HOUR.0),
            deadline_imminent: Millis(4 * Millis::HOUR.0),
            excursion_grace: Millis(2 * Millis::HOUR.0),
            transit_default: Millis(48 * Millis::HOUR.0),
            transit_lanes: BTreeMap::new(),
            site_silence: Millis(15 * Millis::MINUTE.0),
        }
    }
}

impl AlertPolicy {
    /// How long a shipment may be in transit from `from` to `to`.
    pub fn transit_limit(&self, from: &SiteId, to: &SiteId) -> Millis {
        self.transit_lanes
            .get(&(from.clone(), to.clone()))
            .copied()
            .unwrap_or(self.transit_default)
    }
}

/// The alerts of one chain at `now`, in key order. `findings` are the chain's open
/// findings (the node's fold over its stored events).
pub fn chain_alerts(
    p: &Projection,
    findings: &[Finding],
    now: Timestamp,
    policy: &AlertPolicy,
) -> Vec<Alert> {
    let coi = p.coi();
    let key = |kind, unit: Option<&UnitId>, site: Option<&SiteId>, event| AlertKey {
        kind,
        coi: Some(coi.clone()),
        unit: unit.cloned(),
        site: site.cloned(),
        event,
    };
    let mut out = Vec::new();
    for u in p.units() {
        if u.custody.gone().is_some() {
            continue;
        }
        let deadline = u.stability_deadline;
        let holder = answerable(&u.custody);
        if now >= deadline {
            out.push(Alert {
                key: key(AlertKind::DeadlineOverdue, Some(&u.unit), holder, None),
                since: deadline,
                message: format!(
                    "OVERDUE: unit {} of chain {coi} passed its stability deadline {deadline} {} ago and is still live{}",
                    u.unit,
                    Millis(now.0 - deadline.0),
                    holder.map(|s| format!(" ({})", where_text(&u.custody, s))).unwrap_or_default()
                ),
            });
        } else {
            let left = Millis(deadline.0 - now.0);
            let window = if left <= policy.deadline_imminent {
                Some((AlertKind::DeadlineImminent, policy.deadline_imminent))
            } else if left <= policy.deadline_near {
                Some((AlertKind::DeadlineNear, policy.deadline_near))
            } else {
                None
            };
            if let Some((kind, span)) = window {
                out.push(Alert {
                    key: key(kind, Some(&u.unit), holder, None),
                    since: deadline.minus(span),
                    message: format!(
                        "unit {} of chain {coi} has {left} left before its stability deadline {deadline}{}",
                        u.unit,
                        holder.map(|s| format!(" ({})", where_text(&u.custody, s))).unwrap_or_default()
                    ),
                });
            }
        }
        if let Custody::InTransit {
            from,
            to,
            shipper,
            dispatch,
            since,
        } = &u.custody
        {
            let limit = policy.transit_limit(from, to);
            let due = since.plus(limit);
            if now >= due {
                out.push(Alert {
                    key: key(AlertKind::TransitOverdue, Some(&u.unit), Some(to), Some(*dispatch)),
                    since: due,
                    message: format!(
                        "unit {} of chain {coi} has been in transit from {from} to {to} (shipper {shipper}) since {since}, {} ago; the lane allows {limit} and no receipt is recorded",
                        u.unit,
                        Millis(now.0 - since.0)
                    ),
                });
            }
        }
    }
    for x in p.undisposed_excursions() {
        if x.rejected {
            continue;
        }
        let due = x.recorded.plus(policy.excursion_grace);
        if now < due {
            continue;
        }
        for unit in &x.units {
            let holder = p.unit(unit).and_then(|u| answerable(&u.custody));
            out.push(Alert {
                key: key(AlertKind::ExcursionUndisposed, Some(unit), holder, Some(x.condition)),
                since: due,
                message: format!(
                    "unit {unit} of chain {coi} had a temperature excursion (recorded {}, event {}) and no quality disposition after {}: disposition it before the unit moves on",
                    x.recorded,
                    x.condition.short(),
                    Millis(now.0 - x.recorded.0)
                ),
            });
        }
    }
    if p.is_live() {
        let breaks: Vec<&Finding> = findings
            .iter()
            .filter(|f| f.code.severity() == FindingSeverity::Break)
            .collect();
        if let Some(first) = breaks.first() {
            let since = p.span().map_or(now, |(_, last)| last);
            out.push(Alert {
                key: key(AlertKind::ChainBroken, None, None, None),
                since,
                message: format!(
                    "chain {coi} is live and has {} break finding(s), first {}: {}",
                    breaks.len(),
                    first.code,
                    first.message
                ),
            });
        }
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    out.dedup_by(|a, b| a.key == b.key);
    out
}

/// The site an alert about a live unit goes to: its holder, or the site it is on its way
/// to (the one that must receive it).
fn answerable(custody: &Custody) -> Option<&SiteId> {
    match custody {
        Custody::Held { site } => Some(site),
        Custody::InTransit { to, .. } => Some(to),
        _ => None,
    }
}

/// Where a live unit is, for messages.
fn where_text(custody: &Custody, holder: &SiteId) -> String {
    match custody {
        Custody::InTransit { from, to, .. } => format!("in transit from {from} to {to}"),
        _ => format!("held by {holder}"),
    }
}

/// The first instant after `now` at which [`chain_alerts`] would answer differently with no
/// new event (a deadline window opening, a deadline passing, a grace or a lane limit
/// running out); `None` when time alone changes nothing.
pub fn next_alert_change(
    p: &Projection,
    now: Timestamp,
    policy: &AlertPolicy,
) -> Option<Timestamp> {
    let mut candidates = Vec::new();
    for u in p.units() {
        if u.custody.gone().is_some() {
            continue;
        }
        let d = u.stability_deadline;
        candidates.extend([
            d.minus(policy.deadline_near),
            d.minus(policy.deadline_imminent),
            d,
        ]);
        if let Custody::InTransit {
            from, to, since, ..
        } = &u.custody
        {
            candidates.push(since.plus(policy.transit_limit(from, to)));
        }
    }
    for x in p.undisposed_excursions() {
        if !x.rejected {
            candidates.push(x.recorded.plus(policy.excursion_grace));
        }
    }
    candidates.into_iter().filter(|t| *t > now).min()
}

/// A site proven to have forked its feed.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ForkSeen {
    pub site: SiteId,
    pub seq: u64,
    /// When the node learned of it.
    pub at: Timestamp,
}

/// The alerts about sites: forks, and sites not heard from. `heard` gives, per remote
/// site, when anything was last received from it.
pub fn site_alerts(
    forks: &[ForkSeen],
    heard: &[(SiteId, Timestamp)],
    now: Timestamp,
    policy: &AlertPolicy,
) -> Vec<Alert> {
    let mut out = Vec::new();
    for f in forks {
        out.push(Alert {
            key: AlertKey {
                kind: AlertKind::FeedFork,
                coi: None,
                unit: None,
                site: Some(f.site.clone()),
                event: None,
            },
            since: f.at,
            message: format!(
                "site {} signed two different events as seq {} (equivocation): its feed is frozen past that seq; investigate its key and node",
                f.site, f.seq
            ),
        });
    }
    for (site, last) in heard {
        let due = last.plus(policy.site_silence);
        if now >= due {
            out.push(Alert {
                key: AlertKey {
                    kind: AlertKind::SiteSilent,
                    coi: None,
                    unit: None,
                    site: Some(site.clone()),
                    event: None,
                },
                since: due,
                message: format!(
                    "nothing received from site {site} since {last} ({} ago, more than the {} allowed): check its node and its link to the network",
                    Millis(now.0 - last.0),
                    policy.site_silence
                ),
            });
        }
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    out.dedup_by(|a, b| a.key == b.key);
    out
}

/// The first instant after `now` at which [`site_alerts`] would change by time alone.
pub fn next_site_change(
    heard: &[(SiteId, Timestamp)],
    now: Timestamp,
    policy: &AlertPolicy,
) -> Option<Timestamp> {
    heard
        .iter()
        .map(|(_, last)| last.plus(policy.site_silence))
        .filter(|t| *t > now)
        .min()
}

/// What changed between two judgements of the same subjects: (raised, cleared) keys.
pub fn diff<'a>(before: &'a [Alert], after: &'a [Alert]) -> (Vec<&'a Alert>, Vec<&'a Alert>) {
    let old: BTreeMap<&AlertKey, &Alert> = before.iter().map(|a| (&a.key, a)).collect();
    let new: BTreeMap<&AlertKey, &Alert> = after.iter().map(|a| (&a.key, a)).collect();
    let raised = after.iter().filter(|a| !old.contains_key(&a.key)).collect();
    let cleared = before
        .iter()
        .filter(|a| !new.contains_key(&a.key))
        .collect();
    (raised, cleared)
}

#[cfg(test)]
mod tests {
    //! Each rule is checked on both sides of its line, with a small journey folded by the
    //! same fold the verifier and the node use.
    use super::*;
    use crate::event::{Body, Meaning, NewUnit, Reading, Signer, UnsignedEvent};
    use crate::ids::{NetworkId, OperatorId, Seq, ShipperId};
    use crate::projection::{CausalOrder, Policy};
    use crate::trust::Role;
    use crate::{ClockIndex, Event, SecretKey};

    const H: i64 = Millis::HOUR.0;

    /// A journey of one chain, folded as it is built; each site signs its own feed.
    struct Journey {
        p: Projection,
        clocks: ClockIndex,
        heads: Vec<EventId>,
        feeds: BTreeMap<String, (u64, Option<EventId>)>,
        findings: Vec<Finding>,
    }

    fn site(s: &str) -> SiteId {
        SiteId::parse(s).expect("test site")
    }

    fn unit(u: &str) -> UnitId {
        UnitId::parse(u).expect("test unit")
    }

    fn coi() -> Coi {
        Coi::parse("CHA999926ABC123").expect("test coi")
    }

    /// t hours after the journey's start.
    fn t(hours: f64) -> Timestamp {
        Timestamp(1_800_000_000_000 + (hours * H as f64) as i64)
    }

    impl Journey {
        fn new() -> Journey {
            Journey {
                p: Projection::new(coi()),
                clocks: ClockIndex::new(),
                heads: Vec::new(),
                feeds: BTreeMap::new(),
                findings: Vec::new(),
            }
        }

        fn add(&mut self, author: &str, at: Timestamp, body: Body) -> EventId {
            // TEST-ONLY key, derived from the site name.
            let mut seed = [0u8; 32];
            seed[..author.len()].copy_from_slice(author.as_bytes());
            let key = SecretKey::from_seed(&seed);
            let (seq, prev) = self.feeds.get(author).copied().unwrap_or((0, None));
            let meaning = match body {
                Body::ExcursionDisposition { .. } => Meaning::Approved,
                _ => Meaning::Performed,
            };
            let e: Event = UnsignedEvent {
                network: NetworkId::parse("alert-test").expect("test network"),
                author: site(author),
                seq: Seq(seq + 1),
                prev,
                key: key.public(),
                coi: coi(),
                parents: self.heads.clone(),
                occurred_at: at,
                recorded_at: at,
                signer: Signer {
                    operator: OperatorId::parse("op.test").expect("test operator"),
                    printed_name: "Test Operator".into(),
                    meaning,
                },
                body,
            }
            .sign(&key);
            self.feeds
                .insert(author.to_owned(), (seq + 1, Some(e.id())));
            let role = match author {
                "clinic-a" => Role::Clinic,
                "depot-1" => Role::Depot,
                _ => Role::Manufacturer,
            };
            self.clocks.insert(&e, prev);
            self.p.apply(
                &e,
                Some(role),
                &self.clocks,
                &Policy::default(),
                &mut self.findings,
            );
            assert!(self.clocks.contains(e.id()));
            self.heads = vec![e.id()];
            e.id()
        }

        fn collect(&mut self, at: Timestamp, deadline: Timestamp) {
            self.add(
                "clinic-a",
                at,
                Body::Collection {
                    units: vec![NewUnit {
                        unit: unit("APH-1"),
                        stability_deadline: deadline,
                        temp_min_centi: 200,
                        temp_max_centi: 800,
                    }],
                    dins: vec![],
                },
            );
        }

        fn ship(&mut self, at: Timestamp, to: &str) -> EventId {
            self.add(
                "clinic-a",
                at,
                Body::Pack {
                    shipper: ShipperId::parse("SHP-1").expect("test shipper"),
                    units: vec![unit("APH-1")],
                    seal: "S-1".into(),
                },
            );
            self.add(
                "clinic-a",
                at,
                Body::Dispatch {
                    shipper: ShipperId::parse("SHP-1").expect("test shipper"),
                    to: site(to),
                },
            )
        }

        fn kinds(&self, now: Timestamp, policy: &AlertPolicy) -> Vec<&'static str> {
            chain_alerts(&self.p, &self.findings, now, policy)
                .iter()
                .map(|a| a.key.kind.as_str())
                .collect()
        }
    }

    #[test]
    fn deadline_alerts_escalate_at_each_window_and_at_the_deadline() {
        let policy = AlertPolicy::default();
        let mut j = Journey::new();
        j.collect(t(0.0), t(72.0));
        let none: Vec<&str> = vec![];
        assert_eq!(j.kinds(t(47.99), &policy), none);
        assert_eq!(j.kinds(t(48.0), &policy), ["deadline_near"]);
        assert_eq!(j.kinds(t(67.99), &policy), ["deadline_near"]);
        assert_eq!(j.kinds(t(68.0), &policy), ["deadline_imminent"]);
        assert_eq!(
            Timestamp(t(72.0).0 - 1),
            next_alert_change(&j.p, t(68.0), &policy)
                .map(|d| Timestamp(d.0 - 1))
                .expect("deadline")
        );
        assert_eq!(
            j.kinds(Timestamp(t(72.0).0 - 1), &policy),
            ["deadline_imminent"]
        );
        let overdue = chain_alerts(&j.p, &j.findings, t(72.0), &policy);
        assert_eq!(overdue.len(), 1);
        assert_eq!(overdue[0].key.kind, AlertKind::DeadlineOverdue);
        assert_eq!(overdue[0].since, t(72.0));
        assert_eq!(overdue[0].key.unit, Some(unit("APH-1")));
        assert_eq!(overdue[0].key.site, Some(site("clinic-a")));
        assert!(
            overdue[0].message.starts_with("OVERDUE: unit APH-1"),
            "{}",
            overdue[0].message
        );
        assert_eq!(next_alert_change(&j.p, t(72.0), &policy), None);
        assert_eq!(next_alert_change(&j.p, t(0.0), &policy), Some(t(48.0)));
    }

    #[test]
    fn a_unit_that_left_the_chain_has_no_deadline_alert() {
        let policy = AlertPolicy::default();
        let mut j = Journey::new();
        j.collect(t(0.0), t(10.0));
        assert_eq!(j.kinds(t(11.0), &policy), ["deadline_overdue"]);
        j.add(
            "clinic-a",
            t(11.0),
            Body::Destruction {
                unit: unit("APH-1"),
                reason: "expired".into(),
                witness: None,
            },
        );
        let none: Vec<&str> = vec![];
        assert_eq!(j.kinds(t(11.0), &policy), none);
        assert_eq!(next_alert_change(&j.p, t(0.0), &policy), None);
    }

    #[test]
    fn transit_alert_follows_the_lane_limit_and_a_receipt_clears_it() {
        let mut policy = AlertPolicy::default();
        policy
            .transit_lanes
            .insert((site("clinic-a"), site("mfg-1")), Millis(6 * H));
        let mut j = Journey::new();
        j.collect(t(0.0), t(500.0));
        let dispatch = j.ship(t(1.0), "mfg-1");
        let none: Vec<&str> = vec![];
        assert_eq!(j.kinds(Timestamp(t(7.0).0 - 1), &policy), none);
        let late = chain_alerts(&j.p, &j.findings, t(7.0), &policy);
        assert_eq!(late.len(), 1);
        assert_eq!(late[0].key.kind, AlertKind::TransitOverdue);
        assert_eq!(late[0].key.event, Some(dispatch));
        assert_eq!(late[0].key.site, Some(site("mfg-1")));
        assert_eq!(late[0].since, t(7.0));
        // Without the lane's own limit, the default of 48 h applies.
        assert_eq!(j.kinds(t(7.0), &AlertPolicy::default()), none);
        assert_eq!(
            j.kinds(t(49.0), &AlertPolicy::default()),
            ["transit_overdue"]
        );
        j.add(
            "mfg-1",
            t(8.0),
            Body::Receipt {
                shipper: ShipperId::parse("SHP-1").expect("test shipper"),
                from: site("clinic-a"),
                seal_intact: true,
                scanned_coi: coi(),
            },
        );
        assert_eq!(j.kinds(t(8.0), &policy), none);
        assert!(j.findings.is_empty(), "{:?}", j.findings);
    }

    #[test]
    fn an_undisposed_excursion_alerts_after_the_grace_and_a_disposition_clears_it() {
        let policy = AlertPolicy::default();
        let mut j = Journey::new();
        j.collect(t(0.0), t(500.0));
        let condition = j.add(
            "clinic-a",
            t(1.0),
            Body::ConditionRecord {
                units: vec![unit("APH-1")],
                readings: vec![Reading {
                    at: t(0.5),
                    temp_centi: 940,
                }],
                min_centi: 400,
                max_centi: 940,
                excursion: false,
            },
        );
        let none: Vec<&str> = vec![];
        assert_eq!(j.kinds(Timestamp(t(3.0).0 - 1), &policy), none);
        assert_eq!(next_alert_change(&j.p, t(1.0), &policy), Some(t(3.0)));
        let open = chain_alerts(&j.p, &j.findings, t(3.0), &policy);
        assert_eq!(open.len(), 1);
        assert_eq!(open[0].key.kind, AlertKind::ExcursionUndisposed);
        assert_eq!(open[0].key.event, Some(condition));
        j.add(
            "mfg-1",
            t(4.0),
            Body::ExcursionDisposition {
                condition,
                accepted: true,
                reason: "within validated stability data".into(),
            },
        );
        assert_eq!(j.kinds(t(4.0), &policy), none);
    }

    #[test]
    fn readings_inside_the_range_raise_nothing() {
        let mut j = Journey::new();
        j.collect(t(0.0), t(500.0));
        j.add(
            "clinic-a",
            t(1.0),
            Body::ConditionRecord {
                units: vec![unit("APH-1")],
                readings: vec![Reading {
                    at: t(0.5),
                    temp_centi: 800,
                }],
                min_centi: 200,
                max_centi: 800,
                excursion: false,
            },
        );
        let none: Vec<&str> = vec![];
        assert_eq!(j.kinds(t(100.0), &AlertPolicy::default()), none);
    }

    #[test]
    fn a_break_on_a_live_chain_is_an_alert_and_on_a_closed_chain_is_not() {
        let policy = AlertPolicy::default();
        let mut j = Journey::new();
        j.collect(t(0.0), t(500.0));
        j.ship(t(1.0), "mfg-1");
        j.add(
            "mfg-1",
            t(2.0),
            Body::Receipt {
                shipper: ShipperId::parse("SHP-1").expect("test shipper"),
                from: site("clinic-a"),
                seal_intact: false,
                scanned_coi: coi(),
            },
        );
        assert_eq!(j.kinds(t(2.0), &policy), ["chain_broken"]);
        let a = chain_alerts(&j.p, &j.findings, t(2.0), &policy);
        assert!(
            a[0].message.contains("custody.seal_broken"),
            "{}",
            a[0].message
        );
        j.add(
            "mfg-1",
            t(3.0),
            Body::Destruction {
                unit: unit("APH-1"),
                reason: "seal broken".into(),
                witness: None,
            },
        );
        let none: Vec<&str> = vec![];
        assert_eq!(j.kinds(t(3.0), &policy), none);
    }

    #[test]
    fn site_alerts_report_forks_and_silence_past_the_limit() {
        let policy = AlertPolicy::default();
        let heard = [(site("depot-1"), t(0.0))];
        let fork = ForkSeen {
            site: site("mfg-1"),
            seq: 7,
            at: t(0.1),
        };
        let kinds = |now| -> Vec<&'static str> {
            site_alerts(std::slice::from_ref(&fork), &heard, now, &policy)
                .iter()
                .map(|a| a.key.kind.as_str())
                .collect()
        };
        assert_eq!(kinds(Timestamp(t(0.25).0 - 1)), ["feed_fork"]);
        assert_eq!(kinds(t(0.25)), ["feed_fork", "site_silent"]);
        assert_eq!(next_site_change(&heard, t(0.0), &policy), Some(t(0.25)));
    }

    #[test]
    fn diff_names_what_was_raised_and_what_cleared() {
        let policy = AlertPolicy::default();
        let mut j = Journey::new();
        j.collect(t(0.0), t(72.0));
        let before = chain_alerts(&j.p, &j.findings, t(50.0), &policy);
        let after = chain_alerts(&j.p, &j.findings, t(70.0), &policy);
        let (raised, cleared) = diff(&before, &after);
        assert_eq!(raised.len(), 1);
        assert_eq!(raised[0].key.kind, AlertKind::DeadlineImminent);
        assert_eq!(cleared.len(), 1);
        assert_eq!(cleared[0].key.kind, AlertKind::DeadlineNear);
        let (raised, cleared) = diff(&after, &after);
        assert!(raised.is_empty() && cleared.is_empty());
    }

    #[test]
    fn kind_names_round_trip() {
        for k in AlertKind::ALL {
            assert_eq!(AlertKind::parse(k.as_str()), Some(*k));
        }
        assert_eq!(AlertKind::parse("deadline"), None);
    }
}
