//! The node's libp2p networking: one swarm task ([`event_loop`]) driven through a command
//! channel by a cloneable handle ([`Network`]).
//!
//! Layout:
//! - [`identity`]: the node key as a libp2p keypair and PeerId.
//! - [`behaviour`]: the composed behaviour (member gate, limits, identify, ping, Kademlia,
//!   gossipsub, control request-response, tile streams) and how it is built.
//! - [`event_loop`]: the only owner of the swarm.
//! - [`codec`]: the length-prefixed postcard codec of the control protocol.
//! - [`tiles`]: the tile stream protocol, server loop and verified batch fetch.
//! - [`warmup`]: filler pushed once per new member connection, so tiles do not wait out
//!   the congestion window's slow start.
//!
//! What the node *does* with inbound requests is not here: the event loop hands them to an
//! [`Inbound`] implementation (the node's federation services) and sends back its answer.
//! Architecture invariant: net knows nothing of the store, grants' meaning or HTTP.

pub mod behaviour;
pub mod codec;
pub mod event_loop;
pub mod identity;
pub mod limits;
pub mod tiles;
pub mod warmup;

use std::collections::HashSet;
use std::sync::Arc;

use futures::future::BoxFuture;
use libp2p::{Multiaddr, PeerId};
use slidemesh_protocol::audit::SignedReceipt;
use slidemesh_protocol::wire::{Announcement, ControlRequest, ControlResponse, TileRequest};
use slidemesh_protocol::{NodeKey, SlideId, TileId};
use tokio::sync::{mpsc, oneshot};

pub use tiles::{FetchError, Lane};

/// A serving node's receipt for an access, signed once the decision is committed to its
/// audit log; `None` when that did not happen in time.
pub type ReceiptFuture = BoxFuture<'static, Option<SignedReceipt>>;

/// What the network asks of the rest of the node when peers talk to it.
pub trait Inbound: Send + Sync + 'static {
    /// Answers a control request from a member's node.
    fn control(&self, peer: PeerId, request: ControlRequest)
    -> BoxFuture<'static, ControlResponse>;
    /// Acts on a gossiped announcement (already checked to come from a member).
    fn announcement(&self, from: PeerId, announcement: Announcement);
    /// Decides whether `peer` may have the tiles of this batch. `Err` carries the reason;
    /// `Ok` the node's receipt for the batch, ready once the decision is in its audit log.
    fn authorize_tiles(
        &self,
        peer: PeerId,
        request: &TileRequest,
    ) -> BoxFuture<'static, Result<ReceiptFuture, slidemesh_protocol::wire::Refusal>>;
    /// The bytes of tiles this node holds (original file or cache), in order; `None` for a
    /// tile it does not hold.
    fn read_tiles(&self, tiles: Vec<TileId>) -> BoxFuture<'static, Vec<Option<Vec<u8>>>>;
}

/// Why a network call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetError {
    #[error("the network task has stopped")]
    Stopped,
    #[error("request to {peer} failed: {reason}")]
    Request { peer: PeerId, reason: String },
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: String, reason: String },
}

/// Settings the swarm starts with.
#[derive(Debug, Clone)]
pub struct NetConfig {
    pub listen: Vec<Multiaddr>,
    /// Filler bytes pushed to each member on a new connection ([`warmup`]); 0: none.
    pub warm_up_bytes: u64,
    /// Control requests a member's node may send per second ([`limits`]).
    pub peer_requests_per_sec: u32,
}

/// Commands to the event loop. Each that expects an answer carries a oneshot for it.
#[derive(Debug)]
pub(crate) enum Command {
    /// Replaces the member set: only these peers may connect; dial those not connected.
    SetMembers {
        members: Vec<(PeerId, Vec<Multiaddr>)>,
    },
    Request {
        peer: PeerId,
        request: ControlRequest,
        reply: oneshot::Sender<Result<ControlResponse, NetError>>,
    },
    Provide {
        slide: SlideId,
    },
    Providers {
        slide: SlideId,
        besides: HashSet<PeerId>,
        reply: oneshot::Sender<HashSet<PeerId>>,
    },
    Publish {
        announcement: Announcement,
    },
    Status {
        reply: oneshot::Sender<NetStatus>,
    },
    Shutdown,
}

/// What the swarm is doing now, for the node status endpoint and tests.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NetStatus {
    pub peer_id: String,
    pub listen: Vec<String>,
    pub connected: Vec<String>,
    /// Each open connection: the peer and the address at the other end (`/quic-v1` or
    /// `/tcp`, the peer's own address or a relay's).
    pub connections: Vec<(String, String)>,
    /// Peers this node exchanges federation announcements with directly (its gossipsub
    /// mesh): roster versions and revocations reach the others through them.
    pub announce_mesh: Vec<String>,
    pub members: usize,
    /// Connections whose warm-up finished, with the time it took.
    pub warmed_up: Vec<warmup::WarmedUp>,
    /// Warm-ups finished since the node started.
    pub warm_ups_done: u64,
}

/// A cloneable handle to the network task.
#[derive(Clone)]
pub struct Network {
    commands: mpsc::Sender<Command>,
    tiles: tiles::TileClient,
    local: PeerId,
}

/// A network that listens and takes commands but answers no peer yet: what answers them
/// is built with the [`Network`] handle and passed to [`Self::answer_with`]. (So the
/// node's services can hold the handle directly, with no cycle to close afterwards.)
pub struct Unanswered {
    bound: event_loop::Bound,
    commands: mpsc::Receiver<Command>,
}

impl Unanswered {
    /// Spawns the event loop, the tile server and the warm-up server on the current tokio
    /// runtime; the handle ends with the event loop ([`Network::shutdown`]), which also
    /// ends the two servers. (They would otherwise wait for streams for as long as any
    /// [`Network`] handle lives, holding `inbound`, whose owner may hold such a handle.)
    pub fn answer_with(self, inbound: Arc<dyn Inbound>) -> tokio::task::JoinHandle<()> {
        let streams = self.bound.streams.clone();
        let tile_server = tokio::spawn(tiles::serve(streams.clone(), inbound.clone()));
        let warm_up_server = tokio::spawn(warmup::serve(streams));
        let event_loop = event_loop::EventLoop::new(self.bound, self.commands, inbound);
        tokio::spawn(async move {
            event_loop.run().await;
            tile_server.abort();
            warm_up_server.abort();
            let _ = tile_server.await;
            let _ = warm_up_server.await;
        })
    }
}

impl Network {
    /// Builds the swarm and starts listening. Commands sent on the handle wait until
    /// [`Unanswered::answer_with`] starts the event loop.
    pub fn bind(key: &NodeKey, config: NetConfig) -> Result<(Network, Unanswered), NetError> {
        let (commands, receiver) = mpsc::channel(256);
        let bound = event_loop::Bound::new(key, &config)?;
        let network = Network {
            commands,
            tiles: tiles::TileClient::new(bound.streams.clone()),
            local: bound.local,
        };
        Ok((
            network,
            Unanswered {
                bound,
                commands: receiver,
            },
        ))
    }

    /// [`Self::bind`], answering peers with `inbound` at once.
    pub async fn start(
        key: &NodeKey,
        config: NetConfig,
        inbound: Arc<dyn Inbound>,
    ) -> Result<(Network, tokio::task::JoinHandle<()>), NetError> {
        let (network, unanswered) = Self::bind(key, config)?;
        Ok((network, unanswered.answer_with(inbound)))
    }

    pub fn local_peer_id(&self) -> PeerId {
        self.local
    }

    async fn send(&self, command: Command) -> Result<(), NetError> {
        self.commands
            .send(command)
            .await
            .map_err(|_| NetError::Stopped)
    }

    pub async fn set_members(
        &self,
        members: Vec<(PeerId, Vec<Multiaddr>)>,
    ) -> Result<(), NetError> {
        self.send(Command::SetMembers { members }).await
    }

    pub async fn request(
        &self,
        peer: PeerId,
        request: ControlRequest,
    ) -> Result<ControlResponse, NetError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Request {
            peer,
            request,
            reply,
        })
        .await?;
        answer.await.map_err(|_| NetError::Stopped)?
    }

    pub async fn provide(&self, slide: SlideId) -> Result<(), NetError> {
        self.send(Command::Provide { slide }).await
    }

    /// Peers that announced (through Kademlia) that they hold tiles of `slide`. Answers as
    /// soon as one not in `besides` (sources the caller knows already) is found.
    pub async fn providers(
        &self,
        slide: SlideId,
        besides: HashSet<PeerId>,
    ) -> Result<HashSet<PeerId>, NetError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Providers {
            slide,
            besides,
            reply,
        })
        .await?;
        answer.await.map_err(|_| NetError::Stopped)
    }

    pub async fn publish(&self, announcement: Announcement) -> Result<(), NetError> {
        self.send(Command::Publish { announcement }).await
    }

    pub async fn status(&self) -> Result<NetStatus, NetError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Status { reply }).await?;
        answer.await.map_err(|_| NetError::Stopped)
    }

    /// Fetches one batch of tiles from `peer` on one of its tile sessions in `lane` (see
    /// [`tiles::TileClient::fetch`]).
    pub async fn fetch_tiles(
        &self,
        peer: PeerId,
        lane: Lane,
        request: &TileRequest,
        on_tile: impl FnMut(TileId, Vec<u8>),
    ) -> Result<Option<SignedReceipt>, FetchError> {
        self.tiles.fetch(peer, lane, request, on_tile).await
    }

    /// Asks the event loop to close every connection and stop. In-flight tile streams run
    /// on their own tasks and finish first when the caller waits for them.
    pub async fn shutdown(&self) {
        let _ = self.commands.send(Command::Shutdown).await;
    }
}
