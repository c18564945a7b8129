//! How many control requests each member's node may send: a token bucket per peer
//! (governor's keyed limiter). Over it, the event loop answers "failed, ask again later"
//! without handing the request to [`super::Inbound`], so a flooding member costs the node a
//! bucket check per request, not a store read or a signature check.

use std::collections::HashMap;
use std::num::NonZeroU32;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use libp2p::PeerId;
use tracing::warn;

/// The per-peer limit on inbound control requests.
pub struct PeerRequests<C: Clock = DefaultClock> {
    limiter: RateLimiter<PeerId, DefaultKeyedStateStore<PeerId>, C, NoOpMiddleware<C::Instant>>,
    /// Requests refused per peer since its last warning.
    refused: HashMap<PeerId, u64>,
}

impl PeerRequests {
    /// `per_second` requests a second per peer, in bursts of twice that.
    pub fn new(per_second: u32) -> Self {
        Self::with_clock(per_second, DefaultClock::default())
    }
}

impl<C: Clock> PeerRequests<C> {
    fn with_clock(per_second: u32, clock: C) -> Self {
        let rate = NonZeroU32::new(per_second.max(1)).unwrap_or(NonZeroU32::MIN);
        let burst = rate.saturating_mul(NonZeroU32::new(2).unwrap_or(NonZeroU32::MIN));
        let quota = Quota::per_second(rate).allow_burst(burst);
        Self {
            limiter: RateLimiter::new(quota, DefaultKeyedStateStore::default(), clock),
            refused: HashMap::new(),
        }
    }

    /// Whether `peer` may have this request answered. Refusals are logged on the first
    /// and every 1,000th since the last [`Self::forget_quiet`], not once per request of a
    /// flood.
    pub fn admit(&mut self, peer: &PeerId) -> bool {
        if self.limiter.check_key(peer).is_ok() {
            return true;
        }
        let refused = self.refused.entry(*peer).or_default();
        if refused.is_multiple_of(1000) {
            warn!(%peer, refused = *refused + 1, "control requests over [network] peer_requests_per_sec refused");
        }
        *refused += 1;
        false
    }

    /// Forgets the buckets of peers that have been quiet long enough to be full again
    /// (members come and go with roster versions).
    pub fn forget_quiet(&mut self) {
        self.limiter.retain_recent();
        self.refused.clear();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use governor::clock::FakeRelativeClock;

    use super::*;

    #[test]
    fn each_peer_gets_its_rate_in_bursts_of_twice_it() {
        let clock = FakeRelativeClock::default();
        let mut limits = PeerRequests::with_clock(10, clock.clone());
        let (flooding, quiet) = (PeerId::random(), PeerId::random());
        let admitted = (0..100).filter(|_| limits.admit(&flooding)).count();
        assert_eq!(admitted, 20, "a burst of twice the rate, then nothing");
        assert!(
            limits.admit(&quiet),
            "another peer is not held back by the flood"
        );
        // A second later, ten more (one every 100 ms).
        clock.advance(Duration::from_secs(1));
        let admitted = (0..100).filter(|_| limits.admit(&flooding)).count();
        assert_eq!(admitted, 10);
        // Quiet for long enough, the full burst again.
        clock.advance(Duration::from_secs(10));
        limits.forget_quiet();
        let admitted = (0..100).filter(|_| limits.admit(&flooding)).count();
        assert_eq!(admitted, 20);
    }
}
