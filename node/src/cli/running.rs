//! The running node (`slidemesh serve`) as a command reaches it: its HTTP address from
//! `serve.json`, the API called as the web UI calls it. Commands that need the network
//! (`query --network`, `cohort`) go through it rather than open a second swarm with the
//! node's key. It acts for the trust only where the node signs no one on (`[users] from =
//! "none"`, reached from this machine); behind sign-on the node refuses, and the error says
//! to use the web UI.

use std::time::Duration;

use anyhow::{Context, Result};
use reqwest::Method;
use serde_json::Value;

use crate::datadir::DataDir;

/// A running node's HTTP API.
pub struct RunningNode {
    base: String,
    client: reqwest::Client,
}

impl RunningNode {
    /// The node serving `data`, as its `serve.json` says.
    pub fn find(data: &DataDir) -> Result<Self> {
        let info: Value = serde_json::from_slice(
            &std::fs::read(data.serve_info_path())
                .context("the node is not serving (no serve.json): start `slidemesh serve`")?,
        )
        .context("serve.json is not JSON")?;
        let base = info["http"]
            .as_str()
            .context("serve.json names no HTTP address")?
            .trim_end_matches('/')
            .to_string();
        Ok(Self {
            base,
            client: crate::api::oidc::http_client(None)?,
        })
    }

    /// Calls `path` with a JSON `body` (or none) and reads the JSON answer; an answer other
    /// than success is an error carrying the node's own words.
    pub async fn json(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Value> {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_string());
        }
        let bytes = self.send(request, Duration::from_secs(600)).await?;
        Ok(serde_json::from_slice(&bytes).unwrap_or_default())
    }

    /// GETs `path` and reads its bytes; an answer other than success is an error.
    pub async fn bytes(&self, path: &str) -> Result<Vec<u8>> {
        let request = self.client.get(format!("{}{path}", self.base));
        self.send(request, Duration::from_secs(120)).await
    }

    /// Sends `request` and reads the whole answer within `timeout`: its bytes, or the node's
    /// refusal ([`Refused`]).
    async fn send(&self, request: reqwest::RequestBuilder, timeout: Duration) -> Result<Vec<u8>> {
        let response = request
            .timeout(timeout)
            .send()
            .await
            .with_context(|| format!("cannot reach the running node at {}", self.base))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .context("reading the node's answer")?;
        if !status.is_success() {
            let body: Value = serde_json::from_slice(&bytes).unwrap_or_default();
            return Err(refused(status, &body).into());
        }
        Ok(bytes.to_vec())
    }
}

/// The node answered, but not with success.
#[derive(Debug)]
pub struct Refused {
    pub status: u16,
    pub message: String,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Refused {}

/// The status of the node's refusal behind `error`, if that is what it is.
pub fn refused_status(error: &anyhow::Error) -> Option<u16> {
    error.downcast_ref::<Refused>().map(|r| r.status)
}

/// What the node's refusal says, and what to do when it signs people on.
fn refused(status: reqwest::StatusCode, body: &Value) -> Refused {
    let said = body["error"].as_str().unwrap_or("");
    let hint = if status.as_u16() == 401 {
        " (it signs people on: use the web UI)"
    } else {
        ""
    };
    Refused {
        status: status.as_u16(),
        message: format!("the node answered {status}: {said}{hint}"),
    }
}

/// Prints each site of a fan-out answer (research query or cohort) a line each: its trust,
/// status, and the slides it gave or why it did not answer.
pub fn print_sites(answer: &Value) {
    for site in answer["sites"].as_array().into_iter().flatten() {
        let trust = site["trust"].as_str().unwrap_or("?");
        let status = site["status"].as_str().unwrap_or("?");
        match (&site["slides"], site["reason"].as_str()) {
            (Value::Number(n), _) => println!("{trust}\t{status}\t{n} slides"),
            (_, Some(reason)) => println!("{trust}\t{status}\t{reason}"),
            _ => println!("{trust}\t{status}"),
        }
    }
}
