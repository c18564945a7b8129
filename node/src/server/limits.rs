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
use tracing::warn;

/// An acceptor that admits at most `max` open connections; the stream it yields holds one
/// permit until the connection closes.
#[derive(Clone)]
pub struct ConnectionCap<A> {
    inner: A,
    open: Arc<Semaphore>,
    max: usize,
    refused: Arc<AtomicU64>,
}

impl<A> ConnectionCap<A> {
    pub fn new(inner: A, max: usize) -> Self {
        Self {
            inner,
            open: Arc::new(Semaphore::new(max)),
            max,
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
        async move {
            let (stream, service) = accepted.await?;
            Ok((
                Capped {
                    stream,
                    _permit: permit,
                },
                service,
            ))
        }
        .boxed()
    }
}

/// A connection counted against [`ConnectionCap`].
pub struct Capped<S> {
    stream: S,
    _permit: OwnedSemaphorePermit,
}

impl<S: AsyncRead + Unpin> AsyncRead for Capped<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Capped<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
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
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
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
