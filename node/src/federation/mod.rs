//! The node's federation services, by role:
//! - [`answers`]: what this node answers peers ([`PeerAnswers`]: manifests and tile
//!   batches under grants, grants and revocations delivered, co-signatures); built before
//!   the network and holding no handle to it.
//! - [`Federation`] (this file, `gateway`, [`remote`], the fetching half of `manifests`
//!   and `receipts`): what it does for this trust's own people and on their behalf with
//!   peers: decisions about its slides and shared ones, manifests and remote tiles fetched
//!   through the cache.
//! - [`membership`]: the roster in force and who each peer speaks for.
//! - [`health`]: which peers are not answering tile requests lately, skipped for a backoff
//!   so a fetch fails fast or goes to another source.
//! - [`replicas`]: slides this trust holds whole for others under `replicate` grants,
//!   filled and kept in the background.
//! - [`repair`]: the running node's scrub passes, repairing its originals' corrupt tiles
//!   from other copies.
//! - [`holdings`]: what both sides share: the store, tile files and cache, policy, audit
//!   log, and what the policy check needs of each slide served.
//! - [`tasks`]: background loops: roster updates, outbox delivery, shared slides' refresh,
//!   and the answers' follow-ups.
//!
//! Files follow concerns: `manifests` and `receipts` hold both the answering and the
//! fetching half of theirs.
//!
//! Architecture invariant: every manifest or tile that leaves this node passed
//! [`crate::access::decide`]; every tile that enters it was hashed against its id.

pub mod answers;
mod gateway;
pub mod health;
pub mod holdings;
mod manifests;
pub mod membership;
mod queries;
mod receipts;
pub mod remote;
pub mod repair;
pub mod replicas;
pub mod tasks;

use std::sync::Arc;

pub(crate) use crate::access::Refusal;
use crate::net::Network;
pub use answers::{Followup, Handlers, PeerAnswers};
pub use gateway::{SlideDecided, TilesDecided};
pub use holdings::Holdings;
pub use membership::{Membership, PeerAddresses};

/// Fault injection for tests and the testnet (`serve` reads them from the environment).
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    /// Serve tiles to peers with one byte flipped, so requesters must detect and bypass
    /// this node.
    pub corrupt_tiles: bool,
    /// Drop every revocation message unread (delivered or announced) and answer that it
    /// could not be taken: this node stands for one that was down or cut off whenever a
    /// revocation travelled, and must learn of it from the owner's statements alone.
    pub drop_revocations: bool,
}

/// What the node does for its own people and, on their behalf, with peers; held by the
/// HTTP API and the background loops.
pub struct Federation {
    pub holdings: Arc<Holdings>,
    /// The handle to the node's swarm.
    pub network: Network,
    remote: remote::RemoteState,
    gateway: gateway::GatewayState,
    replicas: replicas::ReplicaState,
    /// The scrub's progress, last report and "now" button.
    pub scrub: repair::Scrub,
    /// Work spawned on behalf of peers and viewers (tile batches, manifest fetches,
    /// provider lookups, announcements), awaited at shutdown ([`Self::drain`]).
    tasks: tokio_util::task::TaskTracker,
}

impl Federation {
    /// `tasks` is shared with the [`PeerAnswers`] the network answers with, so that
    /// [`Self::drain`] waits for theirs too.
    pub fn new(
        holdings: Arc<Holdings>,
        network: Network,
        tasks: tokio_util::task::TaskTracker,
    ) -> Arc<Self> {
        Arc::new(Self {
            holdings,
            network,
            remote: remote::RemoteState::default(),
            gateway: gateway::GatewayState::default(),
            replicas: replicas::ReplicaState::default(),
            scrub: repair::Scrub::default(),
            tasks,
        })
    }

    /// Runs `work` on its own task, tracked so that shutdown can wait for it.
    pub(crate) fn spawn<F>(&self, work: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.tasks.spawn(work);
    }

    /// At shutdown, once the network stopped: waits up to `timeout` for the spawned work
    /// to end (with the network gone it fails fast); says whether it all did.
    pub async fn drain(&self, timeout: std::time::Duration) -> bool {
        self.tasks.close();
        tokio::time::timeout(timeout, self.tasks.wait())
            .await
            .is_ok()
    }
}
