//! Data written by the release before authenticators were a collection keeps working: a
//! user stored the way that release stored it (one TOTP authenticator as fields of the
//! user; on DynamoDB as `totp*` attributes of the user item) signs in with MFA, passes
//! TOTP and recovery-code challenges and removes the authenticator on today's code, on
//! both stores. DynamoDB items move to the current layout with their first authenticator
//! write.

use std::sync::Arc;

use aws_sdk_dynamodb::types::AttributeValue;
use mfa_core::clock::{Clock, ManualClock, SystemClock};
use mfa_core::config::Config;
use mfa_core::domain::crypto::{new_id, Keys};
use mfa_core::domain::{password, recovery, totp};
use mfa_core::store::embedded::EmbeddedStore;
use mfa_core::store::Store;
use mfa_core::App;
use serde_json::json;

mod common;
use common::Recorder;

const SERVER_KEY: &[u8] = b"a test server key of sufficient length";
const PASSWORD: &str = "correct horse battery";
const RECOVERY_CODE: &str = "0123456789abcdef";

/// A user as the earlier release stored it: email verified, a verified TOTP authenticator
/// that last accepted a step an hour ago, one recovery code, MFA on.
struct Earlier {
    id: String,
    email: String,
    totp: Vec<u8>,
    sealed: String,
    password_hash: String,
    recovery_hash: String,
    now: i64,
}

impl Earlier {
    fn new() -> Earlier {
        let id = new_id();
        let keys = Keys::derive(SERVER_KEY);
        let totp = totp::new_secret();
        Earlier {
            email: format!("{}@example.com", id.to_lowercase()),
            sealed: keys.encrypt(&totp, &id),
            password_hash: password::hash(PASSWORD),
            recovery_hash: recovery::hash(&keys, &id, RECOVERY_CODE),
            totp,
            id,
            now: SystemClock.now(),
        }
    }

    fn last_step(&self) -> u64 {
        (self.now / 1000 / 30) as u64 - 120
    }
}

async fn app_on(store: Arc<dyn Store>, now: i64) -> App {
    let config = Config::for_project("p", SERVER_KEY);
    App::new(config, store, Arc::new(Recorder::default()), Arc::new(ManualClock::at(now)))
}

/// The MFA flow of an existing user, on today's code.
async fn the_flow_works(app: &App, user: &Earlier) {
    let login = json!({"email": user.email, "password": PASSWORD});
    let r = common::call(app, "POST", "/v1/account/sessions/email", None, login.clone()).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let session = r.fallback.unwrap();
    let r = common::call(app, "GET", "/v1/account", Some(&session), json!({})).await;
    assert_eq!((r.status, r.body["type"].as_str().unwrap()), (401, "user_more_factors_required"));
    let r = common::call(app, "GET", "/v1/account/mfa/factors", Some(&session), json!({})).await;
    assert_eq!((r.body["totp"].clone(), r.body["recoveryCode"].clone()), (json!(true), json!(true)), "{}", r.body);

    let r = common::call(app, "POST", "/v1/account/mfa/challenges", Some(&session), json!({"factor": "totp"})).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let otp = totp::code_at(&user.totp, user.now).unwrap();
    let body = json!({"challengeId": r.body["$id"], "otp": otp});
    let r = common::call(app, "PUT", "/v1/account/mfa/challenges", Some(&session), body.clone()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(common::call(app, "GET", "/v1/account", Some(&session), json!({})).await.status, 200);

    // The step is spent in the new layout as it was in the old: never twice.
    let other = common::call(app, "POST", "/v1/account/sessions/email", None, login).await.fallback.unwrap();
    let r = common::call(app, "POST", "/v1/account/mfa/challenges", Some(&other), json!({"factor": "totp"})).await;
    let body = json!({"challengeId": r.body["$id"], "otp": otp});
    let r = common::call(app, "PUT", "/v1/account/mfa/challenges", Some(&other), body).await;
    assert_eq!((r.status, r.body["type"].as_str().unwrap()), (401, "user_invalid_token"));
    let r =
        common::call(app, "POST", "/v1/account/mfa/challenges", Some(&other), json!({"factor": "recoverycode"})).await;
    let body = json!({"challengeId": r.body["$id"], "otp": RECOVERY_CODE});
    assert_eq!(common::call(app, "PUT", "/v1/account/mfa/challenges", Some(&other), body).await.status, 200);

    let r = common::call(app, "DELETE", "/v1/account/mfa/authenticators/totp", Some(&session), json!({})).await;
    assert_eq!(r.status, 204, "{}", r.body);
    let r = common::call(app, "GET", "/v1/account/mfa/factors", Some(&session), json!({})).await;
    assert_eq!(r.body["totp"], false);
}

#[tokio::test]
async fn an_embedded_store_written_before_keeps_working() {
    let user = Earlier::new();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mfa.redb");
    {
        // The records as that release serialised them.
        const ITEMS: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("items");
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut items = txn.open_table(ITEMS).unwrap();
            let record = json!({
                "id": user.id, "created_at": 1, "updated_at": 1, "name": "",
                "email": user.email, "email_verified": true, "phone": null, "phone_verified": false,
                "password_hash": user.password_hash, "password_updated_at": 1,
                "mfa": true, "mfa_updated_at": null,
                "totp": {"secret_sealed": user.sealed, "verified": true, "last_step": user.last_step(), "created_at": 1},
                "recovery_codes": [user.recovery_hash], "sessions_valid_from": 0,
            });
            let user_key = format!("USER#{}\u{1}PROFILE", user.id);
            items.insert(user_key.as_str(), record.to_string().as_bytes()).unwrap();
            let claim = json!({"user_id": user.id}).to_string();
            items.insert(format!("EMAIL#{}\u{1}EMAIL", user.email).as_str(), claim.as_bytes()).unwrap();
        }
        txn.commit().unwrap();
    }
    let store = Arc::new(EmbeddedStore::open(&path, user.now).unwrap());
    the_flow_works(&app_on(store, user.now).await, &user).await;
}

#[tokio::test]
async fn a_dynamodb_table_written_before_keeps_working() {
    let Some(client) = common::dynamodb_client().await else { return };
    let table = format!("mfa-before-{}", new_id());
    mfa_core::store::dynamo::create_table(&client, &table).await.unwrap();
    let user = Earlier::new();
    let (s, n, b) =
        (|v: &str| AttributeValue::S(v.to_string()), |v: i64| AttributeValue::N(v.to_string()), AttributeValue::Bool);
    // The items as that release wrote them.
    let profile = [
        ("pk", s(&format!("USER#{}", user.id))),
        ("sk", s("PROFILE")),
        ("id", s(&user.id)),
        ("createdAt", n(1)),
        ("updatedAt", n(1)),
        ("name", s("")),
        ("email", s(&user.email)),
        ("emailVerified", b(true)),
        ("phoneVerified", b(false)),
        ("passwordHash", s(&user.password_hash)),
        ("passwordUpdatedAt", n(1)),
        ("mfa", b(true)),
        ("totpSecret", s(&user.sealed)),
        ("totpVerified", b(true)),
        ("totpCreatedAt", n(1)),
        ("totpLastStep", n(user.last_step() as i64)),
        ("recoveryCodes", AttributeValue::M([(user.recovery_hash.clone(), n(0))].into())),
        ("sessionsValidFrom", n(0)),
    ];
    let claim = [
        ("pk", s(&format!("EMAIL#{}", user.email))),
        ("sk", s("EMAIL")),
        ("userId", s(&user.id)),
        ("passwordHash", s(&user.password_hash)),
    ];
    for item in [&profile[..], &claim[..]] {
        let item = item.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
        client.put_item().table_name(&table).set_item(Some(item)).send().await.unwrap();
    }

    let store = Arc::new(mfa_core::store::dynamo::DynamoStore::new(client.clone(), table.clone()));
    the_flow_works(&app_on(store, user.now).await, &user).await;

    let stored = client
        .get_item()
        .table_name(&table)
        .key("pk", s(&format!("USER#{}", user.id)))
        .key("sk", s("PROFILE"))
        .send()
        .await
        .unwrap()
        .item
        .unwrap();
    assert!(stored.contains_key("authenticators"), "moved to the current layout");
    assert!(!stored.contains_key("totpSecret"), "nothing left in the earlier one");
}
