use super::*;

#[cfg(target_os = "linux")]
#[actix_web::test]
async fn hashing_runs_on_its_own_threads_at_a_lower_priority() {
    let (name, nice) = off_the_executor(Lane::Stranger, usize::MAX, || {
        let name = std::thread::current().name().map(str::to_owned);
        let nice = rustix::process::getpriority_process(Some(rustix::thread::gettid()));
        Ok((
            name,
            nice.map_err(|err| PasswordError::Interrupted(err.to_string()))?,
        ))
    })
    .await
    .unwrap();
    assert!(name.unwrap().starts_with("actix-login-hash-"));
    assert_eq!(nice, HASHING_NICE);
    // The thread that serves requests keeps its priority.
    let here = rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap();
    assert!(here < HASHING_NICE, "{here}");
}

fn params_of(phc: &str) -> String {
    let parsed = PasswordHash::new(phc).unwrap();
    assert_eq!(parsed.algorithm.as_str(), "argon2id");
    assert_eq!(parsed.version, Some(0x13));
    parsed.params.to_string()
}

#[test]
fn hashes_are_argon2id_with_owasp_parameters_and_16_byte_salts() {
    let phc = hash_blocking("pässwörd 🔑").unwrap();
    assert_eq!(params_of(&phc), "m=19456,t=2,p=1");
    let parsed = PasswordHash::new(&phc).unwrap();
    let mut salt = [0u8; 64];
    assert_eq!(
        parsed.salt.unwrap().decode_b64(&mut salt).unwrap().len(),
        16
    );
    assert!(verify_blocking("pässwörd 🔑", &phc).unwrap());
    assert!(!verify_blocking("pässwörd 🔑 ", &phc).unwrap());
    assert!(!verify_blocking("pässwörd", &phc).unwrap());
}

#[test]
fn same_password_gets_different_hashes() {
    assert_ne!(
        hash_blocking("same").unwrap(),
        hash_blocking("same").unwrap()
    );
}

#[test]
fn dummy_hash_uses_the_current_parameters() {
    assert_eq!(
        params_of(DUMMY_HASH),
        params_of(&hash_blocking("x").unwrap())
    );
}

#[test]
fn malformed_stored_hash_is_an_error_not_a_match() {
    for bad in ["", "plaintext", "$argon2id$v=19$m=19456,t=2,p=1$$"] {
        assert!(matches!(
            verify_blocking("x", bad),
            Err(PasswordError::MalformedHash(_))
        ));
    }
}

/// Polls `future` once.
async fn poll_once<F: std::future::Future + Unpin>(future: &mut F) -> std::task::Poll<F::Output> {
    std::future::poll_fn(|cx| std::task::Poll::Ready(std::pin::Pin::new(&mut *future).poll(cx)))
        .await
}

fn slots(turns: usize) -> &'static Slots {
    Box::leak(Box::new(Slots::new(turns)))
}

fn free(slots: &Slots) -> usize {
    slots.lock().free
}

/// Yields to the spawned tasks until `slots` has `waiting` (known, strangers) waiters.
async fn until_waiting(slots: &Slots, waiting: (usize, usize)) {
    while slots.waiting() != waiting {
        tokio::task::yield_now().await;
    }
}

#[actix_web::test]
async fn a_cancelled_caller_does_not_free_the_slot_of_a_running_hash() {
    let slots = slots(1);
    let (started, running) = std::sync::mpsc::channel();
    let (finish, finished) = std::sync::mpsc::channel::<()>();
    let blocked = move || {
        let _ = started.send(());
        let _ = finished.recv();
        Ok(())
    };
    let mut call = Box::pin(run_in_slot(slots, Lane::Stranger, 8, blocked));
    // Poll until the hash runs, then give up on it, as a client that disconnects does.
    while running.try_recv().is_err() {
        let _ = poll_once(&mut call).await;
        tokio::task::yield_now().await;
    }
    drop(call);
    assert_eq!(free(slots), 0, "slot freed while the hash still runs");
    finish.send(()).unwrap();
    while free(slots) == 0 {
        tokio::task::yield_now().await;
    }
    assert_eq!(free(slots), 1);
}

#[actix_web::test]
async fn known_devices_take_the_next_turn_before_waiting_strangers() {
    let slots = slots(1);
    let held = slots.acquire(Lane::Stranger, 8).await.unwrap();
    let order = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let mut tasks = Vec::new();
    for (name, lane, waiting) in [
        ("stranger 1", Lane::Stranger, (0, 1)),
        ("stranger 2", Lane::Stranger, (0, 2)),
        ("known", known("alice"), (1, 2)),
    ] {
        let order = order.clone();
        tasks.push(actix_web::rt::spawn(async move {
            let turn = slots.acquire(lane, 8).await.unwrap();
            order.borrow_mut().push(name);
            drop(turn);
        }));
        until_waiting(slots, waiting).await;
    }
    drop(held);
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(*order.borrow(), ["known", "stranger 1", "stranger 2"]);
    assert_eq!(free(slots), 1);
}

#[actix_web::test]
async fn strangers_past_the_bound_are_refused_at_once_and_known_devices_never() {
    let slots = slots(1);
    let held = slots.acquire(Lane::Stranger, 2).await.unwrap();
    let mut waiters: Vec<_> = (0..2)
        .map(|_| actix_web::rt::spawn(slots.acquire(Lane::Stranger, 2)))
        .collect();
    until_waiting(slots, (0, 2)).await;
    assert!(matches!(
        slots.acquire(Lane::Stranger, 2).await,
        Err(PasswordError::Busy)
    ));
    let known: Vec<_> = (0..5)
        .map(|n| actix_web::rt::spawn(slots.acquire(known(&format!("account {n}")), 2)))
        .collect();
    until_waiting(slots, (5, 2)).await;
    // A stranger who gave up holds no place in the line.
    waiters[0].abort();
    while !slots
        .lock()
        .strangers
        .iter()
        .any(tokio::sync::oneshot::Sender::is_closed)
    {
        tokio::task::yield_now().await;
    }
    let mut queued = Box::pin(slots.acquire(Lane::Stranger, 2));
    assert!(
        poll_once(&mut queued).await.is_pending(),
        "refused while a place was free"
    );
    // The turn goes to the known devices first, then to the strangers still waiting.
    drop(held);
    for turn in known {
        drop(turn.await.unwrap().unwrap());
    }
    drop(waiters.remove(1).await.unwrap().unwrap());
    drop(queued.await.unwrap());
    assert_eq!(free(slots), 1);
}

#[test]
fn busy_is_a_503_with_retry_after_and_a_code() {
    use actix_web::ResponseError as _;
    let res = PasswordError::Busy.error_response();
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers().get("retry-after").unwrap(), "1");
}

#[test]
fn oversized_passwords_are_refused_before_hashing() {
    let huge = "x".repeat(MAX_PASSWORD_BYTES + 1);
    assert!(matches!(hash_blocking(&huge), Err(PasswordError::TooLong)));
    assert!(matches!(
        verify_blocking(&huge, DUMMY_HASH),
        Err(PasswordError::TooLong)
    ));
    let limit = "x".repeat(MAX_PASSWORD_BYTES);
    assert!(verify_blocking(&limit, &hash_blocking(&limit).unwrap()).unwrap());
}

#[test]
fn composed_and_decomposed_accents_verify_alike() {
    let composed = "caf\u{e9} au lait, s'il vous pla\u{ee}t";
    let decomposed = "cafe\u{301} au lait, s'il vous plai\u{302}t";
    assert_ne!(composed, decomposed);
    let stored = hash_blocking(composed).unwrap();
    assert!(verify_blocking(decomposed, &stored).unwrap());
}

#[test]
fn outdated_parameters_and_peppers_need_a_rehash() {
    let current = hash_blocking("pw").unwrap();
    assert!(!needs_rehash(&current));
    let weak = Argon2::new(
        Algorithm::Argon2id,
        Version::V0x13,
        Params::new(8192, 3, 1, None).unwrap(),
    );
    let salt = SaltString::encode_b64(&[7u8; 16]).unwrap();
    let old = weak.hash_password(b"pw", &salt).unwrap().to_string();
    assert!(needs_rehash(&old));
    assert!(
        verify_blocking("pw", &old).unwrap(),
        "old hashes still verify"
    );
    let short_salt = SaltString::encode_b64(&[7u8; 8]).unwrap();
    let imported = Argon2::default()
        .hash_password(b"pw", &short_salt)
        .unwrap()
        .to_string();
    assert!(needs_rehash(&imported), "an 8-byte salt should be upgraded");
    let long_output = Argon2::new(
        Algorithm::Argon2id,
        Version::V0x13,
        Params::new(19_456, 2, 1, Some(64)).unwrap(),
    );
    assert!(needs_rehash(
        &long_output.hash_password(b"pw", &salt).unwrap().to_string()
    ));
    let argon2i = Argon2::new(Algorithm::Argon2i, Version::V0x13, Params::default());
    assert!(needs_rehash(
        &argon2i.hash_password(b"pw", &salt).unwrap().to_string()
    ));
    assert!(needs_rehash("not a hash"));
}

#[actix_web::test]
async fn a_pepper_is_required_to_verify_and_can_be_rotated() {
    let p1 = Pepper::new("p1", b"first secret, 32 bytes of it....".to_vec()).unwrap();
    let p2 = Pepper::new("p2", b"second secret, 32 bytes of it...".to_vec()).unwrap();
    let with_p1 = PasswordHasher::new().with_pepper(p1.clone());
    let stored = with_p1.hash("pw").await.unwrap();
    assert!(stored.contains("keyid="), "{stored}");
    assert!(with_p1.verify("pw", Some(&stored)).await.unwrap());
    assert!(!with_p1.needs_rehash(&stored));

    // Without the pepper the hash cannot be checked at all.
    let plain = PasswordHasher::new();
    assert!(matches!(
        plain.verify("pw", Some(&stored)).await,
        Err(PasswordError::UnknownPepper)
    ));
    // The same id with another secret does not verify: the secret is really used.
    let guess = Pepper::new("p1", b"a guessed secret of 32 bytes....".to_vec()).unwrap();
    let forged = PasswordHasher::new().with_pepper(guess);
    assert!(!forged.verify("pw", Some(&stored)).await.unwrap());

    let rotated = PasswordHasher::new()
        .with_pepper(p2)
        .with_retired_pepper(p1);
    assert!(rotated.verify("pw", Some(&stored)).await.unwrap());
    assert!(rotated.needs_rehash(&stored));
    let fresh = rotated.hash("pw").await.unwrap();
    assert!(!rotated.needs_rehash(&fresh));
    // Unpeppered hashes keep working and are upgraded.
    let legacy = hash("pw").await.unwrap();
    assert!(rotated.verify("pw", Some(&legacy)).await.unwrap());
    assert!(rotated.needs_rehash(&legacy));
    let secret = b"sixteen bytes ok".to_vec();
    assert!(Pepper::new("k", secret.clone()).is_ok());
    assert!(matches!(
        Pepper::new("", secret.clone()),
        Err(PasswordError::InvalidPepperId)
    ));
    assert!(matches!(
        Pepper::new("nine-byte", secret),
        Err(PasswordError::InvalidPepperId)
    ));
    assert!(matches!(
        Pepper::new("k", Vec::new()),
        Err(PasswordError::WeakPepper)
    ));
}

#[actix_web::test]
async fn unknown_user_never_matches_even_with_the_dummy_password() {
    assert!(!verify("", None).await.unwrap());
    let real = hash("pw").await.unwrap();
    assert!(verify("pw", Some(&real)).await.unwrap());
}

fn known(account: &str) -> Lane {
    Lane::KnownDevice(super::DeviceOwner::new(account))
}

/// One account's device cookies are cheap to multiply (every login hands out a new one), so
/// its checks must not fill the lane that goes before every stranger: a second check for the
/// same account at once waits among strangers, and is refused with them.
#[actix_web::test]
async fn one_account_has_one_place_in_the_known_lane() {
    let slots = slots(1);
    let held = slots.acquire(Lane::Stranger, 1).await.unwrap();
    let first = actix_web::rt::spawn(slots.acquire(known("mallory"), 1));
    until_waiting(slots, (1, 0)).await;
    let second = actix_web::rt::spawn(slots.acquire(known("mallory"), 1));
    until_waiting(slots, (1, 1)).await;
    // The strangers' line is full now: a third check for the account is refused like theirs.
    assert!(matches!(
        slots.acquire(known("mallory"), 1).await,
        Err(PasswordError::Busy)
    ));
    // Another account's known device still goes first.
    let other = actix_web::rt::spawn(slots.acquire(known("alice"), 1));
    until_waiting(slots, (2, 1)).await;
    drop(held);
    drop(first.await.unwrap().unwrap());
    drop(other.await.unwrap().unwrap());
    drop(second.await.unwrap().unwrap());
    assert_eq!(free(slots), 1);
    assert!(slots.lock().known_owners.is_empty(), "places left taken");
    // Once its check is done, the account has its place back.
    let again = slots.acquire(known("mallory"), 1).await.unwrap();
    assert_eq!(again.owner, Some(super::DeviceOwner::new("mallory")));
}
