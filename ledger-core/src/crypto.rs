//! Keys, signatures and the domain-separation tags.
//!
//! Every signature covers `TAG || canonical bytes`, where the tag is one of the constants
//! below (ASCII, NUL-terminated). A signature made for one kind of record (event,
//! certificate, revocation, checkpoint, bundle) therefore never verifies as another, even
//! if the bytes after the tag happened to coincide. Verification always uses
//! `verify_strict`, which refuses small-order keys and non-canonical signatures.

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use std::fmt;

pub const TAG_EVENT: &[u8] = b"ledger.v1.event\0";
pub const TAG_CERTIFICATE: &[u8] = b"ledger.v1.certificate\0";
pub const TAG_REVOCATION: &[u8] = b"ledger.v1.revocation\0";
pub const TAG_CHECKPOINT: &[u8] = b"ledger.v1.checkpoint\0";
pub const TAG_BUNDLE: &[u8] = b"ledger.v1.bundle\0";

/// An Ed25519 public key as 32 bytes. Parsing into a curve point happens in
/// [`PublicKey::verifying_key`], once per key per verification run.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PublicKey(pub [u8; 32]);

/// SHA-256 of a public key: what people compare when they read a key out loud, and what a
/// regulator may be given instead of the anchor key itself (a bundle carries the key, and
/// the verifier checks it hashes to this). Written `sha256:` and 64 hex digits, so it is
/// never mistaken for the key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    pub const PREFIX: &'static str = "sha256:";

    /// Parses `sha256:` and 64 hex digits (either case); spaces and colons between the
    /// digits, as people copy them from a printout, are ignored.
    pub fn parse(text: &str) -> Option<Fingerprint> {
        let rest = text.trim();
        let rest = rest
            .get(..Self::PREFIX.len())
            .filter(|p| p.eq_ignore_ascii_case(Self::PREFIX))
            .map(|_| &rest[Self::PREFIX.len()..])?;
        let digits: Vec<u8> = rest.bytes().filter(|b| *b != b' ' && *b != b':').collect();
        if digits.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, pair) in digits.chunks(2).enumerate() {
            let hi = (pair[0] as char).to_digit(16)?;
            let lo = (pair[1] as char).to_digit(16)?;
            out[i] = (hi * 16 + lo) as u8;
        }
        Some(Fingerprint(out))
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(Self::PREFIX)?;
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

impl PublicKey {
    /// The key's [`Fingerprint`], as text (`sha256:` and 64 hex digits).
    pub fn fingerprint(&self) -> String {
        self.fingerprint_of().to_string()
    }

    pub fn fingerprint_of(&self) -> Fingerprint {
        Fingerprint(Sha256::digest(self.0).into())
    }

    pub fn to_hex(&self) -> String {
        crate::ids::hex_lower(&self.0)
    }

    /// The curve point, or `None` when the bytes are not a valid point.
    pub fn verifying_key(&self) -> Option<VerifyingKey> {
        VerifyingKey::from_bytes(&self.0).ok()
    }

    /// Strict verification of `sig` over `tag || msg`.
    pub fn verify(&self, tag: &[u8], msg: &[u8], sig: &Signature) -> bool {
        match self.verifying_key() {
            Some(key) => verify_with(&key, tag, msg, sig),
            None => false,
        }
    }
}

pub(crate) fn verify_with(key: &VerifyingKey, tag: &[u8], msg: &[u8], sig: &Signature) -> bool {
    let mut signed = Vec::with_capacity(tag.len() + msg.len());
    signed.extend_from_slice(tag);
    signed.extend_from_slice(msg);
    let sig = ed25519_dalek::Signature::from_bytes(&sig.0);
    key.verify_strict(&signed, &sig).is_ok()
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", &self.to_hex()[..16])
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// An Ed25519 signature (64 bytes).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature(pub [u8; 64]);

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hex: String = self.0[..8].iter().map(|b| format!("{b:02x}")).collect();
        write!(f, "Signature({hex}..)")
    }
}

/// A private signing key. `Debug` never prints the secret; the inner key zeroizes on drop.
pub struct SecretKey(SigningKey);

impl SecretKey {
    /// Builds a key from 32 secret bytes. Where the bytes come from (OS randomness in the
    /// node, a name-derived seed in test fixtures) is the caller's business.
    pub fn from_seed(seed: &[u8; 32]) -> SecretKey {
        SecretKey(SigningKey::from_bytes(seed))
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key().to_bytes())
    }

    /// The seed, for writing a key file. Handle with care.
    pub fn seed(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// Signs `tag || msg`.
    pub fn sign(&self, tag: &[u8], msg: &[u8]) -> Signature {
        let mut signed = Vec::with_capacity(tag.len() + msg.len());
        signed.extend_from_slice(tag);
        signed.extend_from_slice(msg);
        Signature(self.0.sign(&signed).to_bytes())
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey(public {:?})", self.public())
    }
}

impl Clone for SecretKey {
    fn clone(&self) -> Self {
        SecretKey(SigningKey::from_bytes(&self.0.to_bytes()))
    }
}

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_separate_domains() {
        let key = SecretKey::from_seed(&[7; 32]);
        let sig = key.sign(TAG_EVENT, b"payload");
        assert!(key.public().verify(TAG_EVENT, b"payload", &sig));
        assert!(!key.public().verify(TAG_CHECKPOINT, b"payload", &sig));
        assert!(!key.public().verify(TAG_EVENT, b"payloaD", &sig));
    }

    #[test]
    fn debug_hides_secret() {
        let key = SecretKey::from_seed(&[9; 32]);
        let shown = format!("{key:?}");
        let secret_hex: String = [9u8; 4].iter().map(|b| format!("{b:02x}")).collect();
        assert!(!shown.contains(&secret_hex), "{shown}");
    }
}
