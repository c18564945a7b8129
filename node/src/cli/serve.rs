//! `slidemesh serve`: run the node's HTTP API and web UI until SIGINT or SIGTERM.
//!
//! The node itself is [`crate::server`]: this command builds its settings from config.toml
//! and the flags, prints `slidemesh serving http(s)://ADDR` on stdout once it listens, and
//! drains it on the signal.

use anyhow::{Context, Result};
use clap::Args;

use crate::context::NodeContext;
use crate::datadir::DataDir;
use crate::federation::Faults;
use crate::server::{self, Settings};

/// Fault injection for tests and the testnet: when set, tiles served to peers have a byte
/// flipped, so requesters must detect and bypass this node.
pub const CORRUPT_TILES_ENV: &str = "SLIDEMESH_FAULT_CORRUPT_TILES";
/// Fault injection for tests: when set, this node drops every revocation message unread
/// (delivered or announced), standing for a node that was down or cut off whenever one
/// travelled; it learns of revocations only from the owners' consent statements.
pub const DROP_REVOCATIONS_ENV: &str = "SLIDEMESH_FAULT_DROP_REVOCATIONS";

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Where the HTTP API listens, overriding config.toml (port 0 picks a free port)
    #[arg(long, value_name = "ADDR:PORT")]
    http: Option<String>,
    /// libp2p listen address for peers, overriding config.toml (repeat for several)
    #[arg(long, value_name = "MULTIADDR")]
    p2p: Vec<String>,
    /// Where the DICOM C-STORE/C-ECHO receiver listens, overriding config.toml's
    /// dimse.listen (port 0 picks a free port)
    #[arg(long, value_name = "ADDR:PORT")]
    dimse: Option<String>,
    /// Dial a member trust at this address instead of its roster entry's, for this run,
    /// replacing config.toml's network.peer_addresses for that trust (repeat for several)
    #[arg(long, value_name = "TRUST=MULTIADDR")]
    peer_address: Vec<String>,
}

pub fn run(data: DataDir, args: ServeArgs) -> Result<()> {
    let node = NodeContext::open(data)?;
    let settings = settings(&node, &args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let running = server::start(node, settings).await?;
        println!("slidemesh serving {}", running.started.url);
        running.serve_until(shutdown_signal()).await
    })
}

/// config.toml's settings with the flags' overrides, and the fault switches of the
/// environment.
fn settings(node: &NodeContext, args: &ServeArgs) -> Result<Settings> {
    let mut settings = Settings::from_config(&node.config)?;
    if let Some(listen) = &args.http {
        settings.http = listen.parse().with_context(|| {
            format!("invalid HTTP address {listen:?}: expected ADDR:PORT, e.g. 127.0.0.1:8080")
        })?;
    }
    if let Some(dimse) = &args.dimse {
        settings.dimse = (!dimse.is_empty()).then(|| dimse.clone());
    }
    if !args.p2p.is_empty() {
        settings.p2p = args
            .p2p
            .iter()
            .map(|a| {
                a.parse::<libp2p::Multiaddr>()
                    .with_context(|| format!("invalid p2p listen address {a:?}"))
            })
            .collect::<Result<Vec<_>>>()?;
    }
    settings.peer_addresses =
        server::peer_addresses(&node.config.network.peer_addresses, &args.peer_address)?;
    settings.faults = Faults {
        corrupt_tiles: std::env::var_os(CORRUPT_TILES_ENV).is_some(),
        drop_revocations: std::env::var_os(DROP_REVOCATIONS_ENV).is_some(),
    };
    Ok(settings)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let ctrl_c = tokio::signal::ctrl_c();
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = ctrl_c => {},
                _ = term.recv() => {},
            }
        }
        Err(_) => {
            let _ = ctrl_c.await;
        }
    }
}
