//! Wrong codes are bounded per challenge, per user and per address.

use serde_json::{json, Value};

mod common;
use common::{assert_refused, each_store, World};

async fn recovery_challenge(w: &World, session: &str) -> String {
    let r = w.ok("POST", "/v1/account/mfa/challenges", Some(session), json!({"factor": "recoverycode"})).await;
    r["$id"].as_str().unwrap().to_string()
}

async fn complete(w: &World, session: &str, id: &str, otp: &str) -> common::Answer {
    w.call("PUT", "/v1/account/mfa/challenges", Some(session), json!({"challengeId": id, "otp": otp})).await
}

/// Sixty wrong codes from one address (six users' worth: each may try ten an hour) close
/// the address to code checks, a right code included; each wrong one was answered as such.
#[tokio::test]
async fn wrong_codes_from_one_address_stop_at_its_limit_right_codes_included() {
    each_store("codebudget", |w| async move {
        let wrong = "aaaaaaaa-aaaaaaaa";
        for _ in 0..6 {
            let p = w.sign_up().await;
            w.ok("POST", "/v1/account/mfa/recovery-codes", Some(&p.session), json!({})).await;
            for _ in 0..2 {
                let id = recovery_challenge(&w, &p.session).await;
                for _ in 0..5 {
                    assert_refused(&complete(&w, &p.session, &id, wrong).await, 401, "user_invalid_token");
                }
            }
        }
        let last = w.sign_up().await;
        let codes = w.ok("POST", "/v1/account/mfa/recovery-codes", Some(&last.session), json!({})).await;
        let code = codes["recoveryCodes"][0].as_str().map(str::to_string).unwrap();
        let id = recovery_challenge(&w, &last.session).await;
        let r = complete(&w, &last.session, &id, wrong).await;
        assert_refused(&r, 429, "general_rate_limit_exceeded");
        let r = complete(&w, &last.session, &id, &code).await;
        assert_refused(&r, 429, "general_rate_limit_exceeded");
        assert_eq!(r.headers["x-ratelimit-remaining"], "0", "{:?}", r.headers);
        let session: Value = w.ok("GET", "/v1/account/sessions/current", Some(&last.session), json!({})).await;
        assert_eq!(session["factors"], json!(["password"]), "the right code upgraded nothing");
    })
    .await;
}
