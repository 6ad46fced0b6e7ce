//! Appwrite's JSON models.

use serde_json::{json, Value};

use crate::clock::iso;
use crate::domain::{Challenge, Factor, Session, User, VerificationToken};

pub fn account(user: &User) -> Value {
    json!({
        "$id": user.id,
        "$createdAt": iso(user.created_at),
        "$updatedAt": iso(user.updated_at),
        "name": user.name,
        "registration": iso(user.created_at),
        "status": true,
        "labels": [],
        "passwordUpdate": iso(user.password_updated_at),
        "email": user.email.clone().unwrap_or_default(),
        "phone": user.phone.clone().unwrap_or_default(),
        "emailVerification": user.email_verified,
        "phoneVerification": user.phone_verified,
        "mfa": user.mfa,
        "prefs": {},
        "targets": [],
        "accessedAt": iso(user.updated_at),
    })
}

/// Client responses never carry the session secret (Appwrite sends `""`).
pub fn session(s: &Session, current: bool) -> Value {
    json!({
        "$id": s.id,
        "$createdAt": iso(s.created_at),
        "$updatedAt": iso(s.updated_at),
        "userId": s.user_id,
        "expire": iso(s.expire),
        "provider": "email",
        "providerUid": "",
        "providerAccessToken": "",
        "providerAccessTokenExpiry": "",
        "providerRefreshToken": "",
        "ip": s.ip,
        "osCode": "", "osName": "", "osVersion": "",
        "clientType": "", "clientCode": "", "clientName": "", "clientVersion": "",
        "clientEngine": "", "clientEngineVersion": "",
        "deviceName": "", "deviceBrand": "", "deviceModel": "",
        "countryCode": "--", "countryName": "Unknown",
        "current": current,
        "factors": s.factors.iter().map(|f| f.as_str()).collect::<Vec<_>>(),
        "secret": "",
        "mfaUpdatedAt": s.mfa_updated_at.map(iso).unwrap_or_default(),
    })
}

pub fn token(t: &VerificationToken) -> Value {
    json!({
        "$id": t.id,
        "$createdAt": iso(t.created_at),
        "userId": t.user_id,
        "secret": "",
        "expire": iso(t.expire),
        "phrase": "",
    })
}

pub fn challenge(c: &Challenge) -> Value {
    json!({
        "$id": c.id,
        "$createdAt": iso(c.created_at),
        "userId": c.user_id,
        "expire": iso(c.expire),
    })
}

/// `MfaFactors`: whether each second factor is ready, by its name (`recoveryCode`, ...).
pub fn factors(user: &User) -> Value {
    let mut factors: serde_json::Map<String, Value> =
        Factor::second().map(|f| (f.as_str().to_string(), Value::Bool(user.has_factor(f)))).collect();
    // Appwrite's model has it; this service offers no custom factors.
    factors.insert("custom".into(), Value::Bool(false));
    Value::Object(factors)
}
