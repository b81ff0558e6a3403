//! The Redis store.
//!
//! [`RedisStore`] and its [`SessionStore`] implementation live here; the rest is split by
//! concern: how it is configured and connected ([`builder`](RedisStoreBuilder)), the connection
//! over each kind of deployment, the stored bytes, the per-user index, the throttle counters,
//! Sentinel failover and TLS.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use redis::aio::ConnectionLike;
use redis::Value;

use serde_json::value::RawValue;

use self::codec::{
    data_size, decode_hash, decode_head, decode_named, decode_reply, encode_deadline, ttl_millis,
    Head, Named, Oddity, DEADLINE, HEAD_PIECES, RECORD_PIECES, SIZE, USER,
};
use self::connection::Connection;
use self::data::{DataNames, LargeData};
use self::index::Moved;
use self::local_cache::Cache;
use super::{
    Admission, Carry, Counter, DataWrite, LoadedSession, SessionStore, StoredSession, UserSessions,
};
use crate::error::StoreError;
use crate::record::{
    ActivityEntry, ActivityLimits, DataChange, LinkKey, LinkRecord, SessionData, SessionKey,
    SessionRecord,
};
use crate::telemetry;

mod activity;
#[cfg(feature = "actix-session")]
mod actix_session;
mod builder;
mod claims;
mod codec;
mod connection;
mod credentials;
mod data;
#[cfg(test)]
mod hostile_input;
mod index;
mod links;
mod local_cache;
mod lookup_link;
mod scripts;
#[cfg(feature = "sentinel")]
mod sentinel;
mod throttle;
mod tls;
mod user_agent;

#[cfg(feature = "actix-session")]
#[cfg_attr(docsrs, doc(cfg(feature = "actix-session")))]
pub use self::actix_session::{ActixSessionFailClosed, ActixSessionStore};
pub use self::builder::RedisStoreBuilder;
use self::builder::ReplicaWait;

/// The most data, in bytes as [`SessionData::size`] counts them, that a read of a session brings
/// along unasked ([`SessionStore::load_with_data`], and every fill of the local cache). More
/// is read when a handler asks for it, with one more round trip.
pub(crate) const DATA_READ_WITH_RECORD: usize = 4096;

/// Keeps sessions in Redis.
///
/// One session is one Redis hash, `{prefix}:s:{{group}}{digest}`: the [`SessionKey`] of its
/// token, whose group is the cluster hash tag, so that a session and the key it rotates to
/// live on the same node and move in one script. The hash holds the JSON-encoded
/// [`SessionRecord`], the idle deadline (Unix milliseconds), a live update of the profile and
/// roles if there was one, and each value of the session's data in a field of its own, with a
/// TTL that ends at the idle deadline. Each part changes on its own: refreshing the deadline
/// writes the deadline and the TTL, never the data; a data write touches only its fields.
/// Each user's sessions are indexed in a hash, `{prefix}:u:{user id}`, whose fields are those
/// keys (with empty values: on Redis 7.0 a small hash is a compact listpack, a set of strings
/// never is), and whose TTL
/// is kept at or past the absolute end of its longest-lived session; anonymous sessions are
/// in no index. The raw token is never sent to Redis. Needs Redis 7.0 or newer (`PEXPIRE …
/// NX`/`GT`, on the index only). Every write that must not bring a session back is a Lua
/// script that checks the session and writes in one step (sent with `EVALSHA`).
///
/// | operation | commands | round trips |
/// |---|---|---|
/// | [`load`](SessionStore::load) | `HMGET` of the record's first two pieces, update, deadline; for a record longer than those (a profile over about 60 bytes) a second `HMGET` of all four; nothing on a [local cache](RedisStoreBuilder::local_cache) hit | 0–2 |
/// | [`load_with_data`](SessionStore::load_with_data) | `HMGET` as `load`'s (two pieces first, all four for a longer record) with the data's size and each data name this process has met (up to 8, of up to 64 bytes), the data kept when it is at most 4 KiB (as [`SessionData::size`] counts it); then `HGETALL` if the session holds a name not asked for (about once per name and process); `HGETALL` alone once the process has met more than 8 names, or one longer than 64 bytes; `HMGET` of the record for a session this process has seen with more than 4 KiB; nothing on a local cache hit | 0–3 |
/// | [`extend`](SessionStore::extend) | a script (`HSET` of the deadline, `PEXPIRE`); then `PING` (`EXISTS` on a cluster) with a local cache | 1–2 |
/// | [`load_data`](SessionStore::load_data) | `HGETALL` | 1 |
/// | [`write_data`](SessionStore::write_data) | a script (checks, sizes and writes); then as `delete` settles | 1–2 |
/// | [`update_user`](SessionStore::update_user) | a script; one more per rotation it follows; then as `delete` settles | 1–3 |
/// | [`create`](SessionStore::create) | a script (`HSET`, `PEXPIRE`, and on one server `HSET` of the index, `PEXPIRE … NX`, `PEXPIRE … GT`) | 1; 2 on a cluster |
/// | [`delete`](SessionStore::delete) | `DEL` (with `WAIT` in the same round trip when [waiting for replicas](RedisStoreBuilder::wait_for_replicas)); then `INFO server` with a local cache on one server, else `PING` (`EXISTS` of the key on a cluster) unless [`peer_caches(false)`](RedisStoreBuilder::peer_caches) | 1–2 |
/// | [`list`](SessionStore::list) | `HKEYS` of the index; `HMGET` of each member (one pipeline; on a cluster one command each, which also asks for the moving mark, and a second `HMGET` of the copy for a member half-way through a rotation); `PTTL` of those past their deadline; `HDEL` of dead members | 2–5 |
/// | [`rotate`](SessionStore::rotate) | a script copying the session and indexing the copy; as `delete` for the old key; `HDEL` old | 3–4 |
///
/// The `PING` (or `INFO server`) after a write waits until Redis has sent that write's
/// invalidations to every tracking cache (see [`RedisStoreBuilder::peer_caches`]); it is sent
/// unless the app promised that no instance caches. On a cluster it is an `EXISTS` of the key
/// written, so that it reaches the node the write went to. With a local cache on one server, a
/// delete settles with `INFO server`, whose `run_id` tells the cache whether it tracks the
/// server the delete went to. `list` deletes a dead record it finds as `delete` does; a record
/// past the deadline in its value is dead only if Redis agrees (the key has no TTL), since app
/// hosts' clocks may run ahead of the one that set the TTL.
///
/// All clones share one multiplexed connection that reconnects by itself after Redis restarts;
/// on a standalone server or a cluster, each current-thread runtime (each Actix worker) that
/// uses the store also opens one of its own, so that a request's commands are sent and answered
/// on its worker's thread rather than through the thread that opened the store. On a standalone
/// server reached over plain TCP, a worker opens a second one for its session lookups, named
/// `actix-login-lookup` in `CLIENT LIST`, whose replies the store reads itself, used while it
/// reaches the same server as the worker's other one: plan `maxclients` for up to 1 + 2 × workers
/// per process, plus a [local cache](RedisStoreBuilder::local_cache)'s tracking connection.
/// Every command is bounded by a timeout (1 s unless set with
/// [`RedisStoreBuilder::command_timeout`]), so a hung or unreachable Redis makes requests fail
/// with `503 Service Unavailable` instead of hanging.
///
/// ```no_run
/// # async fn run() -> Result<(), actix_login::StoreError> {
/// use std::time::Duration;
/// use actix_login::RedisStore;
///
/// let store = RedisStore::builder("redis://127.0.0.1:6379")
///     .key_prefix("myapp")
///     .command_timeout(Duration::from_millis(500))
///     .connect()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisStore {
    connection: Connection,
    /// The local cache, if any; a stand-in that is never there without the `local-cache`
    /// feature.
    cache: Cache,
    /// Whether a session-ending `DEL` waits for its invalidations to be sent; see
    /// [`RedisStore::settle`].
    settle_deletes: bool,
    /// Whether a session-ending `DEL` must reach replicas; see
    /// [`RedisStoreBuilder::wait_for_replicas`].
    replica_wait: Option<ReplicaWait>,
    /// Sessions seen with more data than a read brings along unasked.
    large_data: Arc<LargeData>,
    /// The data names a lookup asks for.
    data_names: Arc<DataNames>,
    prefix: Arc<str>,
    command_timeout: Duration,
}

impl fmt::Debug for RedisStore {
    // The connection's debug output would include the server address and credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .field("command_timeout", &self.command_timeout)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// The Redis key for a session: `{prefix}:s:{{group}}{digest}`.
    pub fn session_key(&self, key: &SessionKey) -> String {
        // Built by hand: it runs on every authenticated request, and `format!` costs more.
        let (group, digest) = key.parts();
        let mut name = String::with_capacity(self.prefix.len() + 5 + group.len() + digest.len());
        name.push_str(&self.prefix);
        name.push_str(":s:{");
        name.push_str(group);
        name.push('}');
        name.push_str(digest);
        name
    }

    /// `HMGET` of all the fields a session's record is made of.
    fn record_fields(&self, key: &SessionKey) -> redis::Cmd {
        read_record(&self.session_key(key), Pieces::All, [])
    }

    /// The Redis key of a throttling counter. All counters share the hash tag `{throttle}`, so
    /// one script can check and count them together, on one node even in a cluster.
    pub fn counter_key(&self, counter: &str) -> String {
        format!("{}:{{throttle}}:{counter}", self.prefix)
    }

    /// The Redis key of a user's session index.
    pub fn user_index_key(&self, user_id: &str) -> String {
        format!("{}:u:{user_id}", self.prefix)
    }

    /// The session stored under `redis_key`, read through `conn`: the record's first pieces,
    /// which hold a typical record whole, and all of them only when the record goes on.
    async fn fetch(
        &self,
        conn: &mut impl ConnectionLike,
        redis_key: &str,
    ) -> Result<Option<StoredSession>, StoreError> {
        let read = read_record(redis_key, Pieces::Head, []);
        let reply = self.read_values(&mut *conn, read).await?;
        match decode_head(&reply)? {
            Head::Read(stored) => Ok(stored),
            Head::Longer => self.fetch_whole(conn, redis_key).await,
        }
    }

    /// The session stored under `redis_key`, read through `conn` with all of its record's
    /// pieces.
    async fn fetch_whole(
        &self,
        conn: &mut impl ConnectionLike,
        redis_key: &str,
    ) -> Result<Option<StoredSession>, StoreError> {
        let hmget = read_record(redis_key, Pieces::All, []);
        let reply: Vec<Option<Vec<u8>>> = self.run(hmget.query_async(conn)).await?;
        decode_reply(reply)
    }

    /// The reply to a [`read_record`], as values to decode in place (converting it first would
    /// copy it).
    ///
    /// It asks for no moving mark: a cluster's rotation takes the old key's record away in the
    /// step that marks it (see [`scripts::MOVE`]), so a marked key reads as no session like a
    /// deleted one, and every lookup is spared a value that is nearly always nil.
    async fn read_values(
        &self,
        conn: &mut impl ConnectionLike,
        hmget: redis::Cmd,
    ) -> Result<Vec<Value>, StoreError> {
        match self.run(hmget.query_async(conn)).await? {
            Value::Array(reply) => Ok(reply),
            _ => Err(StoreError::corrupt("HMGET reply is not an array")),
        }
    }

    /// The session stored under `redis_key` and, if it is small, its data, read through `conn`.
    ///
    /// One `HMGET` of the record (its first two pieces; all four again for a longer record),
    /// the data's size and the data [names this process has met](DataNames); a session holding
    /// others is read again whole, with `HGETALL`, which is also the read once the names are
    /// too many. Either costs Redis about what the record's `HMGET` does, while a script
    /// choosing what to read would cost it several times more. A session this process has
    /// seen with more than [`DATA_READ_WITH_RECORD`] bytes of data is read without it, so that
    /// its data travels only to handlers that read it.
    async fn fetch_with_data(
        &self,
        conn: &mut impl ConnectionLike,
        redis_key: &str,
    ) -> Result<Option<LoadedSession>, StoreError> {
        if self.large_data.contains(redis_key) {
            let hmget = read_record(redis_key, Pieces::All, [SIZE]);
            let mut reply: Vec<Option<Vec<u8>>> = self.run(hmget.query_async(conn)).await?;
            // A size that is not a number leaves the session where it is: the next data write
            // counts the size anew.
            match data_size(reply.pop().flatten().as_deref()) {
                Some(size) => self.large_data.note(redis_key, size),
                None => Oddity::SizeNotNumber.warn_once(),
            }
            let stored = decode_reply(reply)?;
            return Ok(stored.map(|stored| LoadedSession { stored, data: None }));
        }
        if let Some(fields) = self.data_names.fields() {
            let mut named = self
                .fetch_named(conn, redis_key, Pieces::Head, &fields)
                .await?;
            if let Named::Longer = named {
                named = self
                    .fetch_named(conn, redis_key, Pieces::All, &fields)
                    .await?;
            }
            if let Named::Read(loaded, size) = named {
                self.large_data.note(redis_key, size);
                return Ok(loaded);
            }
        }
        let mut hgetall = redis::cmd("HGETALL");
        hgetall.arg(redis_key);
        let fields: Vec<(Vec<u8>, Vec<u8>)> = self.run(hgetall.query_async(conn)).await?;
        let (loaded, size) = decode_hash(fields, DATA_READ_WITH_RECORD)?;
        self.large_data.note(redis_key, size);
        if let Some(data) = loaded.as_ref().and_then(|loaded| loaded.data.as_ref()) {
            if data.size() != size {
                // Every write keeps them equal. A hash edited by hand, or written by a build that
                // counted otherwise, is read whole on every lookup until its data is cleared or
                // it ends (writes adjust the size they find).
                let counted = data.size();
                Oddity::SizeDisagrees {
                    recorded: size,
                    counted,
                }
                .warn_once();
            }
            self.data_names.meet(data.iter().map(|(name, _)| name));
        }
        Ok(loaded)
    }

    /// `HMGET` of the session under `redis_key`: its record's `pieces`, its live update,
    /// deadline and data size, and the data `fields`.
    async fn fetch_named(
        &self,
        conn: &mut impl ConnectionLike,
        redis_key: &str,
        pieces: Pieces,
        fields: &[String],
    ) -> Result<Named, StoreError> {
        let more = std::iter::once(SIZE).chain(fields.iter().map(String::as_str));
        let read = read_record(redis_key, pieces, more);
        let reply = self.read_values(conn, read).await?;
        decode_named(&reply, pieces.fields().len(), fields, DATA_READ_WITH_RECORD)
    }

    /// The session under `key` from the local cache's memory, without I/O, when the cache can
    /// vouch for it now; `None` without a cache, or when only a [`load`](SessionStore::load)
    /// can tell.
    #[cfg(feature = "local-cache")]
    pub(crate) fn cached(&self, key: &SessionKey) -> Option<LoadedSession> {
        if !self.cache.is_on() {
            return None;
        }
        self.cache.cached(&self.session_key(key))
    }

    /// The session under `redis_key` from the local cache, which holds small data too, filled
    /// through its tracking connection; `None` when there is no cache or it cannot answer.
    async fn load_cached(
        &self,
        redis_key: &str,
    ) -> Option<Result<Option<LoadedSession>, StoreError>> {
        // Boxed, as a fill is rare next to a hit. Inline, this read would make every lookup's
        // future (with a cache or without: its type is the same) 1.3 KiB instead of 0.7, and
        // the store boxes that future on every request: past about 1 KiB, glibc's allocator
        // skips its per-thread cache for a slow path that also sweeps its free lists.
        let through_tracking = |mut tracking: redis::aio::MultiplexedConnection| async move {
            Box::pin(self.fetch_with_data(&mut tracking, redis_key)).await
        };
        self.cache.load(redis_key, through_tracking).await
    }

    /// Returns once Redis has written the tracking invalidations for the writes this
    /// connection has seen answered.
    ///
    /// Redis writes invalidations in the event-loop pass that answers the write; a command sent
    /// after that answer is read in a later pass, so its reply means they are in every tracking
    /// process's socket, where a cached lookup looks first. Only worth its round trip when some
    /// process caches; `settle_deletes` says whether one does.
    ///
    /// The round trip must reach the server that took the write: on a cluster, the node that
    /// serves `redis_key`, the key written (or any key of its session group, which shares its
    /// hash tag). A `PING` would go to any node, so there it is `EXISTS` of the key, which the
    /// cluster connection routes by slot.
    async fn settle(&self, conn: &mut Connection, redis_key: &str) -> Result<(), StoreError> {
        if conn.is_single_node() {
            return self.run(redis::cmd("PING").query_async::<()>(conn)).await;
        }
        let mut exists = redis::cmd("EXISTS");
        exists.arg(redis_key);
        self.run(exists.query_async::<()>(conn)).await
    }

    /// Runs `write` and returns its reply once `wait.replicas` replicas have it too, or fails.
    ///
    /// `WAIT` counts the replicas that have every write this client sent before it. On one
    /// server the two go in one pipeline, so they share a connection (a reconnect in between
    /// would make the `WAIT` vouch for nothing) and a round trip.
    async fn write_on_replicas<T: redis::FromRedisValue>(
        &self,
        conn: &mut Connection,
        write: redis::Cmd,
        wait: ReplicaWait,
    ) -> Result<T, StoreError> {
        if !conn.is_single_node() {
            let reply = self.run(write.query_async(conn)).await?;
            self.wait_on_every_primary(conn, wait).await?;
            return Ok(reply);
        }
        let mut both = redis::pipe();
        both.add_command(write).add_command(wait.command());
        let (reply, acknowledged) = self
            .run_within(self.with_replicas(wait), both.query_async(conn))
            .await?;
        wait.check(acknowledged)?;
        Ok(reply)
    }

    /// Runs the script `write`, and where session-ending writes wait for replicas, returns only
    /// once they have it: in the same round trip on one server, with a `WAIT` to every primary
    /// after it on a cluster.
    async fn write_script<T: redis::FromRedisValue>(
        &self,
        conn: &mut Connection,
        write: &redis::ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        match self.replica_wait {
            None => self.run(write.invoke_async(conn)).await,
            Some(wait) if conn.is_single_node() => self.script_on_replicas(conn, write, wait).await,
            Some(wait) => {
                let reply = self.run(write.invoke_async(conn)).await?;
                self.wait_on_every_primary(conn, wait).await?;
                Ok(reply)
            }
        }
    }

    /// Runs the script `write` and returns its reply once `wait.replicas` replicas have it too,
    /// or fails: [`write_on_replicas`](Self::write_on_replicas) for a script, on one server.
    /// The script goes by SHA; a server that does not know it yet gets it loaded, and the pair
    /// is sent again (a `NOSCRIPT` reply means nothing ran).
    async fn script_on_replicas<T: redis::FromRedisValue>(
        &self,
        conn: &mut Connection,
        write: &redis::ScriptInvocation<'_>,
        wait: ReplicaWait,
    ) -> Result<T, StoreError> {
        let mut both = redis::pipe();
        both.invoke_script(write).add_command(wait.command());
        let (reply, acknowledged) = self
            .run_within(self.with_replicas(wait), async {
                match both.query_async(conn).await {
                    Err(err)
                        if err.kind()
                            == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
                    {
                        write.load_async(conn).await?;
                        both.query_async(conn).await
                    }
                    answered => answered,
                }
            })
            .await?;
        wait.check(acknowledged)?;
        Ok(reply)
    }

    /// A `WAIT` on a cluster, where the write before it went to one node: sent to every primary,
    /// answered with the smallest count.
    async fn wait_on_every_primary(
        &self,
        conn: &mut Connection,
        wait: ReplicaWait,
    ) -> Result<(), StoreError> {
        let acknowledged = self
            .run_within(self.with_replicas(wait), wait.command().query_async(conn))
            .await?;
        wait.check(acknowledged)
    }

    /// How long a write that waits for replicas may take: their time comes on top of the
    /// command timeout, not out of it.
    fn with_replicas(&self, wait: ReplicaWait) -> Duration {
        self.command_timeout + wait.timeout
    }

    /// [`settle`](Self::settle) after a session-ending delete of `redis_key`. With a local
    /// cache on one server, the round trip is `INFO server` instead of `PING`: it settles as
    /// well, and tells the cache which server the delete went to, so that a cache tracking
    /// another server (the store's connection moved on by itself) is emptied before this
    /// delete answers. On a cluster it settles on the key's node; each node's cache checks its
    /// server on its heartbeat.
    async fn settle_delete(
        &self,
        conn: &mut Connection,
        redis_key: &str,
    ) -> Result<(), StoreError> {
        if self.cache.is_on() && conn.is_single_node() {
            let info: redis::Value = self
                .run(redis::cmd("INFO").arg("server").query_async(conn))
                .await?;
            self.cache.confirm_server(&connection::info_text(info));
            return Ok(());
        }
        self.settle(conn, redis_key).await
    }

    /// Runs one Redis operation within the command timeout. Every command goes through here, so
    /// a hung Redis costs a request at most that long, whichever connection it hangs on.
    async fn run<T>(
        &self,
        operation: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        self.run_within(self.command_timeout, operation).await
    }

    /// [`run`](Self::run) with a longer bound, for a command that waits on purpose.
    async fn run_within<T>(
        &self,
        limit: Duration,
        operation: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        let command = telemetry::StoreCommand::start();
        let result = self.run_unmeasured(limit, operation).await;
        command.finish();
        if result.is_err() {
            telemetry::store_error("redis");
        }
        result
    }

    async fn run_unmeasured<T>(
        &self,
        limit: Duration,
        operation: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(limit, operation).await {
            Ok(Err(err)) if err.is_timeout() => {
                self.connection.unanswered();
                Err(StoreError::Timeout)
            }
            // Something else lives under the key (a string from another app, or written by
            // hand): no session can be read from it, which is the record's fault, not Redis's.
            Ok(Err(err)) if err.code() == Some("WRONGTYPE") => Err(StoreError::corrupt(err)),
            Ok(result) => result.map_err(StoreError::unavailable),
            Err(_elapsed) => {
                self.connection.unanswered();
                Err(StoreError::Timeout)
            }
        }
    }
}

/// Which of a record's pieces a read asks for.
#[derive(Clone, Copy, Debug)]
enum Pieces {
    /// The first [`HEAD_PIECES`]: all there is of a typical record.
    Head,
    /// All of them.
    All,
}

impl Pieces {
    /// The fields of the pieces asked for.
    fn fields(self) -> &'static [&'static str] {
        match self {
            Pieces::Head => &RECORD_PIECES[..HEAD_PIECES],
            Pieces::All => &RECORD_PIECES[..],
        }
    }
}

/// `HMGET` of the fields a session's record is made of, under `redis_key`: its `pieces`, the
/// live update and the deadline, then the `more` fields.
fn read_record<'a>(
    redis_key: &str,
    pieces: Pieces,
    more: impl IntoIterator<Item = &'a str>,
) -> redis::Cmd {
    let pieces = pieces.fields();
    // Sized up front: a lookup of every request builds this, and growing it costs allocations.
    let mut hmget = redis::Cmd::with_capacity(8, redis_key.len() + 32);
    hmget
        .arg("HMGET")
        .arg(redis_key)
        .arg(pieces)
        .arg(USER)
        .arg(DEADLINE);
    for field in more {
        hmget.arg(field);
    }
    hmget
}

impl SessionStore for RedisStore {
    async fn create(
        &self,
        key: &SessionKey,
        record: &SessionRecord,
        expires_at: SystemTime,
        data: &SessionData,
    ) -> Result<bool, StoreError> {
        index::create(self, key, record, expires_at, data).await
    }

    async fn load(&self, key: &SessionKey) -> Result<Option<StoredSession>, StoreError> {
        let redis_key = self.session_key(key);
        if let Some(answer) = self.load_cached(&redis_key).await {
            return answer.map(|loaded| loaded.map(|loaded| loaded.stored));
        }
        // No cache, or its tracking connection is down or failed; the main one may still work.
        self.fetch(&mut self.connection.for_lookup(), &redis_key)
            .await
    }

    async fn load_with_data(&self, key: &SessionKey) -> Result<Option<LoadedSession>, StoreError> {
        let redis_key = self.session_key(key);
        if let Some(answer) = self.load_cached(&redis_key).await {
            return answer;
        }
        self.fetch_with_data(&mut self.connection.for_lookup(), &redis_key)
            .await
    }

    async fn extend(&self, key: &SessionKey, expires_at: SystemTime) -> Result<bool, StoreError> {
        let mut conn = self.connection.clone();
        let mut extend = scripts::EXTEND.prepare_invoke();
        let redis_key = self.session_key(key);
        extend
            .key(&redis_key)
            .arg(encode_deadline(expires_at))
            .arg(ttl_millis(expires_at));
        let updated: i64 = self.run(extend.invoke_async(&mut conn)).await?;
        if updated == 1 && self.cache.is_on() {
            // So that this process's own cache shows the new deadline from now on.
            self.settle(&mut conn, &redis_key).await?;
        }
        Ok(updated == 1)
    }

    async fn load_data(&self, key: &SessionKey) -> Result<Option<SessionData>, StoreError> {
        data::load_data(self, key).await
    }

    async fn write_data(
        &self,
        key: &SessionKey,
        changes: &[DataChange],
        max_size: usize,
    ) -> Result<DataWrite, StoreError> {
        data::write_data(self, key, changes, max_size).await
    }

    async fn update_user(
        &self,
        key: &SessionKey,
        user: &RawValue,
        roles: &[String],
    ) -> Result<bool, StoreError> {
        data::update_user(self, key, user, roles).await
    }

    async fn delete(&self, key: &SessionKey) -> Result<bool, StoreError> {
        let mut conn = self.connection.clone();
        let redis_key = self.session_key(key);
        let mut del = redis::cmd("DEL");
        del.arg(&redis_key);
        let removed: i64 = match self.replica_wait {
            None => self.run(del.query_async(&mut conn)).await?,
            Some(wait) => self.write_on_replicas(&mut conn, del, wait).await?,
        };
        // With caches about, a logout is final on every instance before the client hears of it;
        // also when another instance's DEL won the race, since its invalidations went out in
        // the same pass.
        if self.settle_deletes {
            self.settle_delete(&mut conn, &redis_key).await?;
        }
        Ok(removed > 0)
    }

    async fn list(&self, user_id: &str) -> Result<UserSessions, StoreError> {
        let mut conn = self.connection.clone();
        let members: Vec<String> = self
            .run(
                redis::cmd("HKEYS")
                    .arg(self.user_index_key(user_id))
                    .query_async(&mut conn),
            )
            .await?;
        let mut indexed: Vec<(&str, SessionKey)> = Vec::with_capacity(members.len());
        let mut dead: Vec<&str> = Vec::new();
        for member in &members {
            match SessionKey::parse(member) {
                Some(key) => indexed.push((member, key)),
                None => dead.push(member),
            }
        }
        let keys: Vec<&SessionKey> = indexed.iter().map(|(_, key)| key).collect();
        let replies = if keys.is_empty() {
            Vec::new()
        } else {
            self.lookup_all(&keys).await?
        };
        let mut live = Vec::with_capacity(indexed.len());
        let mut doomed = Vec::new();
        if replies.len() != indexed.len() {
            return Err(StoreError::corrupt("short pipeline reply"));
        }
        let now = SystemTime::now();
        let mut past_deadline = Vec::new();
        // A key half-way through a rotation reads as its copy: once the copy is indexed too,
        // it lists itself, and the old entry is left alone (the rotation removes it, or the
        // mark's short TTL ends it should the rotation never finish). Only a copy that holds a
        // record is trusted to list itself: a copy gone, or a corrupt mark naming its own key,
        // reads as no session and is dropped, so that a mark keeps an entry no longer than its
        // copy lives.
        let copy_indexed = |copy: &SessionKey| indexed.iter().any(|(_, key)| key == copy);
        let entries: Vec<_> = replies
            .into_iter()
            .map(|listed| match &listed.moving_to {
                Some(copy)
                    if copy_indexed(copy) && listed.reply.first().is_some_and(Option::is_some) =>
                {
                    None
                }
                _ => Some(listed.reply),
            })
            .collect();
        for ((member, key), reply) in indexed.into_iter().zip(entries) {
            let Some(reply) = reply else { continue };
            match decode_reply(reply) {
                Ok(Some(stored)) if stored.expires_at <= now => past_deadline.push((member, key)),
                Ok(Some(stored)) if stored.record.user_id() == user_id => live.push((key, stored)),
                // Gone, or (after a key collision) someone else's: not this user's.
                Ok(_) => dead.push(member),
                Err(err) => {
                    // It can never authenticate anyone; remove it rather than skip it forever.
                    tracing::warn!(session = key.short(), error = %err, "removing unreadable session");
                    doomed.push(key);
                    dead.push(member);
                }
            }
        }
        if !past_deadline.is_empty() {
            // Past its deadline by this host's clock, which may run ahead of the clock of the
            // host that set its TTL: Redis's own expiry is the judge. A key that Redis will
            // expire by itself is left alone, indexed and unlisted (it still ends no later
            // than its TTL, and this host refuses it already); only one without a TTL, which
            // would never go, is deleted, before its entry is dropped, so that no record is
            // ever left unindexed for a revocation to miss.
            let keys: Vec<&SessionKey> = past_deadline.iter().map(|(_, key)| key).collect();
            let ttls = self.remaining_ttls(&keys).await?;
            if ttls.len() != past_deadline.len() {
                return Err(StoreError::corrupt("short pipeline reply"));
            }
            for ((member, key), ttl) in past_deadline.into_iter().zip(ttls) {
                match ttl {
                    -1 => {
                        doomed.push(key);
                        dead.push(member);
                    }
                    -2 => dead.push(member),
                    _ => {}
                }
            }
        }
        for key in &doomed {
            self.delete(key).await?;
        }
        // Dropping dead entries one exact member at a time never touches an entry that a
        // concurrent rotation has just added.
        self.unindex(user_id, &dead).await?;
        Ok(UserSessions {
            live,
            dropped: dead.len(),
        })
    }

    async fn rotate(
        &self,
        old: &SessionKey,
        new: &SessionKey,
        record: &SessionRecord,
        expires_at: SystemTime,
        carry: Carry,
    ) -> Result<bool, StoreError> {
        if old.group() != new.group() {
            return Err(StoreError::unavailable(
                "a session can only move to a key of its own group",
            ));
        }
        match self.copy_to(old, new, record, expires_at, carry).await? {
            Moved::NotThere => Ok(false),
            Moved::Complete => {
                if self.settle_deletes {
                    let old_key = self.session_key(old);
                    self.settle_delete(&mut self.connection.clone(), &old_key)
                        .await?;
                }
                Ok(true)
            }
            Moved::Marked => {
                if !self.delete(old).await? {
                    // Revoked, logged out or expired meanwhile: the new session must not
                    // outlive it.
                    self.delete(new).await?;
                    self.unindex(record.user_id(), &[new.as_str()]).await?;
                    return Ok(false);
                }
                self.unindex(record.user_id(), &[old.as_str()]).await?;
                Ok(true)
            }
        }
    }

    async fn admit_anonymous(&self, counters: &[Counter<'_>]) -> Result<Admission, StoreError> {
        super::ThrottleStore::admit(self, counters).await
    }

    async fn credentials_version(&self, user_id: &str) -> Result<Option<String>, StoreError> {
        credentials::credentials_version(self, user_id).await
    }

    async fn set_credentials_version(
        &self,
        user_id: &str,
        version: &str,
        keep_for: Duration,
    ) -> Result<(), StoreError> {
        credentials::set_credentials_version(self, user_id, version, keep_for).await
    }

    async fn create_link(&self, key: &LinkKey, record: &LinkRecord) -> Result<bool, StoreError> {
        links::create_link(self, key, record).await
    }

    async fn load_link(&self, key: &LinkKey) -> Result<Option<LinkRecord>, StoreError> {
        links::load_link(self, key).await
    }

    async fn take_link(&self, key: &LinkKey) -> Result<Option<LinkRecord>, StoreError> {
        links::take_link(self, key).await
    }

    async fn append_activity(
        &self,
        user_id: &str,
        entry: &ActivityEntry,
        limits: ActivityLimits,
    ) -> Result<(), StoreError> {
        activity::append_activity(self, user_id, entry, limits).await
    }

    async fn activity(
        &self,
        user_id: &str,
        before: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ActivityEntry>, StoreError> {
        activity::activity(self, user_id, before, limit).await
    }

    async fn claim_once(&self, name: &str, ttl: Duration) -> Result<bool, StoreError> {
        claims::claim_once(self, name, ttl).await
    }
}
