//! An in-process copy of session records that Redis keeps honest.
//!
//! Records are fetched through one dedicated connection with `CLIENT TRACKING ON` (RESP3), so
//! Redis remembers which keys this process holds and pushes an `invalidate` message on that
//! connection the moment any client changes or deletes one of them, or it expires.
//!
//! Three rules keep the copy from ever outliving the record:
//!
//! 1. **Every byte is read through [`Tap`].** Invalidations are applied while the bytes are read
//!    off the socket, under the same lock a lookup takes, before the connection's parser sees
//!    them. A lookup answers from memory only when nothing is waiting in the socket (a
//!    non-blocking `peek`) and no half-read frame is buffered; otherwise it fetches.
//! 2. **A fetch registers itself before it is sent.** Its slot holds a fresh fill id; an
//!    invalidation that lands before the reply is stored removes the slot, and the fill then
//!    stores nothing. So a value read before a change can never be stored after it.
//! 3. **A lost connection empties the cache.** Redis forgets the tracking of a closed
//!    connection, so every entry it vouched for is dropped, and lookups go to Redis until a new
//!    tracking connection is up.
//!
//! The session-ending writes of [`RedisStore`](super::RedisStore) wait for one more round trip
//! after their `DEL` (see there), because Redis writes invalidations in the event-loop pass that
//! answers the `DEL`: once a later command is answered, the invalidation is in every tracking
//! process's socket, where rule 1 finds it.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ProtocolVersion, RedisConnectionInfo};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::StoredSession;
use crate::StoreError;

/// How long after a failed attempt the cache waits before it tries to track again.
const RECONNECT_PAUSE: Duration = Duration::from_secs(1);
/// RESP nesting the scanner follows; Redis never nests invalidations deeper than 2.
const MAX_DEPTH: usize = 8;
/// How often the tracking connection is pinged.
const HEARTBEAT_EVERY: Duration = Duration::from_millis(250);
/// How recent the last heartbeat reply must be for a lookup to answer from memory.
///
/// A Redis that vanishes without closing the connection (a host crash, a silent network
/// partition, a middlebox dropping an idle flow) sends no EOF: without a lease, entries would
/// outlive it until their own deadlines. With it, they outlive it by at most this long.
const LEASE: Duration = Duration::from_secs(1);
/// A reconnect that has not reported back after this long is presumed lost (its runtime is
/// gone), so another may start.
const RECONNECT_GIVE_UP: Duration = Duration::from_secs(30);

/// The cache, shared by all clones of a store.
#[derive(Clone)]
pub(crate) struct LocalCache {
    shared: Arc<Shared>,
}

/// Where and how to open the tracking connection.
pub(crate) struct TrackingTarget {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) redis: RedisConnectionInfo,
    pub(crate) connect_timeout: Duration,
    pub(crate) command_timeout: Duration,
}

impl TrackingTarget {
    /// The same server, user and database as `url`, which must be plain TCP.
    pub(crate) fn for_url(
        url: &str,
        connect_timeout: Duration,
        command_timeout: Duration,
    ) -> Result<Self, StoreError> {
        let client = redis::Client::open(url).map_err(StoreError::unavailable)?;
        let info = client.get_connection_info();
        let redis::ConnectionAddr::Tcp(host, port) = info.addr() else {
            return Err(StoreError::unavailable(
                "the local cache needs Redis over plain TCP (not TLS or a Unix socket)",
            ));
        };
        Ok(Self {
            host: host.clone(),
            port: *port,
            redis: info.redis_settings().clone(),
            connect_timeout,
            command_timeout,
        })
    }
}

struct Shared {
    capacity: usize,
    target: TrackingTarget,
    /// The runtime the store was connected on: connection drivers and reconnects run there, not
    /// on whichever request noticed a loss.
    runtime: tokio::runtime::Handle,
    next_fill: AtomicU64,
    // Lock order: a wire's scanner, then `link`, then `entries`.
    link: Mutex<Link>,
    entries: Mutex<HashMap<String, Slot>>,
}

enum Slot {
    /// A fetch with this id is on its way; an invalidation removes the slot.
    Filling(u64),
    /// A record, and the generation of the tracking connection that vouches for it.
    Ready(StoredSession, u64),
}

#[derive(Default)]
struct Link {
    live: Option<Live>,
    generation: u64,
    /// When the reconnect under way started, if one is.
    connecting: Option<Instant>,
    last_attempt: Option<Instant>,
}

/// A tracking connection that is up.
struct Live {
    generation: u64,
    connection: MultiplexedConnection,
    wire: Arc<Wire>,
}

/// What a lookup and the connection's reader share.
struct Wire {
    scanner: Mutex<Scanner>,
    /// The same socket, for non-blocking peeks from lookups.
    peek: std::net::TcpStream,
    /// When the connection was set up, the base of `last_heartbeat`.
    opened: Instant,
    /// Milliseconds after `opened` at which the last heartbeat reply arrived. Everything Redis
    /// sent before that reply had been scanned by then.
    last_heartbeat: AtomicU64,
}

/// What [`LocalCache::lookup`] found.
pub(crate) enum Lookup {
    /// A record that no invalidation has touched.
    Hit(StoredSession),
    /// Fetch through [`Fill::connection`], then [`LocalCache::complete`].
    Fill(Fill),
    /// No tracking connection: read from Redis without caching.
    Bypass,
}

/// A fetch that may store its result.
pub(crate) struct Fill {
    key: String,
    id: u64,
    generation: u64,
    connection: MultiplexedConnection,
}

impl Fill {
    /// The tracking connection: only reads made on it are tracked.
    pub(crate) fn connection(&self) -> MultiplexedConnection {
        self.connection.clone()
    }
}

impl LocalCache {
    /// Opens the tracking connection; fails if it cannot be set up now.
    pub(crate) async fn connect(
        target: TrackingTarget,
        capacity: usize,
    ) -> Result<Self, StoreError> {
        let shared = Arc::new(Shared {
            capacity: capacity.max(1),
            target,
            runtime: tokio::runtime::Handle::current(),
            next_fill: AtomicU64::new(0),
            link: Mutex::new(Link::default()),
            entries: Mutex::new(HashMap::new()),
        });
        Shared::track(&shared).await?;
        Ok(Self { shared })
    }

    /// Answers from memory if that is safe; otherwise says how to fetch.
    pub(crate) fn lookup(&self, key: &str) -> Lookup {
        // Only the wire on the hot path: cloning the whole connection costs more than a hit.
        let Some((generation, wire)) = self.shared.wire() else {
            Shared::reconnect_soon(&self.shared);
            return Lookup::Bypass;
        };
        {
            let scanner = lock(&wire.scanner);
            if scanner.is_idle() && wire.heard_lately() && wire.nothing_waiting() {
                if let Some(Slot::Ready(stored, vouched_by)) = lock(&self.shared.entries).get(key) {
                    // Only the connection this lookup just checked may vouch for the entry.
                    if *vouched_by == generation && stored.expires_at > SystemTime::now() {
                        return Lookup::Hit(stored.clone());
                    }
                }
            }
        }
        let Some(connection) = self.shared.connection(generation) else {
            return Lookup::Bypass;
        };
        let id = self.shared.next_fill.fetch_add(1, Ordering::Relaxed);
        let mut entries = lock(&self.shared.entries);
        if entries.len() >= self.shared.capacity && !entries.contains_key(key) {
            // Any entry will do: dropping one is always safe, and a hash map's first key is as
            // good as a random one.
            if let Some(victim) = entries.keys().next().cloned() {
                entries.remove(&victim);
            }
        }
        // Registered before the fetch is sent, so an invalidation that overtakes it finds it.
        entries.insert(key.to_owned(), Slot::Filling(id));
        Lookup::Fill(Fill {
            key: key.to_owned(),
            id,
            generation,
            connection,
        })
    }

    /// Stores what `fill` fetched, unless an invalidation or a lost connection came first.
    pub(crate) fn complete(&self, fill: Fill, fetched: Option<&StoredSession>) {
        let link = lock(&self.shared.link);
        let mut entries = lock(&self.shared.entries);
        let ours = matches!(entries.get(&fill.key), Some(Slot::Filling(id)) if *id == fill.id);
        if !ours {
            return;
        }
        let tracked = link
            .live
            .as_ref()
            .is_some_and(|live| live.generation == fill.generation);
        match fetched {
            Some(stored) if tracked => {
                entries.insert(fill.key, Slot::Ready(stored.clone(), fill.generation));
            }
            _ => {
                entries.remove(&fill.key);
            }
        }
    }

    /// Gives up on `fill` after its fetch failed: the tracking connection is suspect, so it is
    /// dropped with everything it vouched for.
    pub(crate) fn abandon(&self, fill: Fill) {
        self.shared.lose(fill.generation);
    }
}

impl Shared {
    fn wire(&self) -> Option<(u64, Arc<Wire>)> {
        let link = lock(&self.link);
        let live = link.live.as_ref()?;
        Some((live.generation, Arc::clone(&live.wire)))
    }

    /// The tracking connection of `generation`, if it is still the live one.
    fn connection(&self, generation: u64) -> Option<MultiplexedConnection> {
        let link = lock(&self.link);
        let live = link
            .live
            .as_ref()
            .filter(|live| live.generation == generation)?;
        Some(live.connection.clone())
    }

    /// Opens a connection, turns tracking on, and makes it the live one.
    async fn track(shared: &Arc<Self>) -> Result<(), StoreError> {
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
        wire.heard_now();
        let mut link = lock(&shared.link);
        if link.generation == generation {
            link.live = Some(Live {
                generation,
                connection: connection.clone(),
                wire: Arc::clone(&wire),
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
        loop {
            tokio::time::sleep(HEARTBEAT_EVERY).await;
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
        }
    }

    /// Starts a reconnect in the background, at most once per [`RECONNECT_PAUSE`].
    fn reconnect_soon(shared: &Arc<Self>) {
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

    /// Forgets the tracking connection of `generation` and everything it vouched for.
    fn lose(&self, generation: u64) {
        let mut link = lock(&self.link);
        if link
            .live
            .as_ref()
            .is_some_and(|live| live.generation == generation)
        {
            link.live = None;
            tracing::warn!("session cache: tracking connection lost; emptied the cache");
        }
        lock(&self.entries).clear();
    }

    fn invalidate(&self, keys: Option<Vec<&[u8]>>) {
        let mut entries = lock(&self.entries);
        match keys {
            Some(keys) => {
                for key in keys {
                    if let Ok(key) = std::str::from_utf8(key) {
                        entries.remove(key);
                    }
                }
            }
            // A flush of the whole database.
            None => entries.clear(),
        }
    }
}

impl Wire {
    fn heard_now(&self) {
        let since = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_heartbeat.store(since, Ordering::Release);
    }

    /// Whether Redis answered a heartbeat within the [`LEASE`].
    fn heard_lately(&self) -> bool {
        let last = Duration::from_millis(self.last_heartbeat.load(Ordering::Acquire));
        self.opened.elapsed().saturating_sub(last) < LEASE
    }

    /// Whether the socket holds no unread bytes: anything Redis sent has passed the scanner.
    fn nothing_waiting(&self) -> bool {
        matches!(self.peek.peek(&mut [0u8; 1]), Err(err) if err.kind() == io::ErrorKind::WouldBlock)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves its data consistent, so a panic elsewhere cannot corrupt it.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
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
                if scanner.feed(read, &cache).is_err() {
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

/// Finds `invalidate` pushes in the byte stream of a RESP3 connection.
#[derive(Default)]
struct Scanner {
    /// Bytes of a frame that has not fully arrived yet.
    pending: Vec<u8>,
    broken: bool,
}

/// The parts of a RESP3 frame the scanner cares about.
enum Node {
    Text(std::ops::Range<usize>),
    List(Vec<Node>),
    Push(Vec<Node>),
    Nil,
    Other,
}

struct Malformed;

impl Scanner {
    fn is_idle(&self) -> bool {
        self.pending.is_empty() && !self.broken
    }

    /// Applies every invalidation completed by `read`.
    fn feed(&mut self, read: &[u8], cache: &Shared) -> Result<(), Malformed> {
        self.pending.extend_from_slice(read);
        let mut consumed = 0;
        while let Some((node, end)) = parse(&self.pending, consumed, 0)? {
            if let Some(keys) = invalidated(&node, &self.pending) {
                cache.invalidate(keys);
            }
            consumed = end;
        }
        self.pending.drain(..consumed);
        Ok(())
    }
}

/// The keys an `invalidate` push names (`None` inside: all of them), or `None` for any other
/// frame.
fn invalidated<'a>(node: &Node, buf: &'a [u8]) -> Option<Option<Vec<&'a [u8]>>> {
    let Node::Push(items) = node else {
        return None;
    };
    match items.as_slice() {
        [Node::Text(kind), keys] if buf[kind.clone()].eq_ignore_ascii_case(b"invalidate") => {
            match keys {
                Node::List(keys) => Some(Some(
                    keys.iter()
                        .filter_map(|key| match key {
                            Node::Text(range) => Some(&buf[range.clone()]),
                            _ => None,
                        })
                        .collect(),
                )),
                _ => Some(None),
            }
        }
        _ => None,
    }
}

/// Parses the frame starting at `pos`: `Ok(None)` if it has not fully arrived.
fn parse(buf: &[u8], pos: usize, depth: usize) -> Result<Option<(Node, usize)>, Malformed> {
    if depth > MAX_DEPTH {
        return Err(Malformed);
    }
    let Some(line_end) = find_crlf(buf, pos) else {
        return Ok(None);
    };
    let Some(&kind) = buf.get(pos) else {
        return Ok(None);
    };
    let line = pos + 1..line_end;
    let next = line_end + 2;
    let number = || -> Result<i64, Malformed> {
        std::str::from_utf8(&buf[line.clone()])
            .ok()
            .and_then(|text| text.parse().ok())
            .ok_or(Malformed)
    };
    match kind {
        b'+' => Ok(Some((Node::Text(line.clone()), next))),
        b'-' | b':' | b'#' | b',' | b'(' => Ok(Some((Node::Other, next))),
        b'_' => Ok(Some((Node::Nil, next))),
        b'$' | b'!' | b'=' => {
            let Ok(len) = usize::try_from(number()?) else {
                return Ok(Some((Node::Nil, next)));
            };
            let end = next.checked_add(len).ok_or(Malformed)?;
            if buf.len() < end + 2 {
                return Ok(None);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err(Malformed);
            }
            Ok(Some((Node::Text(next..end), end + 2)))
        }
        b'*' | b'~' | b'>' | b'%' | b'|' => {
            let Ok(count) = usize::try_from(number()?) else {
                return Ok(Some((Node::Nil, next)));
            };
            let count = if matches!(kind, b'%' | b'|') {
                count.checked_mul(2).ok_or(Malformed)?
            } else {
                count
            };
            let mut items = Vec::new();
            let mut at = next;
            for _ in 0..count {
                let Some((item, end)) = parse(buf, at, depth + 1)? else {
                    return Ok(None);
                };
                items.push(item);
                at = end;
            }
            let node = match kind {
                b'>' => Node::Push(items),
                b'*' | b'~' => Node::List(items),
                _ => Node::Other,
            };
            Ok(Some((node, at)))
        }
        _ => Err(Malformed),
    }
}

fn find_crlf(buf: &[u8], from: usize) -> Option<usize> {
    buf.get(from..)?
        .windows(2)
        .position(|pair| pair == b"\r\n")
        .map(|at| from + at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys_in(stream: &[u8]) -> Vec<Option<Vec<String>>> {
        let mut found = Vec::new();
        let mut at = 0;
        while let Ok(Some((node, end))) = parse(stream, at, 0) {
            if let Some(keys) = invalidated(&node, stream) {
                found.push(keys.map(|keys| {
                    keys.iter()
                        .map(|k| String::from_utf8_lossy(k).into_owned())
                        .collect()
                }));
            }
            at = end;
        }
        found
    }

    #[test]
    fn finds_invalidations_among_replies() {
        let stream = b"%1\r\n$6\r\nserver\r\n$5\r\nredis\r\n\
            +OK\r\n\
            $11\r\n1 {\"i\":\"x\"}\r\n\
            >2\r\n$10\r\ninvalidate\r\n*2\r\n$3\r\na:1\r\n$3\r\na:2\r\n\
            _\r\n\
            >2\r\n$10\r\ninvalidate\r\n_\r\n\
            >3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n";
        assert_eq!(
            keys_in(stream),
            vec![Some(vec!["a:1".to_owned(), "a:2".to_owned()]), None]
        );
    }

    #[test]
    fn a_frame_split_anywhere_waits_for_the_rest() {
        let frame = b">2\r\n$10\r\ninvalidate\r\n*1\r\n$3\r\na:1\r\n";
        for cut in 0..frame.len() {
            assert!(
                matches!(parse(&frame[..cut], 0, 0), Ok(None)),
                "cut at {cut}"
            );
        }
        assert!(matches!(parse(frame, 0, 0), Ok(Some((_, end))) if end == frame.len()));
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        for bad in [
            &b"?what\r\n"[..],
            b"$abc\r\n",
            b"$3\r\nabcde\r\n",
            b"*99999999999999999999999\r\n",
            b"$18446744073709551615\r\nx\r\n",
        ] {
            assert!(parse(bad, 0, 0).is_err(), "{bad:?}");
        }
        let deep = "*1\r\n".repeat(64);
        assert!(parse(deep.as_bytes(), 0, 0).is_err());
    }
}
