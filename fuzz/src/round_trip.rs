//! Round-trip properties of the two encodings, asserted on whatever a decoder accepted.
//!
//! Encoded bytes are compared rather than decoded values: a manifest's pixel spacing is an
//! `f64`, and a NaN there is a legal value that is not equal to itself.

use serde::Serialize;
use serde::de::DeserializeOwned;
use slidemesh_protocol::canonical::{self, CANONICAL_VERSION, OLDEST_READABLE_VERSION};

/// A value decoded from a peer's postcard re-encodes to bytes that decode again, to a value
/// with the same encoding. Postcard's decoding is lenient (over-long varints, trailing
/// bytes), so the first encoding need not equal the input; from there on it is a fixpoint.
pub fn postcard<T: Serialize + DeserializeOwned>(value: &T) {
    let once = postcard::to_stdvec(value).expect("a decoded value encodes");
    let back: T = match postcard::from_bytes(&once) {
        Ok(back) => back,
        Err(e) => panic!("the re-encoding of a decoded value does not decode: {e}"),
    };
    let twice = postcard::to_stdvec(&back).expect("a decoded value encodes");
    assert_eq!(once, twice, "postcard encoding is not a fixpoint");
}

/// `bytes` were accepted by `canonical::decode` as `value`: they are exactly the value's
/// encoding at their version (canonical decoding refuses any other spelling), and the
/// current encoding of the value decodes back to the same bytes.
pub fn canonical<T: Serialize + DeserializeOwned>(bytes: &[u8], value: &T) {
    let version = bytes[0];
    assert!(
        (OLDEST_READABLE_VERSION..=CANONICAL_VERSION).contains(&version),
        "canonical decoding accepted version {version}"
    );
    let current = canonical::encode(value);
    assert_eq!(
        current[1..],
        bytes[1..],
        "canonical decoding accepted bytes that are not the value's encoding"
    );
    let back: T = match canonical::decode(&current) {
        Ok(back) => back,
        Err(e) => panic!("the canonical encoding of a decoded value does not decode: {e}"),
    };
    assert_eq!(
        canonical::encode(&back),
        current,
        "canonical encoding is not a fixpoint"
    );
}
