//! The person behind a request, as their own trust's node names them.
//!
//! Identity of people stays with their trust: the trust's single sign-on authenticates them
//! and its node, which peers know by its roster key, vouches for who asked and in which role.
//! Owners' policies can then decide per role, and both sides' audit logs name the person.
//! The id is the trust's own account name; it never identifies a patient.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest user id accepted.
pub const MAX_USER_ID_LEN: usize = 128;
/// Longest role accepted.
pub const MAX_ROLE_LEN: usize = 64;

/// A person at the requesting trust and the role they act in (`pathologist`, `researcher`,
/// `student`, ...). Construct with [`UserClaim::new`], which checks both parts; a claim
/// received from a peer is checked again with [`UserClaim::validate`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct UserClaim {
    pub id: String,
    pub role: String,
}

/// Why a user claim was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserClaimError {
    #[error(
        "user id must be 1 to {MAX_USER_ID_LEN} printable characters without spaces, got {0:?}"
    )]
    Id(String),
    #[error(
        "role must be 1 to {MAX_ROLE_LEN} characters of lowercase letters, digits and '-', got {0:?}"
    )]
    Role(String),
}

impl UserClaim {
    pub fn new(id: impl Into<String>, role: impl Into<String>) -> Result<Self, UserClaimError> {
        let claim = Self {
            id: id.into(),
            role: role.into(),
        };
        claim.validate()?;
        Ok(claim)
    }

    /// Ids are account names (`jsmith`, `j.smith@trust.nhs.uk`): printable ASCII, no spaces,
    /// so they read unambiguously in audit logs. Roles are lowercase words, as policies
    /// compare them literally.
    pub fn validate(&self) -> Result<(), UserClaimError> {
        let id_ok = !self.id.is_empty()
            && self.id.len() <= MAX_USER_ID_LEN
            && self.id.bytes().all(|b| b.is_ascii_graphic());
        if !id_ok {
            return Err(UserClaimError::Id(self.id.clone()));
        }
        let role_ok = !self.role.is_empty()
            && self.role.len() <= MAX_ROLE_LEN
            && self
                .role
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !role_ok {
            return Err(UserClaimError::Role(self.role.clone()));
        }
        Ok(())
    }
}

/// `id (role)`: how audit entries name the person.
impl fmt::Display for UserClaim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.id, self.role)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_are_checked() {
        let ok = UserClaim::new("j.smith@rae.nhs.uk", "pathologist").unwrap();
        assert_eq!(ok.to_string(), "j.smith@rae.nhs.uk (pathologist)");
        assert!(matches!(
            UserClaim::new("", "pathologist"),
            Err(UserClaimError::Id(_))
        ));
        assert!(matches!(
            UserClaim::new("j smith", "pathologist"),
            Err(UserClaimError::Id(_))
        ));
        assert!(matches!(
            UserClaim::new("x".repeat(MAX_USER_ID_LEN + 1), "pathologist"),
            Err(UserClaimError::Id(_))
        ));
        assert!(matches!(
            UserClaim::new("jsmith", "Pathologist"),
            Err(UserClaimError::Role(_))
        ));
        assert!(matches!(
            UserClaim::new("jsmith", "path\nologist"),
            Err(UserClaimError::Role(_))
        ));
        assert!(matches!(
            UserClaim::new("jsmith", ""),
            Err(UserClaimError::Role(_))
        ));
    }
}
