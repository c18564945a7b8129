//! A TCP relay standing for the network link between two nodes on one machine: it can add
//! one-way delay, emulate packet loss, and cut the link and heal it again, all while the
//! nodes run. This is the fallback for machines without `tc netem` or root (this one's
//! kernel has no netem): the testnet and the federation benchmark put a relay on every
//! path between nodes and point each node at the relays instead of at its peers.
//!
//! What it emulates, and what it does not:
//! - Delay: every chunk read is written `one_way` later, in order, in each direction.
//! - Loss: TCP never shows a lost packet to the application; the peer sees a
//!   retransmission stall. With probability `loss` a chunk (and, to keep order, what follows
//!   it) is held back one retransmission timeout (Linux's minimum, 200 ms, or twice the
//!   round trip if longer) before it goes on. Bandwidth is not limited.
//! - Cut: open connections are closed at once (both ends see the stream end), and new
//!   connections are accepted and closed, as a dead route or a firewall's reset would show.
//!   Heal: new connections go through again; the nodes reconnect on their own.
//!
//! A UDP relay ([`Relays::udp_relay_from`]) carries QUIC the same way: each datagram is
//! sent on `one_way` later; loss drops datagrams (QUIC sees real loss and recovers on its
//! own); a cut drops every datagram until healed, which QUIC notices at its idle timeout.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// Linux's minimum TCP retransmission timeout: the least a lost segment costs.
const MIN_RTO: Duration = Duration::from_millis(200);

/// A link's current conditions.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Conditions {
    pub cut: bool,
    /// Added per direction; the round trip grows by twice this.
    pub one_way: Duration,
    /// Probability in [0, 1] that a chunk is "lost" (stalls one retransmission timeout).
    pub loss: f64,
}

/// The controls of one or more relays (both directions of a link share one).
#[derive(Clone)]
pub struct Link {
    state: Arc<LinkState>,
}

struct LinkState {
    cut: AtomicBool,
    one_way_us: AtomicU64,
    /// Loss probability in millionths.
    loss_ppm: AtomicU32,
    /// Bumped on every cut: live connections watch it and close.
    cuts: watch::Sender<u64>,
}

impl Default for Link {
    fn default() -> Self {
        Self::new()
    }
}

impl Link {
    pub fn new() -> Self {
        Self {
            state: Arc::new(LinkState {
                cut: AtomicBool::new(false),
                one_way_us: AtomicU64::new(0),
                loss_ppm: AtomicU32::new(0),
                cuts: watch::channel(0).0,
            }),
        }
    }

    /// Closes every connection through this link and refuses new ones until `heal`.
    pub fn cut(&self) {
        self.state.cut.store(true, Ordering::SeqCst);
        self.state.cuts.send_modify(|n| *n += 1);
    }

    pub fn heal(&self) {
        self.state.cut.store(false, Ordering::SeqCst);
    }

    pub fn set_one_way_delay(&self, one_way: Duration) {
        self.state
            .one_way_us
            .store(one_way.as_micros() as u64, Ordering::SeqCst);
    }

    pub fn set_loss(&self, probability: f64) {
        let ppm = (probability.clamp(0.0, 1.0) * 1_000_000.0).round() as u32;
        self.state.loss_ppm.store(ppm, Ordering::SeqCst);
    }

    pub fn conditions(&self) -> Conditions {
        Conditions {
            cut: self.state.cut.load(Ordering::SeqCst),
            one_way: self.one_way(),
            loss: self.state.loss_ppm.load(Ordering::SeqCst) as f64 / 1_000_000.0,
        }
    }

    fn one_way(&self) -> Duration {
        Duration::from_micros(self.state.one_way_us.load(Ordering::SeqCst))
    }

    fn lost(&self) -> bool {
        let ppm = self.state.loss_ppm.load(Ordering::SeqCst);
        ppm > 0 && fastrand::u32(0..1_000_000) < ppm
    }

    /// What a lost chunk costs: one retransmission timeout.
    fn retransmission_stall(&self) -> Duration {
        MIN_RTO.max(self.one_way() * 4)
    }
}

/// A tokio runtime on its own thread that hosts relays, for callers that are not async.
pub struct Relays {
    runtime: tokio::runtime::Runtime,
}

impl Relays {
    pub fn start() -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("link-relay")
            .enable_all()
            .build()?;
        Ok(Self { runtime })
    }

    /// Starts a relay on a free loopback port forwarding to `upstream` under `link`'s
    /// conditions; returns the port's address.
    pub fn relay(&self, upstream: SocketAddr, link: &Link) -> std::io::Result<SocketAddr> {
        self.relay_from(upstream, link, None)
    }

    /// As [`Relays::relay`], admitting only connections from `source_port`. libp2p dials
    /// from its TCP listening port (port reuse), so a relay standing for the path from one
    /// node to another can tell that node's connections from others': without the check, a
    /// third node that learnt the relay's address through Kademlia could use it and slip
    /// around a cut.
    pub fn relay_from(
        &self,
        upstream: SocketAddr,
        link: &Link,
        source_port: Option<u16>,
    ) -> std::io::Result<SocketAddr> {
        let listener = self.runtime.block_on(TcpListener::bind("127.0.0.1:0"))?;
        let addr = listener.local_addr()?;
        let link = link.clone();
        self.runtime.spawn(async move {
            while let Ok((client, from)) = listener.accept().await {
                let stranger = source_port.is_some_and(|port| port != from.port());
                if stranger || link.state.cut.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                tokio::spawn(relay(client, upstream, link.clone()));
            }
        });
        Ok(addr)
    }
}

impl Relays {
    /// A UDP relay on a free loopback port forwarding datagrams to `upstream` under
    /// `link`'s conditions, admitting only datagrams from `source_port` when given (libp2p's
    /// QUIC sends from its listening port too). Each client address gets its own upstream
    /// socket, so answers find their way back. Returns the relay's address.
    pub fn udp_relay_from(
        &self,
        upstream: SocketAddr,
        link: &Link,
        source_port: Option<u16>,
    ) -> std::io::Result<SocketAddr> {
        let front = Arc::new(self.runtime.block_on(UdpSocket::bind("127.0.0.1:0"))?);
        let addr = front.local_addr()?;
        let link = link.clone();
        self.runtime.spawn(async move {
            let mut clients: std::collections::HashMap<SocketAddr, DelayedSender> =
                std::collections::HashMap::new();
            let mut buf = vec![0u8; 65536];
            while let Ok((n, from)) = front.recv_from(&mut buf).await {
                if source_port.is_some_and(|port| port != from.port()) {
                    continue;
                }
                if let std::collections::hash_map::Entry::Vacant(slot) = clients.entry(from) {
                    match open_udp_client(&front, from, upstream, &link).await {
                        Some(forward) => {
                            slot.insert(forward);
                        }
                        None => continue,
                    }
                }
                if let Some(forward) = clients.get(&from) {
                    forward.send(&link, &buf[..n]);
                }
            }
        });
        Ok(addr)
    }
}

/// A new client of a UDP relay: its own socket to `upstream`, and a task carrying the
/// answers back to `client` through `front`. Returns the sender towards upstream.
async fn open_udp_client(
    front: &Arc<UdpSocket>,
    client: SocketAddr,
    upstream: SocketAddr,
    link: &Link,
) -> Option<DelayedSender> {
    let back = UdpSocket::bind("127.0.0.1:0").await.ok()?;
    back.connect(upstream).await.ok()?;
    let back = Arc::new(back);
    let front = front.clone();
    let reply = delayed_sender(move |bytes: Vec<u8>| {
        let front = front.clone();
        async move {
            let _ = front.send_to(&bytes, client).await;
        }
    });
    let (back_in, link_back) = (back.clone(), link.clone());
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        loop {
            match back_in.recv(&mut buf).await {
                Ok(n) => reply.send(&link_back, &buf[..n]),
                // Nothing listened upstream for a moment (a node starting or restarting):
                // the ICMP answer surfaces here; the node will listen again.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
                Err(_) => break,
            }
        }
    });
    Some(delayed_sender(move |bytes: Vec<u8>| {
        let back = back.clone();
        async move {
            let _ = back.send(&bytes).await;
        }
    }))
}

/// Datagrams in one direction, each sent when the link's delay says (in order); dropped
/// while the link is cut, or at the loss rate.
struct DelayedSender {
    queue: mpsc::UnboundedSender<(Instant, Vec<u8>)>,
}

impl DelayedSender {
    fn send(&self, link: &Link, bytes: &[u8]) {
        if link.state.cut.load(Ordering::SeqCst) || link.lost() {
            return;
        }
        let _ = self
            .queue
            .send((Instant::now() + link.one_way(), bytes.to_vec()));
    }
}

fn delayed_sender<F, Fut>(deliver: F) -> DelayedSender
where
    F: Fn(Vec<u8>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let (queue, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    tokio::spawn(async move {
        while let Some((due, bytes)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            deliver(bytes).await;
        }
    });
    DelayedSender { queue }
}

async fn relay(client: TcpStream, upstream: SocketAddr, link: Link) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let mut cuts = link.state.cuts.subscribe();
    cuts.mark_unchanged();
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let forward = tokio::spawn(pipe(cr, sw, link.clone()));
    let backward = tokio::spawn(pipe(sr, cw, link));
    let (abort_forward, abort_backward) = (forward.abort_handle(), backward.abort_handle());
    tokio::select! {
        _ = async { let _ = forward.await; let _ = backward.await; } => {}
        _ = cuts.changed() => {
            // Aborting drops both halves of both sockets: each node sees its connection end.
            abort_forward.abort();
            abort_backward.abort();
        }
    }
}

/// Copies `from` to `to`, each chunk written when the link's delay (and any loss stall)
/// says, never before the chunk ahead of it.
async fn pipe<R, W>(mut from: R, mut to: W, link: Link)
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
    W: tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let reader_link = link.clone();
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 << 10];
        let mut last_due = Instant::now();
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let mut due = Instant::now() + reader_link.one_way();
                    if reader_link.lost() {
                        due += reader_link.retransmission_stall();
                    }
                    // In order: a stalled chunk holds back those behind it, as TCP does.
                    due = due.max(last_due);
                    last_due = due;
                    if tx.send((due, buf[..n].to_vec())).is_err() {
                        break;
                    }
                }
            }
        }
    });
    while let Some((due, bytes)) = rx.recv().await {
        tokio::time::sleep_until(due).await;
        if to.write_all(&bytes).await.is_err() {
            break;
        }
    }
    reader.abort();
    let _ = to.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn echo_server() -> SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut stream = stream;
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = stream.read(&mut buf) {
                        if n == 0 || stream.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    fn connect(addr: SocketAddr) -> std::net::TcpStream {
        let stream = std::net::TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream
    }

    fn round_trip(stream: &mut std::net::TcpStream) -> std::io::Result<Duration> {
        let started = std::time::Instant::now();
        stream.write_all(b"ping")?;
        let mut buf = [0u8; 4];
        stream.read_exact(&mut buf)?;
        assert_eq!(&buf, b"ping");
        Ok(started.elapsed())
    }

    #[test]
    fn delays_cuts_and_heals() {
        let relays = Relays::start().unwrap();
        let link = Link::new();
        let addr = relays.relay(echo_server(), &link).unwrap();
        let mut stream = connect(addr);
        round_trip(&mut stream).unwrap();

        link.set_one_way_delay(Duration::from_millis(60));
        // Both directions are delayed: a round trip takes at least twice the one-way delay.
        assert!(round_trip(&mut stream).unwrap() >= Duration::from_millis(120));
        link.set_one_way_delay(Duration::ZERO);

        link.cut();
        assert!(
            round_trip(&mut stream).is_err(),
            "a cut closes open connections"
        );
        let mut refused = connect(addr);
        assert!(
            round_trip(&mut refused).is_err(),
            "a cut link admits no one"
        );
        assert!(link.conditions().cut);

        link.heal();
        let mut healed = connect(addr);
        round_trip(&mut healed).unwrap();
    }

    #[test]
    fn udp_relay_survives_an_upstream_that_was_not_listening_yet() {
        // Reserve a port, then close it: the first datagram meets nobody (ICMP refused).
        let upstream = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let upstream_addr = upstream.local_addr().unwrap();
        drop(upstream);
        let relays = Relays::start().unwrap();
        let link = Link::new();
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = client.local_addr().unwrap().port();
        let relay = relays
            .udp_relay_from(upstream_addr, &link, Some(port))
            .unwrap();
        client
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        client.send_to(b"too early", relay).unwrap();
        let mut buf = [0u8; 64];
        assert!(client.recv_from(&mut buf).is_err());
        std::thread::sleep(Duration::from_millis(100));
        // The node starts listening: answers must find their way back through the relay.
        let echo = std::net::UdpSocket::bind(upstream_addr).unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while let Ok((n, from)) = echo.recv_from(&mut buf) {
                let _ = echo.send_to(&buf[..n], from);
            }
        });
        client.send_to(b"now", relay).unwrap();
        let (n, _) = client
            .recv_from(&mut buf)
            .expect("an answer once upstream listens");
        assert_eq!(&buf[..n], b"now");
    }

    #[test]
    fn udp_relay_delays_cuts_and_heals_datagrams() {
        let echo = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let echo_addr = echo.local_addr().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while let Ok((n, from)) = echo.recv_from(&mut buf) {
                let _ = echo.send_to(&buf[..n], from);
            }
        });
        let relays = Relays::start().unwrap();
        let link = Link::new();
        link.set_one_way_delay(Duration::from_millis(40));
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = client.local_addr().unwrap().port();
        let relay = relays.udp_relay_from(echo_addr, &link, Some(port)).unwrap();
        client
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let ping = |payload: &[u8]| -> Option<Duration> {
            let started = std::time::Instant::now();
            client.send_to(payload, relay).unwrap();
            let mut buf = [0u8; 1500];
            let (n, _) = client.recv_from(&mut buf).ok()?;
            assert_eq!(&buf[..n], payload);
            Some(started.elapsed())
        };
        let rtt = ping(b"one").expect("an answer through the relay");
        assert!(rtt >= Duration::from_millis(80), "round trip {rtt:?}");
        link.cut();
        assert_eq!(ping(b"two"), None, "nothing crosses a cut link");
        link.heal();
        assert!(
            ping(b"three").is_some(),
            "a healed link carries datagrams again"
        );
        // Another sender (a third node) is not let through.
        let stranger = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        stranger
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        stranger.send_to(b"four", relay).unwrap();
        let mut buf = [0u8; 16];
        assert!(stranger.recv_from(&mut buf).is_err());
    }

    #[test]
    fn loss_stalls_like_a_retransmission() {
        let relays = Relays::start().unwrap();
        let link = Link::new();
        let addr = relays.relay(echo_server(), &link).unwrap();
        let mut stream = connect(addr);
        link.set_loss(1.0);
        assert!(round_trip(&mut stream).unwrap() >= MIN_RTO);
        assert_eq!(link.conditions().loss, 1.0);
    }
}
