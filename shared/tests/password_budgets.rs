//! Every password check costs an Argon2id hash (about 50 ms of CPU): the budgets that bound
//! them are counted before the hash runs, right passwords included, so that parallel
//! requests cannot hash past them. Its own test binary: it counts the process's hashes.

use std::sync::Arc;

use mfa_core::clock::{Clock, ManualClock, SystemClock};
use mfa_core::config::Config;
use mfa_core::store::embedded::EmbeddedStore;
use mfa_core::{hashing, App};
use serde_json::json;

mod common;
use common::Recorder;

const PASSWORD: &str = "correct horse battery";

/// The tests of this binary share the process's hashing threads and their count: one at a
/// time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn app(dir: &tempfile::TempDir) -> Arc<App> {
    let now = SystemClock.now();
    let store = EmbeddedStore::open(&dir.path().join("mfa.redb"), now).unwrap();
    let config = Config::for_project("p", b"a test server key of sufficient length");
    Arc::new(App::new(config, Arc::new(store), Arc::new(Recorder::default()), Arc::new(ManualClock::at(now))))
}

async fn signed_up_and_in(app: &App, email: &str) -> String {
    let body = json!({"userId": "unique()", "email": email, "password": PASSWORD});
    assert_eq!(common::call(app, "POST", "/v1/account", None, body).await.status, 201);
    let body = json!({"email": email, "password": PASSWORD});
    let r = common::call(app, "POST", "/v1/account/sessions/email", None, body).await;
    assert_eq!(r.status, 201, "{}", r.body);
    r.fallback.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_sign_ins_from_one_address_hash_no_more_than_its_budget() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let app = app(&dir);
    let before = hashing::completed();
    // 70 at once, each for another email: only the per-address budget (60) applies.
    let attempts: Vec<_> = (0..70)
        .map(|i| {
            let app = app.clone();
            tokio::spawn(async move {
                let body = json!({"email": format!("nobody{i}@example.com"), "password": "wrong password"});
                common::call(&app, "POST", "/v1/account/sessions/email", None, body).await.status
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for a in attempts {
        statuses.push(a.await.unwrap());
    }
    let hashed = hashing::completed() - before;
    let count = |status: u16| statuses.iter().filter(|s| **s == status).count() as u64;
    // Ten are past the budget; of the sixty within it, those that found the hashing queue
    // full were turned away at once (503), the others hashed and were refused (401).
    assert_eq!(count(429), 10, "{statuses:?}");
    assert_eq!(count(401) + count(503), 60, "{statuses:?}");
    assert_eq!(hashed, count(401), "only a sign-in within the budget and the queue runs a hash");
}

/// As Appwrite counts them: every sign-in per email, right or wrong, and a success does not
/// start the count over.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_sign_in_of_an_email_counts_and_the_eleventh_in_an_hour_waits() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let app = app(&dir);
    // The first sign-in is right, the next eight wrong, the tenth right again.
    signed_up_and_in(&app, "busy@example.com").await;
    let sign_in = |password: &str| json!({"email": "busy@example.com", "password": password});
    for attempt in 2..=9 {
        let r = common::call(&app, "POST", "/v1/account/sessions/email", None, sign_in("wrong password")).await;
        assert_eq!(r.status, 401, "sign-in {attempt}: {}", r.body);
    }
    let r = common::call(&app, "POST", "/v1/account/sessions/email", None, sign_in(PASSWORD)).await;
    assert_eq!(r.status, 201, "the tenth, right, gets through: {}", r.body);
    assert_eq!(r.headers["x-ratelimit-limit"], "10");
    assert_eq!(r.headers["x-ratelimit-remaining"], "0");
    let before = hashing::completed();
    let r = common::call(&app, "POST", "/v1/account/sessions/email", None, sign_in(PASSWORD)).await;
    assert_eq!((r.status, r.body["type"].as_str().unwrap()), (429, "general_rate_limit_exceeded"), "{}", r.body);
    assert_eq!(hashing::completed(), before, "refused before hashing");
    let r = common::call(
        &app,
        "POST",
        "/v1/account/sessions/email",
        None,
        json!({"email": "other@example.com", "password": PASSWORD}),
    )
    .await;
    assert_eq!(r.status, 401, "another email has its own count: {}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn right_passwords_confirming_address_changes_are_counted_too() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let app = app(&dir);
    let session = signed_up_and_in(&app, "mover@example.com").await;
    let change = |i: usize| json!({"email": format!("moved{i}@example.com"), "password": PASSWORD});
    for i in 0..10 {
        let r = common::call(&app, "PATCH", "/v1/account/email", Some(&session), change(i)).await;
        assert_eq!(r.status, 200, "change {i}: {}", r.body);
    }
    let before = hashing::completed();
    let r = common::call(&app, "PATCH", "/v1/account/email", Some(&session), change(10)).await;
    assert_eq!((r.status, r.body["type"].as_str().unwrap()), (429, "general_rate_limit_exceeded"), "{}", r.body);
    assert_eq!(hashing::completed(), before, "refused before hashing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_address_cannot_probe_for_taken_addresses_past_its_budget() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let app = app(&dir);
    signed_up_and_in(&app, "owner@example.com").await;
    // Several prober accounts, so that no per-user budget ends the probing first.
    let mut answers = Vec::new();
    for prober in 0..3 {
        let session = signed_up_and_in(&app, &format!("prober{prober}@example.com")).await;
        for _ in 0..8 {
            let body = json!({"email": "owner@example.com", "password": PASSWORD});
            answers.push(common::call(&app, "PATCH", "/v1/account/email", Some(&session), body).await.status);
        }
    }
    assert_eq!(answers.iter().filter(|s| **s == 409).count(), 20, "{answers:?}");
    assert_eq!(answers.iter().filter(|s| **s == 429).count(), 4, "{answers:?}");
}
