//! Events and the activity log from the engine's side: what a login writes, and that a store
//! without a log, or a log turned off, costs a login nothing.

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use super::*;
use crate::engine::events::{EventKind, EventSink, SecurityEvent};
use crate::record::{ActivityKind, ActivityLimits};

/// A `MemoryStore` that keeps no activity log: the trait's defaults answer for it.
struct NoLog(MemoryStore);

impl SessionStore for NoLog {
    async fn create(
        &self,
        key: &SessionKey,
        record: &SessionRecord,
        expires_at: SystemTime,
        data: &SessionData,
    ) -> Result<bool, StoreError> {
        SessionStore::create(&self.0, key, record, expires_at, data).await
    }
    async fn load(&self, key: &SessionKey) -> Result<Option<StoredSession>, StoreError> {
        SessionStore::load(&self.0, key).await
    }
    async fn extend(&self, key: &SessionKey, expires_at: SystemTime) -> Result<bool, StoreError> {
        SessionStore::extend(&self.0, key, expires_at).await
    }
    async fn load_data(&self, key: &SessionKey) -> Result<Option<SessionData>, StoreError> {
        SessionStore::load_data(&self.0, key).await
    }
    async fn write_data(
        &self,
        key: &SessionKey,
        changes: &[DataChange],
        max_size: usize,
    ) -> Result<DataWrite, StoreError> {
        SessionStore::write_data(&self.0, key, changes, max_size).await
    }
    async fn update_user(
        &self,
        key: &SessionKey,
        user: &RawValue,
        roles: &[String],
    ) -> Result<bool, StoreError> {
        SessionStore::update_user(&self.0, key, user, roles).await
    }
    async fn delete(&self, key: &SessionKey) -> Result<bool, StoreError> {
        SessionStore::delete(&self.0, key).await
    }
    async fn list(&self, user_id: &str) -> Result<UserSessions, StoreError> {
        SessionStore::list(&self.0, user_id).await
    }
    async fn rotate(
        &self,
        old: &SessionKey,
        new: &SessionKey,
        record: &SessionRecord,
        expires_at: SystemTime,
        carry: Carry,
    ) -> Result<bool, StoreError> {
        SessionStore::rotate(&self.0, old, new, record, expires_at, carry).await
    }
    async fn admit_anonymous(&self, counters: &[Counter<'_>]) -> Result<Admission, StoreError> {
        SessionStore::admit_anonymous(&self.0, counters).await
    }
}

/// An engine whose events land in the returned list.
fn subscribed(engine: SessionEngine) -> (SessionEngine, Arc<Mutex<Vec<SecurityEvent>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let handler = Box::new(move |event: &SecurityEvent| sink.lock().unwrap().push(event.clone()));
    let events = EventSink::start(vec![handler], 16).unwrap();
    (engine.with_events(events), seen)
}

fn wait_for(seen: &Mutex<Vec<SecurityEvent>>, count: usize) -> Vec<SecurityEvent> {
    for _ in 0..1000 {
        if seen.lock().unwrap().len() >= count {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    seen.lock().unwrap().clone()
}

#[test]
fn a_login_writes_its_entry_and_tells_the_subscribers() {
    run(async {
        let (engine, seen) = subscribed(engine_with(MemoryStore::new(), |_| {}));
        let issued = login(&engine, "7").await;
        let log = engine.activity("7", None, 10).await.unwrap();
        assert_eq!(log.len(), 1);
        assert_eq!(log[0].kind, ActivityKind::Login);
        assert_eq!(
            log[0].session_id.as_deref(),
            Some(issued.session.record.id())
        );
        assert_eq!(log[0].ip.as_deref(), Some("192.0.2.7"));
        assert_eq!(log[0].user_agent.as_deref(), Some("test-agent"));
        let events = wait_for(&seen, 1);
        assert!(matches!(
            &events[0].kind,
            EventKind::LoginSucceeded { session_id, new_device: false, .. }
                if session_id == issued.session.record.id()
        ));
        assert_eq!(events[0].user_id.as_deref(), Some("7"));
    });
}

#[test]
fn a_store_without_an_activity_log_fails_no_login() {
    run(async {
        let engine = SessionEngine::new(NoLog(MemoryStore::new()), SessionRules::default());
        let (engine, seen) = subscribed(engine);
        let issued = login(&engine, "7").await;
        assert!(engine.resolve(&issued.token).await.unwrap().is_some());
        engine.logout(&issued.session.key, None).await.unwrap();
        assert!(engine.resolve(&issued.token).await.unwrap().is_none());
        // The events still go out; only reading the log fails, with the store's error.
        assert_eq!(wait_for(&seen, 2).len(), 2);
        assert!(matches!(
            engine.activity("7", None, 10).await,
            Err(Error::Store(_))
        ));
    });
}

#[test]
fn a_log_turned_off_writes_nothing() {
    run(async {
        let store = MemoryStore::new();
        let engine = engine_with(store.clone(), |rules| {
            rules.set_activity_log(Some(ActivityLimits {
                max_entries: 0,
                keep_for: std::time::Duration::from_secs(60),
            }));
        });
        login(&engine, "7").await;
        assert!(engine.activity("7", None, 10).await.unwrap().is_empty());
    });
}

#[test]
fn anonymous_sessions_have_no_log_and_no_events() {
    run(async {
        let (engine, seen) = subscribed(engine_with(MemoryStore::new(), |_| {}));
        let change = DataChange::Insert {
            name: "cart".into(),
            json: "[]".into(),
        };
        let (issued, _) = engine.start_anonymous(None, &[change]).await.unwrap();
        engine.logout(&issued.session.key, None).await.unwrap();
        assert!(engine.activity("", None, 10).await.unwrap().is_empty());
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(seen.lock().unwrap().is_empty());
    });
}

#[test]
fn impersonation_reaches_the_subscribers_without_a_token() {
    run(async {
        let (engine, seen) = subscribed(engine_with(MemoryStore::new(), |_| {}));
        let admin = login(&engine, "1").await;
        let imp = engine
            .impersonate(&admin.session, grant("2"))
            .await
            .unwrap();
        let back = engine
            .stop_impersonating(&imp.session)
            .await
            .unwrap()
            .unwrap();
        let events = wait_for(&seen, 3);
        let id = imp.session.record.id();
        assert!(matches!(
            &events[1].kind,
            EventKind::ImpersonationStarted { session_id, by } if session_id == id && by == "1"
        ));
        assert!(matches!(
            &events[2].kind,
            EventKind::ImpersonationEnded { session_id, by } if session_id == id && by == "1"
        ));
        assert_eq!(events[1].user_id.as_deref(), Some("2"));
        for event in &events {
            let json = serde_json::to_string(event).unwrap();
            for issued in [&admin, &imp, &back] {
                assert!(!json.contains(issued.token.as_str()), "{json}");
                assert!(!json.contains(issued.session.key.as_str()), "{json}");
            }
        }
    });
}

/// The events thread waits while idle and polls while busy: events sent in a burst, then after
/// it has gone back to waiting, then one at a time across its polls, all arrive, in order.
#[test]
fn events_arrive_in_order_across_idle_and_busy_spells() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let handler = Box::new(move |event: &SecurityEvent| sink.lock().unwrap().push(event.clone()));
    let events = EventSink::start(vec![handler], 16).unwrap();
    let user = |i: usize| format!("user-{i}");
    let send = |i: usize| events.send(SecurityEvent::new(Some(&user(i)), EventKind::LoginFailed));
    for i in 0..5 {
        send(i);
    }
    // Longer than the hundred empty polls after which the thread waits again.
    std::thread::sleep(std::time::Duration::from_millis(300));
    for i in 5..10 {
        send(i);
        std::thread::sleep(std::time::Duration::from_micros(700));
    }
    let got: Vec<Option<String>> = wait_for(&seen, 10)
        .into_iter()
        .map(|event| event.user_id)
        .collect();
    let sent: Vec<Option<String>> = (0..10).map(|i| Some(user(i))).collect();
    assert_eq!(got, sent);
    assert_eq!(events.dropped(), 0);
}
