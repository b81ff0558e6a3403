//! One connection type over the three deployments, so the store's commands need not care which
//! one they run on.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock, Weak};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, Pipeline, RedisFuture, Value};

use super::lookup_link::{LookupDial, LookupLink, Watch};
use super::tls;
use crate::error::StoreError;

/// Where the store connects.
#[derive(Clone)]
pub(super) enum Target {
    Single(String),
    #[cfg(feature = "cluster")]
    Cluster(Vec<String>),
    #[cfg(feature = "sentinel")]
    Sentinel {
        sentinels: Vec<String>,
        service_name: String,
    },
}

impl Target {
    /// Every URL the store will dial first.
    pub(super) fn urls(&self) -> &[String] {
        match self {
            Target::Single(url) => std::slice::from_ref(url),
            #[cfg(feature = "cluster")]
            Target::Cluster(urls) => urls,
            #[cfg(feature = "sentinel")]
            Target::Sentinel { sentinels, .. } => sentinels,
        }
    }
}

/// What [`Connection::open`] needs to know: a plain value the builder hands over, so that the
/// connection knows nothing of the builder.
pub(super) struct ConnectOptions<'a> {
    pub(super) target: &'a Target,
    pub(super) connect_timeout: Duration,
    /// How long a server may take to answer one command, for connections that time replies
    /// themselves: the command timeout, plus the longest a command waits on purpose (a `WAIT`
    /// for replicas), so that such a wait is cut by the store's own bound, not before it.
    pub(super) reply_timeout: Duration,
    #[cfg(feature = "tls")]
    pub(super) tls: &'a tls::TlsOptions,
}

/// A standalone server, the primary that Redis Sentinel names, or a Redis Cluster.
#[derive(Clone)]
pub(super) enum Connection {
    Single(PerWorker),
    #[cfg(feature = "cluster")]
    Cluster(PerWorker),
    #[cfg(feature = "sentinel")]
    Sentinel(super::sentinel::SentinelConnection),
}

impl Connection {
    /// Whether every key lives on one server, so one `MULTI`/`EXEC` or pipeline can span them.
    /// A Sentinel deployment is one primary, exactly like a standalone server.
    pub(super) fn is_single_node(&self) -> bool {
        match self {
            Connection::Single(_) => true,
            #[cfg(feature = "cluster")]
            Connection::Cluster(_) => false,
            #[cfg(feature = "sentinel")]
            Connection::Sentinel(_) => true,
        }
    }

    /// Connects to `options.target`.
    pub(super) async fn open(options: ConnectOptions<'_>) -> Result<Self, StoreError> {
        tls::prepare(
            options.target.urls(),
            #[cfg(feature = "tls")]
            options.tls,
        )?;
        match options.target {
            Target::Single(url) => open_single(url, &options).await,
            #[cfg(feature = "cluster")]
            Target::Cluster(nodes) => {
                // Each node's connection keeps a response timeout: it bounds the client's own
                // commands too (the slot map it reads while it finds a moved slot), which no
                // timer of the store's would end. The overall one is left off: the store bounds
                // every command of its own (`RedisStore::run`), and that second timer cost each
                // lookup some 1 200 instructions (callgrind: `benches/instructions.sh`).
                #[cfg_attr(not(feature = "tls"), allow(unused_mut))]
                let mut cluster = redis::cluster::ClusterClientBuilder::new(nodes.clone())
                    .connection_timeout(options.connect_timeout)
                    .response_timeout(options.reply_timeout)
                    .overall_response_timeout(None);
                #[cfg(feature = "tls")]
                if let Some(certificates) = tls::root_certificates(options.tls) {
                    cluster = cluster.certs(certificates);
                }
                let client = cluster.build().map_err(StoreError::unavailable)?;
                let dial = Dial::Cluster(client);
                let link = dial.connect().await.map_err(StoreError::unavailable)?;
                Ok(Connection::Cluster(PerWorker::new(link, dial, &options)))
            }
            #[cfg(feature = "sentinel")]
            Target::Sentinel {
                sentinels,
                service_name,
            } => {
                let connection = super::sentinel::SentinelConnection::connect(
                    super::sentinel::SentinelOptions {
                        sentinels,
                        service_name,
                        connect_timeout: options.connect_timeout,
                        reply_timeout: options.reply_timeout,
                        #[cfg(feature = "tls")]
                        tls_root_certificate: tls::root_certificates(options.tls),
                    },
                )
                .await?;
                Ok(Connection::Sentinel(connection))
            }
        }
    }
}

async fn open_single(url: &str, options: &ConnectOptions<'_>) -> Result<Connection, StoreError> {
    #[cfg(feature = "tls")]
    let client = match tls::root_certificates(options.tls) {
        Some(certificates) => redis::Client::build_with_tls(url, certificates),
        None => redis::Client::open(url),
    };
    #[cfg(not(feature = "tls"))]
    let client = redis::Client::open(url);
    let client = client.map_err(StoreError::unavailable)?;
    // The manager retries every failed connect until it gives up, so an untrusted certificate
    // or a wrong password would surface only as a timeout. One plain attempt first reports
    // them as they are; a refused or slow connection is left to the manager's retries, for a
    // Redis that is still starting.
    let probe_config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(options.connect_timeout))
        .set_response_timeout(Some(options.reply_timeout));
    if let Err(err) = client
        .get_multiplexed_async_connection_with_config(&probe_config)
        .await
    {
        if !(err.is_connection_refusal() || err.is_timeout()) {
            return Err(StoreError::unavailable(err));
        }
    }
    // No response timeout of the manager's own: `RedisStore::run` bounds every command
    // already, and a second timer per command is measurable.
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(options.connect_timeout))
        .set_response_timeout(None);
    let lookups = LookupDial::for_server(client.get_connection_info());
    let dial = Dial::Single {
        client,
        config,
        lookups,
    };
    let link = dial.connect().await.map_err(StoreError::unavailable)?;
    Ok(Connection::Single(PerWorker::new(link, dial, options)))
}

/// One connection the store's commands can go through.
#[derive(Clone)]
enum Link {
    Single(ConnectionManager),
    #[cfg(feature = "cluster")]
    Cluster(redis::cluster_async::ClusterConnection),
}

impl ConnectionLike for Link {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Link::Single(manager) => manager.req_packed_command(cmd),
            #[cfg(feature = "cluster")]
            Link::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Link::Single(manager) => manager.req_packed_commands(pipeline, offset, count),
            #[cfg(feature = "cluster")]
            Link::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Link::Single(manager) => manager.get_db(),
            #[cfg(feature = "cluster")]
            Link::Cluster(conn) => conn.get_db(),
        }
    }
}

/// How to open a link: a connection manager to one server, or a cluster connection.
#[derive(Clone)]
enum Dial {
    Single {
        client: redis::Client,
        config: ConnectionManagerConfig,
        /// How a worker reaches the server for lookups, where a [`LookupLink`] can.
        lookups: Option<LookupDial>,
    },
    #[cfg(feature = "cluster")]
    Cluster(redis::cluster::ClusterClient),
}

impl Dial {
    /// Opens a link; its driver runs on the runtime this is awaited on.
    async fn connect(&self) -> redis::RedisResult<Link> {
        match self {
            Dial::Single { client, config, .. } => {
                ConnectionManager::new_with_config(client.clone(), config.clone())
                    .await
                    .map(Link::Single)
            }
            #[cfg(feature = "cluster")]
            Dial::Cluster(client) => client.get_async_connection().await.map(Link::Cluster),
        }
    }

    /// Whether a worker on this deployment has a [`LookupLink`].
    fn has_lookups(&self) -> bool {
        matches!(
            self,
            Dial::Single {
                lookups: Some(_),
                ..
            }
        )
    }

    /// Opens a worker's [`LookupLink`] beside its `link`, within `within` in all, if this
    /// deployment has them and it reaches the server `link` does: the two dial the same
    /// address separately, and a DNS name that moved, or names several servers, could take
    /// them to different ones. Why it could not, when it could not; lookups then go through
    /// `link`.
    async fn connect_lookups(&self, link: &Link, within: Duration) -> Result<LookupLink, String> {
        let Dial::Single {
            lookups: Some(lookups),
            ..
        } = self
        else {
            return Err("this deployment has no lookup connections".to_owned());
        };
        let connecting = async {
            let lookups = lookups
                .connect(within)
                .await
                .map_err(|err| err.to_string())?;
            match server_of(link, within).await {
                Some(server) if server == lookups.server() => Ok(lookups),
                Some(_) => Err("it reached another Redis server than the worker's other \
                     connection"
                    .to_owned()),
                None => Err(
                    "the worker's other connection did not say which server it reaches".to_owned(),
                ),
            }
        };
        tokio::time::timeout(within, connecting)
            .await
            .unwrap_or_else(|_| Err("connecting timed out".to_owned()))
    }
}

/// The `run_id` of the server `link` reaches, if it answers within `within`.
async fn server_of(link: &Link, within: Duration) -> Option<String> {
    let mut info = redis::cmd("INFO");
    info.arg("server");
    let reply = tokio::time::timeout(within, info.query_async::<Value>(&mut link.clone()))
        .await
        .ok()?
        .ok()?;
    crate::store::server_info::run_id(&info_text(reply)).map(str::to_owned)
}

/// How often a worker checks that its lookup connection still reaches the server its other
/// connection does, which reconnects by itself and may land elsewhere.
const SERVER_CHECK_EVERY: Duration = Duration::from_secs(1);

/// Retires `lookups` as soon as `link` reaches another server, checked with an `INFO server`
/// every [`SERVER_CHECK_EVERY`] for as long as the lookup link is in use and its store lives.
async fn watch_server(store: Weak<SharedLinks>, link: Link, lookups: Watch, within: Duration) {
    loop {
        tokio::time::sleep(SERVER_CHECK_EVERY).await;
        if store.strong_count() == 0 {
            return;
        }
        let Some(expected) = lookups.server() else {
            return;
        };
        // No answer says nothing of where it goes: command timeouts deal with that.
        if let Some(server) = server_of(&link, within).await {
            if server != expected {
                tracing::warn!(
                    "a worker's Redis connection moved to another server; its lookup \
                     connection is dialled again"
                );
                lookups.retire();
                return;
            }
        }
    }
}

/// A standalone server's or a cluster's connection: one shared by every thread, and one per
/// Actix worker.
///
/// Each clone is a handle for one operation, and picks its link when it is made: the link of
/// the worker thread it is made on if that is ready, else the shared one. All of an
/// operation's commands go through that one link, so a command sent after another's answer
/// (the `PING` that settles a delete) follows it on the same connection.
///
/// A worker's link is a connection whose driver runs on that worker's runtime. Commands on
/// the shared one hop to the thread that created the store and back, two thread wake-ups per
/// command, which cost more CPU than everything else the store does for a request. Only a
/// current-thread runtime (an Actix worker, a `#[tokio::main(flavor = "current_thread")]`)
/// gets a link of its own, dialled in the background on first use (commands take the shared
/// link until it answers); on a multi-thread runtime tasks move between threads anyway.
///
/// The connection manager reconnects when the socket reports an error, and a cluster
/// connection reconnects to a node whose socket does, but a link that goes silent without
/// closing (a peer or middlebox that vanished, a partition that drops packets) reports nothing
/// until the kernel stops retransmitting, some fifteen minutes later. Until then every command
/// on it would time out: on a cluster, every command for the slots of that one node, which the
/// cluster client retries on the same silent connection. So a command timeout opens a fresh
/// shared connection in the background (on a cluster: the slot map read from the seed nodes,
/// and each node it names connected), and commands move to it once it answers the handshake;
/// and it drops the worker link of the thread that saw the timeout, to be dialled anew.
/// Commands already sent on the old links finish or time out there.
///
/// One replacement is under way at a time, on the runtime that created the store while that
/// one runs (it drives the shared link, and outlives a worker that happened to see the timeout),
/// else on the runtime that saw the timeout. No link younger than the longest a command may
/// wait is replaced or dropped: a command that times out then was sent to its predecessor. So
/// the commands in flight when a link went silent, which time out one after another, cost one
/// replacement, not one each.
pub(super) struct PerWorker {
    shared: Arc<SharedLinks>,
    /// The link this handle's commands go through.
    link: Link,
}

impl PerWorker {
    /// Called on the runtime that drives `link`, which replacements then prefer.
    fn new(link: Link, dial: Dial, options: &ConnectOptions<'_>) -> Self {
        Self {
            shared: Arc::new(SharedLinks {
                current: RwLock::new(SharedLink {
                    link: link.clone(),
                    since: Instant::now(),
                }),
                dial,
                dial_timeout: options.connect_timeout,
                longest_wait: options.reply_timeout,
                home: Home::here(),
                replacing: AtomicBool::new(false),
            }),
            link,
        }
    }

    /// Called when a command of this handle's, or a read through
    /// [`shared_cluster`](Self::shared_cluster), got no answer in time: see [`PerWorker`].
    pub(super) fn unanswered(&self) {
        self.shared.replace();
    }
}

impl PerWorker {
    /// The cluster connection every thread shares, for reads that are not a request's (the
    /// local cache's slot map and server checks); `None` on a standalone server.
    #[cfg(all(feature = "cluster", feature = "local-cache"))]
    pub(super) fn shared_cluster(&self) -> Option<redis::cluster_async::ClusterConnection> {
        match self.shared.current() {
            Link::Cluster(cluster) => Some(cluster),
            Link::Single(_) => None,
        }
    }
}

impl Clone for PerWorker {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
            link: self.shared.pick(),
        }
    }
}

/// What every handle on one store's connection shares.
struct SharedLinks {
    /// The shared link.
    current: RwLock<SharedLink>,
    /// How to open a replacement or a worker's link.
    dial: Dial,
    /// How long a worker link may take to connect before the next use dials again.
    dial_timeout: Duration,
    /// The longest a command may take before the store gives up on it (the command timeout
    /// plus any wait it makes on purpose).
    longest_wait: Duration,
    /// The runtime that created the store, where replacements are dialled while it runs.
    home: Home,
    /// Set while a replacement shared link is being connected, so a burst of timeouts opens one.
    replacing: AtomicBool,
}

/// The link every thread shares, and when it became so.
struct SharedLink {
    link: Link,
    since: Instant,
}

/// A runtime, and whether it still runs.
struct Home {
    runtime: tokio::runtime::Handle,
    alive: RuntimeAlive,
}

impl Home {
    fn here() -> Self {
        Self {
            runtime: tokio::runtime::Handle::current(),
            alive: RuntimeAlive::here(),
        }
    }

    /// Where a task should run: here while this runtime runs, else on the current one.
    fn or_current(&self) -> Option<tokio::runtime::Handle> {
        if self.alive.has_ended() {
            tokio::runtime::Handle::try_current().ok()
        } else {
            Some(self.runtime.clone())
        }
    }
}

/// Tells whether the runtime it was made on has shut down: a task there that never ends by
/// itself, aborted when this is dropped so that it does not outlive its purpose.
struct RuntimeAlive(tokio::task::JoinHandle<()>);

impl RuntimeAlive {
    fn here() -> Self {
        Self(tokio::spawn(std::future::pending()))
    }

    fn has_ended(&self) -> bool {
        self.0.is_finished()
    }
}

impl Drop for RuntimeAlive {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Clears [`SharedLinks::replacing`] when the replacement ends, however it ends: also when its
/// task is dropped with its runtime.
struct Replacing(Arc<SharedLinks>);

impl Drop for Replacing {
    fn drop(&mut self) {
        self.0.replacing.store(false, Ordering::Release);
    }
}

impl SharedLinks {
    fn current(&self) -> Link {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .link
            .clone()
    }

    /// The link for an operation starting now on this thread.
    fn pick(self: &Arc<Self>) -> Link {
        worker_links::ready(self).unwrap_or_else(|| self.current())
    }

    /// After a command went unanswered, drops this thread's worker link and starts replacing
    /// the shared link, each unless it is too young to be the one that failed, and the shared
    /// link unless a replacement is already under way.
    fn replace(self: &Arc<Self>) {
        worker_links::forget(self, self.longest_wait);
        let young = self
            .current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .since
            .elapsed()
            < self.longest_wait;
        let Some(runtime) = self.home.or_current() else {
            return;
        };
        if young || self.replacing.swap(true, Ordering::AcqRel) {
            return;
        }
        let replacing = Replacing(Arc::clone(self));
        runtime.spawn(async move {
            let this = &replacing.0;
            match this.dial.connect().await {
                Ok(fresh) => {
                    *this.current.write().unwrap_or_else(PoisonError::into_inner) = SharedLink {
                        link: fresh,
                        since: Instant::now(),
                    };
                    tracing::warn!("a Redis command went unanswered; moved to a new connection");
                }
                // Redis is unreachable for new connections too: the next timeout tries again.
                Err(err) => tracing::warn!(error = %err, "replacing the Redis connection failed"),
            }
        });
    }
}

/// Each thread's worker links, one per store and runtime.
mod worker_links {
    use std::cell::RefCell;
    use std::sync::{Arc, Weak};
    use std::time::{Duration, Instant};

    use tokio::runtime::{Handle, RuntimeFlavor};

    use super::{watch_server, Link, LookupLink, RuntimeAlive, SharedLinks};

    /// The longest a worker waits before it dials its lookup link again after failures.
    const LOOKUPS_RETRY_AT_MOST: Duration = Duration::from_secs(60);

    /// How long a worker link that failed to connect waits before the next try.
    const RETRY_AFTER: Duration = Duration::from_secs(1);

    thread_local! {
        static LINKS: RefCell<Vec<WorkerLink>> = const { RefCell::new(Vec::new()) };
    }

    /// One store's link on one runtime of this thread.
    struct WorkerLink {
        /// The store's shared state: which store the link is for. A `Weak` keeps the address
        /// from being reused while the entry exists, and tells when the store is gone.
        store: Weak<SharedLinks>,
        runtime: tokio::runtime::Id,
        state: LinkState,
    }

    enum LinkState {
        /// Being connected; dialled again if still so at `until`, which also tells this dial
        /// from a later one: only the dial that set it may complete the entry.
        Dialing { until: Instant },
        Ready {
            link: Link,
            lookups: Lookups,
            /// Ends when the runtime that drives the link shuts down, and with it the link's
            /// driver.
            runtime_alive: RuntimeAlive,
            /// When it connected.
            since: Instant,
        },
        /// Failed to connect; tried again after `retry_at`.
        Failed { retry_at: Instant },
    }

    /// A ready worker's connection for lookups. Until it is up, lookups go through the
    /// worker's link. `backoff` is how long the next failure waits before another dial: it
    /// doubles with each failure (a dial that fails, a link closed soon after it connected),
    /// up to [`LOOKUPS_RETRY_AT_MOST`], and starts again from [`RETRY_AFTER`] once a link has
    /// stayed up that long.
    enum Lookups {
        /// The deployment has none.
        Absent,
        /// Up since `since`; once closed (the server went away, or the worker's link moved to
        /// another server), dialled again at the next lookup if it stayed up a while, else
        /// after `backoff`.
        Up {
            link: LookupLink,
            since: Instant,
            backoff: Duration,
        },
        /// Being dialled; dialled again at the first lookup after `until`, should the dial
        /// have been lost. `until` also tells this dial from a later one: only the dial that
        /// set it may complete the state.
        Dialing { until: Instant, backoff: Duration },
        /// Not dialled yet, or it failed, or closed soon after it connected: dialled at the
        /// first lookup after `retry_at`.
        Down {
            retry_at: Instant,
            backoff: Duration,
        },
    }

    /// The next wait after a failure that followed one of `backoff`.
    fn grown(backoff: Duration) -> Duration {
        (backoff * 2).min(LOOKUPS_RETRY_AT_MOST)
    }

    impl WorkerLink {
        fn is_for(&self, store: &Arc<SharedLinks>, runtime: tokio::runtime::Id) -> bool {
            self.runtime == runtime && std::ptr::eq(self.store.as_ptr(), Arc::as_ptr(store))
        }

        /// Whether the entry can still serve anyone: its store and its runtime both live.
        fn is_live(&self) -> bool {
            self.store.strong_count() > 0
                && match &self.state {
                    LinkState::Ready { runtime_alive, .. } => !runtime_alive.has_ended(),
                    LinkState::Dialing { .. } | LinkState::Failed { .. } => true,
                }
        }
    }

    /// This thread's link to `store` on the current runtime, if it is ready; otherwise `None`,
    /// and a link is dialled in the background when this runtime may have one.
    pub(super) fn ready(store: &Arc<SharedLinks>) -> Option<Link> {
        with_ready(store, Purpose::Commands, |link, _| link.clone())
    }

    /// What a lookup on this thread goes through: the worker's [`LookupLink`] if it has one,
    /// else its link; `None` as for [`ready`].
    pub(super) fn for_lookup(store: &Arc<SharedLinks>) -> Option<Result<LookupLink, Link>> {
        with_ready(store, Purpose::Lookup, |link, lookups| match lookups {
            Some(lookups) => Ok(lookups.clone()),
            None => Err(link.clone()),
        })
    }

    /// What a link is picked for.
    #[derive(Clone, Copy, PartialEq)]
    enum Purpose {
        /// Any command: the lookup link is neither used nor dialled.
        Commands,
        /// A lookup: the lookup link if it is up, and dialled (see [`Lookups`]) if it should
        /// be and is not.
        Lookup,
    }

    /// `pick` applied to this thread's ready link to `store` and, for a lookup, its lookup
    /// link if that is up.
    fn with_ready<T>(
        store: &Arc<SharedLinks>,
        purpose: Purpose,
        pick: impl FnOnce(&Link, Option<&LookupLink>) -> T,
    ) -> Option<T> {
        let runtime = Handle::try_current().ok()?;
        if runtime.runtime_flavor() != RuntimeFlavor::CurrentThread {
            return None;
        }
        let id = runtime.id();
        LINKS
            .try_with(|links| {
                let mut links = links.try_borrow_mut().ok()?;
                let found = links.iter_mut().position(|entry| entry.is_for(store, id));
                if let Some(index) = found {
                    match &mut links[index].state {
                        LinkState::Ready {
                            link,
                            lookups,
                            since,
                            ..
                        } => {
                            if purpose == Purpose::Commands {
                                return Some(pick(link, None));
                            }
                            let usable = usable_lookups(lookups, store.dial_timeout, |until| {
                                let store = Arc::downgrade(store);
                                runtime.spawn(dial_lookups(store, id, *since, until));
                            });
                            return Some(pick(link, usable));
                        }
                        LinkState::Dialing { until } | LinkState::Failed { retry_at: until }
                            if Instant::now() < *until =>
                        {
                            return None
                        }
                        LinkState::Dialing { .. } | LinkState::Failed { .. } => {}
                    }
                }
                links.retain(WorkerLink::is_live);
                links.retain(|entry| !entry.is_for(store, id));
                let until = Instant::now() + store.dial_timeout + RETRY_AFTER;
                links.push(WorkerLink {
                    store: Arc::downgrade(store),
                    runtime: id,
                    state: LinkState::Dialing { until },
                });
                runtime.spawn(dial(Arc::downgrade(store), id, until));
                None
            })
            .ok()
            .flatten()
    }

    /// The lookup link to use now, if there is one; calls `redial` with the new dial's
    /// `until` when there should be one but it is closed or down and due (see [`Lookups`]).
    fn usable_lookups(
        lookups: &mut Lookups,
        dial_timeout: Duration,
        redial: impl FnOnce(Instant),
    ) -> Option<&LookupLink> {
        let now = Instant::now();
        let dialing = |backoff| Lookups::Dialing {
            until: now + dial_timeout + RETRY_AFTER,
            backoff,
        };
        let next = match &*lookups {
            Lookups::Up { link, .. } if link.is_open() => None,
            Lookups::Up { since, backoff, .. } if since.elapsed() < LOOKUPS_RETRY_AT_MOST => {
                Some(Lookups::Down {
                    retry_at: now + *backoff,
                    backoff: grown(*backoff),
                })
            }
            Lookups::Up { .. } => Some(dialing(RETRY_AFTER)),
            Lookups::Dialing { until, backoff } if now >= *until => Some(dialing(*backoff)),
            Lookups::Down { retry_at, backoff } if now >= *retry_at => Some(dialing(*backoff)),
            Lookups::Dialing { .. } | Lookups::Down { .. } | Lookups::Absent => None,
        };
        if let Some(next) = next {
            let dial = match next {
                Lookups::Dialing { until, .. } => Some(until),
                _ => None,
            };
            *lookups = next;
            if let Some(until) = dial {
                redial(until);
            }
        }
        match lookups {
            Lookups::Up { link, .. } => Some(link),
            Lookups::Dialing { .. } | Lookups::Down { .. } | Lookups::Absent => None,
        }
    }

    /// Dials this thread's lookup link to `store` on the runtime `id` anew, for the ready
    /// link that connected at `since`, and puts it up (or down, if it failed) if that link is
    /// still the one in use and this is still its dial (`Dialing` until `until`).
    async fn dial_lookups(
        store: Weak<SharedLinks>,
        id: tokio::runtime::Id,
        since: Instant,
        until: Instant,
    ) {
        let Some(shared) = store.upgrade() else {
            return;
        };
        let ready = LINKS
            .try_with(|links| {
                let links = links.try_borrow().ok()?;
                links.iter().find_map(|entry| match &entry.state {
                    LinkState::Ready {
                        link, since: at, ..
                    } if entry.is_for(&shared, id) && *at == since => Some(link.clone()),
                    _ => None,
                })
            })
            .ok()
            .flatten();
        let Some(link) = ready else {
            return;
        };
        let (dial, within) = (shared.dial.clone(), shared.dial_timeout);
        drop(shared);
        let dialled = dial.connect_lookups(&link, within).await;
        let Some(shared) = store.upgrade() else {
            return;
        };
        let _ = LINKS.try_with(|links| {
            let Ok(mut links) = links.try_borrow_mut() else {
                return;
            };
            for entry in links.iter_mut() {
                if !entry.is_for(&shared, id) {
                    continue;
                }
                let LinkState::Ready {
                    link,
                    lookups: slot @ Lookups::Dialing { .. },
                    since: at,
                    ..
                } = &mut entry.state
                else {
                    continue;
                };
                let Lookups::Dialing {
                    backoff,
                    until: this_dial,
                } = *slot
                else {
                    continue;
                };
                if *at != since || this_dial != until {
                    continue;
                }
                *slot = match &dialled {
                    Ok(lookups) => {
                        let watch = lookups.watch();
                        tokio::spawn(watch_server(store.clone(), link.clone(), watch, within));
                        Lookups::Up {
                            link: lookups.clone(),
                            since: Instant::now(),
                            backoff,
                        }
                    }
                    Err(why) => {
                        // Once per run of failures: a server that cannot have one (no
                        // `run_id`, say) would otherwise warn every minute.
                        if backoff == RETRY_AFTER {
                            tracing::warn!(%why, "a worker's lookup connection is not used");
                        } else {
                            tracing::debug!(%why, "a worker's lookup connection is not used");
                        }
                        Lookups::Down {
                            retry_at: Instant::now() + backoff,
                            backoff: grown(backoff),
                        }
                    }
                };
            }
        });
    }

    /// Connects this thread's link to `store` on the runtime `id` that runs this task.
    async fn dial(store: Weak<SharedLinks>, id: tokio::runtime::Id, until: Instant) {
        let Some(dial) = store.upgrade().map(|shared| shared.dial.clone()) else {
            return;
        };
        let dialled = dial.connect().await;
        // Dialled at the first lookup, so that the worker's link is in use meanwhile.
        let lookups = if dial.has_lookups() {
            Lookups::Down {
                retry_at: Instant::now(),
                backoff: RETRY_AFTER,
            }
        } else {
            Lookups::Absent
        };
        let Some(shared) = store.upgrade() else {
            return;
        };
        let state = match dialled {
            Ok(link) => LinkState::Ready {
                link,
                lookups,
                runtime_alive: RuntimeAlive::here(),
                since: Instant::now(),
            },
            Err(err) => {
                tracing::debug!(error = %err, "a worker's own Redis connection failed to connect");
                LinkState::Failed {
                    retry_at: Instant::now() + RETRY_AFTER,
                }
            }
        };
        // A current-thread runtime runs its tasks on the thread that drives it: the one whose
        // entry said `Dialing`, unless the runtime moved since, which leaves that entry to
        // time out and dial again.
        let _ = LINKS.try_with(|links| {
            if let Ok(mut links) = links.try_borrow_mut() {
                if let Some(entry) = links.iter_mut().find(|entry| entry.is_for(&shared, id)) {
                    // A dial that outlived its deadline finds the entry of the one started
                    // after it, dialling or done: that one stays.
                    if matches!(entry.state, LinkState::Dialing { until: this } if this == until) {
                        entry.state = state;
                    }
                }
            }
        });
    }

    /// Drops this thread's link to `store` on the current runtime if it has been up for
    /// `at_least` (a younger one is not the link a command that timed out now was sent on):
    /// the next operation dials a new one.
    pub(super) fn forget(store: &Arc<SharedLinks>, at_least: Duration) {
        let Ok(runtime) = Handle::try_current() else {
            return;
        };
        let id = runtime.id();
        let _ = LINKS.try_with(|links| {
            if let Ok(mut links) = links.try_borrow_mut() {
                links.retain(|entry| {
                    let old_enough = matches!(&entry.state,
                        LinkState::Ready { since, .. } if since.elapsed() >= at_least);
                    !(entry.is_for(store, id) && old_enough)
                });
            }
        });
    }
}

impl Connection {
    /// Called when a command got no answer within its time limit: a standalone or cluster
    /// connection is replaced (see [`PerWorker`]), and a Sentinel deployment's primary looked
    /// up again, for a server gone silent sends no error to start that by itself.
    pub(super) fn unanswered(&self) {
        match self {
            Connection::Single(linked) => linked.unanswered(),
            #[cfg(feature = "cluster")]
            Connection::Cluster(linked) => linked.unanswered(),
            #[cfg(feature = "sentinel")]
            Connection::Sentinel(connection) => connection.unanswered(),
        }
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Single(linked) => linked.link.req_packed_command(cmd),
            #[cfg(feature = "cluster")]
            Connection::Cluster(linked) => linked.link.req_packed_command(cmd),
            #[cfg(feature = "sentinel")]
            Connection::Sentinel(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Single(linked) => linked.link.req_packed_commands(pipeline, offset, count),
            #[cfg(feature = "cluster")]
            Connection::Cluster(linked) => linked.link.req_packed_commands(pipeline, offset, count),
            #[cfg(feature = "sentinel")]
            Connection::Sentinel(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Single(linked) => linked.link.get_db(),
            #[cfg(feature = "cluster")]
            Connection::Cluster(linked) => linked.link.get_db(),
            #[cfg(feature = "sentinel")]
            Connection::Sentinel(conn) => conn.get_db(),
        }
    }
}

impl Connection {
    /// A handle for one lookup: the worker's [`LookupLink`] where it has one, else a handle
    /// like a clone's.
    pub(super) fn for_lookup(&self) -> Lookup {
        match self {
            Connection::Single(linked) => match worker_links::for_lookup(&linked.shared) {
                Some(Ok(lookups)) => Lookup(Route::Own {
                    lookups,
                    store: Arc::clone(&linked.shared),
                }),
                Some(Err(link)) => Lookup(Route::Store(Connection::Single(PerWorker {
                    shared: Arc::clone(&linked.shared),
                    link,
                }))),
                None => Lookup(Route::Store(Connection::Single(PerWorker {
                    shared: Arc::clone(&linked.shared),
                    link: linked.shared.current(),
                }))),
            },
            #[cfg(any(feature = "cluster", feature = "sentinel"))]
            other => Lookup(Route::Store(other.clone())),
        }
    }
}

/// What a lookup's reads go through: a worker's [`LookupLink`], or the store's connection.
pub(super) struct Lookup(Route);

enum Route {
    Own {
        lookups: LookupLink,
        /// Where a read goes again if the lookup link fails under it.
        store: Arc<SharedLinks>,
    },
    Store(Connection),
}

impl ConnectionLike for Lookup {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match &mut self.0 {
            Route::Own { lookups, store } => {
                let answer = lookups.query(cmd);
                Box::pin(async move {
                    match answer.await {
                        // The server closed the link, or sent what it cannot read, between the
                        // check that it was open and now (a restart, its idle `timeout`): a
                        // lookup is a read, so it is asked again through the worker's other
                        // link rather than failing the request. A timeout is the store's.
                        Err(err) if err.is_io_error() => store.pick().req_packed_command(cmd).await,
                        answered => answered,
                    }
                })
            }
            Route::Store(conn) => conn.req_packed_command(cmd),
        }
    }

    /// A lookup sends single commands only; a pipeline goes through the store's connection.
    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match &mut self.0 {
            Route::Own { .. } => Box::pin(async {
                Err(redis::RedisError::from((
                    redis::ErrorKind::Client,
                    "a lookup link carries single commands only",
                )))
            }),
            Route::Store(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match &self.0 {
            Route::Own { lookups, .. } => lookups.db(),
            Route::Store(conn) => conn.get_db(),
        }
    }
}

/// The text of an `INFO` reply: one string from a server, or one per node from a cluster.
pub(super) fn info_text(reply: Value) -> String {
    match reply {
        Value::BulkString(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Value::VerbatimString { text, .. } | Value::SimpleString(text) => text,
        Value::Map(pairs) => pairs
            .into_iter()
            .map(|(_, v)| info_text(v))
            .collect::<Vec<_>>()
            .join("\n"),
        Value::Array(items) => items
            .into_iter()
            .map(info_text)
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}
