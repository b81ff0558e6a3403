//! The tracking connection: a RESP3 connection with `CLIENT TRACKING ON` whose every byte is
//! scanned for invalidations before redis-rs parses it, a heartbeat that keeps the cache's
//! lease, and the reconnect after a loss.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ProtocolVersion};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::resp3::Scanner;
use super::transport::{Read, Stream};
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
    /// Whether the reader has left nothing between the socket and the scanner: always on plain
    /// TCP; on TLS, only after a read that drained rustls and ended between records (see
    /// [`transport`](super::transport)). Written under the scanner's lock.
    at_rest: AtomicBool,
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
        let (host, port) = target.address.resolve().await?;
        let connecting = tokio::net::TcpStream::connect((host.as_str(), port));
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
        let stream = match &target.tls {
            None => Stream::Plain(stream),
            Some(tls) => tokio::time::timeout(target.connect_timeout, tls.connect(&host, stream))
                .await
                .map_err(|_elapsed| StoreError::Timeout)?
                .map_err(StoreError::unavailable)?,
        };
        let wire = Arc::new(Wire {
            scanner: Mutex::new(Scanner::default()),
            peek,
            // The TLS handshake read through the same record framing.
            at_rest: AtomicBool::new(stream.between_records()),
            opened: Instant::now(),
            last_heartbeat: AtomicU64::new(0),
        });
        let tap = Tap {
            stream,
            scanned: Vec::new(),
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
                target.heartbeat,
            ));
        }
        Ok(())
    }

    /// Pings the tracking connection until it is lost or replaced, renewing the lease on each
    /// reply; a ping that fails or goes unanswered ends the connection, and so does a server
    /// that must be a primary and says it no longer is.
    async fn heartbeat(
        cache: Weak<Self>,
        generation: u64,
        mut connection: MultiplexedConnection,
        wire: Arc<Wire>,
        kind: Heartbeat,
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
            match tokio::time::timeout(LEASE, kind.beat(&mut connection)).await {
                Ok(Ok(())) => wire.heard_now(),
                Ok(Err(HeartbeatFailure::NotPrimary)) => {
                    tracing::warn!(
                        "session cache: the tracked Redis server is no longer a primary \
                         (a failover); emptied the cache"
                    );
                    shared.lose(generation);
                    return;
                }
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

    /// Whether the socket holds no unread bytes and the reader holds none unscanned: anything
    /// Redis sent has passed the scanner. Call with the scanner locked.
    pub(super) fn nothing_waiting(&self) -> bool {
        self.at_rest.load(Ordering::Acquire)
            && matches!(self.peek.peek(&mut [0u8; 1]), Err(err) if err.kind() == io::ErrorKind::WouldBlock)
    }
}

/// The tracking connection's stream, reading through the scanner.
struct Tap {
    stream: Stream,
    /// TLS only: bytes already scanned that the parser has not asked for yet.
    scanned: Vec<u8>,
    wire: Arc<Wire>,
    cache: Weak<Shared>,
    generation: u64,
}

/// How far one TLS drain got.
enum Drained {
    /// The stream has nothing more now, and will wake the reader when it has.
    Pending,
    /// It stopped at the bound with more perhaps left.
    Bounded,
    Closed,
}

/// How many chunks one TLS drain reads at most, so that a flood does not hold the scanner's
/// lock (and every lookup) for long; the rest waits for the next read, and lookups fetch
/// meanwhile.
const MAX_DRAIN_CHUNKS: usize = 16;

impl Tap {
    fn broken(&self, scanner: &mut Scanner, why: &str) -> io::Error {
        scanner.broken = true;
        if let Some(cache) = self.cache.upgrade() {
            cache.lose(self.generation);
        }
        io::Error::other(why.to_owned())
    }

    /// Plain TCP: one read straight into the parser's buffer, scanned on the way.
    fn read_plain(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
        scanner: &mut Scanner,
        cache: &Shared,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match self.stream.poll_fill(cx, buf) {
            Poll::Ready(Ok(Read::Data)) => {
                if scanner
                    .feed(&buf.filled()[before..], |keys| cache.invalidate(keys))
                    .is_err()
                {
                    let err = self.broken(scanner, "unreadable reply on tracking connection");
                    return Poll::Ready(Err(err));
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Ok(Read::Closed)) => {
                self.broken(scanner, "tracking connection closed by Redis");
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(err)) => {
                self.broken(scanner, "tracking connection failed");
                Poll::Ready(Err(err))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    /// TLS: reads and scans until rustls has nothing left (or the bound), keeping what it read
    /// in `scanned`, and records whether the stream is at rest.
    fn drain(
        &mut self,
        cx: &mut Context<'_>,
        scanner: &mut Scanner,
        cache: &Shared,
    ) -> io::Result<Drained> {
        let mut chunk = [0u8; 8192];
        for _ in 0..MAX_DRAIN_CHUNKS {
            let mut read = ReadBuf::new(&mut chunk);
            match self.stream.poll_fill(cx, &mut read) {
                Poll::Ready(Ok(Read::Data)) => {
                    if scanner
                        .feed(read.filled(), |keys| cache.invalidate(keys))
                        .is_err()
                    {
                        return Err(self.broken(scanner, "unreadable reply on tracking connection"));
                    }
                    self.scanned.extend_from_slice(read.filled());
                }
                Poll::Ready(Ok(Read::Closed)) => return Ok(Drained::Closed),
                Poll::Ready(Err(err)) => {
                    self.broken(scanner, "tracking connection failed");
                    return Err(err);
                }
                Poll::Pending => {
                    let at_rest = self.stream.between_records();
                    self.wire.at_rest.store(at_rest, Ordering::Release);
                    return Ok(Drained::Pending);
                }
            }
        }
        self.wire.at_rest.store(false, Ordering::Release);
        Ok(Drained::Bounded)
    }

    fn read_tls(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
        scanner: &mut Scanner,
        cache: &Shared,
    ) -> Poll<io::Result<()>> {
        if self.scanned.is_empty() {
            match self.drain(cx, scanner, cache) {
                Err(err) => return Poll::Ready(Err(err)),
                Ok(Drained::Closed) if self.scanned.is_empty() => {
                    self.broken(scanner, "tracking connection closed by Redis");
                    return Poll::Ready(Ok(()));
                }
                Ok(_) => {}
            }
        }
        if self.scanned.is_empty() {
            // Only a drain that ended in `Pending` reads nothing, and it registered the waker.
            return Poll::Pending;
        }
        let handed = self.scanned.len().min(buf.remaining());
        buf.put_slice(&self.scanned[..handed]);
        self.scanned.drain(..handed);
        Poll::Ready(Ok(()))
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
        if this.stream.buffers() {
            this.read_tls(cx, buf, &mut scanner, &cache)
        } else {
            this.read_plain(cx, buf, &mut scanner, &cache)
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

/// What the heartbeat sends, by what the server must be.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Heartbeat {
    /// `PING`: a standalone server, whose role the store does not depend on.
    Ping,
    /// `ROLE`, which must answer `master`: a primary named by Sentinel or a cluster's primary,
    /// which a failover can demote without closing its connections.
    #[cfg_attr(not(any(feature = "cluster", feature = "sentinel")), allow(dead_code))]
    Primary,
}

enum HeartbeatFailure {
    Redis,
    NotPrimary,
}

impl Heartbeat {
    async fn beat(self, connection: &mut MultiplexedConnection) -> Result<(), HeartbeatFailure> {
        match self {
            Heartbeat::Ping => redis::cmd("PING")
                .query_async::<()>(connection)
                .await
                .map_err(|_| HeartbeatFailure::Redis),
            Heartbeat::Primary => {
                let role: redis::Value = redis::cmd("ROLE")
                    .query_async(connection)
                    .await
                    .map_err(|_| HeartbeatFailure::Redis)?;
                if is_primary(&role) {
                    Ok(())
                } else {
                    Err(HeartbeatFailure::NotPrimary)
                }
            }
        }
    }
}

/// Whether a `ROLE` reply says `master`.
fn is_primary(role: &redis::Value) -> bool {
    use redis::Value;
    let redis::Value::Array(parts) = role else {
        return false;
    };
    match parts.first() {
        Some(Value::BulkString(text)) => text.as_slice() == b"master",
        Some(Value::SimpleString(text)) => text == "master",
        Some(Value::VerbatimString { text, .. }) => text == "master",
        _ => false,
    }
}
