//! The composed libp2p behaviour and the swarm that runs it.
//!
//! Order matters: the member gate comes first, so a connection from a PeerId that is not on
//! the roster is denied when its identity is known, before any protocol runs.

use std::time::Duration;

use libp2p::identity::Keypair;
use libp2p::swarm::NetworkBehaviour;
use libp2p::{
    StreamProtocol, Swarm, SwarmBuilder, allow_block_list, connection_limits, gossipsub, identify,
    kad, noise, ping, request_response, tcp, yamux,
};
use slidemesh_protocol::wire::{CONTROL_PROTOCOL, IDENTIFY_VERSION, KAD_PROTOCOL};

use super::NetError;
use super::codec::ControlCodec;

/// Connections idle this long are closed (members reconnect on demand).
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// A control request without an answer in this time fails.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(NetworkBehaviour)]
pub struct Behaviour {
    pub members: allow_block_list::Behaviour<allow_block_list::AllowedPeers>,
    pub limits: connection_limits::Behaviour,
    pub identify: identify::Behaviour,
    pub ping: ping::Behaviour,
    pub kad: kad::Behaviour<kad::store::MemoryStore>,
    pub gossipsub: gossipsub::Behaviour,
    pub control: request_response::Behaviour<ControlCodec>,
    pub streams: libp2p_stream::Behaviour,
}

/// Builds the swarm: QUIC, and TCP with Noise and Yamux as the fallback.
pub fn build_swarm(keypair: Keypair) -> Result<Swarm<Behaviour>, NetError> {
    let failed = |reason: String| NetError::Listen {
        addr: "transport".into(),
        reason,
    };
    let swarm = SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| failed(e.to_string()))?
        .with_quic()
        .with_behaviour(|key| {
            let local = key.public().to_peer_id();
            let limits = connection_limits::ConnectionLimits::default()
                .with_max_pending_incoming(Some(64))
                .with_max_established_per_peer(Some(4))
                .with_max_established(Some(512));
            let mut kad = kad::Behaviour::with_config(
                local,
                kad::store::MemoryStore::new(local),
                kad::Config::new(StreamProtocol::new(KAD_PROTOCOL)),
            );
            kad.set_mode(Some(kad::Mode::Server));
            let gossip_config = gossipsub::ConfigBuilder::default()
                .validation_mode(gossipsub::ValidationMode::Strict)
                .heartbeat_interval(Duration::from_secs(1))
                .build()
                .map_err(|e| e.to_string())?;
            let gossipsub = gossipsub::Behaviour::new(
                gossipsub::MessageAuthenticity::Signed(key.clone()),
                gossip_config,
            )?;
            Ok(Behaviour {
                members: allow_block_list::Behaviour::default(),
                limits: connection_limits::Behaviour::new(limits),
                // No cache of the addresses peers report listening on: members are dialled
                // only where the roster (or config's peer_addresses) says, and a cached
                // listen address would be tried too, around a configured tunnel or relay.
                identify: identify::Behaviour::new(
                    identify::Config::new(IDENTIFY_VERSION.into(), key.public()).with_cache_size(0),
                ),
                ping: ping::Behaviour::default(),
                kad,
                gossipsub,
                control: request_response::Behaviour::new(
                    [(
                        StreamProtocol::new(CONTROL_PROTOCOL),
                        request_response::ProtocolSupport::Full,
                    )],
                    request_response::Config::default().with_request_timeout(REQUEST_TIMEOUT),
                ),
                streams: libp2p_stream::Behaviour::new(),
            })
        })
        .map_err(|e| failed(e.to_string()))?
        .with_swarm_config(|c| {
            c.with_idle_connection_timeout(IDLE_TIMEOUT)
                // Try a member's addresses one at a time, QUIC first: dialling QUIC and TCP at
                // once leaves a second connection that is torn down under the first streams.
                .with_dial_concurrency_factor(std::num::NonZeroU8::MIN)
                // Outbound streams name one protocol each, which every member's node
                // speaks: send the request with the protocol proposal instead of waiting a
                // round trip for its confirmation (a tile batch costs one round trip, not
                // two). A peer that refuses the protocol still fails the stream cleanly.
                .with_substream_upgrade_protocol_override(libp2p::core::upgrade::Version::V1Lazy)
        })
        .build();
    Ok(swarm)
}
