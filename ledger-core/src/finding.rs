//! Findings: what the verifier reports, each with a stable code, the events it concerns and
//! a sentence a person understands.
//!
//! Codes are part of the public contract (fixtures, the API, exported reports): a code is
//! never renamed or reused for another meaning. Each code has a [`Severity`]: a `Break` is
//! proof that something is wrong; `Missing` is evidence that is absent (a dropped or not yet
//! replicated event), which makes a verdict `incomplete` rather than `broken`.

use crate::ids::EventId;
use std::fmt;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum Severity {
    /// Missing evidence: the chain cannot be shown intact, nor shown broken.
    Missing,
    /// Proof of a break.
    Break,
    /// The evidence cannot be checked against the anchor the verifier trusts (another
    /// network's, a fingerprint that matches nothing, a secret key given as the anchor):
    /// nothing is said about the chain, neither intact nor broken.
    Unverifiable,
}

macro_rules! codes {
    ($( $(#[$doc:meta])* $variant:ident = $code:literal, $sev:ident; )*) => {
        /// Every finding code.
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
        pub enum Code { $( $(#[$doc])* $variant, )* }

        impl Code {
            pub const ALL: &'static [Code] = &[ $( Code::$variant, )* ];

            /// The stable `family.name` string.
            pub fn as_str(self) -> &'static str {
                match self { $( Code::$variant => $code, )* }
            }

            pub fn severity(self) -> Severity {
                match self { $( Code::$variant => Severity::$sev, )* }
            }

            pub fn parse(text: &str) -> Option<Code> {
                match text { $( $code => Some(Code::$variant), )* _ => None }
            }
        }
    };
}

codes! {
    /// The signature does not verify under the key the event names.
    BadSignature = "integrity.bad_signature", Break;
    /// No certificate signed by the anchor binds this key to the author site.
    UnknownKey = "integrity.unknown_key", Break;
    /// The key's certificates are not valid at the event's recorded time.
    KeyExpired = "integrity.key_expired", Break;
    /// The key was revoked before the event's recorded time.
    KeyRevoked = "integrity.key_revoked", Break;
    /// A certificate or revocation that the anchor did not sign, or for another network.
    BadCertificate = "integrity.bad_certificate", Break;
    /// An event's prev hash is not the id of the author's previous event.
    HashMismatch = "integrity.hash_mismatch", Break;
    /// A parent named by an event is not in the evidence.
    DanglingParent = "integrity.dangling_parent", Missing;
    /// Seqs are missing inside a feed that should be whole.
    FeedGap = "integrity.feed_gap", Missing;
    /// One author signed two different events (or heads) for the same seq.
    FeedFork = "integrity.feed_fork", Break;
    /// Recorded time goes backwards beyond the tolerance.
    ClockBackwards = "integrity.clock_backwards", Break;
    /// An event of another network.
    WrongNetwork = "integrity.wrong_network", Break;
    /// Parents and feed order contradict each other.
    CausalCycle = "integrity.causal_cycle", Break;
    /// A head the exporter stated is not in the evidence.
    MissingHead = "integrity.missing_head", Missing;
    /// An event points at a record (condition record, corrected event) that is not present.
    DanglingReference = "integrity.dangling_reference", Missing;
    /// A body kind this version does not know; not judged.
    UnknownBodyKind = "integrity.unknown_body_kind", Missing;
    /// Neither a collection nor a reassignment opens the chain.
    NoCollection = "identity.no_collection", Break;
    /// A second collection for the same COI.
    DuplicateCollection = "identity.duplicate_collection", Break;
    /// An event names a unit that no collection, transformation or reassignment created.
    UnitWithoutProvenance = "identity.unit_without_provenance", Break;
    /// A scanned COI differs from the unit's, or an event belongs to another COI.
    CoiMismatch = "identity.coi_mismatch", Break;
    /// A consumed, administered or destroyed unit is used again, or a unit id is created twice.
    UnitReused = "identity.unit_reused", Break;
    /// A unit administered under a COI that is not its own.
    AdministeredToOtherCoi = "identity.administered_to_other_coi", Break;
    /// A reassignment without the approvals policy requires.
    ReassignmentUnapproved = "identity.reassignment_unapproved", Break;
    /// A receipt with no matching dispatch in its causal past.
    ReceiptWithoutDispatch = "custody.receipt_without_dispatch", Break;
    /// Dispatched to one site, received by another.
    WrongRecipient = "custody.wrong_recipient", Break;
    /// An action by a site that does not hold the unit.
    NotCustodian = "custody.not_custodian", Break;
    /// Two causally unordered actions on the same unit.
    ConcurrentActions = "custody.concurrent_actions", Break;
    /// The seal was found broken at receipt.
    SealBroken = "custody.seal_broken", Break;
    /// A site did something its role does not allow.
    RolePermitted = "authority.role_not_permitted", Break;
    /// A decision that needs the signature meaning "approved" was signed otherwise.
    ApprovalRequired = "authority.approval_required", Break;
    /// A unit moved on with an excursion that had no accepting disposition.
    ExcursionUndisposed = "condition.excursion_undisposed", Break;
    /// A unit moved on although its excursion was rejected.
    ExcursionRejected = "condition.excursion_rejected", Break;
    /// A unit moved after its stability deadline.
    StabilityExpired = "condition.stability_expired", Break;
    /// Drug product dispatched or administered without a standing QC release.
    QcReleaseMissing = "condition.qc_release_missing", Break;
    /// The bundle is not a well-formed bundle (truncated, altered framing, bad record).
    BundleMalformed = "bundle.malformed", Break;
    /// The exporter's signature over the bundle does not verify.
    BundleBadSignature = "bundle.bad_signature", Break;
    /// The exporter's key has no valid certificate from the anchor.
    BundleUntrustedExporter = "bundle.untrusted_exporter", Break;
    /// The anchor the bundle names is not the one the verifier trusts: nothing in it can be
    /// checked against the verifier's anchor.
    BundleAnchorMismatch = "bundle.anchor_mismatch", Unverifiable;
    /// Only a fingerprint of the anchor was given, and the bundle does not carry the anchor
    /// key it could be checked against (format 1): nothing could be verified.
    BundleAnchorUnknown = "bundle.anchor_unknown", Unverifiable;
    /// The "anchor" given is the anchor's secret key (its public key is the one the bundle
    /// names): a secret key is never a trust root, and it should not be where it was read.
    BundleAnchorIsSecret = "bundle.anchor_is_secret", Unverifiable;
    /// No certificate the bundle carries was issued by the anchor given (a bundle that
    /// does not name its anchor): it comes from another network, or the anchor is wrong.
    BundleAnchorNotIssuer = "bundle.anchor_not_issuer", Unverifiable;
    /// The bundle holds no event of its chain: there is nothing to show intact.
    BundleNoEvents = "bundle.no_events", Missing;
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Code {
    /// Codes that assert something is absent (no release, no receipt, no custody, no
    /// provenance, no ordering). When the judged event's causal past is itself missing
    /// evidence, such a finding may be an artefact of what is missing, so it cannot prove
    /// a break (see [`Finding::depends_on_missing`]).
    pub fn asserts_absence(self) -> bool {
        matches!(
            self,
            Code::QcReleaseMissing
                | Code::ExcursionUndisposed
                | Code::ExcursionRejected
                | Code::ReceiptWithoutDispatch
                | Code::NotCustodian
                | Code::ConcurrentActions
                | Code::UnitWithoutProvenance
                | Code::NoCollection
        )
    }
}

/// One thing the verifier found.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Finding {
    pub code: Code,
    /// The events it concerns, most relevant first (for a fork: both events).
    pub events: Vec<EventId>,
    /// One sentence for a person.
    pub message: String,
    /// The finding asserts an absence on an event whose causal past lacks evidence (a
    /// dangling parent, a feed gap, an event that could not be admitted); the missing
    /// part may hold what is said to be absent. Such a finding counts as missing evidence.
    pub depends_on_missing: bool,
}

impl Finding {
    pub fn new(code: Code, events: Vec<EventId>, message: impl Into<String>) -> Finding {
        Finding {
            code,
            events,
            message: message.into(),
            depends_on_missing: false,
        }
    }

    /// The code's severity, lowered to `Missing` when the finding depends on missing
    /// evidence.
    pub fn severity(&self) -> Severity {
        if self.depends_on_missing {
            Severity::Missing
        } else {
            self.code.severity()
        }
    }
}

/// Findings of one code listed one by one before the rest are only counted.
pub const FINDINGS_SHOWN_PER_CODE: usize = 100;

/// The findings as a person or a program is shown them: at most `per_code` of each code,
/// in their order, and for each code cut short how many were left out (in code order).
/// A verdict is always judged on every finding; this only bounds what is printed.
pub fn shown(findings: &[Finding], per_code: usize) -> (Vec<&Finding>, Vec<(Code, usize)>) {
    let mut taken: std::collections::BTreeMap<Code, usize> = std::collections::BTreeMap::new();
    let mut listed = Vec::new();
    for f in findings {
        let n = taken.entry(f.code).or_default();
        *n += 1;
        if *n <= per_code {
            listed.push(f);
        }
    }
    let left_out = taken
        .into_iter()
        .filter(|(_, n)| *n > per_code)
        .map(|(code, n)| (code, n - per_code))
        .collect();
    (listed, left_out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_lists_the_first_of_each_code_and_counts_the_rest() {
        let f = |code| Finding::new(code, Vec::new(), "x");
        let mut all = vec![f(Code::BundleMalformed); 5];
        all.insert(2, f(Code::BundleNoEvents));
        let (listed, left_out) = shown(&all, 3);
        let codes: Vec<Code> = listed.iter().map(|f| f.code).collect();
        assert_eq!(
            codes,
            [
                Code::BundleMalformed,
                Code::BundleMalformed,
                Code::BundleNoEvents,
                Code::BundleMalformed
            ]
        );
        assert_eq!(left_out, [(Code::BundleMalformed, 2)]);
        let (listed, left_out) = shown(&all, 100);
        assert_eq!(listed.len(), 6);
        assert!(left_out.is_empty());
    }
}
