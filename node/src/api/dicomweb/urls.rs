//! URLs of DICOMweb resources as the client sees this node (RetrieveURL, BulkDataURI).
//! Built from the request's `Host` (or `X-Forwarded-Host`/`-Proto` behind a proxy), so a
//! client that reached the node under any name gets links that work for it.

use axum::http::{HeaderMap, header};

/// Where the DICOMweb service is mounted.
pub const PREFIX: &str = "/dicomweb";

pub struct Urls {
    base: String,
}

impl Urls {
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let get = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.split(',').next().unwrap_or(v).trim().to_string())
                .filter(|v| !v.is_empty() && !v.contains(['/', '"', ' ']))
        };
        let host = get("x-forwarded-host")
            .or_else(|| get(header::HOST.as_str()))
            .unwrap_or_else(|| "localhost".into());
        let scheme = get("x-forwarded-proto")
            .filter(|p| p == "https" || p == "http")
            .unwrap_or_else(|| "http".into());
        Self {
            base: format!("{scheme}://{host}{PREFIX}"),
        }
    }

    pub fn study(&self, study: &str) -> String {
        format!("{}/studies/{study}", self.base)
    }

    pub fn series(&self, study: &str, series: &str) -> String {
        format!("{}/series/{series}", self.study(study))
    }

    pub fn instance(&self, study: &str, series: &str, instance: &str) -> String {
        format!("{}/instances/{instance}", self.series(study, series))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_follow_the_host_the_client_used() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, "node.example:8080".parse().unwrap());
        let urls = Urls::from_headers(&headers);
        assert_eq!(
            urls.instance("1", "2", "3"),
            "http://node.example:8080/dicomweb/studies/1/series/2/instances/3"
        );
        headers.insert("x-forwarded-proto", "https".parse().unwrap());
        headers.insert("x-forwarded-host", "pacs.trust.nhs.uk".parse().unwrap());
        assert_eq!(
            Urls::from_headers(&headers).study("1"),
            "https://pacs.trust.nhs.uk/dicomweb/studies/1"
        );
    }
}
