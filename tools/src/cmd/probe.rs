//! `slidemesh-tools probe`: speak the federation protocols to one node as a chosen peer,
//! and print what happened as JSON. For tests, the testnet and operators checking a link:
//! "is a non-member refused?", "does a member without a grant get anything?".
//!
//! The probe runs a real libp2p node with the key of a data directory (a member), or a
//! fresh key (a non-member), asks for a slide's manifest under a grant taken from some
//! node's store, and optionally fetches tiles of it on the tile stream.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use futures::FutureExt;
use futures::future::BoxFuture;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use serde_json::json;
use slidemesh_node::access::Refusal;
use slidemesh_node::audit::receipt_json;
use slidemesh_node::datadir::DataDir;
use slidemesh_node::net::{Inbound, Lane, NetConfig, Network, ReceiptFuture};
use slidemesh_node::store::Store;
use slidemesh_protocol::audit::SignedReceipt;
use slidemesh_protocol::wire::{Announcement, ControlRequest, ControlResponse, TileRequest};
use slidemesh_protocol::{
    AssociatedKind, DeidentifiedView, NodeKey, SignedManifest, SlideId, TileId, UserClaim,
};

#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// The node to probe: a multiaddr ending in /p2p/<peer id>
    #[arg(long, value_name = "MULTIADDR")]
    peer: String,
    /// Act as the node of this data directory (its key); without it, a fresh key that no
    /// roster lists
    #[arg(long, value_name = "DIR")]
    as_node: Option<PathBuf>,
    /// The slide to ask for
    #[arg(long)]
    slide: String,
    /// Take the grant for the slide from this node's store (any grant for the slide)
    #[arg(long, value_name = "DIR")]
    grant_from: PathBuf,
    /// Use these grants (ids in --grant-from's store), one after the other, printing one
    /// JSON line each, instead of any grant for the slide
    #[arg(long = "grant", value_name = "ID")]
    grants: Vec<String>,
    /// Also fetch up to this many tiles of the slide's first level on the tile stream
    #[arg(long, default_value_t = 0)]
    tiles: usize,
    /// Also ask for the slide's label image tile, in a batch of its own
    #[arg(long)]
    label: bool,
    /// Take the tile ids to ask for from this node's copy of the manifest (e.g. the
    /// owner's), so tiles are asked for even when the manifest is refused
    #[arg(long, value_name = "DIR")]
    tiles_from: Option<PathBuf>,
    /// Name this person (account name) in tile batches, as a trust's sign-on would
    #[arg(long, requires = "role")]
    user: Option<String>,
    /// The named person's role (pathologist, researcher, student, ...)
    #[arg(long, requires = "user")]
    role: Option<String>,
}

/// Level-0 and label tile ids of a slide, from a node's stored manifest.
fn tiles_from(dir: &std::path::Path, slide: &SlideId) -> Result<(Vec<TileId>, Option<TileId>)> {
    let store = Store::open(&DataDir::new(dir.to_path_buf()).store_path())?;
    let signed = match store.slide(slide)? {
        Some(record) => record.signed,
        None => {
            store
                .remote_slide(slide)?
                .context("--tiles-from holds no such slide")?
                .signed
        }
    };
    let manifest = signed.verify()?;
    let label = manifest
        .associated(slidemesh_protocol::AssociatedKind::Label)
        .and_then(|a| a.tiles.first().copied());
    Ok((manifest.levels[0].tiles.clone(), label))
}

/// A probe answers nobody.
struct Silent;

impl Inbound for Silent {
    fn control(&self, _: PeerId, _: ControlRequest) -> BoxFuture<'static, ControlResponse> {
        async {
            ControlResponse::Denied {
                reason: "probe".into(),
            }
        }
        .boxed()
    }
    fn announcement(&self, _: PeerId, _: Announcement) {}
    fn authorize_tiles(
        &self,
        _: PeerId,
        _: &TileRequest,
    ) -> BoxFuture<'static, Result<ReceiptFuture, Refusal>> {
        async { Err(Refusal::Denied("probe".to_string())) }.boxed()
    }
    fn read_tiles(&self, tiles: Vec<TileId>) -> BoxFuture<'static, Vec<Option<Vec<u8>>>> {
        async move { vec![None; tiles.len()] }.boxed()
    }
}

/// Asks for `tiles` in one batch and reports how many arrived, or why not.
async fn fetch(
    network: &Network,
    peer: PeerId,
    slide: SlideId,
    grant: &slidemesh_protocol::SignedGrant,
    tiles: Vec<TileId>,
    user: Option<&UserClaim>,
) -> serde_json::Value {
    let request = TileRequest::new(slide, grant.clone(), tiles, user.cloned());
    let mut received = 0usize;
    let started = std::time::Instant::now();
    let result = network
        .fetch_tiles(peer, Lane::Demanded, &request, |_, _| received += 1)
        .await;
    let (receipt, error) = match result {
        Ok(receipt) => (receipt.as_ref().map(receipt_json).unwrap_or_default(), None),
        Err(e) => (json!(null), Some(e.to_string())),
    };
    json!({
        "received": received,
        "seconds": started.elapsed().as_secs_f64(),
        "receipt": receipt,
        "error": error,
    })
}

pub fn run(args: ProbeArgs) -> Result<()> {
    let addr: Multiaddr = args.peer.parse().context("invalid --peer multiaddr")?;
    let Some(Protocol::P2p(peer)) = addr.iter().last() else {
        bail!("--peer must end in /p2p/<peer id>");
    };
    let slide: SlideId = args
        .slide
        .parse()
        .map_err(|e| anyhow::anyhow!("invalid slide id: {e}"))?;
    let key = match &args.as_node {
        Some(dir) => DataDir::new(dir.clone()).load_key()?,
        None => NodeKey::generate(),
    };
    let grants = {
        let store = Store::open(&DataDir::new(args.grant_from.clone()).store_path())?;
        let all = store.grants()?;
        if args.grants.is_empty() {
            vec![
                all.into_iter()
                    .find(|g| g.grant.slide == slide)
                    .context("no grant for that slide in --grant-from")?
                    .signed,
            ]
        } else {
            args.grants
                .iter()
                .map(|id| {
                    all.iter()
                        .find(|g| g.signed.id().to_string() == *id)
                        .map(|g| g.signed.clone())
                        .with_context(|| format!("no grant {id} in --grant-from"))
                })
                .collect::<Result<Vec<_>>>()?
        }
    };
    let known = match &args.tiles_from {
        Some(dir) => Some(tiles_from(dir, &slide)?),
        None => None,
    };
    let user = match (args.user, args.role) {
        (Some(id), Some(role)) => Some(UserClaim::new(id, role)?),
        _ => None,
    };
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let (network, _task) = Network::start(
            &key,
            NetConfig {
                listen: vec!["/ip4/127.0.0.1/tcp/0".parse()?],
                // A probe asks a few requests and leaves.
                warm_up_bytes: 0,
                peer_requests_per_sec: 50,
            },
            Arc::new(Silent),
        )
        .await?;
        network
            .set_members(vec![(peer, vec![addr.clone()])])
            .await?;
        for grant in grants {
            let request = ControlRequest::manifest(slide, grant.clone(), false);
            let answer =
                tokio::time::timeout(Duration::from_secs(15), network.request(peer, request))
                    .await
                    .map_err(|_| anyhow::anyhow!("timed out"))
                    .and_then(|r| r.map_err(anyhow::Error::from));
            let (manifest, first_tiles) = match answer {
                Ok(ControlResponse::Manifest {
                    manifest, receipt, ..
                }) => manifest_outcome(&manifest, None, receipt.as_ref()),
                Ok(ControlResponse::DeidentifiedManifest {
                    manifest,
                    view,
                    receipt,
                    ..
                }) => {
                    let statement = view.verify().map_err(|e| e.to_string()).and_then(|v| {
                        if v.original == slide && v.view == manifest.slide_id() {
                            Ok(v)
                        } else {
                            Err(format!("view statement names other slides: {v:?}"))
                        }
                    });
                    match statement {
                        Ok(v) => manifest_outcome(&manifest, Some(&v), receipt.as_ref()),
                        Err(e) => (json!({ "outcome": "invalid", "error": e }), vec![]),
                    }
                }
                Ok(ControlResponse::Denied { reason }) => {
                    (json!({ "outcome": "denied", "reason": reason }), vec![])
                }
                Ok(other) => (
                    json!({ "outcome": "other", "answer": format!("{other:?}") }),
                    vec![],
                ),
                Err(e) => (
                    json!({ "outcome": "error", "error": e.to_string() }),
                    vec![],
                ),
            };
            let first_tiles = match &known {
                Some((level0, _)) => level0.clone(),
                None => first_tiles,
            };
            let mut tiles_json = json!(null);
            if args.tiles > 0 {
                // Without a manifest the probe still asks for tiles, by the slide's id only.
                let tiles: Vec<TileId> = first_tiles.into_iter().take(args.tiles).collect();
                let tiles = if tiles.is_empty() {
                    vec![TileId::of(b"probe")]
                } else {
                    tiles
                };
                tiles_json = fetch(&network, peer, slide, &grant, tiles, user.as_ref()).await;
            }
            let mut label_json = json!(null);
            if args.label {
                let label = known.as_ref().and_then(|(_, label)| *label).context(
                    "--label needs --tiles-from naming a node with the slide's manifest",
                )?;
                label_json = fetch(&network, peer, slide, &grant, vec![label], user.as_ref()).await;
            }
            println!(
                "{}",
                json!({
                    "as": network.local_peer_id().to_string(),
                    "grant": grant.id().to_string(),
                    "manifest": manifest,
                    "tiles": tiles_json,
                    "label": label_json,
                })
            );
        }
        network.shutdown().await;
        Ok(())
    })
}

/// What the owner's manifest (or de-identified view) shows: whether it verified, whose
/// identity it carries, and whether it lists the label image; and the first level's tiles.
fn manifest_outcome(
    signed: &SignedManifest,
    view: Option<&DeidentifiedView>,
    receipt: Option<&SignedReceipt>,
) -> (serde_json::Value, Vec<TileId>) {
    let manifest = match signed.verify() {
        Ok(m) => m,
        Err(e) => {
            return (
                json!({ "outcome": "invalid", "error": e.to_string() }),
                vec![],
            );
        }
    };
    let level_uid = manifest.levels[0].instance_uids.first();
    let patient_id = manifest
        .instances
        .iter()
        .find(|i| Some(&i.sop_instance_uid) == level_uid)
        .and_then(|i| serde_json::from_str::<serde_json::Value>(&i.metadata_json).ok())
        .and_then(|m| m["00100020"]["Value"][0].as_str().map(str::to_string));
    let outcome = json!({
        "outcome": "manifest",
        "slide_id": signed.slide_id(),
        "deidentified": view.map(|v| json!({ "project": v.project, "view_id": v.view })),
        "patient_id": patient_id,
        "lists_label": manifest.associated(AssociatedKind::Label).is_some(),
        "receipt": receipt.map(receipt_json).unwrap_or_default(),
    });
    (outcome, manifest.levels[0].tiles.clone())
}
