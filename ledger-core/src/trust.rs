//! Trust: the network anchor, site certificates, revocations and checkpoints.
//!
//! A network's anchor key (the sponsor's, kept offline) signs certificates binding a site
//! id and role to a public key for a validity period. Rotation is a new certificate for a
//! new key; events signed under the old key stay valid because a key is judged at each
//! event's recorded time. Revocation is an anchor-signed record saying from when a key is
//! no longer trusted.
//!
//! # Bytes
//!
//! Each record is `[body, signature]`, the signature over `TAG || body bytes` (tags in
//! [`crate::crypto`]); integers shortest-form, times in ms since the Unix epoch.
//!
//! - certificate body: `[1, network text, site text, role uint, key bstr(32),
//!   valid_from int, valid_until int]`, role 1 clinic, 2 depot, 3 manufacturer, 4 lab;
//!   signed by the anchor with `ledger.v1.certificate\0`.
//! - revocation body: `[1, network text, site text, key bstr(32), effective_from int,
//!   reason text]`, signed by the anchor with `ledger.v1.revocation\0`.
//! - checkpoint body: `[1, network text, site text, seq uint, head bstr(32), at int,
//!   key bstr(32)]`, signed by the site's key with `ledger.v1.checkpoint\0`: the site
//!   states that its feed's event at `seq` is `head`.

use crate::cbor::{self, shape, DecodeError, Fields};
use crate::crypto::{
    PublicKey, SecretKey, Signature, TAG_CERTIFICATE, TAG_CHECKPOINT, TAG_REVOCATION,
};
use crate::ids::{EventId, NetworkId, Seq, SiteId};
use crate::time::Timestamp;
use ciborium::value::Value;

pub const RECORD_BYTES_MAX: usize = 4096;

/// What a site is allowed to do depends on what it is.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum Role {
    Clinic,
    Depot,
    Manufacturer,
    Lab,
}

impl Role {
    fn code(self) -> u64 {
        match self {
            Role::Clinic => 1,
            Role::Depot => 2,
            Role::Manufacturer => 3,
            Role::Lab => 4,
        }
    }

    fn from_code(code: u64) -> Option<Role> {
        match code {
            1 => Some(Role::Clinic),
            2 => Some(Role::Depot),
            3 => Some(Role::Manufacturer),
            4 => Some(Role::Lab),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Clinic => "clinic",
            Role::Depot => "depot",
            Role::Manufacturer => "manufacturer",
            Role::Lab => "lab",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        [Role::Clinic, Role::Depot, Role::Manufacturer, Role::Lab]
            .into_iter()
            .find(|r| r.as_str() == text)
    }
}

fn signed_record(body: Value, sig: &Signature) -> Vec<u8> {
    cbor::encode(&Value::Array(vec![body, cbor::bytes(&sig.0)]))
}

/// Splits `[body, signature]`, returning the body's fields and its exact bytes.
fn open_record(
    what: &'static str,
    bytes: &[u8],
    n_fields: usize,
) -> Result<(Fields, Vec<u8>, Signature), DecodeError> {
    let value = cbor::decode_canonical(what, bytes, RECORD_BYTES_MAX)?;
    let mut outer = Fields::new(what, value, 2)?;
    let body = outer.next("body")?;
    let sig = Signature(outer.array("signature")?);
    outer.end()?;
    let body_bytes = cbor::encode(&body);
    let mut f = Fields::new(what, body, n_fields)?;
    let format = f.u64("format")?;
    if format != 1 {
        return Err(shape(what, format!("format {format} is not supported")));
    }
    Ok((f, body_bytes, sig))
}

fn parse_network(f: &mut Fields) -> Result<NetworkId, DecodeError> {
    let what = f.what();
    NetworkId::parse(&f.text("network", 64)?).map_err(|e| shape(what, e.to_string()))
}

fn parse_site(f: &mut Fields) -> Result<SiteId, DecodeError> {
    let what = f.what();
    SiteId::parse(&f.text("site", 64)?).map_err(|e| shape(what, e.to_string()))
}

/// An anchor-signed binding of a site and role to a key for a period.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Certificate {
    pub network: NetworkId,
    pub site: SiteId,
    pub role: Role,
    pub key: PublicKey,
    pub valid_from: Timestamp,
    pub valid_until: Timestamp,
    signature: Signature,
    bytes: Vec<u8>,
}

/// The unsigned content of a certificate, to be signed by the anchor.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct CertificateDraft {
    pub network: NetworkId,
    pub site: SiteId,
    pub role: Role,
    pub key: PublicKey,
    pub valid_from: Timestamp,
    pub valid_until: Timestamp,
}

impl CertificateDraft {
    fn body(&self) -> Value {
        Value::Array(vec![
            cbor::uint(1),
            cbor::text(self.network.as_str()),
            cbor::text(self.site.as_str()),
            cbor::uint(self.role.code()),
            cbor::bytes(&self.key.0),
            cbor::int(self.valid_from.0),
            cbor::int(self.valid_until.0),
        ])
    }

    /// # Panics
    /// If the validity period is empty: an anchor must never sign a certificate no event
    /// could ever be judged valid under.
    pub fn sign(self, anchor: &SecretKey) -> Certificate {
        assert!(
            self.valid_from < self.valid_until,
            "certificate for {} has an empty validity period",
            self.site
        );
        let body = self.body();
        let signature = anchor.sign(TAG_CERTIFICATE, &cbor::encode(&body));
        let bytes = signed_record(body, &signature);
        Certificate {
            network: self.network,
            site: self.site,
            role: self.role,
            key: self.key,
            valid_from: self.valid_from,
            valid_until: self.valid_until,
            signature,
            bytes,
        }
    }
}

impl Certificate {
    /// # Errors
    /// [`DecodeError`] naming what is wrong. The anchor signature is checked separately by
    /// [`Certificate::signed_by`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Certificate, DecodeError> {
        const WHAT: &str = "certificate";
        let (mut f, _, signature) = open_record(WHAT, bytes, 7)?;
        let network = parse_network(&mut f)?;
        let site = parse_site(&mut f)?;
        let role = Role::from_code(f.u64("role")?).ok_or_else(|| {
            shape(
                WHAT,
                "role must be 1 (clinic), 2 (depot), 3 (manufacturer) or 4 (lab)",
            )
        })?;
        let key = PublicKey(f.array("key")?);
        let valid_from = Timestamp(f.i64("valid_from")?);
        let valid_until = Timestamp(f.i64("valid_until")?);
        f.end()?;
        if valid_from >= valid_until {
            return Err(shape(WHAT, "valid_from must be before valid_until"));
        }
        Ok(Certificate {
            network,
            site,
            role,
            key,
            valid_from,
            valid_until,
            signature,
            bytes: bytes.to_vec(),
        })
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    fn draft(&self) -> CertificateDraft {
        CertificateDraft {
            network: self.network.clone(),
            site: self.site.clone(),
            role: self.role,
            key: self.key,
            valid_from: self.valid_from,
            valid_until: self.valid_until,
        }
    }

    /// Whether `anchor` signed this certificate.
    pub fn signed_by(&self, anchor: &PublicKey) -> bool {
        anchor.verify(
            TAG_CERTIFICATE,
            &cbor::encode(&self.draft().body()),
            &self.signature,
        )
    }

    /// Whether `at` falls in `[valid_from, valid_until)`.
    pub fn valid_at(&self, at: Timestamp) -> bool {
        self.valid_from <= at && at < self.valid_until
    }
}

/// An anchor-signed statement that a site's key is not trusted from `effective_from` on.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Revocation {
    pub network: NetworkId,
    pub site: SiteId,
    pub key: PublicKey,
    pub effective_from: Timestamp,
    pub reason: String,
    signature: Signature,
    bytes: Vec<u8>,
}

fn revocation_body(
    network: &NetworkId,
    site: &SiteId,
    key: &PublicKey,
    effective_from: Timestamp,
    reason: &str,
) -> Value {
    Value::Array(vec![
        cbor::uint(1),
        cbor::text(network.as_str()),
        cbor::text(site.as_str()),
        cbor::bytes(&key.0),
        cbor::int(effective_from.0),
        cbor::text(reason),
    ])
}

impl Revocation {
    pub fn sign(
        network: NetworkId,
        site: SiteId,
        key: PublicKey,
        effective_from: Timestamp,
        reason: String,
        anchor: &SecretKey,
    ) -> Revocation {
        let body = revocation_body(&network, &site, &key, effective_from, &reason);
        let signature = anchor.sign(TAG_REVOCATION, &cbor::encode(&body));
        let bytes = signed_record(body, &signature);
        Revocation {
            network,
            site,
            key,
            effective_from,
            reason,
            signature,
            bytes,
        }
    }

    /// # Errors
    /// [`DecodeError`] naming what is wrong.
    pub fn from_bytes(bytes: &[u8]) -> Result<Revocation, DecodeError> {
        const WHAT: &str = "revocation";
        let (mut f, _, signature) = open_record(WHAT, bytes, 6)?;
        let network = parse_network(&mut f)?;
        let site = parse_site(&mut f)?;
        let key = PublicKey(f.array("key")?);
        let effective_from = Timestamp(f.i64("effective_from")?);
        let reason = f.text("reason", 1024)?;
        f.end()?;
        Ok(Revocation {
            network,
            site,
            key,
            effective_from,
            reason,
            signature,
            bytes: bytes.to_vec(),
        })
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn signed_by(&self, anchor: &PublicKey) -> bool {
        let body = revocation_body(
            &self.network,
            &self.site,
            &self.key,
            self.effective_from,
            &self.reason,
        );
        anchor.verify(TAG_REVOCATION, &cbor::encode(&body), &self.signature)
    }
}

/// Whether a site's key may sign at a given time: the validity periods of the certificates
/// the anchor issued for it, and the earliest revocation. A node checks this before it signs,
/// so it never writes an event every verifier would reject (after a key expired, or was
/// revoked because it is being rotated out).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyStanding {
    site: SiteId,
    periods: Vec<(Timestamp, Timestamp)>,
    revoked: Option<(Timestamp, String)>,
}

impl KeyStanding {
    /// From records already known to be signed by the network's anchor.
    pub fn of(
        site: &SiteId,
        key: &PublicKey,
        certificates: &[Certificate],
        revocations: &[Revocation],
    ) -> KeyStanding {
        let mut periods: Vec<_> = certificates
            .iter()
            .filter(|c| &c.site == site && &c.key == key)
            .map(|c| (c.valid_from, c.valid_until))
            .collect();
        periods.sort();
        let revoked = revocations
            .iter()
            .filter(|r| &r.site == site && &r.key == key)
            .min_by_key(|r| r.effective_from)
            .map(|r| (r.effective_from, r.reason.clone()));
        KeyStanding {
            site: site.clone(),
            periods,
            revoked,
        }
    }

    /// `Ok` when the key may sign an event recorded at `at`; otherwise why not, for the
    /// person who has to fix it.
    ///
    /// # Errors
    /// A sentence naming the certificate period or revocation that forbids it.
    pub fn check(&self, at: Timestamp) -> Result<(), String> {
        if let Some((from, reason)) = &self.revoked {
            if *from <= at {
                return Err(format!("the key of site {} is revoked from {from} ({reason}); install the site's new key (`ledger network rotate-key`) and restart the node", self.site));
            }
        }
        if self
            .periods
            .iter()
            .any(|(from, until)| *from <= at && at < *until)
        {
            return Ok(());
        }
        let periods: Vec<String> = self
            .periods
            .iter()
            .map(|(from, until)| format!("{from} to {until}"))
            .collect();
        Err(format!(
            "the key of site {} has no certificate valid at {at} (its certificates cover: {}); issue a new one with `ledger network rotate-key` and restart the node",
            self.site,
            if periods.is_empty() { "nothing".to_owned() } else { periods.join(", ") }
        ))
    }
}

/// A site's signed statement of its feed head: "my event at `seq` is `head`".
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Checkpoint {
    pub network: NetworkId,
    pub site: SiteId,
    pub seq: Seq,
    pub head: EventId,
    pub at: Timestamp,
    pub key: PublicKey,
    signature: Signature,
    bytes: Vec<u8>,
}

fn checkpoint_body(
    network: &NetworkId,
    site: &SiteId,
    seq: Seq,
    head: &EventId,
    at: Timestamp,
    key: &PublicKey,
) -> Value {
    Value::Array(vec![
        cbor::uint(1),
        cbor::text(network.as_str()),
        cbor::text(site.as_str()),
        cbor::uint(seq.0),
        cbor::bytes(&head.0),
        cbor::int(at.0),
        cbor::bytes(&key.0),
    ])
}

impl Checkpoint {
    pub fn sign(
        network: NetworkId,
        site: SiteId,
        seq: Seq,
        head: EventId,
        at: Timestamp,
        key: &SecretKey,
    ) -> Checkpoint {
        let public = key.public();
        let body = checkpoint_body(&network, &site, seq, &head, at, &public);
        let signature = key.sign(TAG_CHECKPOINT, &cbor::encode(&body));
        let bytes = signed_record(body, &signature);
        Checkpoint {
            network,
            site,
            seq,
            head,
            at,
            key: public,
            signature,
            bytes,
        }
    }

    /// # Errors
    /// [`DecodeError`] naming what is wrong.
    pub fn from_bytes(bytes: &[u8]) -> Result<Checkpoint, DecodeError> {
        const WHAT: &str = "checkpoint";
        let (mut f, _, signature) = open_record(WHAT, bytes, 7)?;
        let network = parse_network(&mut f)?;
        let site = parse_site(&mut f)?;
        let seq = Seq(f.u64("seq")?);
        let head = EventId(f.array("head")?);
        let at = Timestamp(f.i64("at")?);
        let key = PublicKey(f.array("key")?);
        f.end()?;
        if seq.0 == 0 {
            return Err(shape(WHAT, "seq must be 1 or more"));
        }
        Ok(Checkpoint {
            network,
            site,
            seq,
            head,
            at,
            key,
            signature,
            bytes: bytes.to_vec(),
        })
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Whether the key named in the checkpoint signed it (who that key belongs to is a
    /// question for the certificates).
    pub fn signature_valid(&self) -> bool {
        let body = checkpoint_body(
            &self.network,
            &self.site,
            self.seq,
            &self.head,
            self.at,
            &self.key,
        );
        self.key
            .verify(TAG_CHECKPOINT, &cbor::encode(&body), &self.signature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> (NetworkId, SiteId) {
        (
            NetworkId::parse("net").unwrap(),
            SiteId::parse("clinic-a").unwrap(),
        )
    }

    #[test]
    fn certificate_round_trip_and_anchor_check() {
        let anchor = SecretKey::from_seed(&[1; 32]);
        let other = SecretKey::from_seed(&[2; 32]);
        let site_key = SecretKey::from_seed(&[3; 32]);
        let (network, site) = ids();
        let cert = CertificateDraft {
            network,
            site,
            role: Role::Clinic,
            key: site_key.public(),
            valid_from: Timestamp(0),
            valid_until: Timestamp(10),
        }
        .sign(&anchor);
        let back = Certificate::from_bytes(cert.bytes()).unwrap();
        assert_eq!(back, cert);
        assert!(back.signed_by(&anchor.public()));
        assert!(!back.signed_by(&other.public()));
        assert!(
            back.valid_at(Timestamp(0))
                && back.valid_at(Timestamp(9))
                && !back.valid_at(Timestamp(10))
        );
    }

    #[test]
    fn revocation_and_checkpoint_round_trip() {
        let anchor = SecretKey::from_seed(&[1; 32]);
        let site_key = SecretKey::from_seed(&[3; 32]);
        let (network, site) = ids();
        let rev = Revocation::sign(
            network.clone(),
            site.clone(),
            site_key.public(),
            Timestamp(5),
            "lost".into(),
            &anchor,
        );
        let back = Revocation::from_bytes(rev.bytes()).unwrap();
        assert!(back.signed_by(&anchor.public()));
        assert_eq!(back, rev);
        let cp = Checkpoint::sign(
            network,
            site,
            Seq(3),
            EventId([4; 32]),
            Timestamp(7),
            &site_key,
        );
        let back = Checkpoint::from_bytes(cp.bytes()).unwrap();
        assert!(back.signature_valid());
        assert_eq!(back, cp);
        // A certificate signature never verifies as a checkpoint's.
        let mut forged = cp.bytes().to_vec();
        let n = forged.len();
        forged[n - 1] ^= 1;
        assert!(!Checkpoint::from_bytes(&forged).unwrap().signature_valid());
    }
}

#[cfg(test)]
mod standing_tests {
    use super::*;

    #[test]
    fn a_key_signs_only_inside_a_certificate_and_before_its_revocation() {
        let net = NetworkId::parse("net").expect("id");
        let site = SiteId::parse("depot-1").expect("id");
        let anchor = SecretKey::from_seed(&[1; 32]);
        let key = SecretKey::from_seed(&[2; 32]).public();
        let other = SecretKey::from_seed(&[3; 32]).public();
        let cert = |key, from, until| {
            CertificateDraft {
                network: net.clone(),
                site: site.clone(),
                role: Role::Depot,
                key,
                valid_from: Timestamp(from),
                valid_until: Timestamp(until),
            }
            .sign(&anchor)
        };
        let certs = [
            cert(key, 100, 200),
            cert(key, 300, 400),
            cert(other, 0, 1000),
        ];
        let standing = KeyStanding::of(&site, &key, &certs, &[]);
        assert_eq!(standing.check(Timestamp(100)), Ok(()));
        assert_eq!(standing.check(Timestamp(350)), Ok(()));
        let gap = standing
            .check(Timestamp(200))
            .expect_err("between certificates");
        assert!(gap.contains("no certificate valid at"), "{gap}");
        assert!(standing.check(Timestamp(99)).is_err());
        assert!(standing.check(Timestamp(400)).is_err());

        let revs = [
            Revocation::sign(
                net.clone(),
                site.clone(),
                key,
                Timestamp(360),
                "rotated".into(),
                &anchor,
            ),
            Revocation::sign(
                net.clone(),
                site.clone(),
                key,
                Timestamp(380),
                "later".into(),
                &anchor,
            ),
            Revocation::sign(
                net.clone(),
                site.clone(),
                other,
                Timestamp(0),
                "other key".into(),
                &anchor,
            ),
        ];
        let standing = KeyStanding::of(&site, &key, &certs, &revs);
        assert_eq!(standing.check(Timestamp(359)), Ok(()));
        let revoked = standing.check(Timestamp(360)).expect_err("revoked");
        assert!(
            revoked.contains("revoked from") && revoked.contains("rotated"),
            "{revoked}"
        );
        let nothing = KeyStanding::of(
            &site,
            &SecretKey::from_seed(&[9; 32]).public(),
            &certs,
            &revs,
        );
        assert!(nothing
            .check(Timestamp(150))
            .expect_err("uncertified")
            .contains("nothing"));
    }
}
