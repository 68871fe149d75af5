//! The little of CBOR (RFC 8949) that WebAuthn structures use, over `ciborium`'s decoder:
//! decoding one item from the front of a byte string (authenticator data embeds a COSE key
//! followed by more data), and typed access to maps with duplicate keys refused.

use ciborium::Value;

use super::WebauthnError;

/// Nesting deeper than this is refused (WebAuthn structures nest three or four levels).
const MAX_DEPTH: usize = 16;
/// Maps and arrays longer than this are refused (the largest WebAuthn map has a handful of
/// entries; the bound keeps the duplicate-key check cheap).
const MAX_ENTRIES: usize = 64;

/// Decodes the CBOR item at the front of `bytes`; returns it and how many bytes it took.
pub(super) fn decode_prefix(bytes: &[u8], what: &'static str) -> Result<(Value, usize), WebauthnError> {
    let mut rest = bytes;
    let v: Value = ciborium::de::from_reader_with_recursion_limit(&mut rest, MAX_DEPTH)
        .map_err(|_| WebauthnError::Malformed(what))?;
    check(&v, what)?;
    Ok((v, bytes.len() - rest.len()))
}

/// Decodes `bytes` as exactly one CBOR item.
pub(super) fn decode_all(bytes: &[u8], what: &'static str) -> Result<Value, WebauthnError> {
    let (v, used) = decode_prefix(bytes, what)?;
    if used != bytes.len() {
        return Err(WebauthnError::Malformed(what));
    }
    Ok(v)
}

/// Refuses duplicate map keys anywhere (RFC 8949 §5.6: such a map is not valid), floats and
/// tags (no WebAuthn structure has them).
fn check(v: &Value, what: &'static str) -> Result<(), WebauthnError> {
    match v {
        Value::Map(entries) => {
            if entries.len() > MAX_ENTRIES {
                return Err(WebauthnError::Malformed(what));
            }
            for (i, (k, val)) in entries.iter().enumerate() {
                if entries[..i].iter().any(|(k2, _)| k2 == k) {
                    return Err(WebauthnError::Malformed(what));
                }
                check(k, what)?;
                check(val, what)?;
            }
            Ok(())
        }
        Value::Array(items) if items.len() > MAX_ENTRIES => Err(WebauthnError::Malformed(what)),
        Value::Array(items) => items.iter().try_for_each(|i| check(i, what)),
        Value::Float(_) | Value::Tag(..) => Err(WebauthnError::Malformed(what)),
        _ => Ok(()),
    }
}

pub(super) fn map<'a>(v: &'a Value, what: &'static str) -> Result<&'a [(Value, Value)], WebauthnError> {
    match v {
        Value::Map(m) => Ok(m),
        _ => Err(WebauthnError::Malformed(what)),
    }
}

pub(super) fn get_int_key(m: &[(Value, Value)], key: i64) -> Option<&Value> {
    m.iter().find(|(k, _)| matches!(k, Value::Integer(i) if i64::try_from(*i).ok() == Some(key))).map(|(_, v)| v)
}

pub(super) fn get_text_key<'a>(m: &'a [(Value, Value)], key: &str) -> Option<&'a Value> {
    m.iter().find(|(k, _)| matches!(k, Value::Text(t) if t == key)).map(|(_, v)| v)
}

pub(super) fn int(v: &Value, what: &'static str) -> Result<i64, WebauthnError> {
    match v {
        Value::Integer(i) => i64::try_from(*i).map_err(|_| WebauthnError::Malformed(what)),
        _ => Err(WebauthnError::Malformed(what)),
    }
}

pub(super) fn bytes<'a>(v: &'a Value, what: &'static str) -> Result<&'a [u8], WebauthnError> {
    match v {
        Value::Bytes(b) => Ok(b),
        _ => Err(WebauthnError::Malformed(what)),
    }
}

pub(super) fn text<'a>(v: &'a Value, what: &'static str) -> Result<&'a str, WebauthnError> {
    match v {
        Value::Text(t) => Ok(t),
        _ => Err(WebauthnError::Malformed(what)),
    }
}
