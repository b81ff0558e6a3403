//! The tracking connection: a RESP3 connection with `CLIENT TRACKING ON` whose every byte is
//! scanned for invalidations before redis-rs parses it, a heartbeat that keeps the cache's
//! lease, and the reconnect after a loss.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ProtocolVersion};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::resp3::Scanner;
use super::{lock, Shared};
use crate::error::StoreError;

/// How long after a failed attempt the cache waits before it tries to track again.
const RECONNECT_PAUSE: Duration = Duration::from_secs(1);
/// How often the tracking connection is pinged.
const HEARTBEAT_EVERY: Duration = Duration::from_millis(250);
/// How recent the last heartbeat reply must be for a lookup to answer from memory.
///
/// A Redis that vanishes without closing the connection (a host crash, a silent network
/// partition, a middlebox dropping an idle flow) sends no EOF: without a lease, entries would
/// outlive it until their own deadlines. With it, they outlive it by at most this long.
const LEASE: Duration = Duration::from_secs(1);
/// Every this many heartbeats (once a second), the store's connection is asked which server it
/// reaches. Its reconnects are invisible from here, so this bounds how long the cache can
/// trust a tracking connection to a server the store has left.
const CHECK_SERVER_EVERY: u32 = 4;
/// A reconnect that has not reported back after this long is presumed lost (its runtime is
/// gone), so another may start.
const RECONNECT_GIVE_UP: Duration = Duration::from_secs(30);

#[derive(Default)]
pub(super) struct Link {
    pub(super) live: Option<Live>,
    pub(super) generation: u64,
    /// When the reconnect under way started, if one is.
    connecting: Option<Instant>,
    last_attempt: Option<Instant>,
}

/// A tracking connection that is up.
pub(super) struct Live {
    pub(super) generation: u64,
    pub(super) connection: MultiplexedConnection,
    pub(super) wire: Arc<Wire>,
    /// The `run_id` of the server this connection reaches.
    pub(super) server: Arc<str>,
}

/// What a lookup and the connection's reader share.
pub(super) struct Wire {
    pub(super) scanner: Mutex<Scanner>,
    /// The same socket, for non-blocking peeks from lookups.
    peek: std::net::TcpStream,
    /// When the connection was set up, the base of `last_heartbeat`.
    opened: Instant,
    /// Milliseconds after `opened` at which the last heartbeat reply arrived. Everything Redis
    /// sent before that reply had been scanned by then.
    last_heartbeat: AtomicU64,
}

impl Shared {
    /// Opens a connection, turns tracking on, and makes it the live one.
    pub(super) async fn track(shared: &Arc<Self>) -> Result<(), StoreError> {
        let generation = {
            let mut link = lock(&shared.link);
            link.generation += 1;
            link.generation
        };
        let target = &shared.target;
        let connecting = tokio::net::TcpStream::connect((target.host.as_str(), target.port));
        let stream = tokio::time::timeout(target.connect_timeout, connecting)
            .await
            .map_err(|_elapsed| StoreError::Timeout)?
            .map_err(StoreError::unavailable)?;
        stream.set_nodelay(true).map_err(StoreError::unavailable)?;
        // A second handle on the same socket lets lookups peek without going through the
        // connection's reader. `into_std` leaves the socket non-blocking, so peeks never block.
        let stream = stream.into_std().map_err(StoreError::unavailable)?;
        let peek = stream.try_clone().map_err(StoreError::unavailable)?;
        let stream = tokio::net::TcpStream::from_std(stream).map_err(StoreError::unavailable)?;
        let wire = Arc::new(Wire {
            scanner: Mutex::new(Scanner::default()),
            peek,
            opened: Instant::now(),
            last_heartbeat: AtomicU64::new(0),
        });
        let tap = Tap {
            stream,
            wire: Arc::clone(&wire),
            cache: Arc::downgrade(shared),
            generation,
        };
        let redis = target.redis.clone().set_protocol(ProtocolVersion::RESP3);
        // Fetches are bounded by the store's own timeout; see `RedisStore::run`.
        let config = AsyncConnectionConfig::new().set_response_timeout(None);
        let handshake = MultiplexedConnection::new_with_config(&redis, tap, config);
        let (mut connection, driver) = tokio::time::timeout(target.connect_timeout, handshake)
            .await
            .map_err(|_elapsed| StoreError::Timeout)?
            .map_err(StoreError::unavailable)?;
        shared.runtime.spawn(driver);
        let mut tracking_on = redis::cmd("CLIENT");
        tracking_on.arg("TRACKING").arg("ON");
        let tracking = tracking_on.query_async::<()>(&mut connection);
        tokio::time::timeout(target.command_timeout, tracking)
            .await
            .map_err(|_elapsed| StoreError::Timeout)?
            .map_err(StoreError::unavailable)?;
        let server = tokio::time::timeout(target.command_timeout, server_id(&mut connection))
            .await
            .map_err(|_elapsed| StoreError::Timeout)??;
        let main_server = (shared.main_server)().await?;
        if main_server != server {
            tracing::warn!(
                "session cache: the tracking connection and the store reach different Redis \
                 servers; reading from Redis until they agree"
            );
            return Ok(());
        }
        wire.heard_now();
        let mut link = lock(&shared.link);
        if link.generation == generation {
            link.live = Some(Live {
                generation,
                connection: connection.clone(),
                wire: Arc::clone(&wire),
                server: server.into(),
            });
            shared.runtime.spawn(Self::heartbeat(
                Arc::downgrade(shared),
                generation,
                connection,
                wire,
            ));
        }
        Ok(())
    }

    /// Pings the tracking connection until it is lost or replaced, renewing the lease on each
    /// reply; a ping that fails or goes unanswered ends the connection.
    async fn heartbeat(
        cache: Weak<Self>,
        generation: u64,
        mut connection: MultiplexedConnection,
        wire: Arc<Wire>,
    ) {
        let mut beats: u32 = 0;
        loop {
            tokio::time::sleep(HEARTBEAT_EVERY).await;
            beats = beats.wrapping_add(1);
            let Some(shared) = cache.upgrade() else {
                return;
            };
            let current = lock(&shared.link)
                .live
                .as_ref()
                .is_some_and(|live| live.generation == generation);
            if !current {
                return;
            }
            let ping = redis::cmd("PING");
            match tokio::time::timeout(LEASE, ping.query_async::<()>(&mut connection)).await {
                Ok(Ok(())) => wire.heard_now(),
                _ => {
                    shared.lose(generation);
                    return;
                }
            }
            if beats.is_multiple_of(CHECK_SERVER_EVERY) {
                match (shared.main_server)().await {
                    Ok(main_server) => shared.confirm_server(&main_server, Some(generation)),
                    Err(err) => {
                        // Unconfirmed is as bad as different: the store may be elsewhere.
                        tracing::warn!(error = %err, "session cache: could not ask the store's connection which server it reaches");
                        shared.lose(generation);
                        return;
                    }
                }
            }
        }
    }

    /// Starts a reconnect in the background, at most once per [`RECONNECT_PAUSE`].
    pub(super) fn reconnect_soon(shared: &Arc<Self>) {
        {
            let mut link = lock(&shared.link);
            let resting = link
                .last_attempt
                .is_some_and(|at| at.elapsed() < RECONNECT_PAUSE);
            let connecting = link
                .connecting
                .is_some_and(|since| since.elapsed() < RECONNECT_GIVE_UP);
            if link.live.is_some() || connecting || resting {
                return;
            }
            link.connecting = Some(Instant::now());
            link.last_attempt = link.connecting;
        }
        let shared = Arc::clone(shared);
        shared.runtime.clone().spawn(async move {
            if let Err(err) = Self::track(&shared).await {
                tracing::warn!(error = %err, "session cache: tracking connection not restored");
            }
            lock(&shared.link).connecting = None;
        });
    }
}

/// The `run_id` of the server `connection` reaches.
async fn server_id(connection: &mut MultiplexedConnection) -> Result<String, StoreError> {
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(connection)
        .await
        .map_err(StoreError::unavailable)?;
    super::run_id(&info)
        .map(str::to_owned)
        .ok_or_else(|| StoreError::unavailable("INFO server reported no run_id"))
}

impl Wire {
    fn heard_now(&self) {
        let since = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_heartbeat.store(since, Ordering::Release);
    }

    /// Whether Redis answered a heartbeat within the [`LEASE`].
    pub(super) fn heard_lately(&self) -> bool {
        let last = Duration::from_millis(self.last_heartbeat.load(Ordering::Acquire));
        self.opened.elapsed().saturating_sub(last) < LEASE
    }

    /// Whether the socket holds no unread bytes: anything Redis sent has passed the scanner.
    pub(super) fn nothing_waiting(&self) -> bool {
        matches!(self.peek.peek(&mut [0u8; 1]), Err(err) if err.kind() == io::ErrorKind::WouldBlock)
    }
}

/// The tracking connection's socket, reading through the scanner.
struct Tap {
    stream: tokio::net::TcpStream,
    wire: Arc<Wire>,
    cache: Weak<Shared>,
    generation: u64,
}

impl Tap {
    fn broken(&self, scanner: &mut Scanner, why: &str) -> io::Error {
        scanner.broken = true;
        if let Some(cache) = self.cache.upgrade() {
            cache.lose(self.generation);
        }
        io::Error::other(why.to_owned())
    }
}

impl AsyncRead for Tap {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let wire = Arc::clone(&this.wire);
        let mut scanner = lock(&wire.scanner);
        if scanner.broken {
            return Poll::Ready(Err(io::Error::other("tracking connection closed")));
        }
        let Some(cache) = this.cache.upgrade() else {
            // The store is gone: end the connection.
            return Poll::Ready(Ok(()));
        };
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let read = &buf.filled()[before..];
                if read.is_empty() {
                    drop(cache);
                    this.broken(&mut scanner, "tracking connection closed by Redis");
                    return Poll::Ready(Ok(()));
                }
                if scanner.feed(read, |keys| cache.invalidate(keys)).is_err() {
                    drop(cache);
                    let err = this.broken(&mut scanner, "unreadable reply on tracking connection");
                    return Poll::Ready(Err(err));
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(err)) => {
                drop(cache);
                this.broken(&mut scanner, "tracking connection failed");
                Poll::Ready(Err(err))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncWrite for Tap {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}
