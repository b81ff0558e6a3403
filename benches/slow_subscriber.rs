//! What a security-event subscriber costs a login: login latency (p50, p99) with no
//! subscriber, with a fast one, and with one that sleeps 50 ms per event, each with the
//! default event queue (1024) and its own memory store, as ratios against the no-subscriber
//! baseline of the same run. The sleeping subscriber fills the queue within the first round;
//! from then on its events are dropped and counted, and no login waits for it.
//!
//! `cargo bench -p actix-login-benches --bench slow_subscriber` (optional arguments: rounds,
//! logins per round). The configurations take turns, round by round, so that a machine that
//! slows down mid-run slows all three alike. Figures are for comparing with each other, not
//! across machines; there are no assertions here (the test suite's
//! `events::a_slow_subscriber_never_delays_a_request` is the pass/fail check).

use std::time::{Duration, Instant};

use actix_login::events::SecurityEvent;
use actix_login::{LoginMiddleware, MemoryStore, Session};
use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceResponse};
use actix_web::{test, web, App, HttpResponse};

/// Distinct users the logins cycle through, so that no session cap ever ends a session.
const USERS: usize = 1000;

async fn login(session: Session, id: web::Path<usize>) -> actix_web::Result<HttpResponse> {
    session.login(id.to_string(), &*id).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Subscriber {
    None,
    Fast,
    Sleeps50ms,
}

impl Subscriber {
    const ALL: [Subscriber; 3] = [Subscriber::None, Subscriber::Fast, Subscriber::Sleeps50ms];

    fn name(self) -> &'static str {
        match self {
            Subscriber::None => "no subscriber",
            Subscriber::Fast => "fast subscriber",
            Subscriber::Sleeps50ms => "subscriber sleeping 50 ms",
        }
    }

    fn middleware(self) -> LoginMiddleware {
        let builder = LoginMiddleware::builder(MemoryStore::new());
        match self {
            Subscriber::None => builder.build(),
            Subscriber::Fast => builder
                .on_event(|event: &SecurityEvent| {
                    std::hint::black_box(event.user_id.as_deref());
                })
                .build(),
            Subscriber::Sleeps50ms => builder
                .on_event(|_: &SecurityEvent| std::thread::sleep(Duration::from_millis(50)))
                .build(),
        }
    }
}

async fn app(
    middleware: LoginMiddleware,
) -> impl Service<
    actix_http::Request,
    Response = ServiceResponse<impl MessageBody>,
    Error = actix_web::Error,
> {
    test::init_service(
        App::new()
            .route("/login/{id}", web::post().to(login))
            .wrap(middleware),
    )
    .await
}

/// `count` logins through `app`, their latencies appended to `into`.
async fn logins<S, B>(app: &S, first: usize, count: usize, into: &mut Vec<Duration>)
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    for i in first..first + count {
        let req = test::TestRequest::post()
            .uri(&format!("/login/{}", i % USERS))
            .insert_header(("sec-fetch-site", "same-origin"))
            .to_request();
        let started = Instant::now();
        let res = test::call_service(app, req).await;
        into.push(started.elapsed());
        assert_eq!(res.status(), 204, "a login failed");
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn main() {
    // `cargo bench` passes `--bench`; numbers are ours.
    let numbers: Vec<usize> = std::env::args().filter_map(|a| a.parse().ok()).collect();
    let rounds = numbers.first().copied().unwrap_or(10);
    let per_round = numbers.get(1).copied().unwrap_or(2000);
    actix_web::rt::System::new().block_on(async move {
        let mut middlewares = Vec::new();
        let mut apps = Vec::new();
        for subscriber in Subscriber::ALL {
            let middleware = subscriber.middleware();
            apps.push(app(middleware.clone()).await);
            middlewares.push(middleware);
        }
        // Warm-up: allocations, the first records, the events threads' start.
        let mut discard = Vec::new();
        for app in &apps {
            logins(app, 0, 200, &mut discard).await;
        }
        let mut samples = vec![Vec::with_capacity(rounds * per_round); apps.len()];
        for round in 0..rounds {
            for (app, into) in apps.iter().zip(samples.iter_mut()) {
                logins(app, round * per_round, per_round, into).await;
            }
        }
        println!(
            "{rounds} rounds x {per_round} logins per configuration, memory store, default event \
             queue (1024)"
        );
        println!(
            "{:<28} {:>10} {:>10} {:>10} {:>10} {:>10}",
            "", "p50 (µs)", "p99 (µs)", "p50 ratio", "p99 ratio", "dropped"
        );
        let mut baseline = None;
        for ((subscriber, mut latencies), middleware) in
            Subscriber::ALL.into_iter().zip(samples).zip(&middlewares)
        {
            latencies.sort_unstable();
            let (p50, p99) = (percentile(&latencies, 0.50), percentile(&latencies, 0.99));
            let (b50, b99) = *baseline.get_or_insert((p50, p99));
            println!(
                "{:<28} {:>10.1} {:>10.1} {:>10.2} {:>10.2} {:>10}",
                subscriber.name(),
                micros(p50),
                micros(p99),
                micros(p50) / micros(b50),
                micros(p99) / micros(b99),
                middleware.events_dropped(),
            );
        }
    });
}
