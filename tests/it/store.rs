//! The store contract, checked against every store the crate ships, plus Redis specifics.

use std::time::{Duration, SystemTime};

use actix_login::store::{SessionKey, SessionRecord, SessionStore};
use actix_login::{MemoryStore, RedisStore, SessionData, StoreError};
use serde_json::value::RawValue;

use crate::support;
use crate::support::chaos_proxy::ChaosProxy;
use crate::support::redis_server::{
    connection, record_user_id, shared_redis_url, unique_prefix, RedisServer,
};

fn random_key() -> SessionKey {
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).unwrap();
    use base64::Engine as _;
    let text = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    SessionKey::parse(&text).unwrap()
}

fn record(user_id: &str, lifetime: Duration) -> SessionRecord {
    let now = SystemTime::now();
    let user = RawValue::from_string(format!(r#"{{"name":"{user_id}"}}"#)).unwrap();
    SessionRecord::new(format!("id-{user_id}"), user_id, user, now, now + lifetime)
}

fn in_(d: Duration) -> SystemTime {
    SystemTime::now() + d
}

async fn redis_store() -> RedisStore {
    RedisStore::builder(shared_redis_url())
        .key_prefix(unique_prefix())
        .connect()
        .await
        .unwrap()
}

/// The whole contract of both traits, each part on a fresh store from `new_store`.
#[cfg(feature = "test-util")]
async fn check_all<S, Fut>(mut new_store: impl FnMut() -> Fut)
where
    S: SessionStore + actix_login::store::ThrottleStore,
    Fut: std::future::Future<Output = S>,
{
    use actix_login::store::contract::{
        check_activity_log, check_claims, check_one_time_links, check_session_store,
        check_throttle_store,
    };
    check_session_store(&mut new_store).await;
    check_one_time_links(&mut new_store).await;
    check_claims(&mut new_store).await;
    check_activity_log(&mut new_store).await;
    check_throttle_store(&mut new_store).await;
}

/// Without `test-util` the contract checks do not exist; say so instead of passing silently.
#[cfg(not(feature = "test-util"))]
#[test]
#[ignore = "the store contract needs `cargo test --all-features` (feature test-util)"]
fn store_contract_needs_the_test_util_feature() {}

#[cfg(feature = "test-util")]
#[actix_web::test]
async fn memory_store_keeps_the_contract() {
    check_all(|| async { MemoryStore::new() }).await;
}

#[cfg(feature = "test-util")]
#[actix_web::test]
async fn redis_store_keeps_the_contract() {
    check_all(redis_store).await;
}

/// Every read through the local cache, every write through the main connection: whatever the
/// contract writes, the next read must see.
#[cfg(feature = "test-util")]
#[actix_web::test]
async fn redis_store_with_a_local_cache_keeps_the_contract() {
    let server = RedisServer::start();
    check_all(|| async {
        RedisStore::builder(server.url())
            .key_prefix(unique_prefix())
            .local_cache(100)
            .connect()
            .await
            .unwrap()
    })
    .await;
}

#[actix_web::test]
async fn memory_store_sweeps_expired_records() {
    let store = MemoryStore::new();
    let minute = Duration::from_secs(60);
    for _ in 0..1000 {
        let deadline = in_(Duration::from_millis(1));
        store
            .create(
                &random_key(),
                &record("u", minute),
                deadline,
                &SessionData::new(),
            )
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(5)).await;
    for _ in 0..30 {
        store
            .create(
                &random_key(),
                &record("u", minute),
                in_(minute),
                &SessionData::new(),
            )
            .await
            .unwrap();
    }
    assert!(
        store.len() <= 30,
        "expired records were kept: {}",
        store.len()
    );
}

#[actix_web::test]
async fn redis_keys_are_prefixed_hashes_with_a_ttl() {
    let url = shared_redis_url();
    let prefix = unique_prefix();
    let store = RedisStore::builder(&url)
        .key_prefix(&prefix)
        .connect()
        .await
        .unwrap();
    let key = random_key();
    let idle = Duration::from_secs(90);
    store
        .create(
            &key,
            &record("u", Duration::from_secs(3600)),
            in_(idle),
            &SessionData::new(),
        )
        .await
        .unwrap();

    let mut dump = support::redis_server::dump(&url, &prefix);
    dump.sort();
    assert_eq!(dump.len(), 2, "{dump:?}");
    let (name, value, ttl) = &dump[0];
    assert_eq!(
        name,
        &format!("{prefix}:s:{{{}}}{}", key.group(), key.digest())
    );
    assert!(*ttl > 85_000 && *ttl <= 90_000, "session ttl {ttl}");
    // The hash holds the same deadline, in Unix milliseconds, and the record.
    let mut conn = connection(&url).unwrap();
    let (deadline, record, size): (String, Vec<u8>, String) = redis::cmd("HMGET")
        .arg(name)
        .arg("e")
        .arg("r")
        .arg("z")
        .query(&mut conn)
        .unwrap();
    let now_ms = SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let ahead = deadline.parse::<i64>().unwrap() - now_ms;
    assert!(
        ahead > 85_000 && ahead <= 90_000,
        "deadline {ahead} ms ahead"
    );
    // The binary form: its version, then the public id and the user id after their lengths.
    assert!(record.starts_with(b"\x01\x04id-u\x01u"), "{record:?}");
    assert_eq!(record_user_id(&record).as_deref(), Some("u"));
    assert_eq!(size, "0");
    assert!(
        value
            .as_deref()
            .is_some_and(|v| v.windows(3).any(|w| w == b"r=\x01")),
        "a session is a hash: {value:?}"
    );
    // The user's index lives as long as the session's absolute lifetime.
    let (name, _, ttl) = &dump[1];
    assert_eq!(name, &format!("{prefix}:u:u"));
    assert!(*ttl > 3_595_000 && *ttl <= 3_600_000, "index ttl {ttl}");
}

/// A browser login's session, with its long User-Agent, and its user's index stay in Redis's
/// compact encoding (a listpack) with the default `hash-max-listpack-value` of 64 bytes, and
/// the User-Agent reads back exactly as it came.
#[actix_web::test]
async fn a_browser_session_and_its_index_stay_compact_in_redis() {
    const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 \
        (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
    let url = shared_redis_url();
    let store = redis_store().await;
    let mut conn = connection(&url).unwrap();
    let default: (String, u64) = redis::cmd("CONFIG")
        .arg("GET")
        .arg("hash-max-listpack-value")
        .query(&mut conn)
        .unwrap();
    assert_eq!(default.1, 64, "the test's Redis must keep the default");

    let mut keys = Vec::new();
    for (n, user_agent) in [CHROME, &"x".repeat(300), "curl/8.5.0"]
        .into_iter()
        .enumerate()
    {
        let key = random_key();
        let record = record("browser", Duration::from_secs(3600))
            .with_client(Some(format!("203.0.113.{n}")), Some(user_agent.to_owned()));
        store
            .create(
                &key,
                &record,
                in_(Duration::from_secs(90)),
                &SessionData::new(),
            )
            .await
            .unwrap();
        let stored = store.load(&key).await.unwrap().unwrap();
        assert_eq!(stored.record.user_agent(), Some(user_agent));
        keys.push(key);
    }
    let encoding = |name: &str| -> String {
        redis::cmd("OBJECT")
            .arg("ENCODING")
            .arg(name)
            .query(&mut connection(&url).unwrap())
            .unwrap()
    };
    // Chrome's and curl's: one compact hash each; the 300-byte User-Agent fits no scheme.
    for key in [&keys[0], &keys[2]] {
        assert_eq!(encoding(&store.session_key(key)), "listpack");
    }
    assert_eq!(encoding(&store.user_index_key("browser")), "listpack");
    let bytes: u64 = redis::cmd("MEMORY")
        .arg("USAGE")
        .arg(store.session_key(&keys[0]))
        .arg("SAMPLES")
        .arg(0)
        .query(&mut conn)
        .unwrap();
    // 296 bytes on Redis 7.0 (424 with the User-Agent kept as it came).
    assert!(bytes <= 320, "a Chrome login's session takes {bytes} bytes");
    let listed = store.list("browser").await.unwrap();
    assert_eq!(listed.live.len(), 3);
}

#[actix_web::test]
async fn corrupt_or_immortal_redis_records_are_reported_not_trusted() {
    let url = shared_redis_url();
    let store = redis_store().await;
    let mut conn = connection(&url).unwrap();
    let key = random_key();
    let redis_key = store.session_key(&key);

    redis::cmd("SET")
        .arg(&redis_key)
        .arg("not json")
        .arg("PX")
        .arg(60_000)
        .exec(&mut conn)
        .unwrap();
    assert!(matches!(
        store.load(&key).await,
        Err(StoreError::Corrupt(_))
    ));

    // A bare record without its deadline.
    let valid = serde_json::to_string(&record("u", Duration::from_secs(60))).unwrap();
    redis::cmd("DEL").arg(&redis_key).exec(&mut conn).unwrap();
    redis::cmd("HSET")
        .arg(&redis_key)
        .arg("r")
        .arg(&valid)
        .exec(&mut conn)
        .unwrap();
    redis::cmd("PEXPIRE")
        .arg(&redis_key)
        .arg(60_000)
        .exec(&mut conn)
        .unwrap();
    assert!(matches!(
        store.load(&key).await,
        Err(StoreError::Corrupt(_))
    ));

    // A key whose TTL was removed: its own deadline still ends it, and a listing clears it out.
    let past = SystemTime::now() - Duration::from_secs(1);
    let past_ms = past
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let index = store.user_index_key("u");
    redis::cmd("DEL").arg(&redis_key).exec(&mut conn).unwrap();
    redis::cmd("HSET")
        .arg(&redis_key)
        .arg("r")
        .arg(&valid)
        .arg("e")
        .arg(past_ms.to_string())
        .exec(&mut conn)
        .unwrap(); // no TTL
    redis::cmd("HSET")
        .arg(&index)
        .arg(key.as_str())
        .arg("")
        .exec(&mut conn)
        .unwrap();
    let stored = store.load(&key).await.unwrap().unwrap();
    assert!(stored.expires_at <= SystemTime::now());
    let listed = store.list("u").await.unwrap();
    assert!(listed.live.is_empty());
    assert_eq!(listed.dropped, 1);
    assert!(store.load(&key).await.unwrap().is_none(), "not deleted");
}

/// Sessions an earlier build wrote, with the record as JSON in 64-byte pieces, still read:
/// one that fits the two pieces a lookup reads first, and one long enough to need all four.
#[actix_web::test]
async fn records_written_as_json_by_earlier_builds_still_read() {
    let url = shared_redis_url();
    let store = redis_store().await;
    let mut conn = connection(&url).unwrap();
    let deadline = in_(Duration::from_secs(60))
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    // Three pieces for the long one, the second full: the lookup reads it whole.
    for user in ["short", &"long".repeat(10)] {
        let key = random_key();
        let redis_key = store.session_key(&key);
        let json = serde_json::to_string(&record(user, Duration::from_secs(60))).unwrap();
        // As those builds cut it: 64 bytes a piece, the fourth taking whatever is left.
        let json = json.as_bytes();
        let pieces: Vec<&[u8]> = (0..4)
            .map(|i| {
                let start = (i * 64).min(json.len());
                let end = if i == 3 {
                    json.len()
                } else {
                    (start + 64).min(json.len())
                };
                &json[start..end]
            })
            .take_while(|piece| !piece.is_empty())
            .collect();
        assert_eq!(
            pieces.len(),
            if user == "short" { 2 } else { 3 },
            "{json:?}"
        );
        let mut hset = redis::cmd("HSET");
        hset.arg(&redis_key);
        for (name, piece) in ["r", "r1", "r2", "r3"].iter().zip(&pieces) {
            hset.arg(name).arg(piece);
        }
        hset.arg("e").arg(deadline.to_string()).arg("z").arg("0");
        hset.exec(&mut conn).unwrap();
        redis::cmd("PEXPIRE")
            .arg(&redis_key)
            .arg(60_000)
            .exec(&mut conn)
            .unwrap();

        let stored = store.load(&key).await.unwrap().expect("the session");
        assert_eq!(stored.record.user_id(), user);
        assert_eq!(
            stored.record.user().get(),
            format!(r#"{{"name":"{user}"}}"#)
        );
        let loaded = store
            .load_with_data(&key)
            .await
            .unwrap()
            .expect("the session");
        assert_eq!(loaded.stored.record.user_id(), user);
    }
}

#[actix_web::test]
async fn connect_fails_fast_when_redis_is_down() {
    let server = RedisServer::start();
    let url = server.url();
    server.kill();
    let started = std::time::Instant::now();
    let result = RedisStore::builder(url)
        .connect_timeout(Duration::from_millis(300))
        .connect()
        .await;
    assert!(result.is_err());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[actix_web::test]
async fn hung_redis_times_out_instead_of_hanging() {
    let server = RedisServer::start();
    let store = RedisStore::builder(server.url())
        .command_timeout(Duration::from_millis(200))
        .connect()
        .await
        .unwrap();
    let mut admin = connection(&server.url()).unwrap();
    redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(1500)
        .arg("ALL")
        .exec(&mut admin)
        .unwrap();

    let started = std::time::Instant::now();
    let result = store.load(&random_key()).await;
    assert!(matches!(result, Err(StoreError::Timeout)), "{result:?}");
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "{:?}",
        started.elapsed()
    );

    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert!(
        store.load(&random_key()).await.unwrap().is_none(),
        "store recovered"
    );
}

#[cfg(feature = "test-util")]
#[actix_web::test]
async fn redis_cluster_keeps_the_contract() {
    let cluster = support::cluster::RedisCluster::start();
    let store = || async { cluster.store(&unique_prefix()).await };
    check_all(store).await;
}

#[cfg(feature = "test-util")]
#[actix_web::test]
async fn redis_sentinel_keeps_the_contract() {
    let deployment = support::sentinel::RedisSentinel::start();
    let store = || async {
        RedisStore::sentinel_builder(deployment.sentinel_urls(), support::sentinel::SERVICE)
            .key_prefix(unique_prefix())
            .connect()
            .await
            .unwrap()
    };
    check_all(store).await;
}

#[cfg(feature = "test-util")]
#[actix_web::test]
async fn redis_over_tls_keeps_the_contract() {
    let certificates = support::tls::TestCertificates::generate();
    let server = support::tls::start_tls_server(&certificates);
    let store = || async {
        RedisStore::builder(format!("rediss://127.0.0.1:{}", server.port))
            .tls_root_certificate(certificates.ca_pem())
            .key_prefix(unique_prefix())
            .connect()
            .await
            .unwrap()
    };
    check_all(store).await;
}

#[cfg(feature = "test-util")]
#[actix_web::test]
async fn redis_acl_user_keeps_the_contract() {
    let server = RedisServer::start();
    let prefix = unique_prefix();
    support::acl::acl_user(&server, "app", "secret", &prefix);
    let store = RedisStore::builder(format!("redis://app:secret@127.0.0.1:{}", server.port))
        .key_prefix(&prefix)
        .connect()
        .await
        .unwrap();
    check_all(|| async { store.clone() }).await;
}

/// App hosts' clocks drift apart. A record whose deadline is past by this host's clock but
/// that Redis still keeps (its TTL runs) may be live for a host whose clock runs behind: a
/// listing here must leave it alone. Only a record Redis would keep forever (no TTL) is this
/// listing's to delete.
#[actix_web::test]
async fn a_listing_does_not_end_sessions_by_a_clock_that_runs_ahead() {
    let url = shared_redis_url();
    let store = redis_store().await;
    let mut conn = connection(&url).unwrap();
    let minute = Duration::from_secs(60);
    let skewed = random_key();
    let immortal = random_key();
    for key in [&skewed, &immortal] {
        store
            .create(
                key,
                &record("skew", minute * 60),
                in_(minute),
                &SessionData::new(),
            )
            .await
            .unwrap();
    }
    let past_ms = (SystemTime::now() - Duration::from_secs(2))
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    for (key, keep_ttl) in [(&skewed, true), (&immortal, false)] {
        // The deadline rewritten, as another host whose clock disagrees with this one might
        // see it.
        let redis_key = store.session_key(key);
        redis::cmd("HSET")
            .arg(&redis_key)
            .arg("e")
            .arg(past_ms.to_string())
            .exec(&mut conn)
            .unwrap();
        if !keep_ttl {
            redis::cmd("PERSIST")
                .arg(&redis_key)
                .exec(&mut conn)
                .unwrap();
        }
    }

    let listed = store.list("skew").await.unwrap();
    assert!(
        listed.live.is_empty(),
        "a session past its deadline was listed"
    );

    let ttl: i64 = redis::cmd("PTTL")
        .arg(store.session_key(&skewed))
        .query(&mut conn)
        .unwrap();
    assert!(
        ttl > 50_000,
        "a record that Redis still keeps was deleted by a listing (PTTL {ttl})"
    );
    let indexed: bool = redis::cmd("HEXISTS")
        .arg(store.user_index_key("skew"))
        .arg(skewed.as_str())
        .query(&mut conn)
        .unwrap();
    assert!(indexed, "a record that Redis still keeps was unindexed");

    let exists: bool = redis::cmd("EXISTS")
        .arg(store.session_key(&immortal))
        .query(&mut conn)
        .unwrap();
    assert!(!exists, "a record with no TTL and a past deadline was kept");
    assert_eq!(
        listed.dropped, 1,
        "the immortal record's entry was not dropped"
    );
}

/// A standalone server told to wait for a replica: without one, a delete fails within the
/// bound instead of succeeding unprotected; with one, it succeeds. Prints what the wait costs.
#[actix_web::test]
async fn deletes_that_must_reach_a_replica_fail_closed_without_one() {
    let primary = RedisServer::start();
    let prefix = unique_prefix();
    let plain = RedisStore::builder(primary.url())
        .key_prefix(&prefix)
        .connect()
        .await
        .unwrap();
    let waiting = RedisStore::builder(primary.url())
        .key_prefix(&prefix)
        .wait_for_replicas(1, Duration::from_millis(100))
        .connect()
        .await
        .unwrap();
    let minute = Duration::from_secs(60);
    let key = random_key();
    plain
        .create(&key, &record("r", minute), in_(minute), &SessionData::new())
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let result = waiting.delete(&key).await;
    assert!(
        matches!(result, Err(StoreError::Unavailable(_))),
        "{result:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );

    // The replica loads the primary's data through a file: keep it out of the working tree.
    let dir = support::process::unique_dir("replica");
    let replica = RedisServer::start_with(&format!(
        "--replicaof 127.0.0.1 {} --dir {}",
        primary.port,
        dir.0.display()
    ));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut conn = connection(&replica.url()).unwrap();
    wait_for_replication(&mut conn, "master_link_status:up", deadline);
    // The primary counts the replica for WAIT once it lists it online.
    wait_for_replication(
        &mut connection(&primary.url()).unwrap(),
        "state=online",
        deadline,
    );
    // A bound that a busy 2-core machine running the rest of the suite still meets.
    let waiting = RedisStore::builder(primary.url())
        .key_prefix(&prefix)
        .wait_for_replicas(1, Duration::from_secs(2))
        .connect()
        .await
        .unwrap();
    let key = random_key();
    plain
        .create(&key, &record("r", minute), in_(minute), &SessionData::new())
        .await
        .unwrap();
    assert!(waiting.delete(&key).await.unwrap());
    let on_replica: bool = redis::cmd("EXISTS")
        .arg(waiting.session_key(&key))
        .query(&mut conn)
        .unwrap();
    assert!(!on_replica, "the delete answered before the replica had it");

    // What the wait costs a delete, on one host.
    const ROUNDS: u32 = 200;
    for (name, store) in [("DEL", &plain), ("DEL + WAIT 1", &waiting)] {
        let keys: Vec<SessionKey> = (0..ROUNDS).map(|_| random_key()).collect();
        for key in &keys {
            plain
                .create(key, &record("r", minute), in_(minute), &SessionData::new())
                .await
                .unwrap();
        }
        let started = std::time::Instant::now();
        for key in &keys {
            assert!(store.delete(key).await.unwrap());
        }
        eprintln!("{name}: {:?} per delete", started.elapsed() / ROUNDS);
    }
}

/// Polls `INFO replication` on `conn` until it mentions `state`, failing at `deadline`.
fn wait_for_replication(conn: &mut redis::Connection, state: &str, deadline: std::time::Instant) {
    while !redis::cmd("INFO")
        .arg("replication")
        .query::<String>(conn)
        .unwrap()
        .contains(state)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "replication never reported {state:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A store on the server at `url`, its keys under `prefix`, made on a [`MainRuntime`], with
/// its session's key.
fn store_at(url: String, prefix: String) -> (MainRuntime, RedisStore, SessionKey) {
    MainRuntime::with_store(async move {
        RedisStore::builder(url)
            .key_prefix(prefix)
            .connect()
            .await
            .unwrap()
    })
}

/// A current-thread runtime of its own, as an Actix worker runs.
fn worker_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Loads `key` a few times, long enough for the runtime's own connection to be dialled and
/// used, and checks each answer.
async fn load_repeatedly(store: &RedisStore, key: &SessionKey, user_id: &str) {
    for _ in 0..20 {
        let loaded = store.load(key).await.unwrap().expect("the session");
        assert_eq!(loaded.record.user_id(), user_id);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Loads `key` on `worker` (a session of user "main") until `ready` holds, for at most 10 s:
/// a worker dials its connections in the background while it works.
fn work_until(
    worker: &tokio::runtime::Runtime,
    store: &RedisStore,
    key: &SessionKey,
    what: &str,
    ready: impl Fn() -> bool,
) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !ready() {
        assert!(std::time::Instant::now() < deadline, "never {what}");
        worker.block_on(load_repeatedly(store, key, "main"));
    }
}

/// Waits up to 10 s for `ready`, which a runtime of its own brings about.
fn wait_until(what: &str, ready: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !ready() {
        assert!(std::time::Instant::now() < deadline, "never {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A new session of user "main" in `store`, for a minute.
async fn a_session_in(store: &RedisStore) -> SessionKey {
    let key = random_key();
    let created = store
        .create(
            &key,
            &record("main", Duration::from_secs(60)),
            in_(Duration::from_secs(60)),
            &SessionData::new(),
        )
        .await
        .unwrap();
    assert!(created);
    key
}

/// Where the store is made, as an Actix app makes it: a runtime that keeps running on a thread
/// of its own beside the workers (the `System` that runs the server), and drives the
/// connection the store opened.
struct MainRuntime {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MainRuntime {
    /// Starts it, and makes a store there (after a few loads of a session of user "main"), as
    /// `connect` does.
    fn with_store(
        connect: impl std::future::Future<Output = RedisStore> + Send + 'static,
    ) -> (Self, RedisStore, SessionKey) {
        let (made_tx, made_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            worker_runtime().block_on(async move {
                let store = connect.await;
                let key = a_session_in(&store).await;
                load_repeatedly(&store, &key, "main").await;
                made_tx.send((store, key)).unwrap();
                let _ = stopped.await;
            });
        });
        let (store, key) = made_rx.recv().unwrap();
        (
            Self {
                stop: Some(stop),
                thread: Some(thread),
            },
            store,
            key,
        )
    }
}

impl Drop for MainRuntime {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A store's commands from a current-thread runtime go through a connection of that runtime's
/// own, kept per thread. A runtime the thread no longer drives, or one that is gone, must not
/// keep that connection for the next runtime on the thread: its commands would wait for a
/// driver nobody polls, and time out.
#[test]
fn a_store_serves_every_runtime_a_thread_runs_in_turn() {
    serves_every_runtime_in_turn(async {
        RedisStore::builder(shared_redis_url())
            .key_prefix(unique_prefix())
            .command_timeout(Duration::from_millis(500))
            .connect()
            .await
            .unwrap()
    });
}

/// The same on a cluster, whose workers have cluster connections of their own.
#[test]
fn a_cluster_store_serves_every_runtime_a_thread_runs_in_turn() {
    let cluster = support::cluster::RedisCluster::start();
    let nodes = cluster.urls();
    serves_every_runtime_in_turn(async move {
        RedisStore::cluster_builder(nodes)
            .key_prefix(unique_prefix())
            .command_timeout(Duration::from_millis(500))
            .connect()
            .await
            .unwrap()
    });
}

fn serves_every_runtime_in_turn(
    connect: impl std::future::Future<Output = RedisStore> + Send + 'static,
) {
    let (_main, store, key) = MainRuntime::with_store(connect);
    let first = worker_runtime();
    first.block_on(load_repeatedly(&store, &key, "main"));
    // `first` lives on, idle, while a second runtime on the same thread uses the store.
    let second = worker_runtime();
    second.block_on(load_repeatedly(&store, &key, "main"));
    drop(second);
    // And after the second is gone, a third.
    worker_runtime().block_on(load_repeatedly(&store, &key, "main"));
    first.block_on(load_repeatedly(&store, &key, "main"));
}

/// Each current-thread runtime (each Actix worker) that uses a standalone store dials
/// connections of its own, beside the store's shared one, and keeps using them: one for its
/// commands and one for its lookups.
#[test]
fn each_worker_runtime_gets_connections_of_its_own() {
    let server = RedisServer::start();
    let url = server.url();
    let (_main, store, key) = {
        let url = url.clone();
        MainRuntime::with_store(async move { RedisStore::connect(&url).await.unwrap() })
    };
    let connected = || -> (usize, usize) {
        let list = client_list(&url);
        // Not counting this admin connection.
        (list.len() - 1, lookup_clients(&list).len())
    };
    // The store's shared connection, and the main runtime's own two.
    wait_until("a lookup connection for the main runtime", || {
        connected().1 == 1
    });
    let before = connected();
    std::thread::scope(|threads| {
        for _ in 0..2 {
            threads.spawn(|| worker_runtime().block_on(load_repeatedly(&store, &key, "main")));
        }
    });
    // Their runtimes are gone, and their connections closed with them.
    let workers = std::thread::scope(|threads| {
        threads
            .spawn(|| {
                let runtime = worker_runtime();
                let expected = (before.0 + 2, before.1 + 1);
                work_until(&runtime, &store, &key, "the worker's two", || {
                    connected() == expected
                });
                connected()
            })
            .join()
            .unwrap()
    });
    assert_eq!(
        workers,
        (before.0 + 2, before.1 + 1),
        "two more connections for one more worker, one of them for its lookups"
    );
}

/// Each line of `CLIENT LIST` on the server at `url`.
fn client_list(url: &str) -> Vec<String> {
    let mut admin = connection(url).unwrap();
    let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut admin).unwrap();
    list.lines().map(str::to_owned).collect()
}

/// The lines of `list` that are workers' lookup connections.
fn lookup_clients(list: &[String]) -> Vec<&String> {
    list.iter()
        .filter(|line| line.contains(" name=actix-login-lookup "))
        .collect()
}

/// A worker's lookup connection that the server closes (a restart, `timeout`, an operator's
/// `CLIENT KILL`) ends, and the worker dials anew. Meanwhile, and after, lookups answer as the
/// server does, from the first one after the close (which may find the link closed under it,
/// and asks again through the worker's other connection): a session deleted in between is
/// gone, never read from anything kept, and no lookup fails.
#[test]
fn a_lookup_connection_the_server_closes_is_dialled_anew() {
    let server = RedisServer::start();
    let url = server.url();
    let (_main, store, key) = {
        let url = url.clone();
        MainRuntime::with_store(async move { RedisStore::connect(&url).await.unwrap() })
    };
    let worker = worker_runtime();
    work_until(&worker, &store, &key, "two lookup connections", || {
        lookup_clients(&client_list(&url)).len() == 2
    });
    let lookups: Vec<String> = lookup_clients(&client_list(&url))
        .into_iter()
        .map(|line| client_field(line, "id").to_owned())
        .collect();
    assert_eq!(lookups.len(), 2, "the main runtime's and the worker's");

    let mut admin = connection(&url).unwrap();
    for id in &lookups {
        let killed: i64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("ID")
            .arg(id)
            .query(&mut admin)
            .unwrap();
        assert_eq!(killed, 1);
    }
    let redialled = || {
        lookup_clients(&client_list(&url))
            .into_iter()
            .map(|line| client_field(line, "id").to_owned())
            .filter(|id| !lookups.contains(id))
            .count()
    };
    worker.block_on(async {
        // The first thing the worker does: its lookup connection is closed, and it does not
        // know yet.
        let live = store.load(&key).await.unwrap();
        assert_eq!(live.expect("the session").record.user_id(), "main");
        let other = a_session_in(&store).await;
        assert!(store.delete(&key).await.unwrap());
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        // Until the worker has a lookup connection again (the main runtime, which looks
        // nothing up now, does not).
        while redialled() == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "no lookup connection again"
            );
            assert!(
                store.load(&key).await.unwrap().is_none(),
                "a deleted session"
            );
            let live = store.load(&other).await.unwrap();
            assert_eq!(live.expect("a live session").record.user_id(), "main");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        load_repeatedly(&store, &other, "main").await;
        assert!(store.load(&key).await.unwrap().is_none());
    });
    assert_eq!(redialled(), 1, "the worker's, dialled anew");
}

/// An ACL user that may not run `CLIENT` still gets lookup connections, unnamed: the name is
/// for operators.
#[cfg(feature = "test-util")]
#[test]
fn a_user_whose_acl_denies_client_still_gets_lookup_connections() {
    let server = RedisServer::start();
    let prefix = unique_prefix();
    support::acl::acl_user(&server, "app", "secret", &prefix);
    let url = format!("redis://app:secret@127.0.0.1:{}", server.port);
    let (_main, store, key) = store_at(url, prefix);
    let worker = worker_runtime();
    let app = || {
        client_list(&server.url())
            .iter()
            .filter(|line| client_field(line, "user") == "app")
            .count()
    };
    // The shared connection, and two for each of the main runtime and the worker.
    work_until(&worker, &store, &key, "five connections", || app() == 5);
    let list = client_list(&server.url());
    assert!(lookup_clients(&list).is_empty(), "{list:?}");
}

/// The value of `field` in a line of `CLIENT LIST`.
fn client_field<'a>(line: &'a str, field: &str) -> &'a str {
    line.split(' ')
        .find_map(|pair| pair.strip_prefix(field)?.strip_prefix('='))
        .unwrap_or_default()
}

/// Lookups read the database the URL names, as the user it names: a worker's lookup
/// connection logs in and selects the database as its other connections do. Were it to read
/// database 0, or as the default user, no session would be found.
#[cfg(feature = "test-util")]
#[test]
fn lookups_read_the_database_the_url_names_as_its_user() {
    let server = RedisServer::start();
    let prefix = unique_prefix();
    let mut admin = connection(&server.url()).unwrap();
    let mut setuser = redis::cmd("ACL");
    setuser
        .arg("SETUSER")
        .arg("app")
        .arg("reset")
        .arg("on")
        .arg(">secret")
        .arg(format!("~{prefix}:*"));
    for rule in support::acl::STORE_COMMANDS.split_whitespace() {
        setuser.arg(rule);
    }
    setuser.arg("+select").arg("+client|setname");
    setuser.exec(&mut admin).unwrap();
    // The default user may not read: a lookup as that user would fail, not find nothing.
    redis::cmd("ACL")
        .arg("SETUSER")
        .arg("default")
        .arg("resetpass")
        .arg(">admin-only")
        .exec(&mut admin)
        .unwrap();
    let url = format!("redis://app:secret@127.0.0.1:{}/3", server.port);
    let admin_url = format!("redis://default:admin-only@127.0.0.1:{}", server.port);
    let (_main, store, key) = store_at(url, prefix);
    redis::cmd("AUTH")
        .arg("default")
        .arg("admin-only")
        .exec(&mut admin)
        .unwrap();
    let list = || -> Vec<String> {
        let list: String = redis::cmd("CLIENT")
            .arg("LIST")
            .query(&mut connection(&admin_url).unwrap())
            .unwrap();
        list.lines().map(str::to_owned).collect()
    };
    // A worker's lookup connection that has served lookups.
    let worker = worker_runtime();
    work_until(
        &worker,
        &store,
        &key,
        "a lookup connection that served",
        || {
            lookup_clients(&list())
                .iter()
                .any(|line| client_field(line, "cmd") == "hmget")
        },
    );
    let list = list();
    let lookups = lookup_clients(&list);
    for line in lookups {
        assert_eq!(client_field(line, "user"), "app", "{line}");
        assert_eq!(client_field(line, "db"), "3", "{line}");
        assert_eq!(client_field(line, "cmd"), "hmget", "{line}");
    }
}

/// A store on one server behind `proxy`, with timeouts of 500 ms.
fn builder_behind(proxy: &ChaosProxy) -> actix_login::RedisStoreBuilder {
    RedisStore::builder(proxy.url())
        .key_prefix(unique_prefix())
        .command_timeout(Duration::from_millis(500))
        .connect_timeout(Duration::from_millis(500))
}

/// A store on one server behind a proxy, made on a [`MainRuntime`], with its session's key.
fn store_behind(proxy: &ChaosProxy) -> (MainRuntime, RedisStore, SessionKey) {
    let builder = builder_behind(proxy);
    MainRuntime::with_store(async move { builder.connect().await.unwrap() })
}

/// How many connections `server` has accepted so far, not counting the one that asks.
fn connections_made_to(server: &RedisServer) -> u64 {
    let mut admin = connection(&server.url()).unwrap();
    let info: String = redis::cmd("INFO").arg("stats").query(&mut admin).unwrap();
    let made: u64 = info
        .lines()
        .find_map(|line| line.strip_prefix("total_connections_received:"))
        .and_then(|count| count.trim().parse().ok())
        .expect("INFO stats reports total_connections_received");
    made - 1
}

/// Loads `key` until it answers, on `runtime`, for at most 10 s.
fn load_until_answered(runtime: &tokio::runtime::Runtime, store: &RedisStore, key: &SessionKey) {
    runtime.block_on(async {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !matches!(store.load(key).await, Ok(Some(_))) {
            assert!(
                std::time::Instant::now() < deadline,
                "the store never moved off the silent connection"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
}

/// `count` loads of `key`, each started 40 ms after the one before (at fixed times, so that a
/// late wake-up does not push the later ones back), and their answers in order.
async fn loads_40_ms_apart(
    store: &RedisStore,
    key: &SessionKey,
    count: u32,
) -> Vec<Result<Option<actix_login::store::StoredSession>, StoreError>> {
    let start = tokio::time::Instant::now();
    let mut loads = Vec::new();
    for k in 0..count {
        tokio::time::sleep_until(start + Duration::from_millis(40) * k).await;
        let (store, key) = (store.clone(), key.clone());
        loads.push(tokio::spawn(async move { store.load(&key).await }));
    }
    let mut answers = Vec::new();
    for load in loads {
        answers.push(load.await.unwrap());
    }
    answers
}

/// A multi-thread runtime, whose tasks use the store's shared connection.
fn shared_link_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

/// The shared connection goes silent, and the timeout that finds it out comes on a runtime that
/// ends right after (an Actix worker that stops, a background job's short-lived runtime). The
/// replacement it starts runs on the runtime that made the store, so it is not lost with that
/// runtime: the first command on the shared connection after it answers.
#[test]
fn a_replacement_started_on_a_runtime_that_ends_still_happens() {
    let server = RedisServer::start();
    let proxy = ChaosProxy::start(server.port);
    let (_main, store, key) = store_behind(&proxy);

    proxy.sever();
    let brief = worker_runtime();
    // Its own connection is not dialled yet: the load goes through the shared one.
    let failed = brief.block_on(store.load(&key));
    assert!(matches!(failed, Err(StoreError::Timeout)), "{failed:?}");
    drop(brief);

    // Time for a replacement to connect, wherever it runs.
    std::thread::sleep(Duration::from_secs(1));
    let answer = shared_link_runtime().block_on(store.load(&key));
    assert!(matches!(answer, Ok(Some(_))), "{answer:?}");
}

/// The runtime that made the store has ended, and the shared connection with it: one server's
/// connection reconnects on the runtime that uses it, and when that connection goes silent,
/// the replacement runs there too, its own runtime being gone.
#[test]
fn a_store_whose_runtime_ended_still_replaces_a_silent_connection() {
    let server = RedisServer::start();
    let proxy = ChaosProxy::start(server.port);
    let builder = builder_behind(&proxy);
    let (store, key) = worker_runtime().block_on(async move {
        let store = builder.connect().await.unwrap();
        let key = a_session_in(&store).await;
        (store, key)
    });
    let runtime = shared_link_runtime();
    load_until_answered(&runtime, &store, &key);

    // Old enough to be replaced.
    std::thread::sleep(Duration::from_millis(600));
    proxy.sever();
    load_until_answered(&runtime, &store, &key);
}

/// The same on an Actix worker, whose commands go through a connection of its own, while new
/// commands keep coming: the worker's connection is dialled anew once, and the commands that
/// time out on the old one after that must not drop the new one (each did, and the next command
/// dialled again).
#[test]
fn a_worker_redials_a_silent_connection_once_while_commands_keep_coming() {
    let server = RedisServer::start();
    let proxy = ChaosProxy::start(server.port);
    let (_main, store, key) = store_behind(&proxy);
    let worker = worker_runtime();
    // Its own connection is up.
    worker.block_on(load_repeatedly(&store, &key, "main"));
    let before = connections_made_to(&server);

    proxy.sever();
    for answer in worker.block_on(loads_40_ms_apart(&store, &key, 30)) {
        assert!(
            matches!(answer, Err(StoreError::Timeout) | Ok(Some(_))),
            "{answer:?}"
        );
    }
    load_until_answered(&worker, &store, &key);
    // One for the shared link and two for the worker (its link and its lookup link); two more
    // if a command raced the shared replacement and went to the old link after the worker's
    // new ones were up, as the age of a link is what tells which one a command that timed out
    // was on.
    let made = connections_made_to(&server) - before - 1;
    assert!(
        (3..=5).contains(&made),
        "{made} new connections where 3 are needed"
    );
}

/// Commands sent one after another on a shared connection that went silent time out one after
/// another, and the first replaces it: the later ones, sent before the replacement, must not
/// replace the replacement in turn (they did: ten connections for ten timeouts).
#[test]
fn a_silent_connection_is_replaced_once_however_many_commands_time_out_on_it() {
    let server = RedisServer::start();
    let proxy = ChaosProxy::start(server.port);
    let (_main, store, key) = store_behind(&proxy);
    let runtime = shared_link_runtime();
    let before = connections_made_to(&server);

    proxy.sever();
    // Ten, all sent before the first times out (500 ms), so each times out after the one
    // before; on a slow machine the last may start late enough to find the replacement, and
    // answer.
    let mut timed_out = 0;
    for answer in runtime.block_on(loads_40_ms_apart(&store, &key, 10)) {
        match answer {
            Err(StoreError::Timeout) => timed_out += 1,
            Ok(Some(_)) => {}
            other => panic!("{other:?}"),
        }
    }
    assert!(timed_out >= 5, "only {timed_out} loads timed out");
    load_until_answered(&runtime, &store, &key);
    // The connection that asked `before`, and the replacement.
    assert_eq!(
        connections_made_to(&server),
        before + 2,
        "one replacement connection"
    );
}

/// The address a store was given moves to another server (a DNS name or a service address, to
/// a replica just promoted) while the old one keeps running, and the worker's other connection
/// reconnects to the new server while its lookup connection stays on the old one. Within about
/// a second (the check's period), lookups read from the server the worker writes to: a session
/// deleted there is gone, and stays so.
#[test]
fn a_lookup_connection_follows_its_worker_to_another_server() {
    let old = RedisServer::start();
    // The replica loads the primary's data through a file: keep it out of the working tree.
    let dir = support::process::unique_dir("promoted");
    let new = RedisServer::start_with(&format!("--dir {}", dir.0.display()));
    let mut new_conn = connection(&new.url()).unwrap();
    redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(old.port)
        .exec(&mut new_conn)
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    wait_for_replication(&mut new_conn, "master_link_status:up", deadline);
    let forwarder = support::forwarder::Forwarder::start(old.port);
    let url = forwarder.url();
    let (_main, store, key) =
        MainRuntime::with_store(async move { RedisStore::connect(&url).await.unwrap() });
    let worker = worker_runtime();
    // The main runtime's lookup connection and the worker's, on the old server.
    work_until(&worker, &store, &key, "two lookup connections", || {
        lookup_clients(&client_list(&old.url())).len() == 2
    });
    let mut old_conn = connection(&old.url()).unwrap();
    let replicated: i64 = redis::cmd("WAIT")
        .arg(1)
        .arg(2000)
        .query(&mut old_conn)
        .unwrap();
    assert_eq!(replicated, 1, "the new server did not get the session");

    forwarder.switch_to(new.port);
    redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .exec(&mut new_conn)
        .unwrap();
    // The old server drops every connection of the store's but the lookup ones, which reconnect
    // to the new server.
    for line in client_list(&old.url()) {
        if client_field(&line, "name") != "actix-login-lookup"
            && client_field(&line, "cmd") != "client|list"
        {
            let _: redis::RedisResult<i64> = redis::cmd("CLIENT")
                .arg("KILL")
                .arg("ID")
                .arg(client_field(&line, "id"))
                .query(&mut old_conn);
        }
    }
    let stale_for = worker.block_on(async {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            match store.delete(&key).await {
                Ok(deleted) => {
                    assert!(deleted, "the new server had the session");
                    break;
                }
                // Its connection finds out it was dropped.
                Err(_) => assert!(std::time::Instant::now() < deadline, "no reconnect"),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let deleted = std::time::Instant::now();
        while store.load(&key).await.unwrap().is_some() {
            assert!(
                deleted.elapsed() < Duration::from_secs(3),
                "lookups still read the old server"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let stale_for = deleted.elapsed();
        for _ in 0..20 {
            assert!(
                store.load(&key).await.unwrap().is_none(),
                "read the old server again"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        stale_for
    });
    let kept: bool = redis::cmd("EXISTS")
        .arg(store.session_key(&key))
        .query(&mut old_conn)
        .unwrap();
    assert!(
        kept,
        "the old server was to keep the session: the test proves nothing"
    );
    eprintln!("lookups read the old server for {stale_for:?} after the delete");
}

/// The address moves to another server between the dial of a worker's connection and that of
/// its lookup connection (here: the lookup connection is closed after the move, and dialled
/// anew): the two reach different servers, and the lookup connection is not used. Lookups read
/// the server the worker writes to: a session only the other server holds is not found.
#[test]
fn a_lookup_connection_on_another_server_than_its_worker_is_not_used() {
    let old = RedisServer::start();
    let new = RedisServer::start();
    let forwarder = support::forwarder::Forwarder::start(old.port);
    let url = forwarder.url();
    let (_main, store, key) = store_at(url, unique_prefix());
    let worker = worker_runtime();
    work_until(&worker, &store, &key, "two lookup connections", || {
        lookup_clients(&client_list(&old.url())).len() == 2
    });
    forwarder.switch_to(new.port);
    // The same session on the new server only, as written by hand: a lookup there finds it.
    let mut old_conn = connection(&old.url()).unwrap();
    let mut new_conn = connection(&new.url()).unwrap();
    let redis_key = store.session_key(&key);
    let fields: Vec<(Vec<u8>, Vec<u8>)> = redis::cmd("HGETALL")
        .arg(&redis_key)
        .query(&mut old_conn)
        .unwrap();
    let mut copy = redis::cmd("HSET");
    copy.arg(&redis_key);
    for (field, value) in fields {
        copy.arg(field).arg(value);
    }
    copy.exec(&mut new_conn).unwrap();
    redis::cmd("PEXPIRE")
        .arg(&redis_key)
        .arg(60_000)
        .exec(&mut new_conn)
        .unwrap();
    for line in lookup_clients(&client_list(&old.url())) {
        let _: i64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("ID")
            .arg(client_field(line, "id"))
            .query(&mut old_conn)
            .unwrap();
    }
    worker.block_on(async {
        // The worker's other connection stays on the old server; there the session goes.
        assert!(store.delete(&key).await.unwrap());
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        while std::time::Instant::now() < deadline {
            assert!(
                store.load(&key).await.unwrap().is_none(),
                "a lookup read the server the worker does not write to"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    // The worker tried: a lookup connection reached the new server, and went unused.
    let tried: u64 = new
        .command_counts()
        .get("client|setname")
        .copied()
        .unwrap_or(0);
    assert!(
        tried >= 1,
        "no lookup connection was dialled to the new server"
    );
}
