//! Impersonation from the engine's side: who may start it, what the session records, and the
//! way back.

use std::time::Duration;

use super::*;
use crate::record::ActivityKind;

#[test]
fn an_admin_acts_as_the_user_and_returns_to_their_own_session() {
    run(async {
        let engine = engine_with(MemoryStore::new(), |_| {});
        let admin = login(&engine, "1").await;
        let imp = engine
            .impersonate(&admin.session, grant("2"))
            .await
            .unwrap();
        let record = &imp.session.record;
        assert_eq!(
            (record.user_id(), record.impersonated_by()),
            ("2", Some("1"))
        );
        let resolved = engine.resolve(&imp.token).await.unwrap().unwrap();
        assert_eq!(resolved.record.impersonated_by(), Some("1"));
        // Listed among the user's sessions, with who impersonates.
        let listed = engine.list("2", None).await.unwrap();
        assert_eq!(listed[0].impersonated_by.as_deref(), Some("1"));

        let back = engine
            .stop_impersonating(&imp.session)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(back.session.record.user_id(), "1");
        assert_eq!(back.session.record.impersonated_by(), None);
        assert!(engine.resolve(&back.token).await.unwrap().is_some());
        assert!(engine.resolve(&imp.token).await.unwrap().is_none());
        // The admin's old token was moved to the new one.
        assert!(engine.resolve(&admin.token).await.unwrap().is_none());
        for user in ["1", "2"] {
            let kinds: Vec<ActivityKind> = engine
                .activity(user, None, 10)
                .await
                .unwrap()
                .iter()
                .map(|e| e.kind)
                .collect();
            assert_eq!(
                kinds[..2],
                [
                    ActivityKind::ImpersonationEnded,
                    ActivityKind::ImpersonationStarted
                ],
                "{user}"
            );
        }
    });
}

#[test]
fn impersonation_needs_a_fresh_admin_and_never_nests() {
    run(async {
        let engine = engine_with(MemoryStore::new(), |rules| {
            rules.set_fresh_window(Duration::from_millis(50));
        });
        let admin = login(&engine, "1").await;
        assert!(matches!(
            engine.impersonate(&admin.session, grant("1")).await,
            Err(Error::InvalidInput)
        ));
        let imp = engine
            .impersonate(&admin.session, grant("2"))
            .await
            .unwrap();
        assert!(matches!(
            engine.impersonate(&imp.session, grant("3")).await,
            Err(Error::Impersonating)
        ));
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert!(matches!(
            engine.impersonate(&admin.session, grant("3")).await,
            Err(Error::ReauthRequired)
        ));
        // Not an impersonation: nothing to stop.
        assert!(matches!(
            engine.stop_impersonating(&admin.session).await,
            Err(Error::InvalidInput)
        ));
    });
}

#[test]
fn stopping_after_the_admin_session_ended_leaves_no_session() {
    run(async {
        let engine = engine_with(MemoryStore::new(), |_| {});
        let admin = login(&engine, "1").await;
        let imp = engine
            .impersonate(&admin.session, grant("2"))
            .await
            .unwrap();
        engine.revoke_where("1", |_, _| true).await.unwrap();
        assert!(engine
            .stop_impersonating(&imp.session)
            .await
            .unwrap()
            .is_none());
        assert!(engine.resolve(&imp.token).await.unwrap().is_none());
    });
}
