//! `slidemesh replicas`: the replicas the running node holds for other trusts (tiles held
//! of the slide's, bytes, how old the owner's rules are) and those this trust named for its
//! own slides (`slidemesh share --replicate`).

use anyhow::Result;
use clap::Args;
use serde_json::Value;

use super::running::RunningNode;
use crate::datadir::DataDir;

#[derive(Debug, Args)]
pub struct ReplicasArgs {
    /// The node's whole answer as JSON
    #[arg(long)]
    json: bool,
}

pub fn run(data: DataDir, args: ReplicasArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let node = RunningNode::find(&data)?;
    let answer = runtime.block_on(node.json(reqwest::Method::GET, "/api/v1/replicas", None))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(());
    }
    print!("{}", describe(&answer));
    Ok(())
}

fn until(secs: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
        .to_string()
}

/// The answer as a person reads it.
fn describe(answer: &Value) -> String {
    let mut out = String::new();
    let held = answer["held"].as_array().cloned().unwrap_or_default();
    if held.is_empty() {
        out.push_str("held here for other trusts: none\n");
    } else {
        out.push_str("held here for other trusts:\n");
        for r in held {
            let tiles = r["tiles"].as_u64().unwrap_or(0);
            let have = r["held"].as_u64().unwrap_or(0);
            let percent = if tiles == 0 {
                0.0
            } else {
                have as f64 * 100.0 / tiles as f64
            };
            let lag = r["lag_secs"]
                .as_u64()
                .map_or("no rules yet".to_string(), |s| format!("rules {s} s old"));
            out.push_str(&format!(
                "  {} of {}: {} — {have}/{tiles} tiles ({percent:.1}%), {:.1} MB verified, {lag}, grant until {}\n",
                r["slide"].as_str().unwrap_or("?"),
                r["owner"].as_str().unwrap_or("?"),
                r["state"].as_str().unwrap_or("?"),
                r["bytes"].as_u64().unwrap_or(0) as f64 / 1e6,
                until(r["expires_at"].as_u64().unwrap_or(0)),
            ));
            if let Some(error) = r["last_error"].as_str() {
                out.push_str(&format!("    last problem: {error}\n"));
            }
        }
    }
    let named = answer["named"].as_array().cloned().unwrap_or_default();
    if named.is_empty() {
        out.push_str("replicas of this trust's slides: none named\n");
    } else {
        out.push_str("replicas of this trust's slides (each replica reports its own progress):\n");
        for r in named {
            out.push_str(&format!(
                "  {} at {}, until {}\n",
                r["slide"].as_str().unwrap_or("?"),
                r["replica"].as_str().unwrap_or("?"),
                until(r["expires_at"].as_u64().unwrap_or(0)),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_progress_lag_and_problems() {
        let answer = serde_json::json!({
            "held": [{
                "slide": "ab", "owner": "RR8", "state": "fetching", "tiles": 200, "held": 50,
                "bytes": 2_500_000, "lag_secs": 42, "expires_at": 0,
                "last_error": "RR8 has not answered"
            }],
            "named": [{ "slide": "cd", "replica": "RCB", "expires_at": 0 }]
        });
        let text = describe(&answer);
        assert!(
            text.contains(
                "ab of RR8: fetching — 50/200 tiles (25.0%), 2.5 MB verified, rules 42 s old"
            ),
            "{text}"
        );
        assert!(
            text.contains("last problem: RR8 has not answered"),
            "{text}"
        );
        assert!(text.contains("cd at RCB"), "{text}");
    }
}
