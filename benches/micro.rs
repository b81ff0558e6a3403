//! Micro-benchmarks of the work on a request's path: resolving a session cookie through the
//! middleware (cookie parsing, token check, SHA-256, store lookup, record and profile
//! decoding), encoding and decoding a session record, and password hashing.
//!
//! `cargo bench -p actix-login-benches --bench micro`. Compare the two request benchmarks with
//! each other, not across machines: their difference is what the middleware costs per
//! authenticated request.

use std::hint::black_box;
use std::time::{Duration, SystemTime};

use actix_login::store::SessionRecord;
use actix_login::{password, AuthUser, LoginMiddleware, MemoryStore, Session};
use actix_web::{test, web, App, HttpResponse};
use criterion::{criterion_group, criterion_main, Criterion};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

#[derive(Serialize, Deserialize)]
struct Profile {
    id: u64,
    username: String,
}

fn record() -> SessionRecord {
    let now = SystemTime::now();
    let profile = RawValue::from_string(r#"{"id":1,"username":"alice"}"#.to_owned()).unwrap();
    SessionRecord::new(
        "Yk3vQm0_aXc9LrT2wZpN8g",
        "1",
        profile,
        now,
        now + Duration::from_secs(43_200),
    )
    .with_roles(vec!["admin".to_owned()])
    .with_client(
        Some("203.0.113.77".to_owned()),
        Some("Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0".to_owned()),
    )
}

fn records(c: &mut Criterion) {
    let record = record();
    let encoded = serde_json::to_vec(&record).unwrap();
    c.bench_function("record/encode", |b| {
        b.iter(|| serde_json::to_vec(black_box(&record)).unwrap())
    });
    c.bench_function("record/decode", |b| {
        b.iter(|| serde_json::from_slice::<SessionRecord>(black_box(&encoded)).unwrap())
    });
}

fn passwords(c: &mut Criterion) {
    let stored = password::hash_blocking("correct horse battery staple").unwrap();
    let mut group = c.benchmark_group("password");
    group.sample_size(10);
    group.bench_function("hash", |b| {
        b.iter(|| password::hash_blocking(black_box("correct horse battery staple")).unwrap())
    });
    group.bench_function("verify", |b| {
        b.iter(|| {
            password::verify_blocking(black_box("correct horse battery staple"), &stored).unwrap()
        })
    });
    group.finish();
}

async fn me(user: AuthUser<Profile>) -> web::Json<Profile> {
    web::Json(user.into_inner())
}

async fn login(session: Session) -> actix_web::Result<HttpResponse> {
    let profile = Profile {
        id: 1,
        username: "alice".to_owned(),
    };
    session.login("1", &profile).await?;
    Ok(HttpResponse::Ok().finish())
}

fn requests(c: &mut Criterion) {
    let runtime = actix_web::rt::System::new();
    let (with_login, cookie) = runtime.block_on(async {
        let app = test::init_service(
            App::new()
                .route("/login", web::post().to(login))
                .route("/me", web::get().to(me))
                .wrap(LoginMiddleware::new(MemoryStore::new())),
        )
        .await;
        let res =
            test::call_service(&app, test::TestRequest::post().uri("/login").to_request()).await;
        let cookie = res
            .response()
            .cookies()
            .find(|c| c.name() == "__Host-id")
            .map(|c| format!("__Host-id={}", c.value()))
            .unwrap();
        (app, cookie)
    });
    let bare = runtime.block_on(test::init_service(App::new().route(
        "/me",
        web::get().to(|| async {
            web::Json(Profile {
                id: 1,
                username: "alice".to_owned(),
            })
        }),
    )));

    let mut group = c.benchmark_group("request");
    group.bench_function("bare", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let req = test::TestRequest::get()
                    .uri("/me")
                    .insert_header(("cookie", cookie.as_str()));
                test::call_service(&bare, req.to_request()).await.status()
            })
        })
    });
    group.bench_function("authenticated", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let req = test::TestRequest::get()
                    .uri("/me")
                    .insert_header(("cookie", cookie.as_str()));
                let status = test::call_service(&with_login, req.to_request())
                    .await
                    .status();
                assert!(status.is_success());
                status
            })
        })
    });
    group.finish();
}

criterion_group!(benches, records, passwords, requests);
criterion_main!(benches);
