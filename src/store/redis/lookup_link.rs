//! A worker's connection for session lookups, whose replies the store reads itself.
//!
//! A lookup is one `HMGET` (now and then an `HGETALL`) on every authenticated request. Sent
//! through redis-rs, its four-value reply costs the client more to parse than all of the
//! store's own work for the request: a general parser that resumes across reads, boxing its
//! state as it goes (about 8 500 instructions more than a one-value reply, by
//! `benches/instructions.sh`). The replies a lookup gets are simple (an array of strings and
//! nils), so this link reads them with a parser of its own that does no more than they need,
//! and hands any other frame (a simple string, an error) to redis-rs's parser, so that errors
//! reach the store exactly as redis-rs reports them.
//!
//! What the link is, and is not:
//!
//! * One per Actix worker and store, beside the worker's redis-rs connection and dropped with
//!   it (see [`connection`](super::connection)). Only a standalone server reached over plain
//!   TCP with RESP2 (the default) gets one; with TLS, a Unix socket, RESP3, Sentinel or a
//!   cluster, lookups keep going through redis-rs.
//! * Used only while it reaches the server the worker's other connection does: it learns the
//!   server's `run_id` when it connects, and the worker checks it against the other's then
//!   and every second, as that one reconnects by itself and a DNS name that moved could take
//!   it elsewhere.
//! * It carries single read commands only. Writes, scripts, pipelines and `WAIT` (which counts
//!   the writes of its own connection) stay on the redis-rs connection.
//! * It speaks RESP2 (it sends no `HELLO`), authenticates and selects the database as the URL
//!   says, and keeps no timer: the store bounds each command, and a command that times out
//!   drops the worker's links like any other.
//! * A socket error, an end of stream or a frame it cannot read ends it: every command waiting
//!   on it fails, and is asked again through the worker's other connection (a `503` if that
//!   fails too, never a session), and the worker dials anew.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use redis::{Cmd, ConnectionAddr, ConnectionInfo, RedisError, RedisResult, Value};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

/// The name a lookup link gives itself (`CLIENT SETNAME`), as `CLIENT LIST` shows it.
const CLIENT_NAME: &str = "actix-login-lookup";

/// How a lookup link reaches its server: host, port and the handshake the URL asks for.
#[derive(Clone)]
pub(super) struct LookupDial {
    host: String,
    port: u16,
    /// The database the URL selects.
    db: i64,
    /// `AUTH` and `SELECT`, when the URL asks for them.
    handshake: Vec<Cmd>,
}

impl LookupDial {
    /// How to dial the server `info` names, if a lookup link can reach it: plain TCP and
    /// RESP2 only.
    pub(super) fn for_server(info: &ConnectionInfo) -> Option<Self> {
        let ConnectionAddr::Tcp(host, port) = info.addr() else {
            return None;
        };
        let settings = info.redis_settings();
        if settings.protocol() != redis::ProtocolVersion::RESP2 {
            return None;
        }
        let mut handshake = Vec::new();
        if let Some(password) = settings.password() {
            let mut auth = redis::cmd("AUTH");
            if let Some(username) = settings.username() {
                auth.arg(username);
            }
            auth.arg(password);
            handshake.push(auth);
        }
        if settings.db() != 0 {
            let mut select = redis::cmd("SELECT");
            select.arg(settings.db());
            handshake.push(select);
        }
        Some(Self {
            host: host.clone(),
            port: *port,
            db: settings.db(),
            handshake,
        })
    }

    /// Connects, runs the handshake, learns which server answers (its `run_id`) and starts
    /// the link's driver on the current runtime, all within `within`.
    pub(super) async fn connect(&self, within: Duration) -> io::Result<LookupLink> {
        tokio::time::timeout(within, self.connect_now())
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connecting timed out"))?
    }

    async fn connect_now(&self) -> io::Result<LookupLink> {
        let stream = TcpStream::connect((self.host.as_str(), self.port)).await?;
        stream.set_nodelay(true)?;
        let (sender, requests) = mpsc::unbounded_channel();
        let open = Arc::new(AtomicBool::new(true));
        tokio::spawn(drive(stream, requests, Arc::clone(&open)));
        // Before the handshake tells which server it reaches.
        let mut link = LookupLink {
            sender,
            status: Arc::new(Status {
                open,
                server: String::new(),
            }),
            db: self.db,
        };
        let ask = |command: &Cmd| {
            let answer = link.query(command);
            async move { answer.await.and_then(Value::extract_error) }
        };
        for command in &self.handshake {
            ask(command).await.map_err(io::Error::other)?;
        }
        // So that `CLIENT LIST` tells these connections apart. A user whose ACL denies
        // `CLIENT` still gets the link: the name is for operators, not for the store.
        let mut name = redis::cmd("CLIENT");
        name.arg("SETNAME").arg(CLIENT_NAME);
        match ask(&name).await {
            Ok(_) => {}
            Err(refused) if refused.code().is_some() => {
                tracing::debug!(error = %refused, "a lookup connection could not be named");
            }
            Err(err) => return Err(io::Error::other(err)),
        }
        let mut info = redis::cmd("INFO");
        info.arg("server");
        let info = ask(&info).await.map_err(io::Error::other)?;
        let server = crate::store::server_info::run_id(&super::connection::info_text(info))
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "INFO without a run_id"))?
            .to_owned();
        link.status = Arc::new(Status {
            open: Arc::clone(&link.status.open),
            server,
        });
        Ok(link)
    }
}

/// A handle on a lookup link; clones share the connection.
#[derive(Clone)]
pub(super) struct LookupLink {
    sender: mpsc::UnboundedSender<Request>,
    status: Arc<Status>,
    db: i64,
}

/// Whether a link may still be used, and the server it reaches.
struct Status {
    /// Cleared when the driver ends, or when the link is [retired](Watch::retire).
    open: Arc<AtomicBool>,
    /// The `run_id` of the server that answered the handshake.
    server: String,
}

/// A check on a link that does not keep it open: [`LookupLink::watch`].
pub(super) struct Watch(Weak<Status>);

impl Watch {
    /// The `run_id` of the link's server, while the link is open and a handle on it is left.
    pub(super) fn server(&self) -> Option<String> {
        let status = self.0.upgrade()?;
        let open = status.open.load(Ordering::Acquire);
        open.then(|| status.server.clone())
    }

    /// Stops the link from being used: every handle finds it closed and sends nothing more
    /// on it (a lookup then reads through the worker's other link), and the worker dials
    /// another. Commands already sent on it are still answered.
    pub(super) fn retire(&self) {
        if let Some(status) = self.0.upgrade() {
            status.open.store(false, Ordering::Release);
        }
    }
}

/// One command on its way: its bytes, and where its reply goes.
struct Request {
    packed: Vec<u8>,
    reply: oneshot::Sender<RedisResult<Value>>,
}

impl LookupLink {
    /// Whether the link may still be used; once `false`, it never will.
    pub(super) fn is_open(&self) -> bool {
        self.status.open.load(Ordering::Acquire)
    }

    /// The `run_id` of the server the link reaches.
    pub(super) fn server(&self) -> &str {
        &self.status.server
    }

    /// A check on this link for as long as a handle on it is left.
    pub(super) fn watch(&self) -> Watch {
        Watch(Arc::downgrade(&self.status))
    }

    /// The database the link selected.
    pub(super) fn db(&self) -> i64 {
        self.db
    }

    /// Sends one command and waits for its reply, a server error as a
    /// [`Value::ServerError`], as a redis-rs connection answers (`query_async` makes it an
    /// error). The command is sent at once, before the future is first polled.
    pub(super) fn query(
        &self,
        cmd: &Cmd,
    ) -> impl std::future::Future<Output = RedisResult<Value>> + Send + 'static {
        let (reply, answer) = oneshot::channel();
        let packed = cmd.get_packed_command();
        // A retired link sends nothing more, though its socket is still open.
        let sent = self.is_open() && self.sender.send(Request { packed, reply }).is_ok();
        async move {
            if !sent {
                return Err(closed());
            }
            answer.await.map_err(|_| closed())?
        }
    }
}

fn closed() -> RedisError {
    RedisError::from(io::Error::new(
        io::ErrorKind::BrokenPipe,
        "the lookup connection closed",
    ))
}

/// Writes what is sent, reads what comes back, and hands each reply to the command that waits
/// for it, in order, until the socket fails or every handle is gone.
async fn drive(
    mut stream: TcpStream,
    mut requests: mpsc::UnboundedReceiver<Request>,
    open: Arc<AtomicBool>,
) {
    // Also when the task is dropped with its runtime.
    let _closed = Closed(open);
    let mut link = Driver::default();
    let ended = poll_fn(|cx| link.poll(cx, &mut stream, &mut requests)).await;
    requests.close();
    let failure = match ended {
        Ok(()) => return,
        Err(err) => err,
    };
    tracing::debug!(error = %failure, "a lookup connection ended");
    let kind = failure.kind();
    for waiting in link.waiting.drain(..) {
        let _ = waiting.send(Err(RedisError::from(io::Error::new(
            kind,
            "the lookup connection failed",
        ))));
    }
    while let Ok(request) = requests.try_recv() {
        let _ = request.reply.send(Err(closed()));
    }
}

/// Marks the link closed when the driver ends, however it ends.
struct Closed(Arc<AtomicBool>);

impl Drop for Closed {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

#[derive(Default)]
struct Driver {
    /// Bytes still to write.
    out: Vec<u8>,
    /// How many of `out` are written.
    written: usize,
    /// Bytes read and not yet parsed: the first `filled` of `read`, whose length is its
    /// capacity (zeroed once, when it grows, rather than before every read).
    read: Vec<u8>,
    filled: usize,
    /// The commands sent, oldest first, waiting for their replies.
    waiting: VecDeque<oneshot::Sender<RedisResult<Value>>>,
}

/// Bytes read from the socket at once.
const READ_CHUNK: usize = 4096;

impl Driver {
    fn poll(
        &mut self,
        cx: &mut Context<'_>,
        stream: &mut TcpStream,
        requests: &mut mpsc::UnboundedReceiver<Request>,
    ) -> Poll<io::Result<()>> {
        loop {
            match requests.poll_recv(cx) {
                Poll::Ready(Some(request)) => {
                    self.out.extend_from_slice(&request.packed);
                    self.waiting.push_back(request.reply);
                }
                // Every handle is gone: nothing more can be sent, and a command still waiting
                // (a lookup holds a handle while it waits, so none normally is) fails as closed.
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Pending => break,
            }
        }
        while self.written < self.out.len() {
            match Pin::new(&mut *stream).poll_write(cx, &self.out[self.written..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => self.written += n,
                Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
                Poll::Pending => break,
            }
        }
        if self.written == self.out.len() {
            self.out.clear();
            self.written = 0;
        }
        loop {
            if self.read.len() - self.filled < READ_CHUNK {
                // Doubling, so that a long reply takes few reads and zeroing stays linear.
                let more = READ_CHUNK.max(self.filled);
                self.read.resize(self.filled + more, 0);
            }
            let mut buf = ReadBuf::new(&mut self.read[self.filled..]);
            let polled = Pin::new(&mut *stream).poll_read(cx, &mut buf);
            let arrived = buf.filled().len();
            self.filled += arrived;
            match polled {
                Poll::Ready(Ok(())) if arrived == 0 => {
                    return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()))
                }
                Poll::Ready(Ok(())) => self.deliver()?,
                Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
                Poll::Pending => break,
            }
        }
        Poll::Pending
    }

    /// Hands every complete reply read so far to the command waiting for it.
    fn deliver(&mut self) -> io::Result<()> {
        let mut consumed = 0;
        let read = &self.read[..self.filled];
        loop {
            // A reply longer than one read is checked for completeness before its values are
            // built, so that one arriving over many reads is not built again after each.
            if read.len() - consumed > READ_CHUNK && reply::extent(read, consumed)?.is_none() {
                break;
            }
            let Some((value, end)) = reply::parse(read, consumed)? else {
                break;
            };
            consumed = end;
            // A reply nobody sent a command for: the stream is not what this link thinks.
            let waiting = self.waiting.pop_front().ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidData, "a reply no command asked for")
            })?;
            // The command may have timed out and gone; its reply is read all the same.
            let _ = waiting.send(Ok(value));
        }
        self.read.copy_within(consumed..self.filled, 0);
        self.filled -= consumed;
        Ok(())
    }
}

/// Reading RESP2 replies.
mod reply {
    use std::io;

    use redis::Value;

    /// Arrays nested deeper than this are refused: a lookup's replies are flat.
    const MAX_DEPTH: usize = 8;

    /// The longest bulk string accepted, Redis's own limit (`proto-max-bulk-len`'s default).
    const MAX_BULK: usize = 512 * 1024 * 1024;

    /// The reply that starts at `pos` in `buf` and where it ends, or `None` if it has not fully
    /// arrived.
    pub(super) fn parse(buf: &[u8], pos: usize) -> io::Result<Option<(Value, usize)>> {
        frame(buf, pos, 0, Build::Values)
    }

    /// Where the reply that starts at `pos` in `buf` ends, or `None` if it has not fully
    /// arrived: [`parse`]'s checks, without building its values.
    pub(super) fn extent(buf: &[u8], pos: usize) -> io::Result<Option<usize>> {
        Ok(frame(buf, pos, 0, Build::Nothing)?.map(|(_, end)| end))
    }

    /// Whether [`frame`] builds the values it reads, or only finds where they end.
    #[derive(Clone, Copy, PartialEq)]
    enum Build {
        Values,
        /// Each value is read as [`Value::Nil`].
        Nothing,
    }

    fn frame(
        buf: &[u8],
        pos: usize,
        depth: usize,
        build: Build,
    ) -> io::Result<Option<(Value, usize)>> {
        let Some(&kind) = buf.get(pos) else {
            return Ok(None);
        };
        let Some((line, next)) = line(buf, pos + 1)? else {
            return Ok(None);
        };
        match kind {
            b'$' => {
                let len = length(line)?;
                let Some(len) = len else {
                    return Ok(Some((Value::Nil, next)));
                };
                if len > MAX_BULK {
                    return Err(malformed("a bulk string longer than Redis allows"));
                }
                let end = next + len;
                if buf.len() < end + 2 {
                    return Ok(None);
                }
                if &buf[end..end + 2] != b"\r\n" {
                    return Err(malformed("a bulk string without its line end"));
                }
                let value = match build {
                    Build::Values => Value::BulkString(buf[next..end].to_vec()),
                    Build::Nothing => Value::Nil,
                };
                Ok(Some((value, end + 2)))
            }
            b'*' => {
                let Some(count) = length(line)? else {
                    return Ok(Some((Value::Nil, next)));
                };
                if depth >= MAX_DEPTH {
                    return Err(malformed("arrays nested too deep"));
                }
                // Each element takes at least three bytes: no more can be in what has arrived.
                let room = match build {
                    Build::Values => count.min((buf.len() - next) / 3),
                    Build::Nothing => 0,
                };
                let mut items = Vec::with_capacity(room);
                let mut at = next;
                for _ in 0..count {
                    match frame(buf, at, depth + 1, build)? {
                        Some((item, end)) => {
                            if build == Build::Values {
                                items.push(item);
                            }
                            at = end;
                        }
                        None => return Ok(None),
                    }
                }
                Ok(Some((Value::Array(items), at)))
            }
            b':' => {
                let number = std::str::from_utf8(line)
                    .ok()
                    .and_then(|text| text.parse().ok())
                    .ok_or_else(|| malformed("an integer that is not one"))?;
                Ok(Some((Value::Int(number), next)))
            }
            // Rare here (the handshake's `+OK`, an error): redis-rs reads them, so that an
            // error carries the kind and code redis-rs gives it everywhere else.
            b'+' | b'-' if build == Build::Nothing => Ok(Some((Value::Nil, next))),
            b'+' | b'-' => redis::parse_redis_value(&buf[pos..next])
                .map(|value| Some((value, next)))
                .map_err(io::Error::other),
            _ => Err(malformed("a reply of a type RESP2 does not have")),
        }
    }

    /// The line that starts at `pos`, without its `\r\n`, and where the next one starts;
    /// `Ok(None)` if it has not fully arrived. A line holds no `\r`.
    fn line(buf: &[u8], pos: usize) -> io::Result<Option<(&[u8], usize)>> {
        let rest = buf.get(pos..).unwrap_or_default();
        let Some(end) = rest.iter().position(|&byte| byte == b'\r') else {
            return Ok(None);
        };
        match rest.get(end + 1) {
            None => Ok(None),
            Some(b'\n') => Ok(Some((&rest[..end], pos + end + 2))),
            Some(_) => Err(malformed("a line with a carriage return in it")),
        }
    }

    /// A length: `None` for `-1`, Redis's nil.
    fn length(line: &[u8]) -> io::Result<Option<usize>> {
        if line == b"-1" {
            return Ok(None);
        }
        if line.is_empty() || line.len() > 19 || !line.iter().all(u8::is_ascii_digit) {
            return Err(malformed("a length that is not one"));
        }
        Ok(Some(
            line.iter()
                .fold(0, |n, digit| n * 10 + usize::from(digit - b'0')),
        ))
    }

    fn malformed(what: &str) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, format!("Redis sent {what}"))
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn whole(bytes: &[u8]) -> Value {
            match parse(bytes, 0) {
                Ok(Some((value, end))) => {
                    assert_eq!(end, bytes.len(), "the frame ends where the bytes do");
                    value
                }
                other => panic!("{bytes:?} parsed as {other:?}"),
            }
        }

        #[test]
        fn a_lookup_reply_reads_as_redis_rs_reads_it() {
            let reply = b"*4\r\n$3\r\nabc\r\n$-1\r\n$0\r\n\r\n$13\r\n1700000000000\r\n";
            assert_eq!(whole(reply), redis::parse_redis_value(reply).unwrap());
            assert_eq!(
                whole(reply),
                Value::Array(vec![
                    Value::BulkString(b"abc".to_vec()),
                    Value::Nil,
                    Value::BulkString(Vec::new()),
                    Value::BulkString(b"1700000000000".to_vec()),
                ])
            );
        }

        #[test]
        fn every_resp2_frame_reads_as_redis_rs_reads_it() {
            let frames: [&[u8]; 9] = [
                b"+OK\r\n",
                b"-ERR unknown command\r\n",
                b"-NOSCRIPT No matching script\r\n",
                b":-42\r\n",
                b"$-1\r\n",
                b"*-1\r\n",
                b"*0\r\n",
                b"*2\r\n*1\r\n:1\r\n$2\r\n\r\n\r\n",
                b"$4\r\na\r\nb\r\n",
            ];
            for frame in frames {
                assert_eq!(
                    whole(frame),
                    redis::parse_redis_value(frame).unwrap(),
                    "{frame:?}"
                );
            }
        }

        #[test]
        fn a_reply_cut_anywhere_waits_for_the_rest() {
            let reply = b"*3\r\n$5\r\nhello\r\n:7\r\n-ERR no\r\n";
            for cut in 0..reply.len() {
                assert!(matches!(parse(&reply[..cut], 0), Ok(None)), "cut at {cut}");
            }
            assert!(matches!(parse(reply, 0), Ok(Some((_, end))) if end == reply.len()));
        }

        #[test]
        fn replies_follow_one_another() {
            let bytes = b"$1\r\na\r\n:2\r\n";
            let (first, end) = parse(bytes, 0).unwrap().unwrap();
            assert_eq!(first, Value::BulkString(b"a".to_vec()));
            let (second, end) = parse(bytes, end).unwrap().unwrap();
            assert_eq!((second, end), (Value::Int(2), bytes.len()));
        }

        #[test]
        fn malformed_frames_are_refused_not_waited_for() {
            let nested = format!("{}:1\r\n", "*1\r\n".repeat(MAX_DEPTH + 1));
            let hostile: [&[u8]; 9] = [
                b"$-2\r\n",
                b"$abc\r\n",
                b"$\r\n",
                b"$3\r\nabcXY",
                b"*+1\r\n",
                b":x\r\n",
                b"%1\r\n",
                b"+O\rK\r\n",
                nested.as_bytes(),
            ];
            for bytes in hostile {
                assert!(parse(bytes, 0).is_err(), "{bytes:?}");
            }
            let too_long = format!("${}\r\n", MAX_BULK + 1);
            assert!(parse(too_long.as_bytes(), 0).is_err());
        }

        #[test]
        fn the_extent_of_a_reply_is_where_parsing_it_ends() {
            let replies: [&[u8]; 6] = [
                b"*4\r\n$3\r\nabc\r\n$-1\r\n$0\r\n\r\n:12\r\n",
                b"*2\r\n*1\r\n+OK\r\n-ERR x\r\n",
                b"$5\r\nhello\r\n",
                b"*-1\r\n",
                b"*2\r\n$3\r\nabcXY:1\r\n",
                b"*1\r\n$-7\r\n",
            ];
            for reply in replies {
                for cut in 0..=reply.len() {
                    let bytes = &reply[..cut];
                    let parsed = parse(bytes, 0).map(|read| read.map(|(_, end)| end));
                    let extent = extent(bytes, 0);
                    assert_eq!(format!("{parsed:?}"), format!("{extent:?}"), "{bytes:?}");
                }
            }
        }

        #[test]
        fn a_huge_announced_array_allocates_for_what_arrived() {
            // Two elements arrived of a billion announced: no reply yet, and no gigabytes.
            assert!(matches!(parse(b"*1000000000\r\n:1\r\n:2\r\n", 0), Ok(None)));
        }
    }
}

/// The link against a peer that is not Redis: what real Redis never sends (a reply nobody asked
/// for, bytes that are no reply), and replies cut at awkward places.
#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpListener;

    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    /// A link to a peer, and the peer's end, after the handshake (`CLIENT SETNAME` and
    /// `INFO server`, answered).
    async fn linked() -> (LookupLink, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dial = LookupDial {
            host: "127.0.0.1".to_owned(),
            port: listener.local_addr().unwrap().port(),
            db: 0,
            handshake: Vec::new(),
        };
        let peer = async {
            let (mut peer, _) = listener.accept().await.unwrap();
            peer.set_nodelay(true).unwrap();
            read_command(&mut peer).await;
            peer.write_all(b"+OK\r\n").await.unwrap();
            read_command(&mut peer).await;
            peer.write_all(b"$25\r\n# Server\r\nrun_id:peer-1\r\n\r\n")
                .await
                .unwrap();
            peer
        };
        let (link, peer) = tokio::join!(dial.connect(Duration::from_secs(5)), peer);
        let link = link.unwrap();
        assert_eq!(link.server(), "peer-1");
        (link, peer)
    }

    /// Reads one command's worth of bytes (the tests send short ones, each in one write).
    async fn read_command(peer: &mut TcpStream) -> Vec<u8> {
        let mut buf = vec![0; 1024];
        let n = peer.read(&mut buf).await.unwrap();
        buf.truncate(n);
        buf
    }

    async fn closes(link: &LookupLink) -> bool {
        for _ in 0..100 {
            if !link.is_open() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    fn get(key: &str) -> Cmd {
        let mut get = redis::cmd("GET");
        get.arg(key);
        get
    }

    #[test]
    fn replies_reach_their_commands_in_order_however_they_are_cut() {
        runtime().block_on(async {
            let (link, mut peer) = linked().await;
            let replies = b"$1\r\na\r\n*2\r\n$-1\r\n:5\r\n-ERR no\r\n";
            let answer = async {
                let mut asked = Vec::new();
                while asked.len() < 3 * get("k").get_packed_command().len() {
                    asked.extend(read_command(&mut peer).await);
                }
                // A byte at a time, each read by the link before the next is sent.
                for byte in replies {
                    peer.write_all(&[*byte]).await.unwrap();
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            };
            let (first, second, third, ()) = tokio::join!(
                link.query(&get("k")),
                link.query(&get("k")),
                link.query(&get("k")),
                answer
            );
            assert_eq!(first.unwrap(), Value::BulkString(b"a".to_vec()));
            assert_eq!(
                second.unwrap(),
                Value::Array(vec![Value::Nil, Value::Int(5)])
            );
            // As a redis-rs connection answers it: `query_async` makes it the error.
            assert!(
                matches!(third, Ok(Value::ServerError(ref err)) if err.code() == "ERR"),
                "{third:?}"
            );
            assert!(link.is_open());
        });
    }

    #[test]
    fn bytes_that_are_no_reply_end_the_link_and_fail_the_command() {
        runtime().block_on(async {
            let (link, mut peer) = linked().await;
            let answer = async {
                read_command(&mut peer).await;
                peer.write_all(b"%1\r\n").await.unwrap();
            };
            let (reply, ()) = tokio::join!(link.query(&get("k")), answer);
            assert!(reply.is_err(), "{reply:?}");
            assert!(closes(&link).await);
            assert!(link.query(&get("k")).await.is_err());
        });
    }

    #[test]
    fn a_reply_no_command_asked_for_ends_the_link() {
        runtime().block_on(async {
            let (link, mut peer) = linked().await;
            peer.write_all(b"$1\r\nx\r\n").await.unwrap();
            assert!(closes(&link).await);
        });
    }

    #[test]
    fn a_peer_that_closes_fails_the_waiting_command_and_ends_the_link() {
        runtime().block_on(async {
            let (link, mut peer) = linked().await;
            let answer = async {
                read_command(&mut peer).await;
                drop(peer);
            };
            let (reply, ()) = tokio::join!(link.query(&get("k")), answer);
            assert!(reply.is_err(), "{reply:?}");
            assert!(closes(&link).await);
        });
    }

    #[test]
    fn the_link_ends_when_its_last_handle_goes() {
        runtime().block_on(async {
            let (link, mut peer) = linked().await;
            drop(link);
            let mut buf = [0; 16];
            let read = tokio::time::timeout(Duration::from_secs(5), peer.read(&mut buf)).await;
            assert!(
                matches!(read, Ok(Ok(0))),
                "the peer sees the socket close: {read:?}"
            );
        });
    }
}
