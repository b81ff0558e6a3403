//! A rotation (renew, a login that keeps a visitor's data) cut off after any of its steps
//! leaves the old token either fully working or dead, never half: no key that still reads but
//! refuses every write, refuses to move, and outlives the next login.

use std::time::{Duration, SystemTime};

use actix_login::store::{Carry, DataChange, DataWrite, SessionKey, SessionRecord, SessionStore};
use actix_login::{RedisStore, SessionData};
use serde_json::value::RawValue;

use crate::support::chaos_proxy::{ChaosProxy, Mode};
use crate::support::cluster::RedisCluster;
use crate::support::http::minimal::app;
use crate::support::http::*;
use crate::support::redis_server::{connection, mark_as_moving, unique_prefix, RedisServer};

/// Each way of the proxy holds every chunk this long, so a round trip takes twice as long and a
/// cut-off can land between any two commands of a rotation.
const HOP: Duration = Duration::from_millis(20);

/// A key of group `abcd`: a rotation moves a session within its group.
fn key(n: usize) -> SessionKey {
    SessionKey::parse(&format!("abcd{n:0>28}")).expect("a well-formed key")
}

fn record(n: usize) -> SessionRecord {
    let now = SystemTime::now();
    let user = RawValue::from_string(r#"{"id":7}"#.to_owned()).unwrap();
    SessionRecord::new(
        format!("public-id-{n}"),
        "7",
        user,
        now,
        now + Duration::from_secs(3600),
    )
}

fn an_hour() -> SystemTime {
    SystemTime::now() + Duration::from_secs(3600)
}

fn insert(name: &str) -> Vec<DataChange> {
    vec![DataChange::Insert {
        name: name.to_owned(),
        json: "1".to_owned(),
    }]
}

/// What a rotation cut off left behind for the old and the new key.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// The old token works: it reads, takes writes and can still move.
    OldWorks,
    /// The old token is dead to reads and writes (the move went through, or far enough).
    OldDead,
}

/// Judges the old key as a request would, through a store that is not behind the proxy.
async fn judge(store: &RedisStore, old: &SessionKey, spare: &SessionKey, n: usize) -> Outcome {
    match store.load(old).await.unwrap() {
        Some(_) => {
            let write = store
                .write_data(old, &insert("after"), 65536)
                .await
                .unwrap();
            assert!(
                matches!(write, DataWrite::Written(_)),
                "cut {n}: the old session reads but refuses a write: {write:?}"
            );
            let moved = store
                .rotate(old, spare, &record(n), an_hour(), Carry::DataAndUser)
                .await
                .unwrap();
            assert!(moved, "cut {n}: the old session reads but cannot move");
            Outcome::OldWorks
        }
        None => {
            let write = store
                .write_data(old, &insert("after"), 65536)
                .await
                .unwrap();
            assert!(
                matches!(write, DataWrite::Gone),
                "cut {n}: a dead session took a write: {write:?}"
            );
            Outcome::OldDead
        }
    }
}

#[actix_web::test]
async fn a_rotation_cut_off_at_any_step_leaves_the_old_token_working_or_dead() {
    let server = RedisServer::start();
    let proxy = ChaosProxy::start(server.port);
    let prefix = unique_prefix();
    let slow = RedisStore::builder(proxy.url())
        .key_prefix(&prefix)
        .command_timeout(Duration::from_secs(5))
        .connect()
        .await
        .unwrap();
    let direct = RedisStore::builder(server.url())
        .key_prefix(&prefix)
        .connect()
        .await
        .unwrap();

    let mut outcomes = Vec::new();
    // From before the first command arrives to after the last reply: every 10 ms, half a hop.
    for cut in 0..16 {
        let (old, new, spare) = (key(3 * cut), key(3 * cut + 1), key(3 * cut + 2));
        assert!(direct
            .create(&old, &record(cut), an_hour(), &SessionData::new())
            .await
            .unwrap());
        proxy.set_mode(Mode::Delay(HOP));
        let moved = record(cut);
        let rotation = slow.rotate(&old, &new, &moved, an_hour(), Carry::DataAndUser);
        let limit = Duration::from_millis(10) * u32::try_from(cut).unwrap();
        let finished = tokio::time::timeout(limit, rotation).await.is_ok();
        // Whatever was already on its way lands; nothing more is sent.
        tokio::time::sleep(HOP * 4).await;
        proxy.set_mode(Mode::Pass);
        let outcome = judge(&direct, &old, &spare, cut).await;
        if finished {
            assert_eq!(outcome, Outcome::OldDead, "cut {cut}: a finished rotation");
        }
        outcomes.push(outcome);
    }
    // The sweep reached past the end of the rotation, so the cuts fell all along it.
    assert_eq!(outcomes.last(), Some(&Outcome::OldDead), "{outcomes:?}");
}

/// The state a rotation on a Redis Cluster leaves when it is cut off after its first step: the
/// old key copied and marked as moving, never deleted. It is dead at once, and the next login
/// from that browser removes it. (Only a cluster marks keys: on one server a rotation is one
/// script, and reads there leave the mark out.)
#[actix_web::test]
async fn a_key_left_marked_as_moving_is_dead_and_the_next_login_removes_it() {
    let cluster = RedisCluster::start();
    let prefix = unique_prefix();
    let store = cluster.store(&prefix).await;
    let app = app(store.clone()).await;
    let token = log_in(&app, 7).await;
    let old = redis_session_key(&prefix, &token);
    let mut raw = connection(&cluster.urls()[cluster.node_serving(&old)]).unwrap();
    mark_as_moving(
        &mut raw,
        &old,
        &format!("{}elsewhere", &stored_key(&token)[..4]),
    );

    assert_eq!(status(&app, get("/me", Some(&token))).await, 401);

    // The lookups that read data too: by the data names the store has met, and for a session
    // it knows to hold large data (5 KB).
    for (n, json) in [
        (1, "[1]".to_owned()),
        (2, format!("\"{}\"", "x".repeat(5000))),
    ] {
        let (key, mut data) = (key(n), SessionData::new());
        data.insert("cart", json.clone());
        assert!(store
            .create(&key, &record(n), an_hour(), &data)
            .await
            .unwrap());
        for _ in 0..2 {
            let loaded = store.load_with_data(&key).await.unwrap().expect("live");
            let kept = loaded.data.map(|data| data.get("cart").map(str::to_owned));
            assert_eq!(kept, (n == 1).then(|| Some(json.clone())), "{n}");
        }
        let redis_key = store.session_key(&key);
        let mut raw = connection(&cluster.urls()[cluster.node_serving(&redis_key)]).unwrap();
        mark_as_moving(&mut raw, &redis_key, "abcdelsewhere");
        assert!(
            store.load_with_data(&key).await.unwrap().is_none(),
            "{n}: marked"
        );
    }

    let again = log_in_with(&app, 7, &token).await;
    let exists: bool = redis::cmd("EXISTS").arg(&old).query(&mut raw).unwrap();
    assert!(!exists, "the login left the marked key behind");
    assert_eq!(status(&app, get("/me", Some(&again))).await, 200);
}

/// A rotation on a cluster marks the old key (taking its record away) before it indexes the
/// new one. A revocation that lists the user's sessions in between must still find the session
/// under the old key, whose deletion makes the rotation give up; listed as gone, the session
/// would live on under the new key, which the revocation never saw.
#[actix_web::test]
async fn a_session_half_way_through_a_rotation_on_a_cluster_is_still_listed() {
    let cluster = RedisCluster::start();
    let store = cluster.store(&unique_prefix()).await;
    let (old, new) = (key(1), key(2));
    for (n, k) in [(1, &old), (2, &new)] {
        assert!(store
            .create(k, &record(n), an_hour(), &SessionData::new())
            .await
            .unwrap());
    }
    // The state right after the rotation's script: the copy not yet indexed, the old key
    // marked.
    let index = store.user_index_key("7");
    let mut raw = connection(&cluster.urls()[cluster.node_serving(&index)]).unwrap();
    let _: () = redis::cmd("HDEL")
        .arg(&index)
        .arg(new.as_str())
        .query(&mut raw)
        .unwrap();
    let old_redis_key = store.session_key(&old);
    let mut raw = connection(&cluster.urls()[cluster.node_serving(&old_redis_key)]).unwrap();
    mark_as_moving(&mut raw, &old_redis_key, new.as_str());
    assert!(store.load(&old).await.unwrap().is_none(), "dead to lookups");

    let listed = store.list("7").await.unwrap();
    let keys: Vec<&SessionKey> = listed.live.iter().map(|(key, _)| key).collect();
    assert_eq!(
        keys,
        [&old],
        "the half-moved session is listed under its old key"
    );
    assert_eq!(listed.dropped, 0);
    // With the copy's record: the old key's own is gone.
    assert_eq!(listed.live[0].1.record.id(), "public-id-2");

    // A mark that names no live session (the rotation gave up) lists as gone.
    assert!(store.delete(&new).await.unwrap());
    let listed = store.list("7").await.unwrap();
    assert!(listed.live.is_empty(), "{:?}", listed.live);
    assert_eq!(listed.dropped, 1);
}

/// A step later, the copy is indexed too and the old key not yet deleted: both index entries
/// lead to one session, which is listed once, under the key it lives on, and neither entry is
/// dropped (the rotation removes the old one, or the mark's TTL ends it). A mark that names
/// its own key is not taken for such a copy: the entry is dropped as before.
#[actix_web::test]
async fn a_session_whose_copy_is_indexed_is_listed_once_under_the_copy() {
    let cluster = RedisCluster::start();
    let store = cluster.store(&unique_prefix()).await;
    let (old, new) = (key(1), key(2));
    for (n, k) in [(1, &old), (2, &new)] {
        assert!(store
            .create(k, &record(n), an_hour(), &SessionData::new())
            .await
            .unwrap());
    }
    let old_redis_key = store.session_key(&old);
    let mut old_node = connection(&cluster.urls()[cluster.node_serving(&old_redis_key)]).unwrap();
    mark_as_moving(&mut old_node, &old_redis_key, new.as_str());

    let listed = store.list("7").await.unwrap();
    let keys: Vec<&SessionKey> = listed.live.iter().map(|(key, _)| key).collect();
    assert_eq!(keys, [&new], "one session, listed once");
    assert_eq!(listed.live[0].1.record.id(), "public-id-2");
    assert_eq!(listed.dropped, 0);
    let index = store.user_index_key("7");
    let mut raw = connection(&cluster.urls()[cluster.node_serving(&index)]).unwrap();
    let members: Vec<String> = redis::cmd("HKEYS").arg(&index).query(&mut raw).unwrap();
    assert_eq!(
        members.len(),
        2,
        "the old entry is the rotation's to remove"
    );

    // A corrupt mark naming its own key is no copy: the entry reads as no session and goes.
    mark_as_moving(&mut old_node, &old_redis_key, old.as_str());
    let listed = store.list("7").await.unwrap();
    let keys: Vec<&SessionKey> = listed.live.iter().map(|(key, _)| key).collect();
    assert_eq!(keys, [&new]);
    assert_eq!(listed.dropped, 1, "the self-marked entry is dropped");
}

/// A real rotation on a cluster, held between its script and its index write (the node of the
/// user's index pauses writes): from the moment the copy exists, the old token is dead to
/// lookups, with its data or without, and the session is listed; once the rotation ends, only
/// the new token works.
#[actix_web::test]
async fn a_rotation_on_a_cluster_kills_the_old_token_the_moment_it_copies() {
    let cluster = RedisCluster::start();
    let mut data = SessionData::new();
    data.insert("cart", "[1]".to_owned());
    let SplitRotation {
        store,
        observer,
        old,
        new,
        user,
        record,
        session_node,
        index_node,
    } = SplitRotation::set_up(&cluster, &data).await;

    let mut index_conn = connection(&cluster.urls()[index_node]).unwrap();
    pause_writes(&mut index_conn);
    let rotation = store.rotate(&old, &new, &record, an_hour(), Carry::DataAndUser);
    let check = async {
        let mut raw = connection(&cluster.urls()[session_node]).unwrap();
        let copy = redis::cmd("EXISTS").arg(store.session_key(&new)).to_owned();
        wait_for(&mut raw, "the copy", &copy).await;
        assert!(
            observer.load(&old).await.unwrap().is_none(),
            "old token, mid-rotation"
        );
        assert!(
            observer.load_with_data(&old).await.unwrap().is_none(),
            "with its data"
        );
        let listed = observer.list(&user).await;
        resume_writes(&mut index_conn);
        listed
    };
    let (moved, listed) = futures_util::future::join(rotation, check).await;
    let listed = listed.unwrap();
    let keys: Vec<&SessionKey> = listed.live.iter().map(|(key, _)| key).collect();
    assert_eq!(keys, [&old], "listed mid-rotation under the old key");
    assert!(moved.unwrap(), "the rotation went through");
    assert!(store.load(&old).await.unwrap().is_none());
    let after = store
        .load_with_data(&new)
        .await
        .unwrap()
        .expect("the new token works");
    let cart = after
        .data
        .and_then(|data| data.get("cart").map(str::to_owned));
    assert_eq!(cart.as_deref(), Some("[1]"), "the data moved along");
}

/// A real rotation on a cluster, held after it indexed the copy and before it deleted the old
/// key (the index's node pauses writes, then the session's node, then the index's node lets
/// the index write through): "log out everywhere" lists the session once, under the new key,
/// and ends it, whichever of its delete and the rotation's lands first.
#[actix_web::test]
async fn log_out_everywhere_in_a_rotation_s_last_step_on_a_cluster_ends_the_session() {
    let cluster = RedisCluster::start();
    // The revocation goes through the observer: on the rotating store's connection, its
    // commands would queue behind the rotation's paused ones.
    let SplitRotation {
        store,
        observer: revoker,
        old,
        new,
        user,
        record,
        session_node,
        index_node,
    } = SplitRotation::set_up(&cluster, &SessionData::new()).await;
    let index = store.user_index_key(&user);

    let mut index_conn = connection(&cluster.urls()[index_node]).unwrap();
    let mut session_conn = connection(&cluster.urls()[session_node]).unwrap();
    pause_writes(&mut index_conn);
    let rotation = store.rotate(&old, &new, &record, an_hour(), Carry::DataAndUser);
    let log_out_everywhere = async {
        // Once the rotation's script has made the copy, hold its delete of the old key.
        let copy = redis::cmd("EXISTS").arg(store.session_key(&new)).to_owned();
        wait_for(&mut session_conn, "the copy", &copy).await;
        pause_writes(&mut session_conn);
        resume_writes(&mut index_conn);
        let indexed = redis::cmd("HEXISTS")
            .arg(&index)
            .arg(new.as_str())
            .to_owned();
        wait_for(&mut index_conn, "the copy's index entry", &indexed).await;
        let listed = revoker.list(&user).await.unwrap();
        resume_writes(&mut session_conn);
        let keys: Vec<SessionKey> = listed.live.into_iter().map(|(key, _)| key).collect();
        for key in &keys {
            revoker.delete(key).await.unwrap();
        }
        keys
    };
    let (rotated, listed) = futures_util::future::join(rotation, log_out_everywhere).await;
    assert_eq!(
        listed,
        std::slice::from_ref(&new),
        "listed once, under the new key"
    );
    rotated.unwrap();
    for key in [&old, &new] {
        assert!(
            store.load(key).await.unwrap().is_none(),
            "a token outlived the logout"
        );
    }
}

/// A session of a user whose index lives on another node than the session, on a cluster,
/// ready to rotate from `old` to `new`: pausing writes on the index's node holds the rotation
/// after its script. `observer` is a second store for the checks, whose commands do not queue
/// behind the rotating store's paused ones.
struct SplitRotation {
    store: RedisStore,
    observer: RedisStore,
    old: SessionKey,
    new: SessionKey,
    user: String,
    record: SessionRecord,
    session_node: usize,
    index_node: usize,
}

impl SplitRotation {
    /// Creates the session under `old`, with `data`.
    async fn set_up(cluster: &RedisCluster, data: &SessionData) -> Self {
        let prefix = unique_prefix();
        let connect = || {
            RedisStore::cluster_builder(cluster.urls())
                .key_prefix(&prefix)
                .command_timeout(Duration::from_secs(10))
                .connect()
        };
        let (store, observer) = (connect().await.unwrap(), connect().await.unwrap());
        let (old, new) = (key(1), key(2));
        let session_node = cluster.node_serving(&store.session_key(&old));
        let user = (0..1000)
            .map(|n| format!("user-{n}"))
            .find(|user| cluster.node_serving(&store.user_index_key(user)) != session_node)
            .expect("some index on another node");
        let index_node = cluster.node_serving(&store.user_index_key(&user));
        let profile = RawValue::from_string(r#"{"id":7}"#.to_owned()).unwrap();
        let now = SystemTime::now();
        let record = SessionRecord::new("public-id", user.clone(), profile, now, an_hour());
        assert!(store.create(&old, &record, an_hour(), data).await.unwrap());
        Self {
            store,
            observer,
            old,
            new,
            user,
            record,
            session_node,
            index_node,
        }
    }
}

/// Holds every client's writes on the node behind `conn` (for up to 5 s).
fn pause_writes(conn: &mut redis::Connection) {
    redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(5000)
        .arg("WRITE")
        .exec(conn)
        .unwrap();
}

fn resume_writes(conn: &mut redis::Connection) {
    redis::cmd("CLIENT").arg("UNPAUSE").exec(conn).unwrap();
}

/// Polls `check` on `conn` until it answers true, giving the runtime a turn in between (the
/// store's connections are driven on it).
async fn wait_for(conn: &mut redis::Connection, what: &str, check: &redis::Cmd) {
    let deadline = std::time::Instant::now() + Duration::from_secs(4);
    while !check.query::<bool>(conn).unwrap() {
        assert!(std::time::Instant::now() < deadline, "{what} never came");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Logs in as `id` from a browser that still holds `token`, and returns the new token.
async fn log_in_with<S, B>(app: &S, id: u64, token: &str) -> String
where
    S: actix_web::dev::Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse<B>,
        Error = actix_web::Error,
    >,
    B: actix_web::body::MessageBody,
{
    let res = actix_web::test::call_service(app, post(&format!("/login/{id}"), Some(token))).await;
    assert_eq!(res.status().as_u16(), 200);
    set_cookie(&res).expect("a new cookie").value().to_owned()
}
