//! `slidemesh init`: create a node.

use anyhow::{Result, bail};
use clap::Args;
use slidemesh_protocol::TrustCode;

use crate::config::NodeConfig;
use crate::datadir::DataDir;

#[derive(Debug, Args)]
pub struct InitArgs {
    /// The owning trust's NHS ODS code, e.g. RR8 (Leeds)
    #[arg(long, value_name = "ODS")]
    trust: String,
    /// Display name of the trust [default: the registered name for co-operative members]
    #[arg(long)]
    name: Option<String>,
    /// Address for the HTTP API and web UI
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:8080")]
    http: String,
    /// libp2p listen address for peers (repeat for several) [default: QUIC and TCP on
    /// port 7400, all interfaces]
    #[arg(long, value_name = "MULTIADDR")]
    p2p: Vec<String>,
}

pub fn run(data: &DataDir, args: InitArgs) -> Result<()> {
    let trust: TrustCode = args.trust.parse()?;
    if args.http.parse::<std::net::SocketAddr>().is_err() {
        bail!(
            "invalid --http {:?}: expected ADDR:PORT, e.g. 127.0.0.1:8080",
            args.http
        );
    }
    let name = match args.name {
        Some(name) => name,
        None => match trust.cooperative_name() {
            Some(name) => name.to_string(),
            None => {
                bail!("{trust} is not one of the co-operative's trusts; give its name with --name")
            }
        },
    };
    let mut config = NodeConfig::new(trust.clone(), name.clone(), args.http.clone());
    for addr in &args.p2p {
        if addr.parse::<libp2p::Multiaddr>().is_err() {
            bail!(
                "invalid --p2p {addr:?}: expected a multiaddr, e.g. /ip4/127.0.0.1/udp/7400/quic-v1"
            );
        }
    }
    if !args.p2p.is_empty() {
        config.network.listen = args.p2p.clone();
    }
    let key = data.init(config)?;
    println!(
        "initialised slidemesh node for {trust} ({name}) in {}",
        data.root().display()
    );
    println!("node key: {}", key.public());
    println!(
        "next: slidemesh --data {} ingest <DICOM files or folders>",
        data.root().display()
    );
    Ok(())
}
