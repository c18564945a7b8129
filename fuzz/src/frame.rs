//! The stream framing a node reads peers' messages with, over a byte slice.
//!
//! The framing code itself lives in the node crate (`node/src/net/codec.rs`,
//! `node/src/net/tiles.rs`, `node/src/net/warmup.rs`), which cannot be a dependency here: it
//! brings libp2p and tokio, and it is the protocol crate's decoders that are under test. So
//! this follows the byte layout `slidemesh_protocol::wire` documents, step for step as the
//! node reads it: a limit checked before anything is allocated, then exact reads, then
//! postcard over exactly the announced body.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Why a read stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// The stream ended: before a frame (a clean end between messages) or inside one.
    Eof,
    /// The announced length is over the limit for this message.
    TooLong,
    /// The body is not the postcard encoding of the expected type.
    Malformed,
}

/// Takes exactly `n` bytes off the front of `input`, or none when fewer are left.
pub fn take<'a>(input: &mut &'a [u8], n: usize) -> Result<&'a [u8], FrameError> {
    if input.len() < n {
        *input = &[];
        return Err(FrameError::Eof);
    }
    let (head, tail) = input.split_at(n);
    *input = tail;
    Ok(head)
}

pub fn take_array<const N: usize>(input: &mut &[u8]) -> Result<[u8; N], FrameError> {
    let bytes = take(input, N)?;
    Ok(bytes.try_into().expect("take returned N bytes"))
}

/// One length-prefixed message as the node's `read_message` reads it: a `u32` little-endian
/// length, refused above `max`, then postcard over exactly that many bytes (postcard, like
/// the node, ignores bytes of the body its value did not use).
pub fn read_message<T: DeserializeOwned>(input: &mut &[u8], max: usize) -> Result<T, FrameError> {
    let len = u32::from_le_bytes(take_array(input)?) as usize;
    if len > max {
        return Err(FrameError::TooLong);
    }
    let body = take(input, len)?;
    postcard::from_bytes(body).map_err(|_| FrameError::Malformed)
}

/// The bytes `read_message` reads as `value` (the node's `write_message`).
pub fn message<T: Serialize>(value: &T) -> Vec<u8> {
    let body = postcard::to_stdvec(value).expect("protocol types encode with postcard");
    let mut out = (body.len() as u32).to_le_bytes().to_vec();
    out.extend_from_slice(&body);
    out
}
