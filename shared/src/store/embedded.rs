//! The embedded store: one redb database file, keys laid out like the DynamoDB table
//! (`<pk>` + `<sk>`). Each operation is one redb write transaction; redb runs write
//! transactions one at a time, so every conditional change is atomic.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use redb::{Database, ReadableDatabase, ReadableTable, Table, TableDefinition};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{ChallengeWin, SessionUpgrade, Spend, Store, StoreError, StoreResult, Updated, UserChange};
use crate::clock::Millis;
use crate::domain::crypto::constant_time_eq;
use crate::domain::session::merge_factors;
use crate::domain::{Challenge, Channel, Session, User, VerificationToken};

const ITEMS: TableDefinition<&str, &[u8]> = TableDefinition::new("items");

pub struct EmbeddedStore {
    db: Arc<Database>,
}

fn key(pk: &str, sk: &str) -> String {
    format!("{pk}\u{1}{sk}")
}
fn user_key(id: &str) -> String {
    key(&format!("USER#{id}"), "PROFILE")
}
fn email_key(email: &str) -> String {
    key(&format!("EMAIL#{email}"), "EMAIL")
}
fn phone_key(phone: &str) -> String {
    key(&format!("PHONE#{phone}"), "PHONE")
}
fn session_prefix(user_id: &str) -> String {
    key(&format!("USER#{user_id}"), "SESSION#")
}
fn session_key(user_id: &str, secret_hash: &str) -> String {
    format!("{}{secret_hash}", session_prefix(user_id))
}
fn challenge_prefix(user_id: &str) -> String {
    key(&format!("USER#{user_id}"), "CHALLENGE#")
}
fn token_key(user_id: &str, channel: Channel) -> String {
    key(&format!("USER#{user_id}"), &format!("TOKEN#{}", channel.as_str()))
}
fn rate_key(counter: &str) -> String {
    key(&format!("RATE#{counter}"), "RATE")
}

#[derive(Serialize, Deserialize)]
struct Counter {
    count: u32,
    expire: Millis,
}

#[derive(Serialize, Deserialize)]
struct Index {
    user_id: String,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

type Items<'t> = Table<'t, &'static str, &'static [u8]>;

fn get<T: DeserializeOwned>(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    k: &str,
) -> StoreResult<Option<T>> {
    match table.get(k).map_err(unavailable)? {
        None => Ok(None),
        Some(v) => serde_json::from_slice(v.value()).map(Some).map_err(|e| StoreError::Corrupt(format!("{k}: {e}"))),
    }
}

fn put<T: Serialize>(table: &mut Items<'_>, k: &str, value: &T) -> StoreResult<()> {
    let bytes = serde_json::to_vec(value).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    table.insert(k, bytes.as_slice()).map_err(unavailable)?;
    Ok(())
}

fn remove(table: &mut Items<'_>, k: &str) -> StoreResult<()> {
    table.remove(k).map_err(unavailable)?;
    Ok(())
}

/// All (key, value) pairs under a key prefix.
fn scan<T: DeserializeOwned>(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    prefix: &str,
) -> StoreResult<Vec<(String, T)>> {
    let mut out = Vec::new();
    for entry in table.range(prefix..).map_err(unavailable)? {
        let (k, v) = entry.map_err(unavailable)?;
        let k = k.value();
        if !k.starts_with(prefix) {
            break;
        }
        let value = serde_json::from_slice(v.value()).map_err(|e| StoreError::Corrupt(format!("{k}: {e}")))?;
        out.push((k.to_string(), value));
    }
    Ok(out)
}

fn upgrade_session(
    table: &mut Items<'_>,
    user_id: &str,
    up: &SessionUpgrade,
    now: Millis,
) -> StoreResult<Option<Session>> {
    let k = session_key(user_id, &up.secret_hash);
    let Some(mut session) = get::<Session>(table, &k)? else { return Ok(None) };
    if !session.is_live(now) {
        return Ok(None);
    }
    merge_factors(&mut session.factors, &up.add);
    if up.mfa_updated_at.is_some() {
        session.mfa_updated_at = up.mfa_updated_at;
    }
    if up.end_other_sessions {
        session.confirmed_at = now;
    }
    session.updated_at = now;
    put(table, &k, &session)?;
    Ok(Some(session))
}

impl EmbeddedStore {
    /// Opens (or creates) the database file and drops items whose time has passed.
    pub fn open(path: &Path, now: Millis) -> StoreResult<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(unavailable)?;
        }
        let db = Database::create(path).map_err(unavailable)?;
        let store = EmbeddedStore { db: Arc::new(db) };
        store.write(|t| {
            t.retain(|_, v| {
                #[derive(Deserialize)]
                struct Expiring {
                    expire: Option<Millis>,
                }
                serde_json::from_slice::<Expiring>(v).ok().and_then(|e| e.expire).is_none_or(|e| e > now)
            })
            .map_err(unavailable)
        })?;
        Ok(store)
    }

    fn write<R>(&self, f: impl FnOnce(&mut Items<'_>) -> StoreResult<R>) -> StoreResult<R> {
        let txn = self.db.begin_write().map_err(unavailable)?;
        let result = {
            let mut table = txn.open_table(ITEMS).map_err(unavailable)?;
            f(&mut table)?
        };
        // An error above drops (aborts) the transaction: nothing half-written.
        txn.commit().map_err(unavailable)?;
        Ok(result)
    }

    fn read<R>(
        &self,
        f: impl FnOnce(&redb::ReadOnlyTable<&'static str, &'static [u8]>) -> StoreResult<R>,
    ) -> StoreResult<R> {
        let txn = self.db.begin_read().map_err(unavailable)?;
        match txn.open_table(ITEMS) {
            Ok(table) => f(&table),
            Err(redb::TableError::TableDoesNotExist(_)) => {
                drop(txn);
                self.write(|_| Ok(()))?;
                self.read(f)
            }
            Err(e) => Err(unavailable(e)),
        }
    }

    /// Runs blocking database work off the async executor.
    async fn run<R: Send + 'static>(
        &self,
        f: impl FnOnce(&EmbeddedStore) -> StoreResult<R> + Send + 'static,
    ) -> StoreResult<R> {
        let store = EmbeddedStore { db: self.db.clone() };
        tokio::task::spawn_blocking(move || f(&store)).await.map_err(unavailable)?
    }

    /// Every stored item as (key, raw value), for inspection tools and tests.
    pub fn dump(&self) -> StoreResult<Vec<(String, String)>> {
        self.read(|t| {
            let mut out = Vec::new();
            for entry in t.iter().map_err(unavailable)? {
                let (k, v) = entry.map_err(unavailable)?;
                out.push((k.value().to_string(), String::from_utf8_lossy(v.value()).into_owned()));
            }
            Ok(out)
        })
    }
}

fn apply_change(t: &mut Items<'_>, user: &mut User, change: UserChange) -> StoreResult<Updated> {
    match change {
        UserChange::Email(email) => {
            if let Some(owner) = get::<Index>(t, &email_key(&email))? {
                if owner.user_id != user.id {
                    return Ok(Updated::Taken);
                }
            }
            if let Some(old) = user.email.take() {
                remove(t, &email_key(&old))?;
            }
            put(t, &email_key(&email), &Index { user_id: user.id.clone() })?;
            user.email = Some(email);
            user.email_verified = false;
        }
        UserChange::Phone(phone) => {
            if let Some(owner) = get::<Index>(t, &phone_key(&phone))? {
                if owner.user_id != user.id {
                    return Ok(Updated::Taken);
                }
            }
            if let Some(old) = user.phone.take() {
                remove(t, &phone_key(&old))?;
            }
            put(t, &phone_key(&phone), &Index { user_id: user.id.clone() })?;
            user.phone = Some(phone);
            user.phone_verified = false;
        }
        UserChange::Mfa(on) => user.mfa = on,
        UserChange::PutAuthenticator(auth) => {
            if user.totp_verified() {
                return Ok(Updated::Rejected);
            }
            user.totp = Some(auth);
        }
        UserChange::VerifyAuthenticator { step, secret_sealed } => match user.totp.as_mut() {
            Some(auth)
                if !auth.verified
                    && auth.secret_sealed == secret_sealed
                    && auth.last_step.is_none_or(|last| step > last) =>
            {
                auth.verified = true;
                auth.last_step = Some(step);
            }
            _ => return Ok(Updated::Rejected),
        },
        UserChange::RemoveAuthenticator => {
            if user.totp.take().is_none() {
                return Ok(Updated::Rejected);
            }
        }
        UserChange::CreateRecoveryCodes(codes) => {
            if !user.recovery_codes.is_empty() {
                return Ok(Updated::Rejected);
            }
            user.recovery_codes = codes;
        }
        UserChange::ReplaceRecoveryCodes(codes) => {
            if user.recovery_codes.is_empty() {
                return Ok(Updated::Rejected);
            }
            user.recovery_codes = codes;
        }
    }
    Ok(Updated::Done(user.clone()))
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn create_user(&self, user: &User) -> StoreResult<bool> {
        let user = user.clone();
        self.run(move |s| {
            s.write(|t| {
                if get::<User>(t, &user_key(&user.id))?.is_some() {
                    return Ok(false);
                }
                // Both addresses are unique across users, whichever way they were set.
                let claims: Vec<String> = user
                    .email
                    .as_deref()
                    .map(email_key)
                    .into_iter()
                    .chain(user.phone.as_deref().map(phone_key))
                    .collect();
                for claim in &claims {
                    if get::<Index>(t, claim)?.is_some() {
                        return Ok(false);
                    }
                }
                for claim in &claims {
                    put(t, claim, &Index { user_id: user.id.clone() })?;
                }
                put(t, &user_key(&user.id), &user)?;
                Ok(true)
            })
        })
        .await
    }

    async fn user(&self, id: &str) -> StoreResult<Option<User>> {
        let id = id.to_string();
        self.run(move |s| s.read(|t| get(t, &user_key(&id)))).await
    }

    async fn user_by_email(&self, email: &str) -> StoreResult<Option<User>> {
        let email = email.to_string();
        self.run(move |s| {
            s.read(|t| match get::<Index>(t, &email_key(&email))? {
                Some(index) => get(t, &user_key(&index.user_id)),
                None => Ok(None),
            })
        })
        .await
    }

    async fn update_user(
        &self,
        id: &str,
        change: UserChange,
        upgrade: Option<SessionUpgrade>,
        now: Millis,
    ) -> StoreResult<Updated> {
        let id = id.to_string();
        self.run(move |s| {
            let txn = s.db.begin_write().map_err(unavailable)?;
            let outcome = {
                let mut t = txn.open_table(ITEMS).map_err(unavailable)?;
                let Some(mut user) = get::<User>(&t, &user_key(&id))? else {
                    return Ok(Updated::NotFound);
                };
                let outcome = apply_change(&mut t, &mut user, change)?;
                if let Updated::Done(user) = &outcome {
                    let mut user = user.clone();
                    user.updated_at = now;
                    if let Some(up) = &upgrade {
                        if upgrade_session(&mut t, &id, up, now)?.is_none() {
                            return Ok(Updated::Rejected);
                        }
                        if up.mfa_updated_at.is_some() {
                            user.mfa_updated_at = up.mfa_updated_at;
                        }
                        if up.end_other_sessions {
                            user.sessions_valid_from = now;
                        }
                    }
                    put(&mut t, &user_key(&id), &user)?;
                    Updated::Done(user)
                } else {
                    // Dropping the transaction below discards any partial change.
                    return Ok(outcome);
                }
            };
            txn.commit().map_err(unavailable)?;
            Ok(outcome)
        })
        .await
    }

    async fn create_session(&self, session: &Session) -> StoreResult<()> {
        let session = session.clone();
        self.run(move |s| s.write(|t| put(t, &session_key(&session.user_id, &session.secret_hash), &session))).await
    }

    async fn session(&self, user_id: &str, secret_hash: &str, now: Millis) -> StoreResult<Option<Session>> {
        let k = session_key(user_id, secret_hash);
        self.run(move |s| s.read(|t| Ok(get::<Session>(t, &k)?.filter(|x| x.is_live(now))))).await
    }

    async fn delete_session(&self, user_id: &str, session_id: &str) -> StoreResult<bool> {
        let (prefix, session_id) = (session_prefix(user_id), session_id.to_string());
        self.run(move |s| {
            s.write(|t| {
                let found = scan::<Session>(t, &prefix)?.into_iter().find(|(_, x)| x.id == session_id);
                match found {
                    Some((k, _)) => remove(t, &k).map(|_| true),
                    None => Ok(false),
                }
            })
        })
        .await
    }

    async fn delete_sessions(&self, user_id: &str, keep: Option<&str>) -> StoreResult<()> {
        let (prefix, keep) = (session_prefix(user_id), keep.map(str::to_string));
        self.run(move |s| {
            s.write(|t| {
                for (k, session) in scan::<Session>(t, &prefix)? {
                    if keep.as_deref() != Some(session.id.as_str()) {
                        remove(t, &k)?;
                    }
                }
                Ok(())
            })
        })
        .await
    }

    async fn put_challenge(&self, challenge: &Challenge) -> StoreResult<()> {
        let c = challenge.clone();
        let k = format!("{}{}", challenge_prefix(&c.user_id), c.factor.as_str());
        self.run(move |s| s.write(|t| put(t, &k, &c))).await
    }

    async fn take_challenge_attempt(
        &self,
        user_id: &str,
        challenge_id: &str,
        now: Millis,
    ) -> StoreResult<Option<Challenge>> {
        let (prefix, id) = (challenge_prefix(user_id), challenge_id.to_string());
        self.run(move |s| {
            s.write(|t| {
                let found = scan::<Challenge>(t, &prefix)?.into_iter().find(|(_, c)| c.id == id);
                match found {
                    Some((k, mut c)) if c.is_usable(now) => {
                        c.attempts_left -= 1;
                        put(t, &k, &c)?;
                        Ok(Some(c))
                    }
                    _ => Ok(None),
                }
            })
        })
        .await
    }

    async fn finish_challenge(&self, win: &ChallengeWin) -> StoreResult<Option<Session>> {
        let win = win.clone();
        self.run(move |s| {
            let txn = s.db.begin_write().map_err(unavailable)?;
            let session = {
                let mut t = txn.open_table(ITEMS).map_err(unavailable)?;
                let k = format!("{}{}", challenge_prefix(&win.user_id), win.factor.as_str());
                match get::<Challenge>(&t, &k)? {
                    Some(c) if c.id == win.challenge_id && c.expire > win.now => remove(&mut t, &k)?,
                    _ => return Ok(None),
                }
                let uk = user_key(&win.user_id);
                let Some(mut user) = get::<User>(&t, &uk)? else { return Ok(None) };
                match &win.spend {
                    Spend::Nothing => {}
                    Spend::TotpStep(step) => match user.totp.as_mut() {
                        Some(a) if a.verified && a.last_step.is_none_or(|last| *step > last) => {
                            a.last_step = Some(*step)
                        }
                        _ => return Ok(None),
                    },
                    Spend::RecoveryCode(hash) => {
                        let before = user.recovery_codes.len();
                        user.recovery_codes.retain(|h| h != hash);
                        if user.recovery_codes.len() == before {
                            return Ok(None);
                        }
                    }
                }
                user.mfa_updated_at = Some(win.now);
                put(&mut t, &uk, &user)?;
                let up = SessionUpgrade {
                    secret_hash: win.session_hash.clone(),
                    add: vec![win.factor],
                    mfa_updated_at: Some(win.now),
                    end_other_sessions: false,
                };
                match upgrade_session(&mut t, &win.user_id, &up, win.now)? {
                    Some(session) => session,
                    None => return Ok(None),
                }
            };
            txn.commit().map_err(unavailable)?;
            Ok(Some(session))
        })
        .await
    }

    async fn put_token(&self, token: &VerificationToken) -> StoreResult<()> {
        let token = token.clone();
        self.run(move |s| s.write(|t| put(t, &token_key(&token.user_id, token.channel), &token))).await
    }

    async fn take_token_attempt(
        &self,
        user_id: &str,
        channel: Channel,
        now: Millis,
    ) -> StoreResult<Option<VerificationToken>> {
        let k = token_key(user_id, channel);
        self.run(move |s| {
            s.write(|t| match get::<VerificationToken>(t, &k)? {
                Some(mut token) if token.is_usable(now) => {
                    token.attempts_left -= 1;
                    put(t, &k, &token)?;
                    Ok(Some(token))
                }
                _ => Ok(None),
            })
        })
        .await
    }

    async fn redeem_token(
        &self,
        user_id: &str,
        channel: Channel,
        secret_hash: &str,
        now: Millis,
    ) -> StoreResult<Option<VerificationToken>> {
        let (tk, uk, secret_hash) = (token_key(user_id, channel), user_key(user_id), secret_hash.to_string());
        self.run(move |s| {
            let txn = s.db.begin_write().map_err(unavailable)?;
            let token = {
                let mut t = txn.open_table(ITEMS).map_err(unavailable)?;
                let Some(token) = get::<VerificationToken>(&t, &tk)? else { return Ok(None) };
                let Some(mut user) = get::<User>(&t, &uk)? else { return Ok(None) };
                let target = match channel {
                    Channel::Email => user.email.as_deref(),
                    Channel::Phone => user.phone.as_deref(),
                };
                if !constant_time_eq(&token.secret_hash, &secret_hash)
                    || token.expire <= now
                    || target != Some(token.target.as_str())
                {
                    return Ok(None);
                }
                remove(&mut t, &tk)?;
                match channel {
                    Channel::Email => user.email_verified = true,
                    Channel::Phone => user.phone_verified = true,
                }
                user.updated_at = now;
                put(&mut t, &uk, &user)?;
                token
            };
            txn.commit().map_err(unavailable)?;
            Ok(Some(token))
        })
        .await
    }

    async fn hit(&self, counter: &str, expire: Millis) -> StoreResult<u32> {
        let k = rate_key(counter);
        self.run(move |s| {
            s.write(|t| {
                let count = get::<Counter>(t, &k)?.map_or(0, |c| c.count) + 1;
                put(t, &k, &Counter { count, expire })?;
                Ok(count)
            })
        })
        .await
    }

    async fn clear(&self, counter: &str) -> StoreResult<()> {
        let k = rate_key(counter);
        self.run(move |s| s.write(|t| remove(t, &k))).await
    }
}
