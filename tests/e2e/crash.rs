//! Crash safety: mfa-local killed with SIGKILL in the middle of a load of writes, then
//! started again on the same data. Every write answered with success is there; every
//! write left without an answer either happened whole or not at all, but for one: a TOTP
//! completion, which spends the step before it upgrades the session (two writes on
//! DynamoDB), may have spent it alone, and then sending it again completes it.

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::Notify;

use crate::support::{totp_at, Answer, Server, PASSWORD};

/// Writes of each kind in the load.
const EACH: usize = 24;

/// A client of its own loopback address (Linux routes all of 127/8 to `lo`), so that the
/// per-address limits count per user, as for users on their own devices.
fn client(n: usize) -> reqwest::Client {
    let ip: IpAddr = format!("127.3.{}.{}", n / 250, n % 250 + 1).parse().unwrap();
    reqwest::Client::builder().local_address(ip).timeout(Duration::from_secs(30)).build().unwrap()
}

/// A user with MFA on (TOTP and recovery codes) and a session that still needs a factor.
struct Ready {
    http: reqwest::Client,
    session: String,
    totp: Vec<u8>,
    recovery_code: String,
}

async fn call(server: &Server, http: &reqwest::Client, method: &str, path: &str, session: Option<&str>) -> Answer {
    call_with(server, http, method, path, session, json!({})).await
}

async fn call_with(
    server: &Server,
    http: &reqwest::Client,
    method: &str,
    path: &str,
    session: Option<&str>,
    body: serde_json::Value,
) -> Answer {
    server.send(server.request(http, method, path, session, body)).await
}

async fn sign_in(server: &Server, http: &reqwest::Client, email: &str) -> Answer {
    call_with(server, http, "POST", "/v1/account/sessions/email", None, json!({"email": email, "password": PASSWORD}))
        .await
}

async fn ready(server: &Server, n: usize) -> Ready {
    let http = client(n);
    let email = format!("ready{n}@example.com");
    let body = json!({"userId": "unique()", "email": email, "password": PASSWORD});
    let r = call_with(server, &http, "POST", "/v1/account", None, body).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let session = sign_in(server, &http, &email).await.header("x-fallback-cookies").unwrap().to_string();
    let r = call(server, &http, "POST", "/v1/account/mfa/recovery-codes", Some(&session)).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let recovery_code = r.body["recoveryCodes"][0].as_str().unwrap().to_string();
    let r = call(server, &http, "POST", "/v1/account/mfa/authenticators/totp", Some(&session)).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let totp = mfa_core::domain::totp::from_base32(r.body["secret"].as_str().unwrap()).unwrap();
    let otp = json!({"otp": totp_at(&totp, 0)});
    let r = call_with(server, &http, "PUT", "/v1/account/mfa/authenticators/totp", Some(&session), otp).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = call_with(server, &http, "PATCH", "/v1/account/mfa", Some(&session), json!({"mfa": true})).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    // A new sign-in: password only, the second factor still to come.
    let session = sign_in(server, &http, &email).await.header("x-fallback-cookies").unwrap().to_string();
    Ready { http, session, totp, recovery_code }
}

/// What a write of the load was answered: success, another answer, or none (the
/// connection died with the server).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Succeeded,
    Refused(u16),
    Unanswered,
}

async fn outcome(req: reqwest::RequestBuilder, success: u16) -> (Outcome, Option<serde_json::Value>) {
    match req.send().await {
        Err(_) => (Outcome::Unanswered, None),
        Ok(res) => {
            let status = res.status().as_u16();
            match res.json::<serde_json::Value>().await {
                // An answer cut off by the kill is no answer.
                Err(_) => (Outcome::Unanswered, None),
                Ok(body) if status == success => (Outcome::Succeeded, Some(body)),
                Ok(_) => (Outcome::Refused(status), None),
            }
        }
    }
}

/// Creates a challenge of `factor` and completes it with `otp`; the completion's outcome,
/// and the challenge's id if it was created.
async fn complete(server: &Server, user: &Ready, factor: &str, otp: &str) -> (Outcome, Option<String>) {
    let req = server.request(
        &user.http,
        "POST",
        "/v1/account/mfa/challenges",
        Some(&user.session),
        json!({"factor": factor}),
    );
    let (created, body) = outcome(req, 201).await;
    let Some(id) = body.and_then(|c| c["$id"].as_str().map(str::to_string)) else { return (created, None) };
    let body = json!({"challengeId": id, "otp": otp});
    let req = server.request(&user.http, "PUT", "/v1/account/mfa/challenges", Some(&user.session), body);
    (outcome(req, 200).await.0, Some(id))
}

/// After the restart: completes challenge `id` again with `otp`, as a client whose request
/// went unanswered sends it again; whether it succeeded.
async fn completed_again(server: &Server, user: &Ready, id: &str, otp: &str) -> bool {
    let body = json!({"challengeId": id, "otp": otp});
    let r = call_with(server, &user.http, "PUT", "/v1/account/mfa/challenges", Some(&user.session), body).await;
    match (r.status, r.kind()) {
        (200, _) => true,
        (401, "user_invalid_token") => false,
        other => panic!("unexpected answer to completing a challenge again: {other:?} {:?}", r.body),
    }
}

fn unix_seconds() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// After the restart: whether the user's session has its second factor (GET /account).
async fn upgraded(server: &Server, user: &Ready) -> bool {
    let r = call(server, &user.http, "GET", "/v1/account", Some(&user.session)).await;
    match (r.status, r.kind()) {
        (200, _) => true,
        (401, "user_more_factors_required") => false,
        other => panic!("unexpected answer to GET /v1/account: {other:?} {:?}", r.body),
    }
}

/// After the restart: completes a new challenge with the code the load used; `true` when it
/// was refused as spent.
async fn spent(server: &Server, user: &Ready, factor: &str, otp: &str) -> bool {
    let r = call_with(
        server,
        &user.http,
        "POST",
        "/v1/account/mfa/challenges",
        Some(&user.session),
        json!({"factor": factor}),
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let body = json!({"challengeId": r.body["$id"], "otp": otp});
    let r = call_with(server, &user.http, "PUT", "/v1/account/mfa/challenges", Some(&user.session), body).await;
    match (r.status, r.kind()) {
        (200, _) => false,
        (401, "user_invalid_token") => true,
        other => panic!("unexpected answer to completing a challenge: {other:?} {:?}", r.body),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_killed_under_load_keeps_every_answered_write_and_no_half_of_any() {
    let mut server = Server::start().await;
    let mut users = Vec::new();
    for n in 0..2 * EACH {
        users.push(ready(&server, n).await);
    }
    let (totp_users, recovery_users) = users.split_at(EACH);
    // The enrolment spent the current step; the next one's code is accepted (one step of
    // skew) for the next minute, long enough to check it after the restart too.
    let otps: Vec<String> = totp_users.iter().map(|u| totp_at(&u.totp, 1)).collect();
    let otp_step = unix_seconds() / 30 + 1;

    // The load: sign-ups, TOTP completions and recovery-code uses, all at once; the server
    // is killed when a third of them have succeeded.
    let server_ref = &server;
    let succeeded = Arc::new(AtomicUsize::new(0));
    let enough = Arc::new(Notify::new());
    let total = 3 * EACH;
    let note = |o: Outcome| {
        if o == Outcome::Succeeded && succeeded.fetch_add(1, Ordering::SeqCst) + 1 == total / 3 {
            enough.notify_one();
        }
        o
    };
    let sign_ups = futures::future::join_all((0..EACH).map(|i| async move {
        let http = client(1000 + i);
        let body = json!({"userId": "unique()", "email": format!("new{i}@example.com"), "password": PASSWORD});
        let (o, _) = outcome(server_ref.request(&http, "POST", "/v1/account", None, body), 201).await;
        (http, note(o))
    }));
    let totps = futures::future::join_all(totp_users.iter().zip(&otps).map(|(u, otp)| async {
        let (o, id) = complete(server_ref, u, "totp", otp).await;
        (note(o), id)
    }));
    let recoveries = futures::future::join_all(
        recovery_users
            .iter()
            .map(|u| async { note(complete(server_ref, u, "recoverycode", &u.recovery_code).await.0) }),
    );
    let load = async {
        let outcomes = futures::future::join3(sign_ups, totps, recoveries).await;
        // Should the load end first, the kill comes after it (and the test fails below).
        enough.notify_one();
        outcomes
    };
    let kill = async {
        enough.notified().await;
        server_ref.kill_now();
    };
    let ((sign_ups, totps, recoveries), ()) = futures::future::join(load, kill).await;
    let count = |all: &[Outcome], o: Outcome| all.iter().filter(|x| **x == o).count();
    let outcomes: Vec<Outcome> = sign_ups
        .iter()
        .map(|(_, o)| *o)
        .chain(totps.iter().map(|(o, _)| *o))
        .chain(recoveries.iter().copied())
        .collect();
    eprintln!(
        "at the kill: {} succeeded, {} unanswered, {} refused",
        count(&outcomes, Outcome::Succeeded),
        count(&outcomes, Outcome::Unanswered),
        outcomes.iter().filter(|o| matches!(o, Outcome::Refused(_))).count()
    );
    assert!(count(&outcomes, Outcome::Unanswered) > 0, "the server was killed while writes were in flight");
    for o in totps.iter().map(|(o, _)| o).chain(&recoveries) {
        assert!(!matches!(o, Outcome::Refused(_)), "a challenge of the load was refused: {o:?}");
    }

    server.kill_and_restart();
    let server = &server;

    // TOTP first: its code is valid for a limited time. Answered: the session has its
    // factor and the step is spent. Unanswered: both, or no upgrade and then sending the
    // completion again completes it (whether or not its step was spent meanwhile).
    for ((user, otp), (o, id)) in totp_users.iter().zip(&otps).zip(&totps) {
        let has_factor = upgraded(server, user).await;
        // Past one step of skew the code is refused whether spent or not: on a machine slow
        // enough for that, only the session's side can be checked.
        let expired = unix_seconds() / 30 > otp_step + 1;
        if expired {
            assert!(*o != Outcome::Succeeded || has_factor, "an answered TOTP completion is kept");
            eprintln!("a TOTP code expired before the check: its spending is not checked");
        } else if *o == Outcome::Succeeded || has_factor {
            assert!(has_factor && spent(server, user, "totp", otp).await, "a TOTP completion is kept whole");
        } else if let Some(id) = id {
            assert!(
                completed_again(server, user, id, otp).await,
                "an unanswered TOTP completion completes when sent again"
            );
            assert!(upgraded(server, user).await, "and then the session has its factor");
        } else {
            assert!(!spent(server, user, "totp", otp).await, "no challenge, nothing spent");
        }
    }
    for (user, o) in recovery_users.iter().zip(&recoveries) {
        let upgraded = upgraded(server, user).await;
        let spent = spent(server, user, "recoverycode", &user.recovery_code).await;
        if *o == Outcome::Succeeded {
            assert!(upgraded && spent, "an answered recovery-code use is kept whole");
        } else {
            assert_eq!(upgraded, spent, "a recovery-code use without an answer happened whole or not at all");
        }
    }
    // Sign-ups: an answered one signs in; one without an answer either signs in, or its
    // address is free (no claim left without its user).
    for (i, (http, o)) in sign_ups.iter().enumerate() {
        let email = format!("new{i}@example.com");
        let r = sign_in(server, http, &email).await;
        if *o == Outcome::Succeeded {
            assert_eq!(r.status, 201, "an answered sign-up is kept: {:?}", r.body);
        } else if r.status != 201 {
            assert_eq!((r.status, r.kind()), (401, "user_invalid_credentials"), "{:?}", r.body);
            let body = json!({"userId": "unique()", "email": email, "password": PASSWORD});
            let r = call_with(server, http, "POST", "/v1/account", None, body).await;
            assert_eq!(r.status, 201, "a sign-up without an answer left nothing behind: {:?}", r.body);
        }
    }
}
