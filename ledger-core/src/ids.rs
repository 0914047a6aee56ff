//! Checked identifiers. Raw text becomes one of these types once, at the boundary, and
//! everything inside takes the checked type.
//!
//! The chain-of-identity identifier follows ISBT 128 Data Structure 040 (ST-001 §2.4.40,
//! ST-028): `CH`, a five-character facility identification number (FIN) whose first
//! character is A-N, P-Z or 1-9 followed by four digits, a two-digit year, and a
//! six-character sequence of A-Z/0-9. The bar-code form carries the `&/` data identifier.
//! A hand-keyed COI may carry one ISO 7064 mod 37-2 check character computed over the
//! thirteen characters after `CH` (as ISBT 128 does for the thirteen characters of a
//! donation number); a wrong one is rejected. The canonical form, the only one that enters
//! an event, is the fifteen characters without prefix or check character.

use std::fmt;

/// Why a piece of text is not the identifier it claims to be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{kind} '{text}': {reason}")]
    Invalid {
        kind: &'static str,
        text: String,
        reason: String,
    },
}

fn invalid(kind: &'static str, text: &str, reason: impl Into<String>) -> IdError {
    // Echo at most 64 characters so a hostile input cannot flood a log line.
    let text: String = text.chars().take(64).collect();
    IdError::Invalid {
        kind,
        text,
        reason: reason.into(),
    }
}

/// ISO 7064 mod 37-2 check character over `data` (0-9, A-Z; `*` stands for 36).
///
/// Returns `None` if `data` holds a character outside 0-9/A-Z.
pub fn mod37_2_check(data: &str) -> Option<char> {
    let mut p: u32 = 0;
    for c in data.chars() {
        let v = match c {
            '0'..='9' => c as u32 - '0' as u32,
            'A'..='Z' => c as u32 - 'A' as u32 + 10,
            _ => return None,
        };
        p = ((p + v) * 2) % 37;
    }
    let check = (38 - p) % 37;
    Some(match check {
        0..=9 => char::from(b'0' + check as u8),
        10..=35 => char::from(b'A' + (check - 10) as u8),
        _ => '*',
    })
}

fn is_fin_first(c: u8) -> bool {
    matches!(c, b'A'..=b'N' | b'P'..=b'Z' | b'1'..=b'9')
}

/// The five-character facility identification number plus year and sequence share one
/// shape in COIs and DINs up to the sequence alphabet; this checks the FIN part.
fn check_fin(kind: &'static str, text: &str, fin: &[u8]) -> Result<(), IdError> {
    if !is_fin_first(fin[0]) {
        return Err(invalid(
            kind,
            text,
            "facility number must start with A-N, P-Z or 1-9",
        ));
    }
    if !fin[1..].iter().all(u8::is_ascii_digit) {
        return Err(invalid(
            kind,
            text,
            "facility number must end in four digits",
        ));
    }
    Ok(())
}

/// A patient's chain-of-identity identifier, canonical form (15 characters, `CH...`).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Coi(String);

impl Coi {
    pub const LEN: usize = 15;

    /// Parses a COI as scanned or keyed: optional `&/` bar-code prefix, the fifteen
    /// characters, optional mod 37-2 check character.
    ///
    /// # Errors
    /// [`IdError::Invalid`] naming the part that is wrong.
    pub fn parse(text: &str) -> Result<Coi, IdError> {
        const KIND: &str = "coi";
        let body = text.strip_prefix("&/").unwrap_or(text);
        let bytes = body.as_bytes();
        if !body.is_ascii() || (bytes.len() != Self::LEN && bytes.len() != Self::LEN + 1) {
            return Err(invalid(
                KIND,
                text,
                "expected CH + 5-character facility number + 2-digit year + 6-character sequence (15 characters, optionally a check character)",
            ));
        }
        if &bytes[..2] != b"CH" {
            return Err(invalid(
                KIND,
                text,
                "must start with the data identifier CH",
            ));
        }
        check_fin(KIND, text, &bytes[2..7])?;
        if !bytes[7..9].iter().all(u8::is_ascii_digit) {
            return Err(invalid(KIND, text, "year must be two digits"));
        }
        if !bytes[9..15]
            .iter()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        {
            return Err(invalid(
                KIND,
                text,
                "sequence must be six characters A-Z or 0-9",
            ));
        }
        let canonical = &body[..Self::LEN];
        if bytes.len() == Self::LEN + 1 {
            let given = char::from(bytes[Self::LEN]);
            let expected = mod37_2_check(&canonical[2..]).unwrap_or('?');
            if given != expected {
                return Err(invalid(
                    KIND,
                    text,
                    format!("check character is '{given}', expected '{expected}': re-key the identifier"),
                ));
            }
        }
        Ok(Coi(canonical.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The hand-keyed form with its check character appended.
    pub fn with_check_character(&self) -> String {
        let check = mod37_2_check(&self.0[2..]).unwrap_or('*');
        format!("{}{}", self.0, check)
    }
}

/// An ISBT 128 donation identification number: FIN (5) + year (2) + serial (6 digits).
/// Flag characters and the check character are not part of the stored form.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Din(String);

impl Din {
    pub const LEN: usize = 13;

    /// # Errors
    /// [`IdError::Invalid`] naming the part that is wrong.
    pub fn parse(text: &str) -> Result<Din, IdError> {
        const KIND: &str = "din";
        let bytes = text.as_bytes();
        if !text.is_ascii() || (bytes.len() != Self::LEN && bytes.len() != Self::LEN + 1) {
            return Err(invalid(
                KIND,
                text,
                "expected 5-character facility number + 2-digit year + 6-digit serial (13 characters, optionally a check character)",
            ));
        }
        check_fin(KIND, text, &bytes[..5])?;
        if !bytes[5..13].iter().all(u8::is_ascii_digit) {
            return Err(invalid(KIND, text, "year and serial must be digits"));
        }
        if bytes.len() == Self::LEN + 1 {
            let given = char::from(bytes[Self::LEN]);
            let expected = mod37_2_check(&text[..Self::LEN]).unwrap_or('?');
            if given != expected {
                return Err(invalid(
                    KIND,
                    text,
                    format!("check character is '{given}', expected '{expected}'"),
                ));
            }
        }
        Ok(Din(text[..Self::LEN].to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Shape shared by the short symbolic identifiers (sites, units, shippers, operators,
/// networks): 1 to 64 characters of `A-Z a-z 0-9 - _ . :`. Restricting the alphabet keeps
/// them printable everywhere (logs, NATS subjects after mapping, HTML) and rules out
/// look-alike Unicode.
fn check_symbol(kind: &'static str, text: &str) -> Result<(), IdError> {
    if text.is_empty() || text.len() > 64 {
        return Err(invalid(kind, text, "must be 1 to 64 characters"));
    }
    if !text
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
    {
        return Err(invalid(
            kind,
            text,
            "may hold only letters, digits and - _ . :",
        ));
    }
    Ok(())
}

macro_rules! symbol_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// # Errors
            /// [`IdError::Invalid`] when the text is empty, too long or has a character
            /// outside the allowed set.
            pub fn parse(text: &str) -> Result<Self, IdError> {
                check_symbol($kind, text)?;
                Ok(Self(text.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
    };
}

symbol_id!(
    /// A site: one clinic, depot, manufacturing site or lab; each has its own key and feed.
    SiteId, "site");
symbol_id!(
    /// A physical unit: a bag, vial or cassette, by its label identifier.
    UnitId, "unit");
symbol_id!(
    /// A shipper (dry shipper, cryo container) by its asset identifier.
    ShipperId, "shipper");
symbol_id!(
    /// A person's user id at a site. Never a name: the printed name travels separately
    /// inside the Part 11 manifestation.
    OperatorId, "operator");
symbol_id!(
    /// The network: one sponsor's trust domain. Events from another network never verify.
    NetworkId, "network");

macro_rules! display_as_str {
    ($($name:ident),*) => {$(
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }
    )*};
}
display_as_str!(Coi, Din, SiteId, UnitId, ShipperId, OperatorId, NetworkId);

/// A feed sequence number; the first event of a feed has seq 1.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Seq(pub u64);

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A SHA-256 digest naming an event (the hash of its signed bytes).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventId(pub [u8; 32]);

impl EventId {
    pub fn to_hex(&self) -> String {
        hex_lower(&self.0)
    }

    /// The first 12 hex digits, enough to tell events apart in a report.
    pub fn short(&self) -> String {
        self.to_hex()[..12].to_owned()
    }

    /// # Errors
    /// [`IdError::Invalid`] unless `text` is exactly 64 hex digits.
    pub fn from_hex(text: &str) -> Result<EventId, IdError> {
        let bytes = text.as_bytes();
        if bytes.len() != 64 {
            return Err(invalid("event id", text, "must be 64 hex digits"));
        }
        let mut out = [0u8; 32];
        for (i, pair) in bytes.chunks(2).enumerate() {
            let hi = (pair[0] as char).to_digit(16);
            let lo = (pair[1] as char).to_digit(16);
            match (hi, lo) {
                (Some(h), Some(l)) => out[i] = (h * 16 + l) as u8,
                _ => return Err(invalid("event id", text, "must be 64 hex digits")),
            }
        }
        Ok(EventId(out))
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EventId({})", self.short())
    }
}

/// Lower-case hex of `bytes`: ids and keys go out as hex in every answer and export, so
/// this avoids a formatter call per byte.
pub fn hex_lower(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_is_lower_case_two_digits_a_byte() {
        assert_eq!(super::hex_lower(&[0x00, 0x0f, 0xa0, 0xff]), "000fa0ff");
        assert_eq!(super::hex_lower(&[]), "");
    }

    use super::*;

    #[track_caller]
    fn check_coi(text: &str, expect: Result<&str, &str>) {
        match (Coi::parse(text), expect) {
            (Ok(coi), Ok(want)) => assert_eq!(coi.as_str(), want),
            (Err(err), Err(want)) => {
                let msg = err.to_string();
                assert!(msg.contains(want), "error '{msg}' lacks '{want}'");
            }
            (got, want) => panic!("{text}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn coi_forms() {
        check_coi("CHA999926ABC123", Ok("CHA999926ABC123"));
        check_coi("&/CHA999926ABC123", Ok("CHA999926ABC123"));
        let keyed = Coi::parse("CHA999926ABC123")
            .unwrap()
            .with_check_character();
        check_coi(&keyed, Ok("CHA999926ABC123"));
        check_coi("CHO999926ABC123", Err("facility number must start"));
        check_coi("CH0999926ABC123", Err("facility number must start"));
        check_coi("CHA99X926ABC123", Err("four digits"));
        check_coi("CHA9999X6ABC123", Err("year"));
        check_coi("CHA999926abc123", Err("sequence"));
        check_coi("XXA999926ABC123", Err("CH"));
        check_coi("CHA999926ABC12", Err("15 characters"));
        check_coi("", Err("15 characters"));
        check_coi("CHA999926ABC12é", Err("15 characters"));
    }

    #[test]
    fn coi_wrong_check_character_is_rejected() {
        let keyed = Coi::parse("CHA999926ABC123")
            .unwrap()
            .with_check_character();
        let last = keyed.chars().last().unwrap();
        let wrong = if last == '0' { '1' } else { '0' };
        let bad = format!("{}{}", &keyed[..15], wrong);
        check_coi(&bad, Err("check character"));
    }

    #[test]
    fn mod37_2_matches_iso_7064_examples() {
        // Worked by hand with the ISO 7064 recurrence p = ((p + v) * 2) mod 37, check =
        // (38 - p) mod 37: "0" gives p = 0, check 1; "A" (10) gives p = 20, check 18 = 'I';
        // "ZZ": p = 70 mod 37 = 33, then (33 + 35) * 2 mod 37 = 25, check 13 = 'D'.
        assert_eq!(mod37_2_check("0"), Some('1'));
        assert_eq!(mod37_2_check("A"), Some('I'));
        assert_eq!(mod37_2_check("ZZ"), Some('D'));
        assert_eq!(mod37_2_check("a"), None);
    }

    #[test]
    fn din_forms() {
        assert_eq!(
            Din::parse("A999926123456").unwrap().as_str(),
            "A999926123456"
        );
        assert!(Din::parse("A99992612345X").is_err());
        let check = mod37_2_check("A999926123456").unwrap();
        assert!(Din::parse(&format!("A999926123456{check}")).is_ok());
    }

    #[test]
    fn symbols() {
        assert!(SiteId::parse("clinic-a").is_ok());
        assert!(SiteId::parse("").is_err());
        assert!(SiteId::parse("a b").is_err());
        assert!(SiteId::parse(&"x".repeat(65)).is_err());
        assert!(UnitId::parse("BAG-1.2:3_x").is_ok());
    }

    #[test]
    fn event_id_hex_round_trip() {
        let id = EventId([0xab; 32]);
        assert_eq!(EventId::from_hex(&id.to_hex()).unwrap(), id);
        assert!(EventId::from_hex("ab").is_err());
        assert!(EventId::from_hex(&"g".repeat(64)).is_err());
    }
}
