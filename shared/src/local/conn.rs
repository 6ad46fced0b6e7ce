//! Connections that cannot be held open for free. axum's `serve` sets no timeouts of its own
//! (hyper's header timeout needs a timer it does not give hyper) and keeps a connection as
//! long as the client does; here each connection must deliver a complete request, headers
//! and body, within `DEADLINE` of being accepted or of its previous answer, and must take
//! each part of an answer within `DEADLINE`. While a request is being handled its connection
//! is not timed: a slow store is answered (503), not cut off.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, Request};
use axum::middleware::Next;
use axum::response::Response;
use axum::serve::IncomingStream;
use bytes::Bytes;
use http_body::Frame;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{sleep_until, Instant, Sleep};

/// How long a client has to send a request, or to take a part of an answer.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// How long a closing connection keeps reading what the client still sends.
const LINGER: Duration = Duration::from_secs(2);

/// Where a connection is in its request-answer cycle.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Waiting for a request (headers and body) to arrive, since then.
    Receiving(Instant),
    /// A request arrived whole and is being handled.
    Handling,
}

/// A connection's phase, shared by its stream and the requests on it.
#[derive(Debug, Clone)]
pub struct Activity(Arc<Mutex<State>>);

#[derive(Debug)]
struct State {
    phase: Phase,
    /// How many requests were answered; tells a late-dropped body of an answered request
    /// from the current one's.
    answered: u64,
}

impl Activity {
    fn new() -> Activity {
        Activity(Arc::new(Mutex::new(State { phase: Phase::Receiving(Instant::now()), answered: 0 })))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // Plain values: a panic elsewhere cannot leave them half-written.
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The current request has arrived whole.
    fn arrived(&self, request: u64) {
        let mut state = self.state();
        if state.answered == request {
            state.phase = Phase::Handling;
        }
    }

    /// The current request was answered: the next one's time starts.
    fn answered(&self) {
        let mut state = self.state();
        state.answered += 1;
        state.phase = Phase::Receiving(Instant::now());
    }

    /// The time by which the pending request must have arrived, if one is awaited.
    fn deadline(&self) -> Option<Instant> {
        match self.state().phase {
            Phase::Receiving(since) => Some(since + DEADLINE),
            Phase::Handling => None,
        }
    }
}

/// axum's TCP listener (which retries failed accepts, backing off a second on errors such
/// as running out of file descriptors) handing out timed connections.
pub struct Listener(pub TcpListener);

impl axum::serve::Listener for Listener {
    type Io = TimedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TimedStream, SocketAddr) {
        let (stream, addr) = axum::serve::Listener::accept(&mut self.0).await;
        let stream =
            TimedStream { stream, activity: Activity::new(), read_timer: None, write_timer: None, linger: None };
        (stream, addr)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

/// What a request learns of its connection (`ConnectInfo<Peer>`).
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    activity: Activity,
}

impl Connected<IncomingStream<'_, Listener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, Listener>) -> Peer {
        Peer { addr: *stream.remote_addr(), activity: stream.io().activity.clone() }
    }
}

/// Middleware: tells the connection when its request has arrived whole (its body was read
/// to the end, or set aside) and when it was answered, and gives the request the client's
/// address as `ConnectInfo<SocketAddr>`.
pub async fn track(mut req: Request, next: Next) -> Response {
    let Some(ConnectInfo(peer)) = req.extensions().get::<ConnectInfo<Peer>>().cloned() else {
        return next.run(req).await;
    };
    req.extensions_mut().insert(ConnectInfo(peer.addr));
    let request = peer.activity.state().answered;
    let activity = peer.activity.clone();
    let req = req.map(|body| Body::new(Arriving { body, activity: Some((activity, request)) }));
    let response = next.run(req).await;
    peer.activity.answered();
    response
}

/// A request body that marks its connection as handling once it has been read or dropped.
struct Arriving {
    body: Body,
    /// The connection, and which of its requests this is; taken once told.
    activity: Option<(Activity, u64)>,
}

impl Arriving {
    fn arrived(&mut self) {
        if let Some((activity, request)) = self.activity.take() {
            activity.arrived(request);
        }
    }
}

impl Drop for Arriving {
    fn drop(&mut self) {
        self.arrived();
    }
}

impl http_body::Body for Arriving {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let frame = ready!(Pin::new(&mut self.body).poll_frame(cx));
        if frame.is_none() {
            self.arrived();
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// A TCP stream whose reads fail once its connection's request is overdue, whose writes
/// fail when the client takes nothing for `DEADLINE`, and which lingers when it is closed.
pub struct TimedStream {
    stream: TcpStream,
    activity: Activity,
    read_timer: Option<Pin<Box<Sleep>>>,
    write_timer: Option<Pin<Box<Sleep>>>,
    /// Until when a closing stream reads, once its end of the connection is shut.
    linger: Option<Instant>,
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, what.to_string())
}

impl TimedStream {
    /// Ready with an error once the write that is pending has waited `DEADLINE`.
    fn poll_write_timer(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let timer = self.write_timer.get_or_insert_with(|| Box::pin(sleep_until(Instant::now() + DEADLINE)));
        ready!(timer.as_mut().poll(cx));
        Poll::Ready(timed_out("the client took no part of the answer in time"))
    }

    fn written<T>(&mut self, result: Poll<io::Result<T>>, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        match result {
            Poll::Ready(result) => {
                self.write_timer = None;
                Poll::Ready(result)
            }
            Poll::Pending => self.poll_write_timer(cx).map(Err),
        }
    }
}

impl AsyncRead for TimedStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let deadline = this.activity.deadline();
        if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
            return Poll::Ready(Err(timed_out("the request did not arrive in time")));
        }
        if let Poll::Ready(result) = Pin::new(&mut this.stream).poll_read(cx, buf) {
            return Poll::Ready(result);
        }
        let Some(deadline) = deadline else { return Poll::Pending };
        let timer = this.read_timer.get_or_insert_with(|| Box::pin(sleep_until(deadline)));
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        ready!(timer.as_mut().poll(cx));
        Poll::Ready(Err(timed_out("the request did not arrive in time")))
    }
}

impl AsyncWrite for TimedStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.written(result, cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.written(result, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.stream).poll_flush(cx);
        this.written(result, cx)
    }

    /// Shuts the server's end, then reads and drops what the client still sends (the rest of
    /// a body refused as too large, say) until it closes, for at most `LINGER`: a socket closed
    /// with unread data resets the connection, and the client may then lose the answer.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let deadline = match this.linger {
            Some(deadline) => deadline,
            None => {
                ready!(Pin::new(&mut this.stream).poll_shutdown(cx))?;
                *this.linger.insert(Instant::now() + LINGER)
            }
        };
        let mut scratch = [0u8; 4096];
        loop {
            if Instant::now() >= deadline {
                return Poll::Ready(Ok(()));
            }
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(&mut this.stream).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if !buf.filled().is_empty() => continue,
                // The client closed too, or is gone.
                Poll::Ready(_) => return Poll::Ready(Ok(())),
                Poll::Pending => {
                    let timer = this.read_timer.get_or_insert_with(|| Box::pin(sleep_until(deadline)));
                    if timer.deadline() != deadline {
                        timer.as_mut().reset(deadline);
                    }
                    ready!(timer.as_mut().poll(cx));
                    return Poll::Ready(Ok(()));
                }
            }
        }
    }
}
