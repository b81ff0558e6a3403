//! Login, logout, rotation, expiry, the cap and listing, one step at a time.

use std::time::{Duration, SystemTime};

use super::*;

#[test]
fn a_login_issues_a_token_that_resolves_to_its_record() {
    run(async {
        let engine = engine_with(MemoryStore::new(), |_| {});
        let issued = login(&engine, "7").await;
        let active = engine.resolve(&issued.token).await.unwrap().unwrap();
        let record = &active.record;
        assert_eq!(record.user_id(), "7");
        assert_eq!(record.user().get(), r#"{"name":"7"}"#);
        assert!(record.has_role("editor"));
        assert_eq!(record.ip(), Some("192.0.2.7"));
        assert_eq!(record.user_agent(), Some("test-agent"));
        assert_eq!(active.key, issued.token.key());
        assert!(record.expires_at() > active.expires_at);
    });
}

#[test]
fn login_ends_the_session_the_client_came_with() {
    run(async {
        let engine = engine_with(MemoryStore::new(), |_| {});
        let planted = login(&engine, "attacker").await;
        let outcome = engine
            .login(Some(&planted.token.key()), None, grant("victim"), true)
            .await;
        assert!(outcome.previous_ended);
        let fresh = outcome.result.unwrap();
        assert!(!is_live(&engine, &planted.token).await, "fixation");
        assert_ne!(fresh.token.key(), planted.token.key());
        assert!(is_live(&engine, &fresh.token).await);
        // A cookie that never was a session is "ended" as well: the client must drop it.
        let stranger = SessionToken::generate().unwrap();
        let outcome = engine
            .login(Some(&stranger.key()), None, grant("victim"), true)
            .await;
        assert!(outcome.previous_ended && outcome.result.is_ok());
    });
}

#[test]
fn logout_ends_the_session_and_follows_a_concurrent_rotation() {
    run(async {
        let engine = engine_with(MemoryStore::new(), |_| {});
        let first = login(&engine, "7").await;
        engine.logout(&first.token.key(), None).await.unwrap();
        assert!(!is_live(&engine, &first.token).await);

        // Another request rotated the session after this one resolved it: the logout that
        // holds the old key must still end the session under its new key.
        let second = login(&engine, "7").await;
        let rotated = engine.rotate(&second.session, Reauth::None).await.unwrap();
        engine
            .logout(&second.token.key(), Some(&second.session.record))
            .await
            .unwrap();
        assert!(!is_live(&engine, &rotated.token).await);
        assert!(engine.list("7", None).await.unwrap().is_empty());
    });
}

#[test]
fn rotation_kills_the_old_token_and_keeps_the_public_id() {
    run(async {
        let engine = engine_with(MemoryStore::new(), |_| {});
        let issued = login(&engine, "7").await;
        let created = issued.session.record.authenticated_at();
        std::thread::sleep(Duration::from_millis(5));
        let renewed = engine.rotate(&issued.session, Reauth::None).await.unwrap();
        assert!(!is_live(&engine, &issued.token).await);
        let active = engine.resolve(&renewed.token).await.unwrap().unwrap();
        assert_eq!(active.record.id(), issued.session.record.id());
        assert_eq!(active.record.authenticated_at(), created);

        let confirmed = engine.rotate(&active, Reauth::Password).await.unwrap();
        let active = engine.resolve(&confirmed.token).await.unwrap().unwrap();
        assert!(active.record.authenticated_at() > created);
        assert!(engine
            .rules()
            .is_fresh(active.record.authenticated_at(), SystemTime::now()));
    });
}

#[test]
fn a_revoked_session_cannot_be_rotated_back_to_life() {
    run(async {
        let engine = engine_with(MemoryStore::new(), |_| {});
        let issued = login(&engine, "7").await;
        assert_eq!(engine.revoke_all("7").await.unwrap(), 1);
        let err = engine
            .rotate(&issued.session, Reauth::None)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Unauthenticated), "{err:?}");
        assert!(engine.list("7", None).await.unwrap().is_empty());
    });
}

#[test]
fn sessions_end_at_the_idle_deadline_and_at_the_absolute_end() {
    run(async {
        let idle = engine_with(MemoryStore::new(), |rules| {
            rules.set_idle_timeout(Duration::from_millis(60));
        });
        let issued = login(&idle, "7").await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!is_live(&idle, &issued.token).await, "idle deadline");

        let lifetime = Duration::from_millis(500);
        let absolute = engine_with(MemoryStore::new(), |rules| {
            rules.set_absolute_timeout(lifetime);
        });
        // Each answer is judged by when its lookup started and ended, not by a schedule the
        // test may miss on a loaded machine; 2 ms covers the deadlines' millisecond rounding.
        let rounding = Duration::from_millis(2);
        let before_login = SystemTime::now();
        let issued = login(&absolute, "7").await;
        let after_login = SystemTime::now();
        // Activity keeps moving the idle deadline, never past the absolute end, and the
        // session ends at that end, not before.
        let mut lookups = 0;
        loop {
            let started = SystemTime::now();
            let resolved = absolute.resolve(&issued.token).await.unwrap();
            let ended = SystemTime::now();
            lookups += 1;
            match resolved {
                Some(active) => {
                    assert!(active.expires_at <= active.record.expires_at());
                    assert!(active.record.expires_at() <= after_login + lifetime + rounding);
                    assert!(
                        started <= after_login + lifetime + rounding,
                        "alive past the absolute end"
                    );
                }
                None => {
                    assert!(ended + rounding >= before_login + lifetime, "ended early");
                    break;
                }
            }
            assert!(lookups < 10_000, "never ended");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert!(lookups > 1, "not one lookup before the end");
    });
}

#[test]
fn the_idle_deadline_is_written_only_when_it_moves_by_a_tenth() {
    run(async {
        let store = MemoryStore::new();
        let engine = engine_with(store.clone(), |rules| {
            rules.set_idle_timeout(Duration::from_secs(2));
        });
        let issued = login(&engine, "7").await;
        let key = issued.token.key();
        let stored_deadline = || async {
            SessionStore::load(&store, &key)
                .await
                .unwrap()
                .unwrap()
                .expires_at
        };
        let at_login = stored_deadline().await;
        engine.resolve(&issued.token).await.unwrap().unwrap();
        assert_eq!(stored_deadline().await, at_login, "wrote without need");
        tokio::time::sleep(Duration::from_millis(250)).await;
        let active = engine.resolve(&issued.token).await.unwrap().unwrap();
        assert!(stored_deadline().await > at_login, "did not refresh");
        assert_eq!(stored_deadline().await, active.expires_at);
    });
}

#[test]
fn a_login_past_the_cap_ends_the_oldest_sessions() {
    run(async {
        let engine = engine_with(MemoryStore::new(), |rules| {
            rules.set_max_sessions_per_user(2);
        });
        let oldest = login(&engine, "7").await;
        std::thread::sleep(Duration::from_millis(2));
        let middle = login(&engine, "7").await;
        std::thread::sleep(Duration::from_millis(2));
        let newest = login(&engine, "7").await;
        assert!(!is_live(&engine, &oldest.token).await);
        assert!(is_live(&engine, &middle.token).await);
        assert!(is_live(&engine, &newest.token).await);
        assert_eq!(engine.list("7", None).await.unwrap().len(), 2);
        // Another user's sessions are not touched by this user's cap.
        let other = login(&engine, "8").await;
        assert!(is_live(&engine, &other.token).await);
    });
}

/// Another app instance whose clock runs ahead wrote sessions "newer" than any login here can
/// be: a login at the cap still keeps its own session, and ends the oldest of the others.
#[test]
fn a_login_never_ends_its_own_session_whatever_the_clocks_say() {
    run(async {
        let store = MemoryStore::new();
        let engine = engine_with(store.clone(), |rules| {
            rules.set_max_sessions_per_user(2);
        });
        let ahead = SystemTime::now() + Duration::from_secs(3600);
        let mut keys = Vec::new();
        for (i, id) in ["far-ahead-1", "far-ahead-2"].into_iter().enumerate() {
            let created = ahead + Duration::from_secs(i as u64);
            let record = SessionRecord::new(
                id,
                "7",
                RawValue::from_string("null".into()).unwrap(),
                created,
                created + Duration::from_secs(3600),
            );
            let token = SessionToken::generate().unwrap();
            let deadline = SystemTime::now() + Duration::from_secs(600);
            assert!(SessionStore::create(
                &store,
                &token.key(),
                &record,
                deadline,
                &SessionData::new()
            )
            .await
            .unwrap());
            keys.push(token);
        }
        let mine = login(&engine, "7").await;
        assert!(is_live(&engine, &mine.token).await);
        assert!(SessionStore::load(&store, &keys[0].key())
            .await
            .unwrap()
            .is_none());
        assert!(SessionStore::load(&store, &keys[1].key())
            .await
            .unwrap()
            .is_some());
    });
}

/// A login whose session a racing login ended before it finished learns so, and answers an
/// error instead of a dead session.
#[test]
fn a_login_pushed_out_before_it_finished_knows_it() {
    run(async {
        let store = MemoryStore::new();
        let engine = engine_with(store.clone(), |rules| {
            rules.set_max_sessions_per_user(1);
        });
        // The slow login has written its session, not yet trimmed.
        let now = SystemTime::now();
        let record = SessionRecord::new(
            "slow",
            "7",
            RawValue::from_string("null".into()).unwrap(),
            now,
            now + Duration::from_secs(3600),
        );
        let slow = SessionToken::generate().unwrap();
        let deadline = now + Duration::from_secs(600);
        assert!(
            SessionStore::create(&store, &slow.key(), &record, deadline, &SessionData::new())
                .await
                .unwrap()
        );
        std::thread::sleep(Duration::from_millis(2));
        let fast = login(&engine, "7").await;
        assert!(!engine.trim_to_cap("7", &slow.key()).await.unwrap());
        assert!(is_live(&engine, &fast.token).await);
    });
}

#[test]
fn listing_marks_the_current_session_and_revocation_spares_it_on_request() {
    run(async {
        let engine = engine_with(MemoryStore::new(), |_| {});
        let mine = login(&engine, "7").await;
        let other = login(&engine, "7").await;
        let listed = engine.list("7", Some(&mine.token.key())).await.unwrap();
        assert_eq!(listed.len(), 2);
        let current: Vec<_> = listed.iter().filter(|s| s.current).collect();
        assert_eq!(current.len(), 1);
        assert_eq!(current[0].id, mine.session.record.id());
        assert_eq!(current[0].ip.as_deref(), Some("192.0.2.7"));

        let revoked = engine
            .revoke_others("7", mine.session.record.id())
            .await
            .unwrap();
        assert_eq!(revoked, 1);
        assert!(is_live(&engine, &mine.token).await);
        assert!(!is_live(&engine, &other.token).await);
        // Revoking by public id never reaches another user's session.
        let theirs = login(&engine, "8").await;
        let id = theirs.session.record.id();
        assert!(!engine.revoke("7", id).await.unwrap());
        assert!(is_live(&engine, &theirs.token).await);
    });
}

/// Which credentials versions a link accepts: the one it was issued under, or none at all when
/// the store forgot it (kept longer than any link lives, so nothing changed meanwhile); never
/// one that appeared or changed since.
#[test]
fn links_follow_the_credentials_they_were_issued_under() {
    use crate::engine::links::{LinkPurpose, OneTimeLinks, Recipient};
    run(async {
        let store = MemoryStore::new();
        let links = OneTimeLinks::new(
            SessionEngine::new(store.clone(), SessionRules::default()),
            None,
        );
        let to = Recipient::new("9", "cy@example.test");
        let issue = || async {
            links
                .issue(LinkPurpose::PasswordReset, "cy", Some(to))
                .await
                .unwrap()
                .unwrap()
        };
        let valid = |secret: String| {
            let links = links.clone();
            async move {
                links
                    .peek(LinkPurpose::PasswordReset, &secret)
                    .await
                    .is_ok()
            }
        };

        // Issued with no version on record; one recorded since is a change.
        let link = issue().await;
        assert!(valid(link.secret().to_owned()).await);
        SessionStore::set_credentials_version(&store, "9", "v1", Duration::from_millis(80))
            .await
            .unwrap();
        assert!(!valid(link.secret().to_owned()).await);

        // Issued under v1: valid under v1, and once the store forgot v1.
        let link = issue().await;
        assert!(valid(link.secret().to_owned()).await);
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert!(valid(link.secret().to_owned()).await);

        // Any other version ends it, for good.
        SessionStore::set_credentials_version(&store, "9", "v2", Duration::from_secs(60))
            .await
            .unwrap();
        assert!(!valid(link.secret().to_owned()).await);
        let link = issue().await;
        assert!(links
            .consume(LinkPurpose::PasswordReset, link.secret())
            .await
            .is_ok());
        assert!(matches!(
            links
                .consume(LinkPurpose::PasswordReset, link.secret())
                .await,
            Err(Error::InvalidLink)
        ));
    });
}
