//! The canonical encoding: one version byte followed by the postcard encoding of the value.
//!
//! Anything hashed or signed (manifests, later grants and checkpoints) goes through here, so
//! every node computes the same bytes and therefore the same ids. postcard is deterministic
//! for our types because they contain no hash maps and no floats other than fixed `f64`s.
//! Decoding re-encodes and compares, so a non-canonical but parseable input (for example an
//! over-long varint) is refused rather than given a second id.
//!
//! Versions (the first byte): 1, the first; 2, consent statements list the owner's grants
//! that hold for the slide; 3, a referral's opinion carries annotations. Every other type
//! is unchanged from 1 to 3, so bytes written at version 1 (stored manifests, grants, audit
//! entries, rosters) are still read, and checked against their own version's encoding. A
//! type whose shape changed says from which version on it is read ([`decode_since`]);
//! anything new is written at
//! [`CANONICAL_VERSION`].

use serde::{Serialize, de::DeserializeOwned};

/// The version of the canonical encoding. Bump it when any hashed type changes shape.
pub const CANONICAL_VERSION: u8 = 3;

/// The oldest version still read (for the types whose shape it shares with the current one).
pub const OLDEST_READABLE_VERSION: u8 = 1;

/// Why bytes are not a canonical encoding of the expected type.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CanonicalError {
    #[error("empty input: no canonical version byte")]
    Empty,
    #[error(
        "unsupported canonical encoding version {found} (this node reads {oldest} to {CANONICAL_VERSION} for this type)"
    )]
    Version { found: u8, oldest: u8 },
    #[error("malformed canonical encoding: {0}")]
    Malformed(#[from] postcard::Error),
    #[error("encoding is parseable but not canonical")]
    NotCanonical,
}

/// Encodes `value` canonically.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    encode_as(CANONICAL_VERSION, value)
}

/// Encodes `value` under `version`'s byte (the body is the same postcard in every version
/// so far; only the types' shapes differ).
fn encode_as<T: Serialize>(version: u8, value: &T) -> Vec<u8> {
    let mut out = vec![version];
    // Serialising our own plain data types into a Vec cannot fail: postcard only errors on
    // unsupported serde features (maps of unknown length, `deserialize_any`), which these
    // types do not use. A failure here is a programming error caught by the unit tests.
    postcard::to_io(value, &mut out).expect("canonical types serialise with postcard");
    out
}

/// Decodes canonical bytes of any readable version, refusing unknown versions and
/// non-canonical encodings.
pub fn decode<T: Serialize + DeserializeOwned>(bytes: &[u8]) -> Result<T, CanonicalError> {
    decode_since(bytes, OLDEST_READABLE_VERSION)
}

/// Decodes canonical bytes written at version `oldest` or later: for a type whose shape
/// changed at `oldest`, whose older bytes would mean something else.
pub fn decode_since<T: Serialize + DeserializeOwned>(
    bytes: &[u8],
    oldest: u8,
) -> Result<T, CanonicalError> {
    let (&version, body) = bytes.split_first().ok_or(CanonicalError::Empty)?;
    let oldest = oldest.max(OLDEST_READABLE_VERSION);
    if !(oldest..=CANONICAL_VERSION).contains(&version) {
        return Err(CanonicalError::Version {
            found: version,
            oldest,
        });
    }
    let value: T = postcard::from_bytes(body)?;
    if encode_as(version, &value) != bytes {
        return Err(CanonicalError::NotCanonical);
    }
    Ok(value)
}

/// The version byte of canonical bytes (`None` when empty).
pub fn version_of(bytes: &[u8]) -> Option<u8> {
    bytes.first().copied()
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
            Err(CanonicalError::Version { found: 99, .. })
        ));
        assert!(matches!(decode::<Sample>(&[]), Err(CanonicalError::Empty)));
    }

    #[test]
    fn older_versions_are_read_unless_the_type_changed_since() {
        let s = Sample {
            a: 7,
            b: "kept".into(),
        };
        // As a node of version 1 wrote it: same body, its own version byte.
        let old = encode_as(1, &s);
        assert_eq!(old[0], 1);
        assert_eq!(decode::<Sample>(&old).unwrap(), s);
        assert_eq!(version_of(&old), Some(1));
        // Not re-encoded as the current version: its id stays the bytes' own.
        assert_ne!(old, encode(&s));
        assert!(matches!(
            decode_since::<Sample>(&old, CANONICAL_VERSION),
            Err(CanonicalError::Version { found: 1, .. })
        ));
        assert_eq!(
            decode_since::<Sample>(&encode(&s), CANONICAL_VERSION).unwrap(),
            s
        );
        // A version from the future is refused.
        let future = encode_as(CANONICAL_VERSION + 1, &s);
        assert!(decode::<Sample>(&future).is_err());
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
