//! The one place that turns values into bytes and back.
//!
//! Every hashed or signed structure is a CBOR array with a fixed field order, encoded
//! deterministically (RFC 8949 §4.2: shortest integer heads, definite lengths, no maps, no
//! floats, no tags). ciborium writes shortest heads and definite lengths for the values we
//! build; it does not refuse other forms when reading, so [`decode_canonical`] re-encodes
//! what it read and rejects input whose bytes differ. Two different byte strings can
//! therefore never decode to the same record.

use ciborium::value::{Integer, Value};

/// Why bytes are not the record they claim to be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("{what}: not well-formed CBOR ({reason})")]
    NotCbor { what: &'static str, reason: String },
    #[error("{what}: not in canonical form (re-encoding gives different bytes)")]
    NonCanonical { what: &'static str },
    #[error("{what}: {reason}")]
    Shape { what: &'static str, reason: String },
    #[error("{what}: {n_bytes} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        what: &'static str,
        n_bytes: usize,
        max: usize,
    },
}

pub(crate) fn shape(what: &'static str, reason: impl Into<String>) -> DecodeError {
    DecodeError::Shape {
        what,
        reason: reason.into(),
    }
}

/// Encodes a value built by this crate. Writing to a `Vec` cannot fail.
pub(crate) fn encode(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    if let Err(err) = ciborium::into_writer(value, &mut out) {
        // Only an I/O error of the writer can end up here, and a Vec never fails.
        panic!("encoding into a Vec failed: {err}");
    }
    out
}

/// Decodes one CBOR item that must occupy all of `bytes` in canonical form.
///
/// # Errors
/// [`DecodeError::TooLarge`], [`DecodeError::NotCbor`] or [`DecodeError::NonCanonical`].
pub(crate) fn decode_canonical(
    what: &'static str,
    bytes: &[u8],
    max: usize,
) -> Result<Value, DecodeError> {
    if bytes.len() > max {
        return Err(DecodeError::TooLarge {
            what,
            n_bytes: bytes.len(),
            max,
        });
    }
    let value: Value = ciborium::from_reader(bytes).map_err(|err| DecodeError::NotCbor {
        what,
        reason: match err {
            ciborium::de::Error::Io(_) => "the data ends early (truncated?)".to_owned(),
            ciborium::de::Error::Syntax(offset) => format!("syntax error at byte {offset}"),
            ciborium::de::Error::Semantic(Some(offset), msg) => format!("{msg} at byte {offset}"),
            ciborium::de::Error::Semantic(None, msg) => msg,
            ciborium::de::Error::RecursionLimitExceeded => "nested too deeply".to_owned(),
        },
    })?;
    check_no_float_map_tag(what, &value)?;
    if encode(&value) != bytes {
        return Err(DecodeError::NonCanonical { what });
    }
    Ok(value)
}

fn check_no_float_map_tag(what: &'static str, value: &Value) -> Result<(), DecodeError> {
    match value {
        Value::Float(_) => Err(shape(what, "floats are not allowed")),
        Value::Map(_) => Err(shape(
            what,
            "maps are not allowed (records are fixed-order arrays)",
        )),
        Value::Tag(..) => Err(shape(what, "tags are not allowed")),
        Value::Array(items) => items
            .iter()
            .try_for_each(|v| check_no_float_map_tag(what, v)),
        _ => Ok(()),
    }
}

pub(crate) fn uint(v: u64) -> Value {
    Value::Integer(Integer::from(v))
}

pub(crate) fn int(v: i64) -> Value {
    Value::Integer(Integer::from(v))
}

pub(crate) fn text(s: &str) -> Value {
    Value::Text(s.to_owned())
}

pub(crate) fn bytes(b: &[u8]) -> Value {
    Value::Bytes(b.to_vec())
}

/// Reads the fields of a fixed-order array one by one, naming the record and field in
/// every error.
pub(crate) struct Fields {
    what: &'static str,
    items: std::vec::IntoIter<Value>,
}

impl Fields {
    pub(crate) fn new(
        what: &'static str,
        value: Value,
        n_fields: usize,
    ) -> Result<Fields, DecodeError> {
        match value {
            Value::Array(items) if items.len() == n_fields => Ok(Fields {
                what,
                items: items.into_iter(),
            }),
            Value::Array(items) => Err(shape(
                what,
                format!("expected {n_fields} fields, found {}", items.len()),
            )),
            _ => Err(shape(what, "expected an array")),
        }
    }

    pub(crate) fn what(&self) -> &'static str {
        self.what
    }

    pub(crate) fn next(&mut self, field: &str) -> Result<Value, DecodeError> {
        self.items
            .next()
            .ok_or_else(|| shape(self.what, format!("field {field} is missing")))
    }

    pub(crate) fn u64(&mut self, field: &str) -> Result<u64, DecodeError> {
        match self.next(field)? {
            Value::Integer(i) => u64::try_from(i).map_err(|_| {
                shape(
                    self.what,
                    format!("field {field} must be a non-negative integer"),
                )
            }),
            _ => Err(shape(
                self.what,
                format!("field {field} must be an integer"),
            )),
        }
    }

    pub(crate) fn i64(&mut self, field: &str) -> Result<i64, DecodeError> {
        match self.next(field)? {
            Value::Integer(i) => i64::try_from(i)
                .map_err(|_| shape(self.what, format!("field {field} is out of range"))),
            _ => Err(shape(
                self.what,
                format!("field {field} must be an integer"),
            )),
        }
    }

    pub(crate) fn i32(&mut self, field: &str) -> Result<i32, DecodeError> {
        let v = self.i64(field)?;
        i32::try_from(v).map_err(|_| shape(self.what, format!("field {field} is out of range")))
    }

    pub(crate) fn bool(&mut self, field: &str) -> Result<bool, DecodeError> {
        match self.next(field)? {
            Value::Bool(b) => Ok(b),
            _ => Err(shape(self.what, format!("field {field} must be a boolean"))),
        }
    }

    pub(crate) fn text(&mut self, field: &str, max_len: usize) -> Result<String, DecodeError> {
        match self.next(field)? {
            Value::Text(s) if s.len() <= max_len => Ok(s),
            Value::Text(s) => Err(shape(
                self.what,
                format!("field {field} is {} bytes, more than {max_len}", s.len()),
            )),
            _ => Err(shape(self.what, format!("field {field} must be text"))),
        }
    }

    pub(crate) fn bytes(&mut self, field: &str) -> Result<Vec<u8>, DecodeError> {
        match self.next(field)? {
            Value::Bytes(b) => Ok(b),
            _ => Err(shape(
                self.what,
                format!("field {field} must be a byte string"),
            )),
        }
    }

    pub(crate) fn array<const N: usize>(&mut self, field: &str) -> Result<[u8; N], DecodeError> {
        let b = self.bytes(field)?;
        let n = b.len();
        b.try_into().map_err(|_| {
            shape(
                self.what,
                format!("field {field} must be {N} bytes, found {n}"),
            )
        })
    }

    pub(crate) fn list(
        &mut self,
        field: &str,
        max_items: usize,
    ) -> Result<Vec<Value>, DecodeError> {
        match self.next(field)? {
            Value::Array(items) if items.len() <= max_items => Ok(items),
            Value::Array(items) => Err(shape(
                self.what,
                format!(
                    "field {field} has {} items, more than {max_items}",
                    items.len()
                ),
            )),
            _ => Err(shape(self.what, format!("field {field} must be an array"))),
        }
    }

    pub(crate) fn optional(&mut self, field: &str) -> Result<Option<Value>, DecodeError> {
        match self.next(field)? {
            Value::Null => Ok(None),
            v => Ok(Some(v)),
        }
    }

    /// Checks nothing is left. Construction already fixed the count, so this only guards
    /// decoders that read fewer fields than they declared.
    pub(crate) fn end(mut self) -> Result<(), DecodeError> {
        match self.items.next() {
            None => Ok(()),
            Some(_) => Err(shape(self.what, "unexpected extra field")),
        }
    }
}

/// Reads a list item that must itself be a byte string of exactly `N` bytes.
pub(crate) fn item_array<const N: usize>(
    what: &'static str,
    field: &str,
    v: Value,
) -> Result<[u8; N], DecodeError> {
    match v {
        Value::Bytes(b) => {
            let n = b.len();
            b.try_into()
                .map_err(|_| shape(what, format!("{field} items must be {N} bytes, found {n}")))
        }
        _ => Err(shape(what, format!("{field} items must be byte strings"))),
    }
}

pub(crate) fn item_text(what: &'static str, field: &str, v: Value) -> Result<String, DecodeError> {
    match v {
        Value::Text(s) => Ok(s),
        _ => Err(shape(what, format!("{field} items must be text"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shortest_integer_heads() {
        assert_eq!(encode(&uint(23)), vec![0x17]);
        assert_eq!(encode(&uint(24)), vec![0x18, 24]);
        assert_eq!(encode(&uint(256)), vec![0x19, 1, 0]);
        assert_eq!(encode(&int(-1)), vec![0x20]);
        assert_eq!(
            encode(&Value::Array(vec![uint(1), text("a")])),
            vec![0x82, 0x01, 0x61, b'a']
        );
    }

    #[test]
    fn non_shortest_and_indefinite_are_rejected() {
        // 24 encoded with a two-byte head where one byte suffices.
        assert_eq!(
            decode_canonical("t", &[0x19, 0x00, 0x18], 100),
            Err(DecodeError::NonCanonical { what: "t" })
        );
        // Indefinite-length array [1].
        assert_eq!(
            decode_canonical("t", &[0x9f, 0x01, 0xff], 100),
            Err(DecodeError::NonCanonical { what: "t" })
        );
        // Trailing bytes after one item.
        assert_eq!(
            decode_canonical("t", &[0x01, 0x01], 100),
            Err(DecodeError::NonCanonical { what: "t" })
        );
        assert!(matches!(
            decode_canonical("t", &[0xa0], 100),
            Err(DecodeError::Shape { .. })
        ));
        assert!(matches!(
            decode_canonical("t", &[0xf9, 0x3c, 0x00], 100),
            Err(DecodeError::Shape { .. })
        ));
        assert!(matches!(
            decode_canonical(
                "t",
                &[0x5b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
                100
            ),
            Err(DecodeError::NotCbor { .. })
        ));
    }
}
