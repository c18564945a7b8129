//! What clients may take of the HTTP server (`[http.limits]`): a cap on open connections
//! (more are closed as they arrive, before any TLS handshake; one cap for all clients) and
//! on requests answered at once (more get 503 at once rather than queueing; a request counts
//! until the last byte of its response body is sent, so a slow reader of a large answer
//! holds its place). Header and idle timeouts are set on the
//! connection builder in [`super`]; STOW-RS body sizes are checked where the body is read.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum_server::accept::Accept;
use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Duration, Instant, Sleep};
use tracing::warn;

/// An acceptor that admits at most `max` open connections; the stream it yields holds one
/// permit until the connection closes, and closes itself when no byte moved either way
/// for `idle` (an HTTP/2 connection left open after its requests, which hyper would keep
/// for ever, holding its place under the cap).
#[derive(Clone)]
pub struct ConnectionCap<A> {
    inner: A,
    open: Arc<Semaphore>,
    max: usize,
    idle: Duration,
    refused: Arc<AtomicU64>,
}

impl<A> ConnectionCap<A> {
    pub fn new(inner: A, max: usize, idle: Duration) -> Self {
        Self {
            inner,
            open: Arc::new(Semaphore::new(max)),
            max,
            idle,
            refused: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl<A, I, S> Accept<I, S> for ConnectionCap<A>
where
    A: Accept<I, S>,
    A::Future: Send + 'static,
    A::Stream: Send + 'static,
    A::Service: Send + 'static,
{
    type Stream = Capped<A::Stream>;
    type Service = A::Service;
    type Future = BoxFuture<'static, io::Result<(Self::Stream, Self::Service)>>;

    fn accept(&self, stream: I, service: S) -> Self::Future {
        let Ok(permit) = self.open.clone().try_acquire_owned() else {
            // Logged on the first refusal and every 1,000th after, not once per connection
            // of a flood.
            let refused = self.refused.fetch_add(1, Ordering::Relaxed);
            if refused.is_multiple_of(1000) {
                warn!(
                    max = self.max,
                    refused = refused + 1,
                    "connection refused: [http.limits] max_connections open"
                );
            }
            drop(stream);
            return std::future::ready(Err(io::Error::other("connection cap reached"))).boxed();
        };
        let accepted = self.inner.accept(stream, service);
        let idle = self.idle;
        async move {
            let (stream, service) = accepted.await?;
            Ok((Capped::new(stream, permit, idle), service))
        }
        .boxed()
    }
}

/// A connection counted against [`ConnectionCap`], closed after `idle` without traffic.
pub struct Capped<S> {
    stream: S,
    _permit: OwnedSemaphorePermit,
    idle: Duration,
    /// When the connection is closed unless a byte moves before.
    deadline: Pin<Box<Sleep>>,
}

impl<S> Capped<S> {
    fn new(stream: S, permit: OwnedSemaphorePermit, idle: Duration) -> Self {
        Self {
            stream,
            _permit: permit,
            idle,
            deadline: Box::pin(tokio::time::sleep(idle)),
        }
    }

    /// A byte moved: the idle time starts again.
    fn active(&mut self) {
        let next = Instant::now() + self.idle;
        self.deadline.as_mut().reset(next);
    }

    /// Whether the connection has been idle too long; registers for the deadline if not.
    fn idle_too_long(&mut self, cx: &mut Context<'_>) -> bool {
        self.deadline.as_mut().poll(cx).is_ready()
    }

    /// A write's outcome: bytes written move the deadline on, a write still waiting past it
    /// fails.
    fn written(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        match polled {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    self.active();
                }
                Poll::Ready(Ok(n))
            }
            Poll::Pending if self.idle_too_long(cx) => Poll::Ready(Err(idle_error(self.idle))),
            other => other,
        }
    }
}

fn idle_error(idle: Duration) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!("no traffic for {idle:?}: connection closed"),
    )
}

impl<S: AsyncRead + Unpin> AsyncRead for Capped<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    self.active();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending if self.idle_too_long(cx) => Poll::Ready(Err(idle_error(self.idle))),
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Capped<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.written(cx, polled)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.written(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// A response body that keeps its request's in-flight permit until it is sent.
struct Held {
    body: Body,
    _permit: OwnedSemaphorePermit,
}

impl http_body::Body for Held {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Requests being answered at once, shared by every route.
#[derive(Clone)]
pub struct InFlight(Arc<Semaphore>);

impl InFlight {
    pub fn new(max: usize) -> Self {
        Self(Arc::new(Semaphore::new(max)))
    }
}

/// Middleware: answers 503 at once when `[http.limits] max_requests_in_flight` requests are
/// being answered, so a flood gets a clear answer and the node's memory stays bounded.
pub fn shed_when_busy(
    State(in_flight): State<InFlight>,
    request: Request,
    next: Next,
) -> impl Future<Output = Response> {
    let permit = in_flight.0.try_acquire_owned();
    async move {
        match permit {
            Ok(permit) => next.run(request).await.map(|body| {
                Body::new(Held {
                    body,
                    _permit: permit,
                })
            }),
            Err(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                [(axum::http::header::RETRY_AFTER, "1")],
                axum::Json(serde_json::json!({
                    "error": "this node is answering as many requests as it takes at once \
                              ([http.limits] max_requests_in_flight); try again shortly"
                })),
            )
                .into_response(),
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    fn capped(idle: Duration) -> (Capped<tokio::io::DuplexStream>, tokio::io::DuplexStream) {
        let (server, client) = tokio::io::duplex(1024);
        let permit = Arc::new(Semaphore::new(1)).try_acquire_owned().unwrap();
        (Capped::new(server, permit, idle), client)
    }

    /// An idle connection is closed at its deadline, not before; traffic either way moves
    /// the deadline on.
    #[tokio::test(start_paused = true)]
    async fn a_connection_without_traffic_is_closed_at_its_idle_deadline() {
        let idle = Duration::from_secs(120);
        let (mut server, mut client) = capped(idle);
        let mut byte = [0u8; 1];

        // Traffic at 100 s (a request in) and 200 s (an answer out) keeps it open.
        tokio::time::advance(Duration::from_secs(100)).await;
        client.write_all(b"a").await.unwrap();
        server.read_exact(&mut byte).await.unwrap();
        tokio::time::advance(Duration::from_secs(100)).await;
        server.write_all(b"b").await.unwrap();
        client.read_exact(&mut byte).await.unwrap();

        // Then nothing: the read waits until 120 s after the last byte, and fails there.
        let started = Instant::now();
        let read = tokio::time::timeout(idle * 2, server.read(&mut byte))
            .await
            .expect("the idle connection was not closed");
        assert_eq!(read.unwrap_err().kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), idle);
    }

    /// The cap: the stream holds its permit until it is dropped.
    #[tokio::test(start_paused = true)]
    async fn a_connection_holds_its_place_until_dropped() {
        let open = Arc::new(Semaphore::new(1));
        let (stream, _client) = tokio::io::duplex(64);
        let held = Capped::new(
            stream,
            open.clone().try_acquire_owned().unwrap(),
            Duration::from_secs(1),
        );
        assert!(open.clone().try_acquire_owned().is_err());
        drop(held);
        assert!(open.try_acquire_owned().is_ok());
    }
}
