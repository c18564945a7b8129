//! Which peers are not answering tile requests now, so a fetch fails fast (or goes to
//! another source) instead of waiting on each one again. A peer that timed out, or whose
//! streams could not be opened after every retry, is skipped for a backoff that doubles with
//! each failure in a row (10 s, 20 s, ... at most 60 s). After the backoff one batch is let
//! through as its probe while the others are still skipped; any answer clears the peer, a
//! failure starts a longer backoff. Plain values and instants in, so it is tested without a
//! network.

use std::collections::HashMap;
use std::time::Duration;

use libp2p::PeerId;
use tokio::time::Instant;

/// The first backoff after a failure (about one batch timeout: a hung peer is waited on by
/// one batch at a time, not by every viewer's).
pub const FIRST_BACKOFF: Duration = Duration::from_secs(10);
/// The longest backoff.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// How long a probe may run before another batch may probe instead (one that never ends
/// must not keep the peer skipped for ever).
pub const PROBE_WINDOW: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy)]
struct Failing {
    /// Failures in a row.
    failures: u32,
    /// The first of them.
    since: Instant,
    /// Not asked again before this.
    until: Instant,
    /// When the batch probing it now started.
    probing: Option<Instant>,
}

/// A peer being skipped: since when it has not answered, and when it is asked again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Down {
    pub since: Instant,
    pub until: Instant,
}

/// The peers not answering, each with its backoff.
#[derive(Debug, Default)]
pub struct PeerHealth {
    failing: HashMap<PeerId, Failing>,
}

impl PeerHealth {
    /// Whether a batch may ask `peer` at `now`: yes when it is answering, or when its
    /// backoff is over and no other batch is probing it (this one is the probe); else why
    /// not.
    pub fn admit(&mut self, peer: &PeerId, now: Instant) -> Result<(), Down> {
        let Some(f) = self.failing.get_mut(peer) else {
            return Ok(());
        };
        let down = Down {
            since: f.since,
            until: f.until,
        };
        if now < f.until {
            return Err(down);
        }
        if f.probing
            .is_some_and(|started| now < started + PROBE_WINDOW)
        {
            return Err(Down {
                until: f.probing.map_or(now, |started| started + PROBE_WINDOW),
                ..down
            });
        }
        f.probing = Some(now);
        Ok(())
    }

    /// `peer` did not answer at `now` (a timeout, or no stream after every retry).
    pub fn failed(&mut self, peer: PeerId, now: Instant) {
        let entry = self.failing.entry(peer).or_insert(Failing {
            failures: 0,
            since: now,
            until: now,
            probing: None,
        });
        entry.failures = entry.failures.saturating_add(1);
        entry.probing = None;
        let backoff = FIRST_BACKOFF
            .saturating_mul(1u32 << (entry.failures - 1).min(16))
            .min(MAX_BACKOFF);
        entry.until = now + backoff;
    }

    /// `peer` answered (any answer: tiles, or a refusal, which is an answer).
    pub fn answered(&mut self, peer: &PeerId) {
        self.failing.remove(peer);
    }

    /// Failures in a row so far (0: answering). A batch that started at one count and sees
    /// a higher one knows another batch found the peer not answering meanwhile.
    pub fn failures(&self, peer: &PeerId) -> u32 {
        self.failing.get(peer).map_or(0, |f| f.failures)
    }

    /// The peers skipped at `now` or being probed, with since when they have not answered
    /// (one whose backoff ended with no batch asking it since is not listed: nothing says
    /// it is still down).
    pub fn failing(&self, now: Instant) -> Vec<(PeerId, Instant)> {
        self.failing
            .iter()
            .filter(|(_, f)| {
                now < f.until
                    || f.probing
                        .is_some_and(|started| now < started + PROBE_WINDOW)
            })
            .map(|(p, f)| (*p, f.since))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_failing_peer_is_skipped_then_probed_by_one_batch_until_it_answers() {
        let (peer, other) = (PeerId::random(), PeerId::random());
        let mut health = PeerHealth::default();
        let start = Instant::now();
        assert_eq!(health.admit(&peer, start), Ok(()));
        assert_eq!(health.failures(&peer), 0);

        health.failed(peer, start);
        let down = health
            .admit(&peer, start)
            .expect_err("skipped after a failure");
        assert_eq!(down.until, start + FIRST_BACKOFF);
        assert_eq!(
            health.admit(&other, start),
            Ok(()),
            "only the peer that failed"
        );
        assert_eq!(health.failures(&peer), 1);

        // After the backoff one batch probes it; the others are still skipped meanwhile.
        tokio::time::advance(FIRST_BACKOFF).await;
        assert_eq!(health.admit(&peer, Instant::now()), Ok(()), "the probe");
        assert!(
            health.admit(&peer, Instant::now()).is_err(),
            "one probe at a time"
        );
        // A probe that never ends does not keep it skipped for ever.
        tokio::time::advance(PROBE_WINDOW).await;
        assert_eq!(health.admit(&peer, Instant::now()), Ok(()), "another probe");

        // The probe failing doubles the backoff, counted from its first failure.
        let probe = Instant::now();
        health.failed(peer, probe);
        let down = health.admit(&peer, probe).unwrap_err();
        assert_eq!(down.until, probe + FIRST_BACKOFF * 2);
        assert_eq!(down.since, start, "down since its first failure");

        // However many failures, at most MAX_BACKOFF.
        for _ in 0..20 {
            health.failed(peer, Instant::now());
        }
        let capped = health.admit(&peer, Instant::now()).unwrap_err();
        assert_eq!(capped.until, Instant::now() + MAX_BACKOFF);
        assert_eq!(health.failing(Instant::now()).len(), 1);
        // Listed while skipped, not once its backoff ended with no one asking it.
        let later = Instant::now() + MAX_BACKOFF;
        assert!(health.failing(later).is_empty());

        // Any answer clears it.
        health.answered(&peer);
        assert_eq!(health.admit(&peer, Instant::now()), Ok(()));
        assert_eq!(health.failures(&peer), 0);
        assert!(health.failing(Instant::now()).is_empty());
    }
}
