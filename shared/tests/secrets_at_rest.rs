//! Nothing secret is stored in plain text, on either store: the whole flow (sign-up, login,
//! recovery codes, email and phone verification, TOTP enrolment, MFA on, a new login passing
//! an email challenge) is driven in-process through `App::handle`, every secret the client saw
//! is collected, then every stored item is dumped and searched for each of them.
//!
//! Runs on the embedded store always, and on DynamoDB (a fresh table) when
//! `MFA_TEST_DYNAMODB_ENDPOINT` names one; with `MFA_REQUIRE_DYNAMODB=1` a missing endpoint
//! fails instead of skipping.
//!
//! Long secrets (password, session secrets, the email link secret, recovery codes, the TOTP
//! secret) are searched for anywhere in the dump, keys and values. The 6-digit codes (phone
//! verification, email challenge) are searched for as whole runs of digits inside string
//! values and keys only: numbers (timestamps, counters) are not strings, and a 13-digit
//! millisecond time inside a counter key is one run of 13 digits, so a code that happens to
//! appear inside such a run is not a false alarm; a code stored as such would be.

use std::sync::Arc;

use mfa_core::clock::{Clock, ManualClock, Millis};
use mfa_core::config::Config;
use mfa_core::domain::{recovery, totp};
use mfa_core::store::embedded::EmbeddedStore;
use mfa_core::store::Store;
use mfa_core::App;
use serde_json::{json, Value};

mod common;
use common::{Answer, Recorder};

const PASSWORD: &str = "correct horse battery staple";
const START: Millis = 1_800_000_000_000;
const EMAIL: &str = "at-rest@example.com";
const PHONE: &str = "+12065550142";

struct Flow {
    app: App,
    clock: ManualClock,
    sender: Arc<Recorder>,
}

impl Flow {
    async fn call(&self, method: &str, path: &str, session: Option<&str>, body: Value) -> Answer {
        common::call(&self.app, method, path, session, body).await
    }

    fn last_text(&self, to: &str) -> String {
        let sent = self.sender.messages();
        sent.iter().rev().find(|m| m.to == to).unwrap_or_else(|| panic!("no message to {to}")).text.clone()
    }

    /// Logs in; returns the `X-Fallback-Cookies` value and the session secret inside it.
    async fn log_in(&self) -> (String, String) {
        let r =
            self.call("POST", "/v1/account/sessions/email", None, json!({"email": EMAIL, "password": PASSWORD})).await;
        assert_eq!(r.status, 201, "{}", r.body);
        let fallback = r.fallback.expect("fallback cookie");
        let cookies: Value = serde_json::from_str(&fallback).unwrap();
        let cookie = cookies["a_session_p"].as_str().expect("the session cookie");
        let secret = mfa_core::http::Credentials::decode(cookie).expect("credentials decode").secret;
        assert!(secret.len() >= 16, "a session secret worth searching for: {secret:?}");
        (fallback, secret)
    }
}

/// Every secret the client was given during the flow.
#[derive(Debug, Default)]
struct Secrets {
    user_id: String,
    /// Searched for anywhere in the dump.
    long: Vec<(&'static str, String)>,
    /// 6-digit codes: searched for as whole digit runs in strings.
    codes: Vec<(&'static str, String)>,
}

fn six_digits(text: &str) -> String {
    text.split(|c: char| !c.is_ascii_digit())
        .find(|w| w.len() == 6)
        .unwrap_or_else(|| panic!("no code in {text:?}"))
        .to_string()
}

async fn run_flow(store: Arc<dyn Store>) -> Secrets {
    let clock = ManualClock::at(START);
    let sender = Arc::new(Recorder::default());
    let app = App::new(
        Config::for_project("p", b"a test server key of sufficient length"),
        store,
        sender.clone(),
        Arc::new(clock.clone()),
    );
    let f = Flow { app, clock, sender };
    let mut secrets = Secrets::default();
    secrets.long.push(("password", PASSWORD.to_string()));

    // Sign up and log in.
    let r =
        f.call("POST", "/v1/account", None, json!({"userId": "unique()", "email": EMAIL, "password": PASSWORD})).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let user_id = r.body["$id"].as_str().unwrap().to_string();
    secrets.user_id = user_id.clone();
    let (s1, secret1) = f.log_in().await;
    secrets.long.push(("first session secret", secret1));

    // Recovery codes, as shown and as a user may type them.
    let r = f.call("POST", "/v1/account/mfa/recovery-codes", Some(&s1), json!({})).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let codes: Vec<String> = serde_json::from_value(r.body["recoveryCodes"].clone()).unwrap();
    assert_eq!(codes.len(), recovery::COUNT);
    for code in codes {
        secrets.long.push(("recovery code (normalized)", recovery::normalize(&code)));
        secrets.long.push(("recovery code", code));
    }

    // Email verification: the secret in the link.
    let r = f
        .call("POST", "/v1/account/verifications/email", Some(&s1), json!({"url": "https://app.example/verify"}))
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let text = f.last_text(EMAIL);
    let link = text.split_whitespace().find(|w| w.starts_with("https://app.example/verify?")).expect("a link");
    let url = url::Url::parse(link).unwrap();
    let link_secret = url.query_pairs().find(|(k, _)| k == "secret").expect("a secret").1.into_owned();
    assert!(link_secret.len() >= 32, "{link_secret:?}");
    let r =
        f.call("PUT", "/v1/account/verifications/email", None, json!({"userId": user_id, "secret": link_secret})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    secrets.long.push(("email verification secret", link_secret));

    // Phone verification: the code in the SMS.
    let r = f.call("PATCH", "/v1/account/phone", Some(&s1), json!({"phone": PHONE, "password": PASSWORD})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = f.call("POST", "/v1/account/verifications/phone", Some(&s1), json!({})).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let phone_code = six_digits(&f.last_text(PHONE));
    let r =
        f.call("PUT", "/v1/account/verifications/phone", None, json!({"userId": user_id, "secret": phone_code})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    secrets.codes.push(("phone verification code", phone_code));

    // TOTP enrolment: the secret, as shown (base32) and raw (hex, either case).
    let r = f.call("POST", "/v1/account/mfa/authenticators/totp", Some(&s1), json!({})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let shown = r.body["secret"].as_str().unwrap().to_string();
    let totp_secret = totp::from_base32(&shown).unwrap();
    let otp = totp::code_at(&totp_secret, f.clock.now()).unwrap();
    let r = f.call("PUT", "/v1/account/mfa/authenticators/totp", Some(&s1), json!({"otp": otp})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    secrets.long.push(("TOTP secret (base32)", shown.trim_end_matches('=').to_string()));
    secrets.long.push(("TOTP secret (hex)", hex::encode(&totp_secret)));
    secrets.long.push(("TOTP secret (HEX)", hex::encode_upper(&totp_secret)));

    // MFA on.
    let r = f.call("PATCH", "/v1/account/mfa", Some(&s1), json!({"mfa": true})).await;
    assert_eq!(r.status, 200, "{}", r.body);

    // A new login passes an email challenge.
    f.clock.advance(60_000);
    let (s2, secret2) = f.log_in().await;
    secrets.long.push(("second session secret", secret2));
    let r = f.call("POST", "/v1/account/mfa/challenges", Some(&s2), json!({"factor": "email"})).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let challenge = r.body["$id"].as_str().unwrap().to_string();
    let challenge_code = six_digits(&f.last_text(EMAIL));
    let r = f
        .call("PUT", "/v1/account/mfa/challenges", Some(&s2), json!({"challengeId": challenge, "otp": challenge_code}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    secrets.codes.push(("email challenge code", challenge_code));
    let r = f.call("GET", "/v1/account", Some(&s2), json!({})).await;
    assert_eq!((r.status, r.body["mfa"].clone(), r.body["phoneVerification"].clone()), (200, json!(true), json!(true)));

    // A second challenge is left pending in the store: its code must not be readable either.
    let r = f.call("POST", "/v1/account/mfa/challenges", Some(&s2), json!({"factor": "phone"})).await;
    assert_eq!(r.status, 201, "{}", r.body);
    secrets.codes.push(("pending SMS challenge code", six_digits(&f.last_text(PHONE))));
    secrets
}

/// One stored item: its whole text (for the long secrets) and its string parts, keys included
/// (for the 6-digit codes).
struct Item {
    text: String,
    strings: Vec<String>,
}

fn strings_of_json(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => {
            out.push(s.clone());
            // A value may itself hold serialized JSON.
            if let Ok(inner @ (Value::Object(_) | Value::Array(_))) = serde_json::from_str::<Value>(s) {
                strings_of_json(&inner, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|v| strings_of_json(v, out)),
        Value::Object(o) => o.iter().for_each(|(k, v)| {
            out.push(k.clone());
            strings_of_json(v, out)
        }),
        _ => {}
    }
}

fn check(secrets: &Secrets, items: &[Item], store: &str) {
    assert!(items.len() > 5, "{store}: the dump holds the flow's items ({} found)", items.len());
    let everything: String = items.iter().map(|i| i.text.as_str()).collect::<Vec<_>>().join("\n");
    // The dump is what it seems: it holds the account, by id and email.
    assert!(everything.contains(&secrets.user_id), "{store}: the user id is in the dump");
    assert!(everything.contains(EMAIL), "{store}: the email address is in the dump");

    for (what, secret) in &secrets.long {
        for item in items {
            assert!(!item.text.contains(secret.as_str()), "{store}: the {what} is stored in plain text: {}", item.text);
        }
    }
    for (what, code) in &secrets.codes {
        assert_eq!(code.len(), 6);
        for item in items {
            let found = item.strings.iter().any(|s| s.split(|c: char| !c.is_ascii_digit()).any(|run| run == code));
            assert!(!found, "{store}: the {what} {code} is stored in plain text: {}", item.text);
        }
    }
}

#[tokio::test]
async fn the_embedded_store_holds_no_secret_in_plain_text() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(&dir.path().join("db"), START).unwrap());
    let secrets = run_flow(store.clone()).await;
    let items: Vec<Item> = store
        .dump()
        .unwrap()
        .into_iter()
        .map(|(k, v)| {
            let mut strings = vec![k.clone()];
            match serde_json::from_str::<Value>(&v) {
                Ok(json) => strings_of_json(&json, &mut strings),
                // Not JSON: the whole value counts as a string.
                Err(_) => strings.push(v.clone()),
            }
            Item { text: format!("{k:?} => {v:?} / {k} => {v}"), strings }
        })
        .collect();
    check(&secrets, &items, "embedded");
}

// ---------------------------------------------------------------------------------------
// DynamoDB

fn strings_of_attribute(v: &aws_sdk_dynamodb::types::AttributeValue, out: &mut Vec<String>) {
    use aws_sdk_dynamodb::types::AttributeValue as A;
    match v {
        A::S(s) => strings_of_json(&Value::String(s.clone()), out),
        A::Ss(ss) => ss.iter().for_each(|s| strings_of_json(&Value::String(s.clone()), out)),
        A::L(l) => l.iter().for_each(|v| strings_of_attribute(v, out)),
        A::M(m) => m.iter().for_each(|(k, v)| {
            out.push(k.clone());
            strings_of_attribute(v, out)
        }),
        A::B(b) => out.push(String::from_utf8_lossy(b.as_ref()).into_owned()),
        A::Bs(bs) => bs.iter().for_each(|b| out.push(String::from_utf8_lossy(b.as_ref()).into_owned())),
        // Numbers, booleans and nulls are not strings.
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_holds_no_secret_in_plain_text() {
    use mfa_core::store::dynamo::{create_table, DynamoStore};
    let Some(client) = common::dynamodb_client().await else { return };
    let table = format!("mfa-secrets-at-rest-{}", mfa_core::domain::crypto::new_id());
    create_table(&client, &table).await.expect("a table on DynamoDB Local");
    let secrets = run_flow(Arc::new(DynamoStore::new(client.clone(), table.clone()))).await;

    let mut items = Vec::new();
    let mut start = None;
    loop {
        let page = client
            .scan()
            .table_name(&table)
            .consistent_read(true)
            .set_exclusive_start_key(start)
            .send()
            .await
            .unwrap_or_else(|e| panic!("scan of {table}: {e:?}"));
        for item in page.items() {
            let mut strings = Vec::new();
            for (name, value) in item {
                strings.push(name.clone());
                strings_of_attribute(value, &mut strings);
            }
            items.push(Item { text: format!("{item:?}"), strings });
        }
        start = page.last_evaluated_key().cloned();
        if start.is_none() {
            break;
        }
    }
    check(&secrets, &items, "dynamodb");
    let _ = client.delete_table().table_name(&table).send().await;
}
