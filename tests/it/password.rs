//! Password work happens off the request threads.

use std::cell::RefCell;
use std::rc::Rc;

use actix_login::password;
use actix_web::{test, web, App, HttpResponse};

async fn check(hash: web::Data<String>) -> actix_web::Result<HttpResponse> {
    let ok = password::verify("guess", Some(hash.as_str())).await?;
    Ok(HttpResponse::Ok().body(ok.to_string()))
}

#[actix_web::test]
async fn a_burst_of_logins_does_not_stall_other_requests() {
    let hash = password::hash("right").await.unwrap();
    let app = test::init_service(
        App::new()
            .app_data(web::Data::new(hash))
            .route("/check", web::post().to(check))
            .route("/ping", web::get().to(|| async { "pong" })),
    )
    .await;

    // Actix serves each worker's requests on one thread. If argon2 ran on it, the ping, polled
    // after eight verifications, could only finish after all of them.
    let finished = Rc::new(RefCell::new(Vec::new()));
    let logins = (0..8).map(|i| {
        let finished = Rc::clone(&finished);
        let app = &app;
        async move {
            let req = test::TestRequest::post().uri("/check").to_request();
            let res = test::call_service(app, req).await;
            assert_eq!(test::read_body(res).await, "false");
            finished.borrow_mut().push(format!("login{i}"));
        }
    });
    let ping = async {
        let res =
            test::call_service(&app, test::TestRequest::get().uri("/ping").to_request()).await;
        assert!(res.status().is_success());
        finished.borrow_mut().push("ping".to_owned());
    };
    futures_util::future::join(futures_util::future::join_all(logins), ping).await;

    let order = finished.borrow();
    assert_eq!(order.len(), 9);
    assert_eq!(
        order[0], "ping",
        "ping waited for password hashing: {order:?}"
    );
}
