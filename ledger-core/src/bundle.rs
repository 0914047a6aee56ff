//! Export bundles: everything about one COI in one signed CBOR document, verifiable with
//! nothing but the network's anchor public key.
//!
//! # Bytes
//!
//! `bundle = [body, signature]`, signature = Ed25519 by the exporting site's key over
//! `b"ledger.v1.bundle\0" || body bytes`, where `body` is:
//!
//! | idx | field        | CBOR                                             |
//! |-----|--------------|--------------------------------------------------|
//! | 0   | format       | uint, 1                                          |
//! | 1   | network      | text                                             |
//! | 2   | coi          | text, canonical COI                              |
//! | 3   | exported_at  | int, ms since the Unix epoch                     |
//! | 4   | exporter     | text, the exporting site                         |
//! | 5   | exporter_key | bstr(32)                                         |
//! | 6   | heads        | array of bstr(32), strictly ascending: the COI's heads at export |
//! | 7   | events       | array of bstr, each an event's exact signed bytes |
//! | 8   | certificates | array of bstr, each a certificate's bytes        |
//! | 9   | revocations  | array of bstr                                    |
//! | 10  | checkpoints  | array of bstr                                    |
//! | 11  | anchor       | bstr(32), format 2 only: the anchor key the exporter's network uses |
//!
//! Format 2 adds `anchor` so a regulator given only the anchor's fingerprint (from
//! `ledger network info`, read out over the phone) can verify: the key in the bundle must
//! hash to that fingerprint, and then everything is checked against it. Format 1 (11
//! fields) is still read; it can only be verified with the key itself.
//!
//! Events travel as byte strings so their ids (hashes of those bytes) survive untouched.
//! A bundle that does not decode, or whose parts do not, is a `bundle.malformed` finding:
//! verifying a bundle never panics and never returns "intact" for bytes it could not read.

use crate::cbor::{self, shape, DecodeError, Fields};
use crate::crypto::{Fingerprint, PublicKey, SecretKey, Signature, TAG_BUNDLE};
use crate::event::Event;
use crate::finding::{Code, Finding};
use crate::ids::{Coi, EventId, NetworkId, SiteId};
use crate::projection::{Policy, Status};
use crate::time::Timestamp;
use crate::trust::{Certificate, CertificateDraft, Checkpoint, Revocation};
use crate::verify::{verify, Options, Scope, Trust, Verdict, VerdictKind};
use ciborium::value::Value;

pub const BUNDLE_BYTES_MAX: usize = 256 * 1024 * 1024;
pub const BUNDLE_EVENTS_MAX: usize = 1_000_000;
pub const BUNDLE_RECORDS_MAX: usize = 10_000;
const WHAT: &str = "bundle";

/// A decoded bundle. Parts that failed to decode are listed in `defects`.
#[derive(Debug)]
pub struct Bundle {
    pub network: NetworkId,
    pub coi: Coi,
    pub exported_at: Timestamp,
    pub exporter: SiteId,
    pub exporter_key: PublicKey,
    pub heads: Vec<EventId>,
    pub events: Vec<Event>,
    pub certificates: Vec<Certificate>,
    pub revocations: Vec<Revocation>,
    pub checkpoints: Vec<Checkpoint>,
    /// The anchor key the exporter names (format 2); `None` for format 1.
    pub anchor: Option<PublicKey>,
    /// Parts that did not decode: (what, why).
    pub defects: Vec<String>,
    body_bytes: Vec<u8>,
    signature: Signature,
}

/// What goes into a bundle.
#[derive(Debug)]
pub struct BundleDraft<'a> {
    pub network: &'a NetworkId,
    pub coi: &'a Coi,
    pub exported_at: Timestamp,
    pub exporter: &'a SiteId,
    pub heads: Vec<EventId>,
    pub events: Vec<&'a [u8]>,
    pub certificates: Vec<&'a [u8]>,
    pub revocations: Vec<&'a [u8]>,
    pub checkpoints: Vec<&'a [u8]>,
    /// The network's anchor key: written as format 2. `None` writes format 1, which only
    /// the golden vectors of format 1 still need.
    pub anchor: Option<PublicKey>,
}

impl BundleDraft<'_> {
    /// Encodes and signs. Events are written in the order given (a verifier does not
    /// depend on it).
    pub fn sign(&self, key: &SecretKey) -> Vec<u8> {
        let mut heads = self.heads.clone();
        heads.sort();
        heads.dedup();
        let list = |items: &[&[u8]]| Value::Array(items.iter().map(|b| cbor::bytes(b)).collect());
        let format = if self.anchor.is_some() { 2 } else { 1 };
        let mut fields = vec![
            cbor::uint(format),
            cbor::text(self.network.as_str()),
            cbor::text(self.coi.as_str()),
            cbor::int(self.exported_at.0),
            cbor::text(self.exporter.as_str()),
            cbor::bytes(&key.public().0),
            Value::Array(heads.iter().map(|h| cbor::bytes(&h.0)).collect()),
            list(&self.events),
            list(&self.certificates),
            list(&self.revocations),
            list(&self.checkpoints),
        ];
        if let Some(anchor) = &self.anchor {
            fields.push(cbor::bytes(&anchor.0));
        }
        let body = Value::Array(fields);
        let body_bytes = cbor::encode(&body);
        let signature = key.sign(TAG_BUNDLE, &body_bytes);
        cbor::encode(&Value::Array(vec![body, cbor::bytes(&signature.0)]))
    }
}

fn byte_items(f: &mut Fields, field: &str, max: usize) -> Result<Vec<Vec<u8>>, DecodeError> {
    f.list(field, max)?
        .into_iter()
        .map(|v| match v {
            Value::Bytes(b) => Ok(b),
            _ => Err(shape(WHAT, format!("{field} items must be byte strings"))),
        })
        .collect()
}

/// Parts that do not decode: the first [`DEFECTS_LISTED`] by name, the rest counted, so a
/// file of a million broken parts makes one summary line, not a million findings.
#[derive(Default)]
struct Defects {
    listed: Vec<String>,
    more: usize,
}

/// Defects named one by one before the rest are only counted (fewer than
/// [`crate::finding::FINDINGS_SHOWN_PER_CODE`], so the count is always shown too).
pub const DEFECTS_LISTED: usize = 50;

impl Defects {
    fn note(&mut self, message: impl FnOnce() -> String) {
        if self.listed.len() < DEFECTS_LISTED {
            self.listed.push(message());
        } else {
            self.more += 1;
        }
    }

    fn into_list(mut self) -> Vec<String> {
        if self.more > 0 {
            self.listed.push(format!(
                "and {} more parts that do not decode (only the first {DEFECTS_LISTED} are named)",
                self.more
            ));
        }
        self.listed
    }
}

impl Bundle {
    /// Decodes a bundle. The framing must be exact; an event or record inside that does not
    /// decode is recorded in `defects` rather than failing the whole bundle, so a report
    /// can still show everything else.
    ///
    /// # Errors
    /// [`DecodeError`] when the bytes are not a bundle at all.
    pub fn from_bytes(bytes: &[u8]) -> Result<Bundle, DecodeError> {
        let value = cbor::decode_canonical(WHAT, bytes, BUNDLE_BYTES_MAX)?;
        let mut outer = Fields::new(WHAT, value, 2)?;
        let body = outer.next("body")?;
        let signature = Signature(outer.array("signature")?);
        outer.end()?;
        let body_bytes = cbor::encode(&body);
        let n_fields = match &body {
            Value::Array(items) if items.len() == 12 => 12,
            _ => 11,
        };
        let mut f = Fields::new(WHAT, body, n_fields)?;
        let format = f.u64("format")?;
        match (format, n_fields) {
            (1, 11) | (2, 12) => {}
            (1 | 2, n) => {
                return Err(shape(
                    WHAT,
                    format!(
                    "format {format} with {n} fields: the field count does not match the format"
                ),
                ))
            }
            _ => {
                return Err(shape(
                    WHAT,
                    format!("format {format} is not supported (this build reads formats 1 and 2)"),
                ))
            }
        }
        let network =
            NetworkId::parse(&f.text("network", 64)?).map_err(|e| shape(WHAT, e.to_string()))?;
        let coi_text = f.text("coi", 32)?;
        let coi = Coi::parse(&coi_text).map_err(|e| shape(WHAT, e.to_string()))?;
        if coi.as_str() != coi_text {
            return Err(shape(WHAT, "coi must be in canonical form"));
        }
        let exported_at = Timestamp(f.i64("exported_at")?);
        let exporter =
            SiteId::parse(&f.text("exporter", 64)?).map_err(|e| shape(WHAT, e.to_string()))?;
        let exporter_key = PublicKey(f.array("exporter_key")?);
        let heads = f
            .list("heads", crate::event::PARENTS_MAX * 32)?
            .into_iter()
            .map(|v| cbor::item_array(WHAT, "heads", v).map(EventId))
            .collect::<Result<Vec<_>, _>>()?;
        if heads.windows(2).any(|w| w[0] >= w[1]) {
            return Err(shape(WHAT, "heads must be strictly ascending"));
        }
        let mut defects = Defects::default();
        let mut events = Vec::new();
        for (i, b) in byte_items(&mut f, "events", BUNDLE_EVENTS_MAX)?
            .into_iter()
            .enumerate()
        {
            match Event::from_bytes(&b) {
                Ok(e) => events.push(e),
                Err(err) => defects.note(|| format!("event #{i}: {err}")),
            }
        }
        let mut certificates = Vec::new();
        for (i, b) in byte_items(&mut f, "certificates", BUNDLE_RECORDS_MAX)?
            .into_iter()
            .enumerate()
        {
            match Certificate::from_bytes(&b) {
                Ok(c) => certificates.push(c),
                Err(err) => defects.note(|| format!("certificate #{i}: {err}")),
            }
        }
        let mut revocations = Vec::new();
        for (i, b) in byte_items(&mut f, "revocations", BUNDLE_RECORDS_MAX)?
            .into_iter()
            .enumerate()
        {
            match Revocation::from_bytes(&b) {
                Ok(r) => revocations.push(r),
                Err(err) => defects.note(|| format!("revocation #{i}: {err}")),
            }
        }
        let mut checkpoints = Vec::new();
        for (i, b) in byte_items(&mut f, "checkpoints", BUNDLE_RECORDS_MAX)?
            .into_iter()
            .enumerate()
        {
            match Checkpoint::from_bytes(&b) {
                Ok(c) => checkpoints.push(c),
                Err(err) => defects.note(|| format!("checkpoint #{i}: {err}")),
            }
        }
        let anchor = if format == 2 {
            Some(PublicKey(f.array("anchor")?))
        } else {
            None
        };
        f.end()?;
        Ok(Bundle {
            network,
            coi,
            exported_at,
            exporter,
            exporter_key,
            heads,
            events,
            certificates,
            revocations,
            checkpoints,
            anchor,
            defects: defects.into_list(),
            body_bytes,
            signature,
        })
    }

    /// Whether the exporter key signed this bundle's body.
    pub fn signature_valid(&self) -> bool {
        self.exporter_key
            .verify(TAG_BUNDLE, &self.body_bytes, &self.signature)
    }
}

/// The result of checking a bundle: the chain verdict plus the bundle's own findings.
#[derive(Debug)]
pub struct BundleReport {
    pub verdict: Verdict,
    /// None when the bytes were not a bundle at all.
    pub bundle: Option<Bundle>,
    /// The anchor key everything was checked against; `None` when no key could be
    /// established (a fingerprint, and a bundle without a matching key).
    pub anchor: Option<PublicKey>,
}

/// What the verifier trusts as the network's anchor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnchorTrust {
    /// The anchor public key itself.
    Key(PublicKey),
    /// Its fingerprint; the key comes from the bundle (format 2) and must hash to it.
    Fingerprint(Fingerprint),
    /// None: everything is checked except who issued the certificates, against the anchor
    /// the bundle names (format 2) or, for format 1, the carried records as they are. The
    /// report's `anchor` is then `None`, and whoever shows the verdict must say so.
    Unchecked,
}

/// How to check a bundle.
#[derive(Clone, Debug)]
pub struct BundleOptions {
    pub policy: Policy,
    /// [`Scope::CoiExport`] for a node's export (feeds hold other patients' events too);
    /// [`Scope::WholeFeeds`] when the bundle's feeds hold only this chain.
    pub scope: Scope,
}

impl Default for BundleOptions {
    fn default() -> BundleOptions {
        BundleOptions {
            policy: Policy::default(),
            scope: Scope::CoiExport,
        }
    }
}

/// Checks a bundle offline against `anchor`: the bundle signature and the exporter's
/// certificate, then the chain with [`verify`].
pub fn verify_bundle(bytes: &[u8], anchor: &PublicKey, opts: &BundleOptions) -> BundleReport {
    verify_bundle_trusting(bytes, &AnchorTrust::Key(*anchor), opts)
}

fn verdict_of(findings: Vec<Finding>) -> Verdict {
    Verdict {
        kind: VerdictKind::from_findings(&findings),
        status: Status::Empty,
        coi: None,
        findings,
        n_events: 0,
        projection: None,
        order: Vec::new(),
    }
}

/// [`verify_bundle`] against an anchor given as a key or as a fingerprint.
pub fn verify_bundle_trusting(
    bytes: &[u8],
    trusted: &AnchorTrust,
    opts: &BundleOptions,
) -> BundleReport {
    let bundle = match Bundle::from_bytes(bytes) {
        Ok(b) => b,
        Err(err) => {
            let findings = vec![Finding::new(
                Code::BundleMalformed,
                Vec::new(),
                format!("the file is not a readable bundle: {err}"),
            )];
            return BundleReport {
                verdict: verdict_of(findings),
                bundle: None,
                anchor: None,
            };
        }
    };
    // Nothing can be checked against an anchor the evidence was not made under: the answer
    // is "cannot be checked", never a finding per event that would read as tampering.
    // The exporter's signature needs no anchor: a bundle altered after export is broken
    // whoever's anchor is given.
    let unverifiable = |bundle: Bundle, code: Code, message: String| {
        let mut findings = vec![Finding::new(code, Vec::new(), message)];
        if !bundle.signature_valid() {
            findings.push(Finding::new(
                Code::BundleBadSignature,
                Vec::new(),
                format!("the exporter's signature ({}) does not cover this bundle's contents: it was altered after export", bundle.exporter),
            ));
        }
        BundleReport {
            verdict: verdict_of(findings),
            bundle: Some(bundle),
            anchor: None,
        }
    };
    if let (AnchorTrust::Key(key), Some(named)) = (trusted, bundle.anchor) {
        if named != *key {
            // A secret key read as a public one: its public half is the anchor named.
            if SecretKey::from_seed(&key.0).public() == named {
                return unverifiable(bundle, Code::BundleAnchorIsSecret, format!("the anchor you gave is the SECRET key of anchor {}, not its public key: nothing was checked; give the public key (anchor.pub) or its fingerprint, and keep the secret key off this machine", named.fingerprint()));
            }
            return unverifiable(bundle, Code::BundleAnchorMismatch, format!("the bundle names anchor {} but you trust {}: it comes from another network, or it was signed for another anchor; nothing in it can be checked against your anchor", named.fingerprint(), key.fingerprint()));
        }
    }
    if let (AnchorTrust::Key(key), None) = (trusted, bundle.anchor) {
        if !bundle.certificates.is_empty() && !bundle.certificates.iter().any(|c| c.signed_by(key))
        {
            let message = format!("none of the bundle's {} certificates was issued by the anchor you trust ({}): it comes from another network, or the anchor is wrong; nothing in it can be checked against your anchor", bundle.certificates.len(), key.fingerprint());
            return unverifiable(bundle, Code::BundleAnchorNotIssuer, message);
        }
    }
    let mut bundle_findings = Vec::new();
    // The key the records are checked against, the records, and whether that key is one
    // the verifier trusts (rather than one the bundle vouches for itself).
    let (anchor, certificates, revocations, trusted_anchor) = match (trusted, bundle.anchor) {
        // A named anchor other than the key returned above.
        (AnchorTrust::Key(key), _) => (
            *key,
            bundle.certificates.clone(),
            bundle.revocations.clone(),
            Some(*key),
        ),
        (AnchorTrust::Fingerprint(fp), Some(named)) if named.fingerprint_of() == *fp => (
            named,
            bundle.certificates.clone(),
            bundle.revocations.clone(),
            Some(named),
        ),
        (AnchorTrust::Fingerprint(fp), Some(named)) => {
            let message = format!("the bundle names anchor {} but you trust {fp}: nothing in it can be checked against your anchor", named.fingerprint());
            return unverifiable(bundle, Code::BundleAnchorMismatch, message);
        }
        (AnchorTrust::Fingerprint(fp), None) => {
            let message = format!("this bundle (format 1) does not carry its anchor key, so the fingerprint {fp} cannot be checked and nothing was verified: give the anchor key file instead");
            return unverifiable(bundle, Code::BundleAnchorUnknown, message);
        }
        (AnchorTrust::Unchecked, Some(named)) => (
            named,
            bundle.certificates.clone(),
            bundle.revocations.clone(),
            None,
        ),
        (AnchorTrust::Unchecked, None) => {
            let (stand_in, certificates, revocations) = carried_records_under_stand_in(&bundle);
            (stand_in, certificates, revocations, None)
        }
    };
    let anchor = &anchor;
    for d in &bundle.defects {
        bundle_findings.push(Finding::new(
            Code::BundleMalformed,
            Vec::new(),
            format!("the bundle holds a part that does not decode: {d}"),
        ));
    }
    if !bundle.signature_valid() {
        bundle_findings.push(Finding::new(
            Code::BundleBadSignature,
            Vec::new(),
            format!("the exporter's signature ({}) does not cover this bundle's contents: it was altered after export", bundle.exporter),
        ));
    }
    let exporter_trusted = certificates.iter().any(|c| {
        c.site == bundle.exporter
            && c.key == bundle.exporter_key
            && c.network == bundle.network
            && c.signed_by(anchor)
            && c.valid_at(bundle.exported_at)
    }) && !revocations.iter().any(|r| {
        r.site == bundle.exporter
            && r.key == bundle.exporter_key
            && r.signed_by(anchor)
            && r.effective_from <= bundle.exported_at
    });
    if !exporter_trusted {
        bundle_findings.push(Finding::new(
            Code::BundleUntrustedExporter,
            Vec::new(),
            format!("the exporting site {} signed with a key that has no valid certificate from this anchor at export time {}", bundle.exporter, bundle.exported_at),
        ));
    }
    let trust = Trust {
        anchor: *anchor,
        network: bundle.network.clone(),
        certificates,
        revocations,
    };
    let options = Options {
        scope: opts.scope,
        policy: opts.policy.clone(),
        coi: Some(bundle.coi.clone()),
        heads: Some(bundle.heads.clone()),
        checkpoints: bundle.checkpoints.clone(),
    };
    let mut verdict = verify(&bundle.events, &trust, &options);
    if !bundle.events.iter().any(|e| e.coi() == &bundle.coi) {
        bundle_findings.push(Finding::new(
            Code::BundleNoEvents,
            Vec::new(),
            format!(
                "the bundle holds no event of chain {}: there is nothing to show intact",
                bundle.coi
            ),
        ));
    }
    bundle_findings.append(&mut verdict.findings);
    verdict.findings = bundle_findings;
    verdict.kind = VerdictKind::from_findings(&verdict.findings);
    BundleReport {
        verdict,
        bundle: Some(bundle),
        anchor: trusted_anchor,
    }
}

/// The seed of the stand-in anchor for a format 1 bundle checked without an anchor. It signs
/// only copies of the bundle's own certificates and revocations, in memory, for one
/// verification; it is no one's key and nothing it signs leaves the verifier.
const STAND_IN_ANCHOR_SEED: [u8; 32] = *b"ledger verify: no anchor given\0\0";

/// A format 1 bundle names no anchor, yet without one the event signatures, the exporter's
/// signature, feeds, causal order and custody rules can all still be checked. The verifier
/// only trusts anchor-signed records, so the carried records are re-signed with a stand-in
/// anchor: the verdict is then "intact as far as the bundle vouches for itself".
fn carried_records_under_stand_in(
    bundle: &Bundle,
) -> (PublicKey, Vec<Certificate>, Vec<Revocation>) {
    let stand_in = SecretKey::from_seed(&STAND_IN_ANCHOR_SEED);
    // Certificate::from_bytes rejects an empty validity period, so `sign` cannot panic.
    let certificates = bundle
        .certificates
        .iter()
        .map(|c| {
            CertificateDraft {
                network: c.network.clone(),
                site: c.site.clone(),
                role: c.role,
                key: c.key,
                valid_from: c.valid_from,
                valid_until: c.valid_until,
            }
            .sign(&stand_in)
        })
        .collect();
    let revocations = bundle
        .revocations
        .iter()
        .map(|r| {
            Revocation::sign(
                r.network.clone(),
                r.site.clone(),
                r.key,
                r.effective_from,
                r.reason.clone(),
                &stand_in,
            )
        })
        .collect();
    (stand_in.public(), certificates, revocations)
}
