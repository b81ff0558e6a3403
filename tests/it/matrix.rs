//! Every guarantee on every deployment: the matrix that `TESTING.md` lays out.
//!
//! Each row is a guarantee (a function below); each cell runs it on one [`Deployment`] and is
//! named `matrix::<guarantee>::<deployment>`. Where two instances run, a session ends on
//! instance 0 and the very next request, sent as soon as the ending answered, goes to
//! instance 1; a caching instance first proves that it answers that session from memory
//! ([`TestApp::warm`]), so no cell can pass with the cache off. A cell counts every round that
//! went wrong and fails with the count, so a rare race reads as "accepted 3 of 1200".
//!
//! The cells run [`rounds`] rounds each: in CI 200 where an instance caches and 40 elsewhere,
//! and `MATRIX_ROUNDS=1200` for the long form, which sees a race that hits 0.25 % of rounds
//! with 95 % confidence:
//!
//! ```sh
//! cargo test --all-features --test it -- matrix::
//! MATRIX_ROUNDS=1200 cargo test --all-features --test it -- matrix::
//! ```

use actix_web::http::header;

use crate::support::deployment::{rounds, Deployment, TestApp, TOTP_SECRET};
use crate::support::http::UNAVAILABLE;
use crate::support::passkeys::{authenticator, register_with, sign_with, Answer, ORIGIN};

/// One module per guarantee, one test per deployment in it: `matrix::<guarantee>::<name>`.
/// `every deployment` stands for the thirteen that every guarantee runs on; a row may add
/// cells of its own after `and`, or list its cells itself.
macro_rules! cells {
    ($guarantee:ident: every deployment $(, and $($extra:tt)*)?) => {
        cells! { $guarantee:
            memory => Memory,
            one_redis => OneRedis,
            two_plain => TwoPlain,
            two_caching => TwoCaching,
            plain_to_caching => PlainToCaching,
            caching_to_plain => CachingToPlain,
            cluster => Cluster,
            sentinel => Sentinel,
            tls => Tls,
            cluster_caching => ClusterCaching,
            cluster_plain_to_caching => ClusterPlainToCaching,
            sentinel_caching => SentinelCaching,
            tls_caching => TlsCaching,
            $($($extra)*)?
        }
    };
    ($guarantee:ident: $($(#[$attr:meta])* $name:ident => $deployment:ident,)*) => {
        mod $guarantee {
            use crate::support::deployment::Deployment;
            $(
                #[actix_web::test]
                $(#[$attr])*
                async fn $name() {
                    super::$guarantee(Deployment::$deployment).await;
                }
            )*
        }
    };
}

cells! { logout: every deployment, and
    #[ignore = "documents the opt-out: peer_caches(false) beside a caching instance is unsafe, \
                and fails (rarely) by design"]
    plain_opted_out_to_caching => PlainOptedOutToCaching,
}

cells! { revoke_all: every deployment }

cells! { revoke_others: every deployment }

cells! { password_change: every deployment }

cells! { role_change: every deployment }

cells! { data_writes: every deployment }

cells! { one_time_links: every deployment }

cells! { second_factor: every deployment }

cells! { fail_closed:
    memory => Memory,
    one_redis => OneRedis,
    two_plain => TwoPlain,
    two_caching => TwoCaching,
    plain_to_caching => PlainToCaching,
    caching_to_plain => CachingToPlain,
    cluster => Cluster,
    sentinel => Sentinel,
    tls => Tls,
    cluster_caching => ClusterCaching,
    cluster_plain_to_caching => ClusterPlainToCaching,
    // No `sentinel_caching`: an outage must outlast the cache's 1 s lease, and Sentinel fails
    // over a primary silent that long (`down-after-milliseconds` is 1 s in the harness).
    tls_caching => TlsCaching,
}

cells! { passkeys: every deployment }

/// Whether instance `i` accepted `token`, which must be dead, on a GET (or a POST) of `path`:
/// `true` for a 2xx, `false` for the 401 it owes; anything else fails the test at once.
async fn accepts(app: &TestApp, i: usize, post: bool, path: &str, token: &str) -> bool {
    let code = if post {
        app.post(i, path, token).await
    } else {
        app.get(i, path, token).await
    };
    assert!(
        (200..300).contains(&code) || code == 401,
        "{:?}: instance {i} answered {code} to {path} with an ended session",
        app.deployment
    );
    code != 401
}

/// How many of `tokens` (all dead) each instance accepts, the ending instance's peer first.
async fn accepted_anywhere(app: &TestApp, next: usize, tokens: &[&str]) -> usize {
    let mut accepted = 0;
    let others = (0..app.instances()).filter(|i| *i != next);
    for i in std::iter::once(next).chain(others) {
        for token in tokens {
            accepted += usize::from(accepts(app, i, false, "/me", token).await);
        }
    }
    accepted
}

/// A logout on one instance: the next request on the other is refused.
async fn logout(deployment: Deployment) {
    let app = TestApp::spawn(deployment).await;
    let (end, next) = app.pair();
    let rounds = rounds(deployment);
    let mut accepted = 0;
    for round in 0..rounds {
        let token = app.log_in(end, round as u64).await;
        app.warm(next, &token).await;
        assert_eq!(app.post(end, "/logout", &token).await, 204);
        accepted += accepted_anywhere(&app, next, &[&token]).await;
    }
    assert_eq!(
        accepted, 0,
        "{deployment:?}: accepted {accepted} of {rounds} logged-out sessions right after the \
         logout on instance {end}"
    );
}

/// "Log out everywhere" on one instance: every session of the user, on every instance.
async fn revoke_all(deployment: Deployment) {
    let app = TestApp::spawn(deployment).await;
    let (end, next) = app.pair();
    let rounds = rounds(deployment);
    let mut accepted = 0;
    for round in 0..rounds {
        let user = round as u64;
        let here = app.log_in(end, user).await;
        let there = app.log_in(next, user).await;
        app.warm(next, &there).await;
        app.warm(next, &here).await;
        assert_eq!(app.post(end, "/revoke-all", &here).await, 204);
        accepted += accepted_anywhere(&app, next, &[&there, &here]).await;
    }
    assert_eq!(
        accepted, 0,
        "{deployment:?}: accepted {accepted} revoked sessions in {rounds} rounds of revoke-all"
    );
}

/// "Log out my other sessions": the others end everywhere at once, this one lives on.
async fn revoke_others(deployment: Deployment) {
    let app = TestApp::spawn(deployment).await;
    let (end, next) = app.pair();
    let rounds = rounds(deployment);
    let mut accepted = 0;
    for round in 0..rounds {
        let user = round as u64;
        let here = app.log_in(end, user).await;
        let there = app.log_in(next, user).await;
        app.warm(next, &there).await;
        app.warm(next, &here).await;
        assert_eq!(app.post(end, "/revoke-others", &here).await, 204);
        accepted += accepted_anywhere(&app, next, &[&there]).await;
        for i in 0..app.instances() {
            assert_eq!(
                app.get(i, "/me", &here).await,
                200,
                "the current session ended"
            );
        }
    }
    assert_eq!(
        accepted, 0,
        "{deployment:?}: accepted {accepted} revoked sessions in {rounds} rounds of \
         revoke-others"
    );
}

/// A password change (`Session::credentials_changed`) ends the user's other sessions on every
/// instance, and a login that verified the old password is refused everywhere.
async fn password_change(deployment: Deployment) {
    let app = TestApp::spawn(deployment).await;
    let (end, next) = app.pair();
    let rounds = rounds(deployment);
    let mut accepted = 0;
    let mut old_logins = 0;
    for round in 0..rounds {
        let user = round as u64;
        let here = app.try_log_in(end, user, Some("1")).await.unwrap();
        let there = app.try_log_in(next, user, Some("1")).await.unwrap();
        app.warm(next, &there).await;
        assert_eq!(app.post(end, "/password/2", &here).await, 204);
        accepted += accepted_anywhere(&app, next, &[&there]).await;
        for i in 0..app.instances() {
            old_logins += usize::from(app.try_log_in(i, user, Some("1")).await.is_some());
            assert!(
                app.try_log_in(i, user, Some("2")).await.is_some(),
                "a login with the new password was refused"
            );
        }
        assert_eq!(
            app.get(end, "/me", &here).await,
            200,
            "the changing session ended"
        );
    }
    assert_eq!(
        (accepted, old_logins),
        (0, 0),
        "{deployment:?}: in {rounds} password changes, accepted {accepted} sessions that \
         should have ended and {old_logins} logins with the old password"
    );
}

/// `Sessions::update_user` on one instance: the next request on the other has the new roles,
/// both when an admin is made and when one is demoted.
async fn role_change(deployment: Deployment) {
    let app = TestApp::spawn(deployment).await;
    let (end, next) = app.pair();
    let rounds = rounds(deployment);
    let mut stale = 0;
    for round in 0..rounds {
        let user = round as u64;
        let token = app.log_in(next, user).await;
        assert_eq!(app.get(next, "/admin", &token).await, 403);
        app.warm(next, &token).await;
        app.set_roles(end, user, "admin").await;
        let promoted = app.get(next, "/admin", &token).await;
        assert!(promoted == 200 || promoted == 403, "{promoted}");
        stale += usize::from(promoted != 200);

        app.warm(next, &token).await;
        app.set_roles(end, user, "user").await;
        let demoted = app.get(next, "/admin", &token).await;
        assert!(demoted == 200 || demoted == 403, "{demoted}");
        stale += usize::from(demoted != 403);
        let (code, me) = app.read(next, "/me", &token).await;
        assert_eq!((code, me), (200, format!("{user} user")));
    }
    assert_eq!(
        stale,
        0,
        "{deployment:?}: {stale} requests of {} saw roles from before a change that had \
         answered",
        rounds * 2
    );
}

/// A data write racing a logout never brings the session back: afterwards it is dead on every
/// instance, for reads and writes alike.
async fn data_writes(deployment: Deployment) {
    let app = TestApp::spawn(deployment).await;
    let (end, next) = app.pair();
    let rounds = rounds(deployment);
    let mut resurrected = 0;
    let mut landed = 0;
    for round in 0..rounds {
        let token = app.log_in(end, round as u64).await;
        assert_eq!(app.post(next, "/note/1", &token).await, 204);
        app.warm(next, &token).await;
        let write = app.post(next, "/note/2", &token);
        let logout = app.post(end, "/logout", &token);
        // Both in flight at once, in either order.
        let (written, logged_out) = if round % 2 == 0 {
            futures_util::future::join(write, logout).await
        } else {
            let (l, w) = futures_util::future::join(logout, write).await;
            (w, l)
        };
        assert_eq!(logged_out, 204);
        assert!(
            matches!(written, 204 | 401 | 409),
            "a write racing a logout answered {written}"
        );
        landed += usize::from(written == 204);
        resurrected += accepted_anywhere(&app, next, &[&token]).await;
        for i in 0..app.instances() {
            resurrected += usize::from(accepts(&app, i, true, "/note/3", &token).await);
            resurrected += usize::from(accepts(&app, i, false, "/note", &token).await);
        }
    }
    assert_eq!(
        resurrected, 0,
        "{deployment:?}: {resurrected} answers in {rounds} rounds accepted a session after a \
         write raced its logout ({landed} writes landed first)"
    );
}

/// Fail closed: while the store fails, every request that needs it answers 503, never as
/// logged in (not even a cached session), and no login hands out a cookie; afterwards the
/// live session works again and the ended one stays ended.
async fn fail_closed(deployment: Deployment) {
    let app = TestApp::spawn_private(deployment).await;
    let live = app.log_in(0, 1).await;
    let ended = app.log_in(0, 2).await;
    for i in 0..app.instances() {
        app.warm(i, &live).await;
        app.warm(i, &ended).await;
    }
    assert_eq!(app.post(0, "/logout", &ended).await, 204);

    app.start_outage().await;
    let during = futures_util::future::join_all((0..app.instances()).map(|i| {
        let (live, ended, app) = (&live, &ended, &app);
        async move {
            let requests = futures_util::future::join4(
                app.read(i, "/me", live),
                app.get(i, "/me", ended),
                app.post(i, "/note/7", live),
                app.call(i, crate::support::http::post("/login/3", None)),
            );
            let ((me, body), dead, write, login) = requests.await;
            let cookie = login.headers().contains_key(header::SET_COOKIE);
            (i, me, body, dead, write, login.status().as_u16(), cookie)
        }
    }))
    .await;
    app.end_outage();

    for (i, me, body, dead, write, login, cookie) in during {
        assert_eq!(
            (me, body.as_str()),
            (503, UNAVAILABLE),
            "{deployment:?}: instance {i} answered a live session while the store failed"
        );
        assert_eq!(dead, 503, "{deployment:?}: instance {i}, an ended session");
        assert_eq!(write, 503, "{deployment:?}: instance {i}, a data write");
        if app.outage_fails_logins() {
            assert_eq!(
                (login, cookie),
                (503, false),
                "{deployment:?}: instance {i}, a login"
            );
        }
    }

    // Back without a restart: the live session works, the ended one is still ended.
    for i in 0..app.instances() {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while app.get(i, "/me", &live).await != 200 {
            assert!(
                std::time::Instant::now() < deadline,
                "{deployment:?}: instance {i} did not recover"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(app.get(i, "/me", &ended).await, 401);
    }
}

/// A one-time link works once, whichever instances it is tried on and however close together,
/// and dies everywhere with a password change made on another instance.
async fn one_time_links(deployment: Deployment) {
    let app = TestApp::spawn(deployment).await;
    let (end, next) = app.pair();
    let rounds = rounds(deployment);
    let (mut double_uses, mut after_password) = (0, 0);
    for round in 0..rounds {
        let user = round as u64;
        let token = app.try_log_in(end, user, Some("1")).await.expect("login");
        let secret = app.read_post(end, &format!("/link/{user}"), &token).await;
        let path = format!("/link/use/{secret}");
        // Both instances at once: exactly one may use it.
        let (a, b) =
            futures_util::future::join(app.post(end, &path, &token), app.post(next, &path, &token))
                .await;
        let uses = [
            a,
            b,
            app.post(next, &path, &token).await,
            app.post(end, &path, &token).await,
        ];
        for code in uses {
            assert!(
                code == 200 || code == 410,
                "{deployment:?}: a link use answered {code}"
            );
        }
        let used = uses.iter().filter(|code| **code == 200).count();
        assert!(used >= 1, "{deployment:?}: a fresh link was refused");
        double_uses += used - 1;

        let secret = app.read_post(end, &format!("/link/{user}"), &token).await;
        let there = app.try_log_in(next, user, Some("1")).await.expect("login");
        assert_eq!(app.post(next, "/password/2", &there).await, 204);
        let code = app.post(end, &format!("/link/use/{secret}"), &token).await;
        assert!(
            code == 200 || code == 410,
            "{deployment:?}: a link use answered {code}"
        );
        after_password += usize::from(code == 200);
    }
    assert_eq!(
        (double_uses, after_password),
        (0, 0),
        "{deployment:?}: in {rounds} rounds, links used twice and links used after a password \
         change on another instance"
    );
}

/// A login whose second factor is due is no login on any instance, and a TOTP code completes
/// one login only, whichever instances it is tried on and however close together.
async fn second_factor(deployment: Deployment) {
    let app = TestApp::spawn(deployment).await;
    let (end, next) = app.pair();
    let rounds = rounds(deployment);
    let totp = totp_rs::Builder::new()
        .with_secret(totp_rs::Secret::try_from_base32(TOTP_SECRET).unwrap())
        .build()
        .unwrap();
    let (mut double_uses, mut half_logins_let_in) = (0, 0);
    for round in 0..rounds {
        let user = round as u64;
        let a = app.half_log_in(end, user).await;
        let b = app.half_log_in(next, user).await;
        for (i, token) in [(end, &a), (next, &a), (end, &b), (next, &b)] {
            half_logins_let_in += usize::from(app.get(i, "/me", token).await != 401);
        }
        let path = format!("/second-factor/{}", totp.generate_current());
        // Both instances at once: exactly one may use it; then a third half-login on each.
        let (x, y) =
            futures_util::future::join(app.post(end, &path, &a), app.post(next, &path, &b)).await;
        let c = app.half_log_in(end, user).await;
        let uses = [
            x,
            y,
            app.post(next, &path, &c).await,
            app.post(end, &path, &c).await,
        ];
        for code in uses {
            assert!(
                code == 200 || code == 401,
                "{deployment:?}: a code answered {code}"
            );
        }
        let used = uses.iter().filter(|code| **code == 200).count();
        assert!(used >= 1, "{deployment:?}: a fresh code was refused");
        double_uses += used - 1;
    }
    assert_eq!(
        (double_uses, half_logins_let_in),
        (0, 0),
        "{deployment:?}: in {rounds} rounds, codes used twice and half-logins let in"
    );
}

/// Passkey ceremonies across instances. The challenge lives in the session's data, so one
/// started on instance 0 is finished on instance 1, which a caching instance must see even
/// while it holds the session warm: a registration once, then in each round a visitor's
/// sign-in (a login that works on every instance), and a sudo confirmation of that login.
/// A finished challenge is used up everywhere: its response sent again, on either instance and
/// with any of the round's tokens, is refused `400 passkey_no_challenge` without a cookie. The
/// round ends with a logout on instance 0, refused at once on instance 1.
async fn passkeys(deployment: Deployment) {
    const FINISH: &str = "/passkeys/sign-in/finish";
    let app = TestApp::spawn(deployment).await;
    let (end, next) = app.pair();
    // Half the other rows' rounds (100 where an instance caches, 20 elsewhere in CI; 600 in
    // the long form): a round is two ceremonies and some 25 requests, and each starts an
    // anonymous session, of which the default bounds allow 1,000 a minute from test requests
    // (which have no client address).
    let rounds = rounds(deployment).div_ceil(2);
    let user = 1;

    // Registration: started on one instance, finished on the other, the login warm there.
    let token = app.log_in(end, user).await;
    app.warm(next, &token).await;
    let start = app
        .passkey(end, "/passkeys/register/start", Some(&token), None)
        .await;
    assert_eq!(start.status, 200, "{deployment:?}: {}", start.body);
    let mut auth = authenticator();
    let response = register_with(&mut auth, ORIGIN, &start.body);
    let finish = app
        .passkey(
            next,
            "/passkeys/register/finish",
            Some(&token),
            Some(response),
        )
        .await;
    assert_eq!(
        finish.status, 204,
        "{deployment:?}: a registration started on instance {end} and finished on {next}: {}",
        finish.body
    );
    let key = app
        .users
        .passkeys(user)
        .pop()
        .expect("the passkey is stored");
    let handle = app.users.handle(user);
    assert_eq!(app.post(end, "/logout", &token).await, 204);

    // Challenges the finishing instance did not find, replays that were not refused as used
    // up, and sessions accepted after their logout.
    let (mut lost, mut replayed, mut accepted) = (0, 0, 0);
    for _ in 0..rounds {
        // A visitor's sign-in: the anonymous session holding the challenge starts on `end`.
        let start = app
            .passkey(end, "/passkeys/sign-in/start", None, None)
            .await;
        assert_eq!(start.status, 200, "{deployment:?}: {}", start.body);
        let visitor = start
            .cookie
            .expect("an anonymous session holds the challenge");
        let response = sign_with(&mut auth, ORIGIN, &start.body, Some((&key, handle)));
        let finish = app
            .passkey(next, FINISH, Some(&visitor), Some(response.clone()))
            .await;
        if !ceremony_finished(&finish, deployment, &mut lost) {
            continue;
        }
        let signed_in = finish.cookie.expect("a login sets a cookie");
        for i in 0..app.instances() {
            assert_eq!(
                app.get(i, "/me", &signed_in).await,
                200,
                "{deployment:?}: instance {i} refused a passkey login made on {next}"
            );
        }

        // The used response again, on each instance, from every token of the round and none.
        for i in [next, end] {
            for cookie in [Some(visitor.as_str()), Some(signed_in.as_str()), None] {
                let replay = app.passkey(i, FINISH, cookie, Some(response.clone())).await;
                let refused =
                    (replay.status, replay.code().as_str()) == (400, "passkey_no_challenge");
                replayed += usize::from(!refused || replay.cookie.is_some());
            }
        }
        for i in 0..app.instances() {
            assert_eq!(
                app.get(i, "/me", &signed_in).await,
                200,
                "after the replays"
            );
        }

        // Sudo mode confirmed with the passkey: the login warm on `next`, its challenge
        // written on `end`, the confirmation on `next`.
        app.warm(next, &signed_in).await;
        let start = app
            .passkey(end, "/passkeys/sign-in/start", Some(&signed_in), None)
            .await;
        assert_eq!(
            (start.status, start.cookie.as_deref()),
            (200, None),
            "{deployment:?}: the login holds the challenge: {}",
            start.body
        );
        let response = sign_with(&mut auth, ORIGIN, &start.body, Some((&key, handle)));
        let confirm = app
            .passkey(next, FINISH, Some(&signed_in), Some(response))
            .await;
        if !ceremony_finished(&confirm, deployment, &mut lost) {
            continue;
        }
        assert!(
            confirm.body.contains(r#""confirmed":true"#),
            "{}",
            confirm.body
        );
        let confirmed = confirm.cookie.expect("confirming rotates the token");

        // A logout on `end` while `next` holds the session warm.
        app.warm(next, &confirmed).await;
        assert_eq!(app.post(end, "/logout", &confirmed).await, 204);
        accepted += accepted_anywhere(&app, next, &[&confirmed, &signed_in, &visitor]).await;
    }
    assert_eq!(
        (lost, replayed, accepted),
        (0, 0, 0),
        "{deployment:?}: in {rounds} rounds of two ceremonies each, challenges started on \
         instance {end} that {next} did not find, replays not refused as used up (of \
         {} tries), and tokens accepted after a logout on {end}",
        rounds * 6
    );
}

/// Whether a ceremony's finish went through. A challenge the finishing instance did not find
/// (`400 passkey_no_challenge`) is counted in `lost`; any other answer fails the cell at once.
fn ceremony_finished(finish: &Answer, deployment: Deployment, lost: &mut usize) -> bool {
    if finish.status == 200 {
        return true;
    }
    assert_eq!(
        (finish.status, finish.code().as_str()),
        (400, "passkey_no_challenge"),
        "{deployment:?}: {}",
        finish.body
    );
    *lost += 1;
    false
}
