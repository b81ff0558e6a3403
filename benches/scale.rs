//! The in-process half of `benches/scale.sh`: fills a Redis with live sessions, and times what
//! one user at the session cap costs to list and to revoke.
//!
//! This is not a self-timing benchmark. `benches/scale.sh` builds it, starts Redis and the
//! `http_server` bench target, and drives both; by hand:
//!
//! ```text
//! cargo bench -p actix-login-benches --no-run --bench scale      # prints the executable's path
//! REDIS_URL=redis://127.0.0.1:6390 target/release/deps/scale-… load 0 10000 tokens.txt
//! REDIS_URL=redis://127.0.0.1:6390 target/release/deps/scale-… cap 10 100
//! ```
//!
//! `load FIRST COUNT FILE` logs in sessions FIRST..FIRST+COUNT, `PER_USER` (default 2) to a
//! user, and appends each one's cookie (`__Host-id=…`, one a line) to FILE, for wrk. Each login
//! is a `POST /login` through `LoginMiddleware` and `Session::login` in an in-process Actix
//! service (`actix_web::test`), as a browser's would be: the record holds the client's address
//! and a 97-character `User-Agent`, and the login holds the per-user cap exactly as in an app
//! (create, then list the user's sessions). No socket is opened except the store's one Redis
//! connection, which pipelines the `CONCURRENCY` (default 256) logins in flight.
//!
//! `cap USERS PER_USER` logs in USERS more users with PER_USER sessions each (the default cap is
//! 100), then times, per user, one login past the cap (which ends the oldest session) against
//! the first login of a new user, `Sessions::list` (`LIST_REPEATS` times, default 20) and
//! `Sessions::revoke_all` (once), and counts the Redis commands each sends, from
//! `INFO commandstats` before and after, on a connection of its own. A timed login includes
//! building its in-process `App`, the same few microseconds for both kinds.
//!
//! Both print `KEY value…` lines on stdout for the script and progress on stderr.
//! `IDLE_TIMEOUT_SECS` (default the crate's 30 minutes) must match the server's: see scale.sh.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::future::Future;
use std::io::{self, BufWriter, Write as _};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use actix_login::{LoginMiddleware, RedisStore, Session, Sessions, Timeouts};
use actix_web::dev::Service as _;
use actix_web::{test, web, App, HttpResponse};
use futures_util::stream::{self, StreamExt as _, TryStreamExt as _};
use serde::{Deserialize, Serialize};

/// The `User-Agent` http.sh counts memory with, so that both report the same kind of record.
const USER_AGENT: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";

/// The middleware's default cookie name, which the bench server also reads.
const COOKIE_NAME: &str = "__Host-id";

/// Users at the cap get ids from here on, apart from the `load` users (1, 2, …).
const CAP_USER_BASE: u64 = 1_000_000_000;

/// The profile `http_server`'s `GET /me` decodes (`AuthUser<Profile>`).
#[derive(Serialize, Deserialize)]
struct Profile {
    id: u64,
    username: String,
}

#[derive(Deserialize)]
struct Who {
    user: u64,
}

/// A login as an app's login route ends, once the password has been checked.
async fn login(session: Session, who: web::Query<Who>) -> actix_web::Result<HttpResponse> {
    let profile = Profile {
        id: who.user,
        username: format!("user{:07}", who.user),
    };
    session.login(who.user.to_string(), &profile).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// A client address for the record, as text only: the request never leaves the process.
fn client_addr(n: u64) -> SocketAddr {
    let [_, _, _, _, _, b, c, d] = n.to_be_bytes();
    SocketAddr::from(([127, b, c, d.max(1)], 40_000 + (n % 20_000) as u16))
}

fn env_number(name: &str, default: u64) -> io::Result<u64> {
    match std::env::var(name) {
        Ok(value) => value
            .parse()
            .map_err(|_| io::Error::other(format!("{name} must be a number, not {value:?}"))),
        Err(_) => Ok(default),
    }
}

fn arg_number(args: &[String], i: usize, what: &str) -> io::Result<u64> {
    args.get(i)
        .ok_or_else(|| io::Error::other(format!("missing {what}\n{}", usage())))?
        .parse()
        .map_err(|_| io::Error::other(format!("{what} must be a number\n{}", usage())))
}

struct Setup {
    middleware: LoginMiddleware,
    concurrency: usize,
}

async fn setup(url: &str) -> io::Result<Setup> {
    // Thousands of logins wait in the one pipeline at a time; on a busy shared machine the
    // last of them can take longer than the default 1 s to be answered, which would only
    // abort the load.
    let store = RedisStore::builder(url)
        .command_timeout(Duration::from_secs(30))
        .connect()
        .await
        .map_err(io::Error::other)?;
    let mut builder = LoginMiddleware::builder(store);
    // The activity log is a list per user, a cost per login rather than per session: off
    // unless ACTIVITY_LOG=1, so that the memory per session is the sessions' own.
    if std::env::var("ACTIVITY_LOG").as_deref() != Ok("1") {
        builder = builder.activity_log(0, Duration::ZERO);
    }
    if let Ok(secs) = std::env::var("IDLE_TIMEOUT_SECS") {
        let secs: u64 = secs
            .parse()
            .map_err(|_| io::Error::other("IDLE_TIMEOUT_SECS must be a number"))?;
        builder = builder.timeouts(Timeouts::BROWSER.with_idle(Duration::from_secs(secs)));
    }
    Ok(Setup {
        middleware: builder.build(),
        concurrency: env_number("CONCURRENCY", 256)?.max(1) as usize,
    })
}

/// Logs in every `(user, n)` of `logins`, `concurrency` at a time, and hands each cookie to
/// `sink`. Returns how many were made.
async fn log_in_all(
    setup: &Setup,
    logins: impl Iterator<Item = (u64, u64)>,
    mut sink: impl FnMut(String) -> io::Result<()>,
    progress_every: u64,
    label: &str,
) -> io::Result<u64> {
    let app = test::init_service(
        App::new()
            .wrap(setup.middleware.clone())
            .route("/login", web::post().to(login)),
    )
    .await;
    let app = &app;
    let start = Instant::now();
    let mut made = 0u64;
    let mut cookies = stream::iter(logins)
        .map(|(user, n)| async move {
            let req = test::TestRequest::post()
                .uri(&format!("/login?user={user}"))
                .peer_addr(client_addr(n))
                .insert_header(("user-agent", USER_AGENT))
                .insert_header(("sec-fetch-site", "same-origin"))
                .to_request();
            let res = app
                .call(req)
                .await
                .map_err(|err| io::Error::other(format!("login of user {user} failed: {err}")))?;
            if !res.status().is_success() {
                return Err(io::Error::other(format!(
                    "login of user {user} answered {}",
                    res.status()
                )));
            }
            res.response()
                .cookies()
                .find(|c| c.name() == COOKIE_NAME)
                .map(|c| format!("{}={}", c.name(), c.value()))
                .ok_or_else(|| io::Error::other(format!("login of user {user} set no cookie")))
        })
        .buffer_unordered(setup.concurrency);
    while let Some(cookie) = cookies.try_next().await? {
        sink(cookie)?;
        made += 1;
        if made.is_multiple_of(progress_every) {
            eprintln!(
                "{label}: {made} sessions, {:.0} logins/s",
                made as f64 / start.elapsed().as_secs_f64()
            );
        }
    }
    Ok(made)
}

async fn run_load(url: &str, first: u64, count: u64, file: &str) -> io::Result<()> {
    let setup = setup(url).await?;
    let per_user = env_number("PER_USER", 2)?.max(1);
    let mut out = BufWriter::new(OpenOptions::new().create(true).append(true).open(file)?);
    let start = Instant::now();
    let logins = (first..first + count).map(|i| (i / per_user + 1, i));
    let made = log_in_all(
        &setup,
        logins,
        |cookie| writeln!(out, "{cookie}"),
        100_000,
        "load",
    )
    .await?;
    let secs = start.elapsed().as_secs_f64();
    out.flush()?;
    println!("LOAD {made} {secs:.3}");
    Ok(())
}

/// Calls of every command Redis has run, from `INFO commandstats`.
async fn command_calls(
    conn: &mut redis::aio::MultiplexedConnection,
) -> io::Result<BTreeMap<String, u64>> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .map_err(io::Error::other)?;
    Ok(info
        .lines()
        .filter_map(|line| {
            let (name, stats) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = stats
                .strip_prefix("calls=")?
                .split(',')
                .next()?
                .parse()
                .ok()?;
            Some((name.to_owned(), calls))
        })
        .collect())
}

/// What ran between two `command_calls`, as `HMGET=100,SMEMBERS=1`, leaving out the `INFO` that
/// took the counts.
fn command_delta(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> String {
    let parts: Vec<String> = after
        .iter()
        .filter(|(name, _)| name.as_str() != "info")
        .filter_map(|(name, calls)| {
            let ran = calls - before.get(name).copied().unwrap_or(0);
            (ran > 0).then(|| format!("{}={ran}", name.to_uppercase()))
        })
        .collect();
    if parts.is_empty() {
        "none".to_owned()
    } else {
        parts.join(",")
    }
}

fn micros(d: Duration) -> u64 {
    d.as_micros() as u64
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[(v.len() - 1) / 2]
}

/// Runs `work`, timing it and counting the Redis commands it sends (`INFO commandstats` on a
/// connection of its own, before and after).
async fn measured<T>(
    stats: &mut redis::aio::MultiplexedConnection,
    work: impl Future<Output = io::Result<T>>,
) -> io::Result<(T, u64, String)> {
    let before = command_calls(stats).await?;
    let start = Instant::now();
    let out = work.await?;
    let us = micros(start.elapsed());
    let after = command_calls(stats).await?;
    Ok((out, us, command_delta(&before, &after)))
}

/// Timings of one operation, with the commands the last of them sent (they all send the same).
#[derive(Default)]
struct Timings {
    us: Vec<u64>,
    commands: String,
}

impl Timings {
    fn add(&mut self, us: u64, commands: String) {
        self.us.push(us);
        self.commands = commands;
    }

    fn print(&self, key: &str) {
        let max = self.us.iter().copied().max().unwrap_or(0);
        println!(
            "{key} {} {} {max} {}",
            self.us.len(),
            median(self.us.clone()),
            self.commands
        );
    }
}

async fn run_cap(url: &str, users: u64, per_user: u64) -> io::Result<()> {
    let setup = setup(url).await?;
    let repeats = env_number("LIST_REPEATS", 20)?.max(1);
    let logins = (0..users).flat_map(|u| (0..per_user).map(move |n| (CAP_USER_BASE + u, n)));
    log_in_all(&setup, logins, |_| Ok(()), u64::MAX, "cap").await?;
    let sessions: Sessions = setup.middleware.sessions();
    let mut stats = redis::Client::open(url)
        .map_err(io::Error::other)?
        .get_multiplexed_async_connection()
        .await
        .map_err(io::Error::other)?;
    let log_in_one = |user: u64, n: u64| {
        log_in_all(&setup, std::iter::once((user, n)), |_| Ok(()), u64::MAX, "")
    };

    let mut first_login = Timings::default();
    let mut full_login = Timings::default();
    let mut list = Timings::default();
    let mut revoke = Timings::default();
    for u in 0..users {
        let id = CAP_USER_BASE + u;
        let user = id.to_string();
        // A login is followed by a listing of the user's sessions, to hold the cap: compare the
        // first login of a user (one to list) with one past the cap (it lists the full set,
        // then ends the oldest).
        let (_, us, cmds) = measured(&mut stats, log_in_one(id + users, 0)).await?;
        first_login.add(us, cmds);
        let (_, us, cmds) = measured(&mut stats, log_in_one(id, per_user)).await?;
        full_login.add(us, cmds);
        for _ in 0..repeats {
            let listing = async { sessions.list(&user).await.map_err(io::Error::other) };
            let (listed, us, cmds) = measured(&mut stats, listing).await?;
            if listed.len() as u64 != per_user {
                return Err(io::Error::other(format!(
                    "user {user} lists {} sessions, not {per_user}",
                    listed.len()
                )));
            }
            list.add(us, cmds);
        }
        let revoking = async { sessions.revoke_all(&user).await.map_err(io::Error::other) };
        let (revoked, us, cmds) = measured(&mut stats, revoking).await?;
        if revoked as u64 != per_user {
            return Err(io::Error::other(format!(
                "revoking user {user} ended {revoked} sessions, not {per_user}"
            )));
        }
        revoke.add(us, cmds);
        if !sessions
            .list(&user)
            .await
            .map_err(io::Error::other)?
            .is_empty()
        {
            return Err(io::Error::other(format!(
                "user {user} still has sessions after revoke_all"
            )));
        }
    }
    first_login.print("CAP_LOGIN_FIRST");
    full_login.print("CAP_LOGIN_FULL");
    list.print("CAP_LIST");
    revoke.print("CAP_REVOKE");
    Ok(())
}

fn usage() -> &'static str {
    "usage: scale load FIRST COUNT TOKENS_FILE | scale cap USERS PER_USER\n\
     (env: REDIS_URL, default redis://127.0.0.1:6379; PER_USER, CONCURRENCY, LIST_REPEATS,\n\
     IDLE_TIMEOUT_SECS) driven by benches/scale.sh"
}

fn main() -> io::Result<()> {
    // `cargo bench` runs harness-less targets with `--bench`, `cargo test --benches` with
    // nothing: neither names a command, and neither should touch a Redis.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|arg| !arg.starts_with('-'))
        .collect();
    let Some(command) = args.first().cloned() else {
        eprintln!("{}", usage());
        return Ok(());
    };
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    actix_web::rt::System::new().block_on(async move {
        match command.as_str() {
            "load" => {
                let first = arg_number(&args, 1, "FIRST")?;
                let count = arg_number(&args, 2, "COUNT")?;
                let file = args
                    .get(3)
                    .ok_or_else(|| io::Error::other(format!("missing TOKENS_FILE\n{}", usage())))?;
                run_load(&url, first, count, file).await
            }
            "cap" => {
                let users = arg_number(&args, 1, "USERS")?;
                let per_user = arg_number(&args, 2, "PER_USER")?;
                run_cap(&url, users, per_user).await
            }
            other => Err(io::Error::other(format!(
                "unknown command {other:?}\n{}",
                usage()
            ))),
        }
    })
}
