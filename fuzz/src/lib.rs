//! Harnesses for the fuzz targets of `slidemesh-protocol`, shared with the seed generator.
//!
//! Each target in `fuzz_targets/` is a one-line `fuzz_target!` over a function of
//! [`targets`], so the seed generator (`examples/seeds.rs`) can run every seed it writes
//! through the very code the fuzzer runs and insist that it goes the whole way (decodes,
//! verifies, validates): a seed refused at the first check teaches the fuzzer nothing about
//! the code behind it.
//!
//! A peer's bytes reach the protocol crate's decoders in two shapes, and the harnesses take
//! both:
//! - **as sent**: the postcard encoding of a signed object, as it arrives on the wire. A
//!   fuzzer cannot forge signatures, so this shape covers the outer decoding and the
//!   refusal of bad signatures, but never the statement inside;
//! - **signed here**: the statement's own bytes, signed by a fixture key before they are
//!   verified. `verify` checks only that the signer named in the object signed the bytes
//!   (whether that signer may speak for the owner is asked later, against the roster), so
//!   any peer with a key of its own can make a node decode bytes of its choosing; this
//!   shape is how the fuzzer reaches that decoding.
//!
//! The first byte of every input is a selector (which message family, which shape); the
//! rest is the payload. Targets must not panic on any input: every `assert!` here states
//! a property the protocol crate promises (round trips, a correctly signed statement
//! passing its signature check), so a failed one is a finding, like any other panic.

pub mod fixtures;
pub mod frame;
pub mod round_trip;
pub mod statements;
pub mod targets;

/// How far an input got through its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Refused somewhere: malformed, badly signed, invalid or inconsistent.
    Refused,
    /// Decoded, verified and validated all the way, as a well-behaved peer's message is.
    Accepted,
}

impl Outcome {
    /// `Accepted` only when both are.
    pub fn and(self, other: Outcome) -> Outcome {
        if self == Outcome::Accepted && other == Outcome::Accepted {
            Outcome::Accepted
        } else {
            Outcome::Refused
        }
    }

    /// `Accepted` when either is.
    pub fn or(self, other: Outcome) -> Outcome {
        if self == Outcome::Accepted || other == Outcome::Accepted {
            Outcome::Accepted
        } else {
            Outcome::Refused
        }
    }

    pub fn from_ok<T, E>(result: &Result<T, E>) -> Outcome {
        if result.is_ok() {
            Outcome::Accepted
        } else {
            Outcome::Refused
        }
    }
}

/// Whether a selector byte asks for the signed-here shape (its top bit).
pub const SIGNED_HERE: u8 = 0x80;
