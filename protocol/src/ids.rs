//! Content ids: BLAKE3 digests of tile bytes, original files and canonical manifests.
//!
//! Every id is 32 bytes, displayed and parsed as 64 lowercase hex characters. Parsing also
//! accepts upper case and a `blake3:` prefix so ids pasted from other tools work; display is
//! always the canonical lowercase form. In human-readable serde formats (JSON) ids are hex
//! strings; in binary formats (the canonical encoding) they are 32 raw bytes.

use std::fmt;
use std::str::FromStr;

/// Why a string is not a valid content id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdParseError {
    #[error("expected 64 hex characters, got {0} characters")]
    Length(usize),
    #[error("invalid hex character in id")]
    NotHex,
}

fn parse_digest(s: &str) -> Result<[u8; 32], IdParseError> {
    let s = s.strip_prefix("blake3:").unwrap_or(s);
    if s.len() != 64 {
        return Err(IdParseError::Length(s.len()));
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).map_err(|_| IdParseError::NotHex)?;
    Ok(out)
}

/// Defines a 32-byte BLAKE3 content id type. One macro so the three id kinds cannot drift
/// apart in how they parse, print or serialise.
macro_rules! content_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name([u8; 32]);

        impl $name {
            /// The id of `bytes`: their BLAKE3 digest.
            pub fn of(bytes: &[u8]) -> Self {
                Self(*blake3::hash(bytes).as_bytes())
            }

            /// Wraps an already computed digest.
            pub const fn from_bytes(bytes: [u8; 32]) -> Self {
                Self(bytes)
            }

            /// The raw digest.
            pub const fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }

            /// The canonical 64-character lowercase hex form.
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }
        }

        impl From<blake3::Hash> for $name {
            fn from(hash: blake3::Hash) -> Self {
                Self(*hash.as_bytes())
            }
        }

        impl FromStr for $name {
            type Err = IdParseError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                parse_digest(s).map(Self)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let mut buf = [0u8; 64];
                // Cannot fail: the buffer is exactly twice the digest length.
                hex::encode_to_slice(self.0, &mut buf).map_err(|_| fmt::Error)?;
                f.write_str(std::str::from_utf8(&buf).map_err(|_| fmt::Error)?)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self)
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                if s.is_human_readable() {
                    s.collect_str(self)
                } else {
                    self.0.serialize(s)
                }
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                if d.is_human_readable() {
                    let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                    s.parse().map_err(serde::de::Error::custom)
                } else {
                    <[u8; 32]>::deserialize(d).map(Self)
                }
            }
        }
    };
}

content_id!(
    /// BLAKE3 of a tile's bytes: a frame's encapsulated fragment values exactly as stored in
    /// the DICOM file, concatenated (padding included), or its raw bytes for native pixel data.
    TileId
);
content_id!(
    /// BLAKE3 of a slide's canonical manifest encoding (see [`crate::manifest`]).
    SlideId
);
content_id!(
    /// The content id of an original file kept in a node's object store: a BLAKE3 digest
    /// committing to every byte of the file (see the node's `ingest::frames::object_id`
    /// for its exact input, built from the frames' tile ids so ingest reads each byte once).
    ObjectId
);

content_id!(
    /// BLAKE3 of a grant's canonical encoding (see [`crate::grant`]).
    GrantId
);
content_id!(
    /// BLAKE3 of one roster version's canonical encoding (see [`crate::roster`]).
    RosterId
);
content_id!(
    /// A referral's name: BLAKE3 of random bytes its referring node drew (see
    /// [`crate::referral`]); the grants made for it carry it as their reference.
    ReferralId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_is_lowercase_and_accepts_prefix_and_upper_case() {
        let id = TileId::of(b"tile bytes");
        let hex = id.to_string();
        assert_eq!(hex.len(), 64);
        assert_eq!(hex, hex.to_lowercase());
        assert_eq!(hex.parse::<TileId>().unwrap(), id);
        assert_eq!(hex.to_uppercase().parse::<TileId>().unwrap(), id);
        assert_eq!(format!("blake3:{hex}").parse::<TileId>().unwrap(), id);
        assert_eq!(id.to_hex(), hex);
    }

    #[test]
    fn matches_reference_blake3() {
        // BLAKE3 of the empty input, from the BLAKE3 specification's test vectors.
        assert_eq!(
            TileId::of(b"").to_string(),
            "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
        );
    }

    #[test]
    fn rejects_malformed_ids() {
        assert_eq!("abc".parse::<SlideId>(), Err(IdParseError::Length(3)));
        let bad = "g".repeat(64);
        assert_eq!(bad.parse::<SlideId>(), Err(IdParseError::NotHex));
    }

    #[test]
    fn serde_is_hex_in_json_and_raw_in_binary() {
        let id = ObjectId::of(b"x");
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{id}\""));
        assert_eq!(serde_json::from_str::<ObjectId>(&json).unwrap(), id);
        let bin = postcard::to_stdvec(&id).unwrap();
        assert_eq!(bin.len(), 32);
        assert_eq!(postcard::from_bytes::<ObjectId>(&bin).unwrap(), id);
    }
}
