//! `TrustCode`: the NHS ODS code that names a member trust (e.g. `RR8` for Leeds).

use std::fmt;
use std::str::FromStr;

/// Why a string is not an ODS organisation code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid trust code {0:?}: expected an NHS ODS code of 3 to 5 letters and digits, e.g. RR8"
)]
pub struct TrustCodeError(pub String);

/// An NHS ODS organisation code, stored upper case. Trust-level codes are three characters;
/// up to five are accepted so that sites and other organisation kinds fit.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TrustCode(String);

impl TrustCode {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for TrustCode {
    type Err = TrustCodeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let upper = s.trim().to_ascii_uppercase();
        let valid = (3..=5).contains(&upper.len())
            && upper
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
        if valid {
            Ok(Self(upper))
        } else {
            Err(TrustCodeError(s.to_string()))
        }
    }
}

impl TryFrom<String> for TrustCode {
    type Error = TrustCodeError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<TrustCode> for String {
    fn from(code: TrustCode) -> Self {
        code.0
    }
}

impl fmt::Display for TrustCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TrustCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TrustCode({})", self.0)
    }
}

/// The regional co-operative's member trusts: ODS code and registered name. Used for
/// friendly defaults (a node's display name, generated slides' institution); the signed
/// roster is the authority on membership.
pub const COOPERATIVE_TRUSTS: &[(&str, &str)] = &[
    ("RR8", "Leeds Teaching Hospitals NHS Trust"),
    ("RAE", "Bradford Teaching Hospitals NHS Foundation Trust"),
    ("RCD", "Harrogate and District NHS Foundation Trust"),
    ("RWY", "Calderdale and Huddersfield NHS Foundation Trust"),
    ("RXF", "Mid Yorkshire Teaching NHS Trust"),
    ("RCF", "Airedale NHS Foundation Trust"),
];

impl TrustCode {
    /// The registered name of a co-operative member, if this code is one.
    pub fn cooperative_name(&self) -> Option<&'static str> {
        COOPERATIVE_TRUSTS
            .iter()
            .find(|(code, _)| *code == self.0)
            .map(|(_, name)| *name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_normalises() {
        assert_eq!("rr8".parse::<TrustCode>().unwrap().as_str(), "RR8");
        assert!("R".parse::<TrustCode>().is_err());
        assert!("RR-8".parse::<TrustCode>().is_err());
        assert!(serde_json::from_str::<TrustCode>("\"toolongcode\"").is_err());
    }
}
