//! Node keys and signatures over canonical bytes.
//!
//! A node has one ed25519 key; the node crate turns the same key into its libp2p identity.
//! Every signature is domain separated (`slidemesh/<kind>/v1`), so a signature made over a
//! manifest can never be replayed as, say, a grant.

use std::fmt;
use std::marker::PhantomData;
use std::str::FromStr;

use ed25519_dalek::{Signer, Verifier};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::canonical::{self, CanonicalError};

/// Why a signature or key was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    #[error("invalid public key: {0}")]
    PublicKey(String),
    #[error("signature does not verify for this key and content")]
    Invalid,
    #[error("malformed signature: expected 64 bytes, got {0}")]
    Length(usize),
}

/// A node's private signing key. Never serialised by this crate; the node's store writes
/// the secret bytes to a file readable by the node's user only.
pub struct NodeKey(ed25519_dalek::SigningKey);

impl NodeKey {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> Self {
        Self(ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng))
    }

    pub fn from_secret_bytes(secret: [u8; 32]) -> Self {
        Self(ed25519_dalek::SigningKey::from_bytes(&secret))
    }

    pub fn secret_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// A secret for another purpose than signing (e.g. keyed pseudonyms), derived from this
    /// key with BLAKE3's key derivation under `context`: one secret per context, none of them
    /// revealing the signing key or each other.
    pub fn derive_secret(&self, context: &str) -> [u8; 32] {
        blake3::derive_key(context, &self.0.to_bytes())
    }

    pub fn public(&self) -> NodePublicKey {
        NodePublicKey(self.0.verifying_key().to_bytes())
    }

    /// Signs `message` within `domain` (see [`signing_input`]).
    pub fn sign(&self, domain: &str, message: &[u8]) -> [u8; 64] {
        self.0.sign(&signing_input(domain, message)).to_bytes()
    }
}

impl fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeKey(public={})", self.public())
    }
}

/// A node's public key, the raw 32 ed25519 bytes. Shown as hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodePublicKey([u8; 32]);

impl NodePublicKey {
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Checks `signature` over `message` within `domain`.
    pub fn verify(
        &self,
        domain: &str,
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), SignatureError> {
        let key = ed25519_dalek::VerifyingKey::from_bytes(&self.0)
            .map_err(|e| SignatureError::PublicKey(e.to_string()))?;
        let sig: [u8; 64] = signature
            .try_into()
            .map_err(|_| SignatureError::Length(signature.len()))?;
        key.verify(
            &signing_input(domain, message),
            &ed25519_dalek::Signature::from_bytes(&sig),
        )
        .map_err(|_| SignatureError::Invalid)
    }
}

/// The bytes actually signed: the domain, a zero separator, then the message.
fn signing_input(domain: &str, message: &[u8]) -> Vec<u8> {
    let mut input = Vec::with_capacity(domain.len() + 1 + message.len());
    input.extend_from_slice(domain.as_bytes());
    input.push(0);
    input.extend_from_slice(message);
    input
}

impl fmt::Display for NodePublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for NodePublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodePublicKey({self})")
    }
}

impl FromStr for NodePublicKey {
    type Err = SignatureError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|e| SignatureError::PublicKey(e.to_string()))?;
        Ok(Self(out))
    }
}

impl serde::Serialize for NodePublicKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(self)
        } else {
            self.0.serialize(s)
        }
    }
}

impl<'de> serde::Deserialize<'de> for NodePublicKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
            s.parse().map_err(serde::de::Error::custom)
        } else {
            <[u8; 32]>::deserialize(d).map(Self)
        }
    }
}

/// A statement a node signs as it is: its canonical bytes, within its own domain.
pub trait Statement: Serialize + DeserializeOwned {
    /// The signature domain (`slidemesh/<kind>/v1`).
    const DOMAIN: &'static str;
    /// The oldest canonical version this statement is read in: the version its shape last
    /// changed at (older bytes would decode to something else, or not at all).
    const SINCE_VERSION: u8 = canonical::OLDEST_READABLE_VERSION;
}

/// Why a signed statement was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StatementError {
    #[error("signature: {0}")]
    Signature(#[from] SignatureError),
    #[error("encoding: {0}")]
    Encoding(#[from] CanonicalError),
}

/// A [`Statement`] as it travels: canonical bytes, the signer's key and the signature.
/// Whether the signer may speak for what the statement says is the caller's question (it
/// needs the roster).
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(bound = "")]
pub struct Signed<T> {
    pub bytes: Vec<u8>,
    pub signer: NodePublicKey,
    pub signature: Vec<u8>,
    #[serde(skip)]
    statement: PhantomData<fn() -> T>,
}

impl<T: Statement> Signed<T> {
    pub fn sign(statement: &T, key: &NodeKey) -> Self {
        let bytes = canonical::encode(statement);
        let signature = key.sign(T::DOMAIN, &bytes).to_vec();
        Self {
            bytes,
            signer: key.public(),
            signature,
            statement: PhantomData,
        }
    }

    /// Checks the signature and decodes the statement.
    pub fn verify(&self) -> Result<T, StatementError> {
        self.signer
            .verify(T::DOMAIN, &self.bytes, &self.signature)?;
        Ok(canonical::decode_since(&self.bytes, T::SINCE_VERSION)?)
    }
}

// By hand rather than derived: derives would demand the same of `T`, which only marks
// the kind of statement.
impl<T> Clone for Signed<T> {
    fn clone(&self) -> Self {
        Self {
            bytes: self.bytes.clone(),
            signer: self.signer,
            signature: self.signature.clone(),
            statement: PhantomData,
        }
    }
}

impl<T> PartialEq for Signed<T> {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
            && self.signer == other.signer
            && self.signature == other.signature
    }
}

impl<T> fmt::Debug for Signed<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signed")
            .field("bytes", &self.bytes.len())
            .field("signer", &self.signer)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_and_domain_separation() {
        let key = NodeKey::generate();
        let sig = key.sign("slidemesh/test/v1", b"hello");
        let public = key.public();
        public.verify("slidemesh/test/v1", b"hello", &sig).unwrap();
        assert!(public.verify("slidemesh/other/v1", b"hello", &sig).is_err());
        assert!(public.verify("slidemesh/test/v1", b"hellO", &sig).is_err());
        assert!(
            public
                .verify("slidemesh/test/v1", b"hello", &sig[..10])
                .is_err()
        );
        let again = NodeKey::from_secret_bytes(key.secret_bytes());
        assert_eq!(again.public(), public);
        assert_eq!(public.to_string().parse::<NodePublicKey>().unwrap(), public);
    }
}
