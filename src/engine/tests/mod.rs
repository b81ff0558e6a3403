//! The engine's rules, checked against `MemoryStore` without any HTTP: the life of a session,
//! stores that fail, and races forced into a chosen interleaving.

use std::future::Future;

use serde_json::value::RawValue;

use super::*;
use crate::error::{Error, StoreError};
use crate::record::{DataChange, SessionData};
use crate::store::memory::MemoryStore;
use crate::store::SessionStore;
use crate::store::{Admission, Carry, Counter, DataWrite, StoredSession, UserSessions};

fn run<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a test runtime")
        .block_on(future)
}

fn engine_with(store: MemoryStore, change: impl FnOnce(&mut SessionRules)) -> SessionEngine {
    let mut rules = SessionRules::default();
    change(&mut rules);
    SessionEngine::new(store, rules)
}

fn grant(user_id: &str) -> Grant {
    Grant {
        user_id: user_id.to_owned(),
        user: RawValue::from_string(format!(r#"{{"name":"{user_id}"}}"#)).unwrap(),
        roles: vec!["editor".to_owned()],
        ip: Some("192.0.2.7".to_owned()),
        user_agent: Some("test-agent".to_owned()),
        credentials: None,
        remember: false,
        bearer: false,
        factors: crate::record::Factors::Password,
    }
}

async fn login(engine: &SessionEngine, user_id: &str) -> Issued {
    engine
        .login(None, None, grant(user_id), true)
        .await
        .result
        .unwrap()
}

async fn is_live(engine: &SessionEngine, token: &SessionToken) -> bool {
    engine.resolve(token).await.unwrap().is_some()
}

mod failures;
mod lifecycle;
mod races;
