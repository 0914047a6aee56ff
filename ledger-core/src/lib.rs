//! The custody ledger's pure domain: event model, canonical CBOR, signatures, trust, the
//! chain verifier, projections and export bundles.
//!
//! Architecture invariant: this crate does no I/O, spawns nothing, and never reads a clock
//! or a random source. Time and keys come in as parameters. Everything an offline verifier
//! needs is here, so a regulator's check depends on this crate alone.

pub mod alert;
pub mod bundle;
pub mod causal;
pub mod cbor;
pub mod crypto;
pub mod event;
pub mod finding;
pub mod ids;
pub mod kpi;
pub mod projection;
pub mod replica;
pub mod time;
pub mod trust;
pub mod verify;

pub use alert::{Alert, AlertKey, AlertKind, AlertPolicy, AlertSeverity};
pub use bundle::{
    verify_bundle, verify_bundle_trusting, AnchorTrust, Bundle, BundleDraft, BundleOptions,
    BundleReport,
};
pub use causal::ClockIndex;
pub use crypto::{Fingerprint, PublicKey, SecretKey, Signature};
pub use event::{
    Approval, Body, Event, Meaning, NewUnit, Reading, RequestDigest, Signer, UnknownBody,
    UnsignedEvent, Witness,
};
pub use finding::{Code, Finding, Severity};
pub use ids::{Coi, Din, EventId, IdError, NetworkId, OperatorId, Seq, ShipperId, SiteId, UnitId};
pub use kpi::{ChainInput, Durations, KpiError, KpiReport, LaneKpi, Period, SiteKpi};
pub use projection::{CausalOrder, Custody, OpenExcursion, Policy, Projection, Status};
pub use replica::{place, FeedState, Placement};
pub use time::{Millis, Timestamp};
pub use trust::{Certificate, CertificateDraft, Checkpoint, KeyStanding, Revocation, Role};
pub use verify::{verify, Admission, Options, Scope, Trust, Verdict, VerdictKind};
