//! The event loop: sole owner of the swarm. It turns commands into swarm calls, swarm
//! events into replies, and hands inbound requests to [`Inbound`] on their own tasks, so a
//! slow answer never stalls the loop.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, Swarm, gossipsub, kad, request_response};
use slidemesh_protocol::NodeKey;
use slidemesh_protocol::wire::{ANNOUNCE_TOPIC, Announcement, ControlResponse};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use super::behaviour::{Behaviour, BehaviourEvent, build_swarm};
use super::{Command, Inbound, NetConfig, NetError, NetStatus, identity};

/// How often members that are not connected are dialled again.
const REDIAL_EVERY: Duration = Duration::from_secs(5);

pub(crate) struct EventLoop {
    swarm: Swarm<Behaviour>,
    /// Control requests each peer may send ([`super::limits`]).
    peer_requests: super::limits::PeerRequests,
    commands: mpsc::Receiver<Command>,
    inbound: Arc<dyn Inbound>,
    /// Answers to inbound control requests come back here from their tasks.
    responses: mpsc::Sender<(
        request_response::ResponseChannel<ControlResponse>,
        ControlResponse,
    )>,
    responses_rx: mpsc::Receiver<(
        request_response::ResponseChannel<ControlResponse>,
        ControlResponse,
    )>,
    members: HashMap<PeerId, Vec<Multiaddr>>,
    pending_requests: HashMap<
        request_response::OutboundRequestId,
        oneshot::Sender<Result<ControlResponse, NetError>>,
    >,
    pending_providers: HashMap<kad::QueryId, ProviderLookup>,
    topic: gossipsub::IdentTopic,
    listening: Vec<Multiaddr>,
    /// Open connections and the address at the other end (shows QUIC or TCP, direct or
    /// through a relay, for operators).
    connections: HashMap<libp2p::swarm::ConnectionId, (PeerId, Multiaddr)>,
    /// Opens warm-up streams on new connections ([`super::warmup`]).
    streams: libp2p_stream::Control,
    warm_up_bytes: u64,
    warm_ups: super::warmup::WarmUps,
}

/// A swarm built and listening, not yet answering anyone ([`super::Unanswered`]).
pub(crate) struct Bound {
    swarm: Swarm<Behaviour>,
    peer_requests: super::limits::PeerRequests,
    topic: gossipsub::IdentTopic,
    pub(crate) streams: libp2p_stream::Control,
    pub(crate) local: PeerId,
    warm_up_bytes: u64,
}

impl Bound {
    /// Builds the swarm, starts listening and joins the announcement topic.
    pub(crate) fn new(key: &NodeKey, config: &NetConfig) -> Result<Self, NetError> {
        let keypair = identity::keypair(key);
        let local = keypair.public().to_peer_id();
        let mut swarm = build_swarm(keypair)?;
        for addr in &config.listen {
            swarm
                .listen_on(addr.clone())
                .map_err(|e| NetError::Listen {
                    addr: addr.to_string(),
                    reason: e.to_string(),
                })?;
        }
        let topic = gossipsub::IdentTopic::new(ANNOUNCE_TOPIC);
        swarm
            .behaviour_mut()
            .gossipsub
            .subscribe(&topic)
            .map_err(|e| NetError::Listen {
                addr: "gossipsub".into(),
                reason: e.to_string(),
            })?;
        let streams = swarm.behaviour().streams.new_control();
        Ok(Self {
            swarm,
            peer_requests: super::limits::PeerRequests::new(config.peer_requests_per_sec),
            topic,
            streams,
            local,
            warm_up_bytes: config.warm_up_bytes,
        })
    }
}

impl EventLoop {
    pub(crate) fn new(
        bound: Bound,
        commands: mpsc::Receiver<Command>,
        inbound: Arc<dyn Inbound>,
    ) -> Self {
        let (responses, responses_rx) = mpsc::channel(256);
        Self {
            swarm: bound.swarm,
            peer_requests: bound.peer_requests,
            commands,
            inbound,
            responses,
            responses_rx,
            members: HashMap::new(),
            pending_requests: HashMap::new(),
            pending_providers: HashMap::new(),
            topic: bound.topic,
            listening: Vec::new(),
            connections: HashMap::new(),
            streams: bound.streams,
            warm_up_bytes: bound.warm_up_bytes,
            warm_ups: Default::default(),
        }
    }

    pub async fn run(mut self) {
        let mut redial = tokio::time::interval(REDIAL_EVERY);
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                command = self.commands.recv() => match command {
                    Some(Command::Shutdown) | None => break,
                    Some(command) => self.on_command(command),
                },
                Some((channel, response)) = self.responses_rx.recv() => {
                    if self.swarm.behaviour_mut().control.send_response(channel, response).is_err() {
                        debug!("peer went away before its control answer was sent");
                    }
                }
                _ = redial.tick() => {
                    self.dial_members();
                    self.peer_requests.forget_quiet();
                }
            }
        }
        let connected: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
        for peer in connected {
            let _ = self.swarm.disconnect_peer_id(peer);
        }
        info!("network stopped");
    }

    /// Keeps a connection to every member. Of each pair, only the node with the smaller
    /// PeerId dials on this timer (the other waits to be dialled, or dials on demand when
    /// it has a request), so two members coming up together do not race two connections.
    fn dial_members(&mut self) {
        let local = *self.swarm.local_peer_id();
        let targets: Vec<(PeerId, Vec<Multiaddr>)> = self
            .members
            .iter()
            .filter(|(peer, addrs)| {
                **peer > local && !addrs.is_empty() && !self.swarm.is_connected(peer)
            })
            .map(|(p, a)| (*p, a.clone()))
            .collect();
        for (peer, addrs) in targets {
            let opts = libp2p::swarm::dial_opts::DialOpts::peer_id(peer)
                .addresses(addrs)
                .build();
            if let Err(e) = self.swarm.dial(opts) {
                debug!(%peer, error = %e, "dial failed");
            }
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::SetMembers { members } => {
                let local = *self.swarm.local_peer_id();
                let new: HashMap<PeerId, Vec<Multiaddr>> = members.into_iter().collect();
                let gate = &mut self.swarm.behaviour_mut().members;
                for gone in self.members.keys().filter(|p| !new.contains_key(p)) {
                    // Disallowing also closes the peer's open connections.
                    gate.disallow_peer(*gone);
                    info!(peer = %gone, "no longer a member: disconnected");
                }
                for peer in new.keys() {
                    gate.allow_peer(*peer);
                }
                for (peer, addrs) in &new {
                    if *peer == local {
                        continue;
                    }
                    for addr in addrs {
                        self.swarm
                            .behaviour_mut()
                            .kad
                            .add_address(peer, addr.clone());
                    }
                }
                self.members = new;
                self.dial_members();
            }
            Command::Request {
                peer,
                request,
                reply,
            } => {
                if !self.members.contains_key(&peer) {
                    let _ = reply.send(Err(NetError::Request {
                        peer,
                        reason: "not a federation member".into(),
                    }));
                    return;
                }
                let addrs = self.members.get(&peer).cloned().unwrap_or_default();
                let id = self
                    .swarm
                    .behaviour_mut()
                    .control
                    .send_request_with_addresses(&peer, request, addrs);
                self.pending_requests.insert(id, reply);
            }
            Command::Provide { slide } => {
                let key = kad::RecordKey::new(slide.as_bytes());
                if let Err(e) = self.swarm.behaviour_mut().kad.start_providing(key) {
                    warn!(%slide, error = %e, "cannot announce as provider");
                }
            }
            Command::Providers {
                slide,
                mut besides,
                reply,
            } => {
                let key = kad::RecordKey::new(slide.as_bytes());
                let id = self.swarm.behaviour_mut().kad.get_providers(key);
                besides.insert(*self.swarm.local_peer_id());
                self.pending_providers.insert(
                    id,
                    ProviderLookup {
                        found: HashSet::new(),
                        besides,
                        reply,
                    },
                );
            }
            Command::Publish { announcement } => {
                let Ok(bytes) = postcard::to_stdvec(&announcement) else {
                    return;
                };
                let topic = self.topic.clone();
                if let Err(e) = self.swarm.behaviour_mut().gossipsub.publish(topic, bytes) {
                    // No peers subscribed yet is normal for a lone node.
                    debug!(error = %e, "announcement not published");
                }
            }
            Command::Status { reply } => {
                let _ = reply.send(NetStatus {
                    peer_id: self.swarm.local_peer_id().to_string(),
                    listen: self.listening.iter().map(|a| a.to_string()).collect(),
                    connected: self
                        .swarm
                        .connected_peers()
                        .map(|p| p.to_string())
                        .collect(),
                    connections: {
                        let mut open: Vec<(String, String)> = self
                            .connections
                            .values()
                            .map(|(peer, addr)| (peer.to_string(), addr.to_string()))
                            .collect();
                        open.sort();
                        open
                    },
                    announce_mesh: self
                        .swarm
                        .behaviour()
                        .gossipsub
                        .mesh_peers(&self.topic.hash())
                        .map(|p| p.to_string())
                        .collect(),
                    members: self.members.len(),
                    warmed_up: self.warm_ups.list(),
                    warm_ups_done: self.warm_ups.done(),
                });
            }
            Command::Shutdown => {}
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                info!(%address, "listening for peers");
                self.listening.push(address);
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                endpoint,
                connection_id,
                ..
            } => {
                debug!(peer = %peer_id, addr = %endpoint.get_remote_address(), "connected");
                crate::metrics::metrics()
                    .peers_connected
                    .set(self.swarm.connected_peers().count() as i64);
                self.connections.insert(
                    connection_id,
                    (peer_id, endpoint.get_remote_address().clone()),
                );
                // Only members get this far (the gate refuses anyone else). Every new
                // connection is warmed: when both sides dial at once, the one kept may be
                // the second.
                if self.warm_up_bytes > 0 {
                    let (warm_ups, streams) = (self.warm_ups.clone(), self.streams.clone());
                    let bytes = self.warm_up_bytes;
                    tokio::spawn(async move { warm_ups.push(streams, peer_id, bytes).await });
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                cause,
                connection_id,
                num_established,
                ..
            } => {
                debug!(peer = %peer_id, cause = ?cause, "connection closed");
                self.connections.remove(&connection_id);
                crate::metrics::metrics()
                    .peers_connected
                    .set(self.swarm.connected_peers().count() as i64);
                if num_established == 0 {
                    self.warm_ups.forget(&peer_id);
                }
            }
            SwarmEvent::IncomingConnectionError {
                peer_id,
                error,
                send_back_addr,
                ..
            } => {
                // The member gate refuses non-members here, before any protocol runs.
                // Other errors are mostly both sides dialling each other at once.
                if matches!(error, libp2p::swarm::ListenError::Denied { .. }) {
                    warn!(peer = ?peer_id, from = %send_back_addr, error = %error, "refused connection from a non-member");
                } else {
                    debug!(peer = ?peer_id, from = %send_back_addr, error = %error, "incoming connection failed");
                }
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                debug!(peer = ?peer_id, error = %error, "outgoing connection failed");
            }
            SwarmEvent::Behaviour(event) => self.on_behaviour_event(event),
            _ => {}
        }
    }

    fn on_behaviour_event(&mut self, event: BehaviourEvent) {
        match event {
            BehaviourEvent::Control(request_response::Event::Message { peer, message, .. }) => {
                match message {
                    request_response::Message::Request {
                        request, channel, ..
                    } => {
                        if !self.peer_requests.admit(&peer) {
                            let busy = ControlResponse::Failed {
                                reason: "too many requests from this node; ask again later".into(),
                            };
                            let _ = self
                                .swarm
                                .behaviour_mut()
                                .control
                                .send_response(channel, busy);
                            return;
                        }
                        let answer = self.inbound.control(peer, request);
                        let responses = self.responses.clone();
                        tokio::spawn(async move {
                            let response = answer.await;
                            let _ = responses.send((channel, response)).await;
                        });
                    }
                    request_response::Message::Response {
                        request_id,
                        response,
                    } => {
                        if let Some(reply) = self.pending_requests.remove(&request_id) {
                            let _ = reply.send(Ok(response));
                        }
                    }
                }
            }
            BehaviourEvent::Control(request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            }) => {
                if let Some(reply) = self.pending_requests.remove(&request_id) {
                    let _ = reply.send(Err(NetError::Request {
                        peer,
                        reason: error.to_string(),
                    }));
                }
            }
            BehaviourEvent::Control(request_response::Event::InboundFailure {
                peer,
                error,
                ..
            }) => {
                debug!(%peer, %error, "inbound control request failed");
            }
            BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message,
                ..
            }) => {
                let from = message.source.unwrap_or(propagation_source);
                if !self.members.contains_key(&from) {
                    warn!(peer = %from, "announcement from a non-member ignored");
                    return;
                }
                match postcard::from_bytes::<Announcement>(&message.data) {
                    Ok(announcement) => self.inbound.announcement(from, announcement),
                    Err(e) => warn!(peer = %from, error = %e, "malformed announcement ignored"),
                }
            }
            BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed {
                id,
                result: kad::QueryResult::GetProviders(result),
                step,
                ..
            }) => {
                if let Some(lookup) = self.pending_providers.get_mut(&id)
                    && let Ok(kad::GetProvidersOk::FoundProviders { providers, .. }) = result
                {
                    lookup.found.extend(providers);
                }
                // Answer as soon as a provider the caller does not know yet was found (it
                // tries them in turn), else when the query ends.
                let found_new = self
                    .pending_providers
                    .get(&id)
                    .is_some_and(|lookup| lookup.found.iter().any(|p| !lookup.besides.contains(p)));
                if (step.last || found_new)
                    && let Some(lookup) = self.pending_providers.remove(&id)
                {
                    let _ = lookup.reply.send(lookup.found);
                }
            }
            _ => {}
        }
    }
}

/// A Kademlia provider lookup in progress.
struct ProviderLookup {
    found: HashSet<PeerId>,
    /// Providers the caller already knows of (and this node): finding only these does not
    /// end the lookup early.
    besides: HashSet<PeerId>,
    reply: oneshot::Sender<HashSet<PeerId>>,
}
