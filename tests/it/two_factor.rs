//! `examples/two_factor.rs` run as a process and held to its header: a password that does not
//! log in, a TOTP code that does, and what is refused in between (no login between the steps,
//! wrong and replayed codes, the throttle, an expired step), on the memory store and on Redis.
//!
//! The expected codes come from the demo secrets the header documents, through the same TOTP
//! crate, which is first checked against RFC 6238's own test values.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use totp_rs::{Builder, Secret, Totp};

use crate::minimal::{
    redis_db, redis_keys, Answer, Http, INVALID_BODY, INVALID_CREDENTIALS, UNAUTHENTICATED,
};
use crate::support::example::Example;

const ALICE_SECRET: &str = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";
const BOB_SECRET: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
const ALICE: &str = r#"{"username":"alice","password":"alice-password-123"}"#;
const BOB: &str = r#"{"username":"bob","password":"bob-password-456"}"#;
const ALICE_PROFILE: &str = r#"{"id":1,"username":"alice"}"#;
const NEXT_TOTP: &str = r#"{"next":"totp"}"#;
const INVALID_CODE: &str = r#"{"error":"invalid_code"}"#;
const NO_PENDING: &str = r#"{"error":"no_pending_login"}"#;
const THROTTLED: &str = r#"{"error":"too_many_attempts"}"#;

fn totp(secret: &str) -> Totp {
    Builder::new()
        .with_secret(Secret::try_from_base32(secret).unwrap())
        .build()
        .unwrap()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The code of `secret` for the time step `steps` away from now.
fn code(secret: &str, steps: i64) -> String {
    let time = unix_now().saturating_add_signed(steps * 30);
    totp(secret).generate(time).to_string()
}

/// Six digits that are no code of `secret` the example could accept now or soon.
fn wrong_code(secret: &str) -> String {
    let near: Vec<String> = (-3..=3).map(|steps| code(secret, steps)).collect();
    (1..)
        .map(|n: u32| format!("{:06}", n * 7919 % 1_000_000))
        .find(|candidate| !near.contains(candidate))
        .unwrap()
}

/// One visitor: its own cookies, kept the way a browser keeps them, and `Origin` on every
/// request that changes something, as browsers send it.
struct Browser<'a> {
    http: Http<'a>,
    origin: &'a str,
    cookies: BTreeMap<String, String>,
    /// The client address the example's trusted proxy reports, if it trusts one.
    forwarded_for: Option<String>,
}

impl<'a> Browser<'a> {
    fn new(example: &'a Example) -> Self {
        Self {
            http: Http::new(example),
            origin: &example.base,
            cookies: BTreeMap::new(),
            forwarded_for: None,
        }
    }

    /// A browser at `ip`, as a proxy in `TRUST_PROXIES` reports it.
    fn at(example: &'a Example, ip: &str) -> Self {
        Self {
            forwarded_for: Some(ip.to_owned()),
            ..Self::new(example)
        }
    }

    async fn send(&mut self, method: &str, path: &str, body: Option<&str>) -> Answer {
        let cookie = self
            .cookies
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect::<Vec<_>>()
            .join("; ");
        let mut headers = Vec::new();
        if !cookie.is_empty() {
            headers.push(("cookie", cookie.as_str()));
        }
        if method != "GET" {
            headers.push(("origin", self.origin));
        }
        if let Some(ip) = &self.forwarded_for {
            headers.push(("x-forwarded-for", ip.as_str()));
        }
        let answer = self.http.send(method, path, &headers, body).await;
        for line in answer.set_cookies() {
            let pair = line.split(';').next().unwrap_or(line);
            let (name, value) = pair.split_once('=').expect("name=value");
            if value.is_empty() || line.contains("Max-Age=0") {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_owned(), value.to_owned());
            }
        }
        answer
    }

    async fn password(&mut self, creds: &str) -> Answer {
        self.send("POST", "/login", Some(creds)).await
    }

    async fn code(&mut self, code: &str) -> Answer {
        let body = format!(r#"{{"code":"{code}"}}"#);
        self.send("POST", "/login/totp", Some(&body)).await
    }

    async fn me(&mut self) -> Answer {
        self.send("GET", "/me", None).await
    }

    fn session(&self) -> Option<String> {
        self.cookies.get("__Host-id").cloned()
    }
}

/// `429` with a `Retry-After` within the throttle's longest window: 15 minutes for one account
/// from one address, an hour for an account's codes from anywhere.
fn assert_throttled(answer: &Answer) {
    assert_eq!(answer.said(), (429, THROTTLED));
    let retry_after: u64 = answer
        .header("retry-after")
        .and_then(|secs| secs.parse().ok())
        .expect("Retry-After in seconds");
    assert!((1..=60 * 60).contains(&retry_after), "{retry_after}");
}

#[test]
fn the_totp_crate_gives_rfc_6238_codes() {
    // RFC 6238, appendix B: the SHA-1 secret is bob's; these are the vectors' last six digits.
    let bob = totp(BOB_SECRET);
    for (time, expected) in [
        (59, "287082"),
        (1_111_111_109, "081804"),
        (2_000_000_000, "279037"),
    ] {
        assert_eq!(bob.generate(time).to_string(), expected, "T={time}");
    }
}

/// The startup lines carry the URLs an authenticator app takes, with the documented secrets.
fn check_banner(example: &Example) {
    for (user, secret) in [("alice", ALICE_SECRET), ("bob", BOB_SECRET)] {
        let prefix = format!("{user}: ");
        let url = example
            .banner
            .lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no otpauth URL for {user}: {}", example.banner));
        let expected = Builder::new()
            .with_secret(Secret::try_from_base32(secret).unwrap())
            .with_account_name(user)
            .with_issuer(Some("actix-login demo"))
            .build()
            .unwrap();
        let printed = Totp::from_url(url).unwrap_or_else(|err| panic!("{url}: {err}"));
        assert!(printed == expected, "{url}");
    }
    assert!(example
        .banner
        .ends_with(&format!("listening on http://127.0.0.1:{}\n", example.port)));
}

async fn check(example: &Example) {
    check_banner(example);

    // A wrong password, or an unknown user, starts nothing: no session, nothing pending.
    let mut stranger = Browser::new(example);
    for creds in [
        r#"{"username":"alice","password":"bob-password-456"}"#,
        r#"{"username":"mallory","password":"alice-password-123"}"#,
    ] {
        assert_eq!(
            stranger.password(creds).await.said(),
            (401, INVALID_CREDENTIALS)
        );
    }
    assert_eq!(stranger.session(), None);
    for bad in [r#"{"username":"alice""#, r#"{"username":"alice"}"#, ""] {
        assert_eq!(
            stranger.password(bad).await.said(),
            (400, INVALID_BODY),
            "{bad:?}"
        );
    }
    // A code without the password first, even the right one.
    assert_eq!(
        stranger.code(&code(ALICE_SECRET, 0)).await.said(),
        (401, NO_PENDING)
    );

    // The password is half of the login: a session, but no user in it.
    let mut first = Browser::new(example);
    assert_eq!(first.password(ALICE).await.said(), (200, NEXT_TOTP));
    let half_way = first.session().expect("the password step starts a session");
    assert_eq!(first.me().await.said(), (401, UNAUTHENTICATED));
    for wrong in [
        wrong_code(ALICE_SECRET),
        "12345".into(),
        "abcdef".into(),
        code(BOB_SECRET, 0),
    ] {
        assert_eq!(
            first.code(&wrong).await.said(),
            (401, INVALID_CODE),
            "{wrong}"
        );
        assert_eq!(first.me().await.said(), (401, UNAUTHENTICATED));
    }
    assert_eq!(
        first
            .send("POST", "/login/totp", Some(r#"{"code":123456}"#))
            .await
            .said(),
        (400, INVALID_BODY)
    );

    // The code completes it, on a new token; the one that carried the half-way step is dead.
    let used = code(ALICE_SECRET, 0);
    assert_eq!(first.code(&used).await.said(), (200, ALICE_PROFILE));
    let logged_in = first.session().expect("a session cookie");
    assert_ne!(logged_in, half_way);
    assert_eq!(first.me().await.said(), (200, ALICE_PROFILE));
    // Nothing pending any more: the note went with the half-way session.
    assert_eq!(
        first.code(&code(ALICE_SECRET, 1)).await.said(),
        (401, NO_PENDING)
    );
    assert_eq!(first.me().await.said(), (200, ALICE_PROFILE));
    let mut replay = Browser::new(example);
    replay
        .cookies
        .insert("__Host-id".to_owned(), half_way.clone());
    assert_eq!(replay.me().await.said(), (401, UNAUTHENTICATED));
    assert_eq!(replay.code(&used).await.said(), (401, NO_PENDING));

    // A code works once, whoever saw it: another visitor with the password is refused it, and
    // gets in with the next one.
    let mut second = Browser::new(example);
    assert_eq!(second.password(ALICE).await.said(), (200, NEXT_TOTP));
    assert_eq!(second.code(&used).await.said(), (401, INVALID_CODE));
    assert_eq!(second.me().await.said(), (401, UNAUTHENTICATED));
    assert_eq!(
        second.code(&code(ALICE_SECRET, 1)).await.said(),
        (200, ALICE_PROFILE)
    );
    assert_eq!(second.me().await.said(), (200, ALICE_PROFILE));

    // Logout ends the session; the first one lives on.
    let answer = second.send("POST", "/logout", None).await;
    assert_eq!(answer.said(), (204, ""));
    assert_eq!(second.session(), None);
    assert_eq!(second.me().await.said(), (401, UNAUTHENTICATED));
    assert_eq!(first.me().await.said(), (200, ALICE_PROFILE));

    // Each user has their own code: bob's password, then alice's code, is refused.
    let mut bob = Browser::new(example);
    assert_eq!(bob.password(BOB).await.said(), (200, NEXT_TOTP));
    assert_eq!(
        bob.code(&code(ALICE_SECRET, 0)).await.said(),
        (401, INVALID_CODE)
    );

    // Five wrong codes, and even the right one is refused, also after the right password again.
    let mut guesser = Browser::new(example);
    assert_eq!(guesser.password(ALICE).await.said(), (200, NEXT_TOTP));
    for attempt in 1..=5 {
        let answer = guesser.code(&wrong_code(ALICE_SECRET)).await;
        assert_eq!(answer.said(), (401, INVALID_CODE), "attempt {attempt}");
    }
    assert_throttled(&guesser.code(&code(ALICE_SECRET, 0)).await);
    assert_eq!(guesser.me().await.said(), (401, UNAUTHENTICATED));
    let mut again = Browser::new(example);
    assert_eq!(again.password(ALICE).await.said(), (200, NEXT_TOTP));
    assert_throttled(&again.code(&code(ALICE_SECRET, 0)).await);
    assert_eq!(again.me().await.said(), (401, UNAUTHENTICATED));

    // Bob's codes count on his own counters.
    let answer = bob.code(&code(BOB_SECRET, 0)).await;
    assert_eq!(answer.said(), (200, r#"{"id":2,"username":"bob"}"#));
    assert_eq!(first.me().await.said(), (200, ALICE_PROFILE));
}

/// With `TOTP_PENDING_SECS=1`, a code that comes later than that is refused, even the right
/// one, and the half-way login is gone.
async fn check_expiry(example: &Example) {
    let mut late = Browser::new(example);
    assert_eq!(late.password(BOB).await.said(), (200, NEXT_TOTP));
    // Waits out a deadline: later, as under load, only makes the step older.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let answer = late.code(&code(BOB_SECRET, 0)).await;
    assert_eq!(answer.said(), (401, r#"{"error":"login_expired"}"#));
    assert_eq!(
        late.code(&code(BOB_SECRET, 0)).await.said(),
        (401, NO_PENDING)
    );
    assert_eq!(late.me().await.said(), (401, UNAUTHENTICATED));
}

#[actix_web::test]
async fn two_factor_with_the_memory_store() {
    let example = Example::start("two_factor", &[]);
    check(&example).await;
    let example = Example::start("two_factor", &[("TOTP_PENDING_SECS", "1")]);
    check_expiry(&example).await;
}

#[actix_web::test]
async fn two_factor_with_redis() {
    let url = redis_db(12);
    let example = Example::start("two_factor", &[("REDIS_URL", &url)]);
    check(&example).await;
    let keys = redis_keys(&url);
    assert!(
        keys.iter().any(|key| key.starts_with("actix-login:s:")),
        "{keys:?}"
    );
    drop(example);
    let example = Example::start(
        "two_factor",
        &[("REDIS_URL", &url), ("TOTP_PENDING_SECS", "1")],
    );
    check_expiry(&example).await;
}

/// Behind a trusted proxy, with small bounds on anonymous sessions (2 per address, 10 shared):
/// the example as a deployment under a flood.
fn behind_a_proxy() -> Example {
    Example::start(
        "two_factor",
        &[
            ("TRUST_PROXIES", "127.0.0.1"),
            ("ANONYMOUS_SESSIONS_PER_MINUTE", "2,10"),
        ],
    )
}

/// Each password step starts an anonymous session (the pending login lives in it). Bob, or
/// anyone with an account, floods them from ten /64s; Alice, elsewhere, still gets her second
/// step.
#[actix_web::test]
async fn a_flood_of_half_way_logins_leaves_the_second_step_to_everyone_else() {
    let example = behind_a_proxy();
    let (mut started, mut refused) = (0, 0);
    for round in 0..3 {
        for net in 0..10 {
            let mut flooder = Browser::at(&example, &format!("2001:db8:66:{net:x}::{round}"));
            let answer = flooder.password(BOB).await;
            match answer.status {
                200 => started += 1,
                429 => {
                    assert_eq!(answer.body, r#"{"error":"too_many_sessions"}"#);
                    assert!(answer.header("retry-after").is_some(), "no Retry-After");
                    refused += 1;
                }
                status => panic!("flood: {status} {}", answer.body),
            }
        }
    }
    assert!(
        refused > 0,
        "the flood was never refused ({started} started)"
    );
    let mut alice = Browser::at(&example, "198.51.100.20");
    assert_eq!(alice.password(ALICE).await.said(), (200, NEXT_TOTP));
    let answer = alice.code(&code(ALICE_SECRET, 0)).await;
    assert_eq!(answer.said(), (200, ALICE_PROFILE));
    assert_eq!(alice.me().await.said(), (200, ALICE_PROFILE));
}

/// Someone who has Alice's password guesses codes from a new address each time: the guesses
/// count per account, so they run out long before a six-digit code is in reach, and then even
/// the right code is refused until the window ends.
#[actix_web::test]
async fn code_guesses_are_bounded_per_account_across_addresses() {
    let example = behind_a_proxy();
    let mut wrong = 0;
    let mut refused = None;
    for n in 0..40 {
        let mut guesser = Browser::at(&example, &format!("203.0.{n}.9"));
        assert_eq!(guesser.password(ALICE).await.said(), (200, NEXT_TOTP));
        let answer = guesser.code(&wrong_code(ALICE_SECRET)).await;
        if answer.status == 429 {
            assert_throttled(&answer);
            refused = Some(guesser);
            break;
        }
        assert_eq!(answer.said(), (401, INVALID_CODE), "guess {n}");
        wrong += 1;
    }
    let Some(mut last) = refused else {
        panic!("{wrong} wrong codes from {wrong} addresses, and none refused");
    };
    assert!(wrong <= 10, "{wrong} wrong codes before a refusal");
    // The right code from yet another address is refused too: no oracle.
    let mut owner = Browser::at(&example, "198.51.100.21");
    assert_eq!(owner.password(ALICE).await.said(), (200, NEXT_TOTP));
    assert_throttled(&owner.code(&code(ALICE_SECRET, 0)).await);
    assert_throttled(&last.code(&code(ALICE_SECRET, 0)).await);
    // Bob's codes count on his own.
    let mut bob = Browser::at(&example, "198.51.100.22");
    assert_eq!(bob.password(BOB).await.said(), (200, NEXT_TOTP));
    let answer = bob.code(&code(BOB_SECRET, 0)).await;
    assert_eq!(answer.said(), (200, r#"{"id":2,"username":"bob"}"#));
}

/// The codes' counters are not the password's: a stranger who posts passwords for a made-up
/// username that names Alice's code counter (`alice#totp`, unknown names count like real ones)
/// cannot use up her code guesses.
#[actix_web::test]
async fn password_guesses_for_any_name_leave_the_codes_alone() {
    let example = behind_a_proxy();
    let forged = r#"{"username":"alice#totp","password":"whatever-it-is-1"}"#;
    for n in 0..12 {
        let mut stranger = Browser::at(&example, &format!("192.0.2.{n}"));
        let answer = stranger.password(forged).await;
        assert_eq!(answer.said(), (401, INVALID_CREDENTIALS), "guess {n}");
    }
    let mut owner = Browser::at(&example, "198.51.100.31");
    assert_eq!(owner.password(ALICE).await.said(), (200, NEXT_TOTP));
    let answer = owner.code(&code(ALICE_SECRET, 0)).await;
    assert_eq!(answer.said(), (200, ALICE_PROFILE));
}
