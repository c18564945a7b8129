//! A query asked of every member at once, each given the same deadline: the answer lists
//! every site with what became of its part (answered, refused by its policy, failed,
//! timed out, unreachable), so a partial answer is never taken for a whole one. Transport
//! is the caller's (`ask`), so this is tested with plain futures and paused time.

use std::future::Future;
use std::time::Duration;

use serde::Serialize;
use slidemesh_protocol::TrustCode;
use slidemesh_protocol::query::ReleasedCounts;

/// What became of one site's part of a query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum SiteStatus<T = ReleasedCounts> {
    /// Its answer (a query's counts, as it released them).
    Answered(T),
    /// Its policy or budget said no; asking again as is gets the same answer.
    Refused { reason: String },
    /// It could not answer now (its store failed); ask again later.
    Failed { reason: String },
    /// No answer within the deadline.
    TimedOut { after_ms: u64 },
    /// Not reached at all (no connection, or it went away).
    Unreachable { reason: String },
}

impl<T> SiteStatus<T> {
    pub fn label(&self) -> &'static str {
        match self {
            Self::Answered(_) => "answered",
            Self::Refused { .. } => "refused",
            Self::Failed { .. } => "failed",
            Self::TimedOut { .. } => "timed out",
            Self::Unreachable { .. } => "unreachable",
        }
    }
}

/// Asks every site in `sites` at once through `ask`, each within `deadline`; answers in the
/// order of `sites`.
pub async fn ask_all<T, F, Fut>(
    sites: Vec<TrustCode>,
    deadline: Duration,
    ask: F,
) -> Vec<(TrustCode, SiteStatus<T>)>
where
    F: Fn(TrustCode) -> Fut,
    Fut: Future<Output = SiteStatus<T>>,
{
    let asks = sites.into_iter().map(|site| {
        let asked = ask(site.clone());
        async move {
            let status =
                tokio::time::timeout(deadline, asked)
                    .await
                    .unwrap_or(SiteStatus::TimedOut {
                        after_ms: deadline.as_millis() as u64,
                    });
            (site, status)
        }
    });
    futures::future::join_all(asks).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trust(code: &str) -> TrustCode {
        code.parse().unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn every_site_is_reported_and_a_slow_one_times_out_at_the_deadline() {
        let started = tokio::time::Instant::now();
        let answers = ask_all(
            vec![trust("RX1"), trust("RR8"), trust("RAE"), trust("RCF")],
            Duration::from_secs(3),
            |site: TrustCode| async move {
                match site.as_str() {
                    "RX1" => {
                        tokio::time::sleep(Duration::from_millis(40)).await;
                        SiteStatus::Answered(ReleasedCounts {
                            cells: Vec::new(),
                            min_cell: 10,
                            noise: 2,
                        })
                    }
                    "RR8" => SiteStatus::Refused {
                        reason: "policy".into(),
                    },
                    "RAE" => std::future::pending().await,
                    _ => SiteStatus::Unreachable {
                        reason: "no connection".into(),
                    },
                }
            },
        )
        .await;
        // The whole answer took the deadline, not more: the sites were asked side by side.
        assert_eq!(started.elapsed(), Duration::from_secs(3));
        let labels: Vec<(&str, &str)> = answers
            .iter()
            .map(|(t, s)| (t.as_str(), s.label()))
            .collect();
        assert_eq!(
            labels,
            [
                ("RX1", "answered"),
                ("RR8", "refused"),
                ("RAE", "timed out"),
                ("RCF", "unreachable")
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn when_all_answer_the_deadline_is_not_waited_out() {
        let started = tokio::time::Instant::now();
        let answers = ask_all(
            vec![trust("RX1"), trust("RR8")],
            Duration::from_secs(3),
            |_| async {
                tokio::time::sleep(Duration::from_millis(25)).await;
                SiteStatus::<()>::Refused {
                    reason: "no".into(),
                }
            },
        )
        .await;
        assert_eq!(started.elapsed(), Duration::from_millis(25));
        assert_eq!(answers.len(), 2);
    }
}
