//! The canonical encoding: one version byte followed by the postcard encoding of the value.
//!
//! Anything hashed or signed (manifests, later grants and checkpoints) goes through here, so
//! every node computes the same bytes and therefore the same ids. postcard is deterministic
//! for our types because they contain no hash maps and no floats other than fixed `f64`s.
//! Decoding re-encodes and compares, so a non-canonical but parseable input (for example an
//! over-long varint) is refused rather than given a second id.

use serde::{Serialize, de::DeserializeOwned};

/// The version of the canonical encoding. Bump it when any hashed type changes shape.
pub const CANONICAL_VERSION: u8 = 1;

/// Why bytes are not a canonical encoding of the expected type.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CanonicalError {
    #[error("empty input: no canonical version byte")]
    Empty,
    #[error(
        "unsupported canonical encoding version {found} (this node speaks {CANONICAL_VERSION})"
    )]
    Version { found: u8 },
    #[error("malformed canonical encoding: {0}")]
    Malformed(#[from] postcard::Error),
    #[error("encoding is parseable but not canonical")]
    NotCanonical,
}

/// Encodes `value` canonically.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = vec![CANONICAL_VERSION];
    // Serialising our own plain data types into a Vec cannot fail: postcard only errors on
    // unsupported serde features (maps of unknown length, `deserialize_any`), which these
    // types do not use. A failure here is a programming error caught by the unit tests.
    postcard::to_io(value, &mut out).expect("canonical types serialise with postcard");
    out
}

/// Decodes canonical bytes, refusing other versions and non-canonical encodings.
pub fn decode<T: Serialize + DeserializeOwned>(bytes: &[u8]) -> Result<T, CanonicalError> {
    let (&version, body) = bytes.split_first().ok_or(CanonicalError::Empty)?;
    if version != CANONICAL_VERSION {
        return Err(CanonicalError::Version { found: version });
    }
    let value: T = postcard::from_bytes(body)?;
    if encode(&value) != bytes {
        return Err(CanonicalError::NotCanonical);
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, serde::Deserialize)]
    struct Sample {
        a: u32,
        b: String,
    }

    #[test]
    fn round_trips_and_checks_version() {
        let s = Sample {
            a: 300,
            b: "x".into(),
        };
        let bytes = encode(&s);
        assert_eq!(bytes[0], CANONICAL_VERSION);
        assert_eq!(decode::<Sample>(&bytes).unwrap(), s);
        let mut other = bytes.clone();
        other[0] = 99;
        assert!(matches!(
            decode::<Sample>(&other),
            Err(CanonicalError::Version { found: 99 })
        ));
        assert!(matches!(decode::<Sample>(&[]), Err(CanonicalError::Empty)));
    }

    #[test]
    fn refuses_trailing_bytes_and_overlong_varints() {
        let s = Sample {
            a: 1,
            b: String::new(),
        };
        let mut trailing = encode(&s);
        trailing.push(0);
        assert!(matches!(
            decode::<Sample>(&trailing),
            Err(CanonicalError::NotCanonical)
        ));
        // 1 encoded as a two-byte varint (0x81 0x00) is parseable but not canonical.
        let overlong = vec![CANONICAL_VERSION, 0x81, 0x00, 0x00];
        assert!(decode::<Sample>(&overlong).is_err());
    }
}
