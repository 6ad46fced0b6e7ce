//! The embedded store: one redb database file, keys laid out like the DynamoDB table
//! (`<pk>` + `<sk>`). Each operation is one redb write transaction; redb runs write
//! transactions one at a time, so every conditional change is atomic.

use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use redb::{Database, ReadableDatabase, ReadableTable, Table, TableDefinition};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{
    Also, ChallengeWin, Decided, Found, Login, Lookup, Refused, SessionUpgrade, Store, StoreError, StoreResult,
    Updated, UserChange,
};
use crate::clock::{Millis, MINUTE};
use crate::domain::activity::Event;
use crate::domain::crypto::constant_time_eq;
use crate::domain::limits::Count;
use crate::domain::{Authenticator, Challenge, Channel, Session, User, VerificationToken};

const ITEMS: TableDefinition<&str, &[u8]> = TableDefinition::new("items");

#[derive(Clone)]
pub struct EmbeddedStore {
    db: Arc<Database>,
    /// The latest time a request was served at, and when expired counters were last
    /// pruned: counters expire all the time while the store runs, and each failed
    /// attempt leaves one behind.
    latest: Arc<AtomicI64>,
    pruned_at: Arc<AtomicI64>,
}

/// How often writes also drop the rate counters whose time has passed.
const PRUNE_EVERY: Millis = MINUTE;

fn key(pk: &str, sk: &str) -> String {
    format!("{pk}\u{1}{sk}")
}
fn event_key(user_id: &str, event_id: &str) -> String {
    key(&format!("USER#{user_id}"), &format!("LOG#{event_id}"))
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
fn session_key(user_id: &str, session_id: &str) -> String {
    key(&format!("USER#{user_id}"), &format!("SESSION#{session_id}"))
}
fn challenge_key(user_id: &str, slot: &str) -> String {
    key(&format!("USER#{user_id}"), &format!("CHALLENGE#{slot}"))
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

/// A failure of the database file (I/O, a lock): the request may succeed later.
fn unavailable(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Unavailable(Box::new(e))
}

type Items<'t> = Table<'t, &'static str, &'static [u8]>;

fn get<T: DeserializeOwned>(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    k: &str,
) -> StoreResult<Option<T>> {
    match table.get(k).map_err(unavailable)? {
        None => Ok(None),
        Some(v) => {
            serde_json::from_slice(v.value()).map(Some).map_err(|e| StoreError::Corrupt(format!("{k}: {e}").into()))
        }
    }
}

/// A user as stored, in either layout: users written before authenticators were a
/// collection hold one `totp` object, read here as the collection's TOTP authenticator
/// (and written back in the current layout by their next change).
fn get_user(table: &impl ReadableTable<&'static str, &'static [u8]>, k: &str) -> StoreResult<Option<User>> {
    let Some(mut value) = get::<serde_json::Value>(table, k)? else { return Ok(None) };
    if let Some(record) = value.as_object_mut() {
        if let Some(legacy) = record.remove("totp") {
            if !record.contains_key("authenticators") {
                record.insert("authenticators".into(), legacy_authenticators(legacy));
            }
        }
    }
    serde_json::from_value(value).map(Some).map_err(|e| StoreError::Corrupt(format!("{k}: {e}").into()))
}

/// `{"secret_sealed", "verified", "last_step", "created_at"}` (or null) as the collection.
fn legacy_authenticators(legacy: serde_json::Value) -> serde_json::Value {
    if legacy.is_null() {
        return serde_json::json!([]);
    }
    serde_json::json!([{
        "id": Authenticator::TOTP_ID,
        "name": Authenticator::TOTP_NAME,
        "created_at": legacy["created_at"],
        "last_used_at": null,
        "verified": legacy["verified"],
        "secret": {"kind": "totp", "sealed": legacy["secret_sealed"], "last_step": legacy["last_step"]},
    }])
}

fn put<T: Serialize>(table: &mut Items<'_>, k: &str, value: &T) -> StoreResult<()> {
    let bytes = serde_json::to_vec(value).map_err(|e| StoreError::Refused(Box::new(e)))?;
    table.insert(k, bytes.as_slice()).map_err(unavailable)?;
    Ok(())
}

/// Removes an item; `true` if there was one.
fn remove(table: &mut Items<'_>, k: &str) -> StoreResult<bool> {
    Ok(table.remove(k).map_err(unavailable)?.is_some())
}

/// Every item whose key starts with `prefix`, in key order.
fn in_range<T: DeserializeOwned>(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    prefix: &str,
) -> StoreResult<Vec<T>> {
    let mut items = Vec::new();
    for entry in table.range::<&str>(prefix..).map_err(unavailable)? {
        let (k, v) = entry.map_err(unavailable)?;
        if !k.value().starts_with(prefix) {
            break;
        }
        let item =
            serde_json::from_slice(v.value()).map_err(|e| StoreError::Corrupt(format!("{}: {e}", k.value()).into()))?;
        items.push(item);
    }
    Ok(items)
}

/// Applies `up` to the live session it names; `false` when there is none.
fn upgrade_session(table: &mut Items<'_>, user_id: &str, up: &SessionUpgrade, now: Millis) -> StoreResult<bool> {
    let k = session_key(user_id, &up.session_id);
    match get::<Session>(table, &k)? {
        Some(mut session) if session.is_live(now) => {
            up.apply_to_session(&mut session, now);
            put(table, &k, &session)?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

impl EmbeddedStore {
    /// Opens (or creates) the database file and drops items whose time has passed.
    pub fn open(path: &Path, now: Millis) -> StoreResult<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(unavailable)?;
        }
        let db = Database::create(path).map_err(unavailable)?;
        let store = EmbeddedStore {
            db: Arc::new(db),
            latest: Arc::new(AtomicI64::new(now)),
            pruned_at: Arc::new(AtomicI64::new(now)),
        };
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
        let store = self.clone();
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

/// Applies `change` to `user` (as stored), moving its email or phone claim when that
/// changes; a new email or phone applies only while the user still has the one `read` had.
fn apply_change(
    t: &mut Items<'_>,
    user: &mut User,
    read: &User,
    change: &UserChange,
    now: Millis,
) -> StoreResult<Updated> {
    let claim = match change {
        UserChange::Email(email) => Some((email_key(email), user.email.as_deref().map(email_key))),
        UserChange::Phone(phone) => Some((phone_key(phone), user.phone.as_deref().map(phone_key))),
        _ => None,
    };
    let unchanged = match change {
        UserChange::Email(_) => user.email == read.email,
        UserChange::Phone(_) => user.phone == read.phone,
        _ => true,
    };
    if !unchanged {
        return Ok(Updated::Rejected);
    }
    if let Some((new, old)) = claim {
        if get::<Index>(t, &new)?.is_some_and(|owner| owner.user_id != user.id) {
            return Ok(Updated::Taken);
        }
        if let Some(old) = old {
            remove(t, &old)?;
        }
        put(t, &new, &Index { user_id: user.id.clone() })?;
    }
    Ok(if change.apply(user, now) { Updated::Done } else { Updated::Rejected })
}

/// The index of the first count at its limit.
fn over_limit(t: &Items<'_>, counts: &[Count]) -> StoreResult<Option<usize>> {
    for (i, count) in counts.iter().enumerate() {
        if get::<Counter>(t, &rate_key(&count.counter))?.map_or(0, |c| c.count) >= count.max {
            return Ok(Some(i));
        }
    }
    Ok(None)
}

/// Stores what a decided write carries: its counts and its events.
fn apply_also(t: &mut Items<'_>, also: &Also) -> StoreResult<()> {
    for event in &also.events {
        put(t, &event_key(&event.user_id, &event.id), event)?;
    }
    for count in &also.counts {
        let k = rate_key(&count.counter);
        if count.reset {
            remove(t, &k)?;
            if let Some(previous) = &count.previous {
                remove(t, &rate_key(previous))?;
            }
        } else {
            let n = get::<Counter>(t, &k)?.map_or(0, |c| c.count) + 1;
            put(t, &k, &Counter { count: n, expire: count.expire })?;
        }
    }
    Ok(())
}

/// Rate counter keys run from here (`RATE#...`) up to, not including, the end.
const RATE_KEYS: std::ops::Range<&str> = "RATE#".."RATE$";

impl EmbeddedStore {
    /// Within a write transaction, at most every [`PRUNE_EVERY`] of request time: drops the
    /// rate counters whose time has passed.
    fn prune_if_due(&self, t: &mut Items<'_>) -> StoreResult<()> {
        let now = self.latest.load(Ordering::Relaxed);
        let last = self.pruned_at.load(Ordering::Relaxed);
        if now - last < PRUNE_EVERY
            || self.pruned_at.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_err()
        {
            return Ok(());
        }
        let mut expired = Vec::new();
        for entry in t.range(RATE_KEYS).map_err(unavailable)? {
            let (k, v) = entry.map_err(unavailable)?;
            if serde_json::from_slice::<Counter>(v.value()).is_ok_and(|c| c.expire <= now) {
                expired.push(k.value().to_string());
            }
        }
        for k in expired {
            remove(t, &k)?;
        }
        Ok(())
    }

    /// Runs `change` and the counts in one write transaction, off the async executor;
    /// commits only when the counts are within their limits and `change` was not refused.
    async fn decide<R: Send + 'static>(
        &self,
        also: &Also,
        change: impl FnOnce(&mut Items<'_>) -> StoreResult<Result<R, Refused>> + Send + 'static,
    ) -> StoreResult<Result<R, Refused>> {
        let also = also.clone();
        self.run(move |s| {
            let txn = s.db.begin_write().map_err(unavailable)?;
            let outcome = {
                let mut t = txn.open_table(ITEMS).map_err(unavailable)?;
                if let Some(i) = over_limit(&t, &also.counts)? {
                    return Ok(Err(Refused::Limited(i)));
                }
                s.prune_if_due(&mut t)?;
                let outcome = change(&mut t)?;
                if outcome.is_ok() {
                    apply_also(&mut t, &also)?;
                }
                outcome
            };
            // A refused change is dropped with the transaction: nothing half-written.
            if outcome.is_ok() {
                txn.commit().map_err(unavailable)?;
            }
            Ok(outcome)
        })
        .await
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn load(&self, lookup: &Lookup, now: Millis) -> StoreResult<Found> {
        self.latest.fetch_max(now, Ordering::Relaxed);
        let lookup = lookup.clone();
        self.run(move |s| {
            s.read(|t| {
                let session = match &lookup.session {
                    Some((user_id, id, hash)) => get::<Session>(t, &session_key(user_id, id))?
                        .filter(|x| constant_time_eq(&x.secret_hash, hash) && x.is_live(now)),
                    None => None,
                };
                let user = match &lookup.user {
                    Some(id) => get_user(t, &user_key(id))?,
                    None => None,
                };
                let login = match &lookup.login {
                    Some(email) => match get::<Index>(t, &email_key(email))? {
                        Some(index) => get_user(t, &user_key(&index.user_id))?
                            .map(|u| Login { user_id: u.id, password_hash: u.password_hash }),
                        None => None,
                    },
                    None => None,
                };
                let challenge = match &lookup.challenge {
                    Some((user_id, slot)) => {
                        get::<Challenge>(t, &challenge_key(user_id, slot))?.filter(|c| c.expire > now)
                    }
                    None => None,
                };
                let token = match &lookup.token {
                    Some((user_id, channel)) => {
                        get::<VerificationToken>(t, &token_key(user_id, *channel))?.filter(|x| x.expire > now)
                    }
                    None => None,
                };
                let mut counts = Vec::new();
                for counter in &lookup.counters {
                    let c = get::<Counter>(t, &rate_key(counter))?.filter(|c| c.expire > now);
                    counts.push(c.map_or(0, |c| c.count));
                }
                Ok(Found { session, user, login, challenge, token, counts })
            })
        })
        .await
    }

    async fn create_user(&self, user: &User) -> StoreResult<bool> {
        let user = user.clone();
        self.run(move |s| {
            s.write(|t| {
                if get_user(t, &user_key(&user.id))?.is_some() {
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

    async fn update_user(
        &self,
        user: &User,
        change: UserChange,
        upgrade: Option<SessionUpgrade>,
        now: Millis,
        also: &Also,
    ) -> StoreResult<Updated> {
        let (read, also) = (user.clone(), also.clone());
        let id = read.id.clone();
        self.run(move |s| {
            let txn = s.db.begin_write().map_err(unavailable)?;
            {
                let mut t = txn.open_table(ITEMS).map_err(unavailable)?;
                if let Some(i) = over_limit(&t, &also.counts)? {
                    return Ok(Updated::Limited(i));
                }
                let Some(mut user) = get_user(&t, &user_key(&id))? else { return Ok(Updated::NotFound) };
                if upgrade.as_ref().is_some_and(|up| up.confirmed_at < user.sessions_valid_from) {
                    return Ok(Updated::SessionEnded);
                }
                let outcome = apply_change(&mut t, &mut user, &read, &change, now)?;
                if outcome != Updated::Done {
                    // Dropping the transaction discards any partial change.
                    return Ok(outcome);
                }
                change.record_source(&mut user, upgrade.as_ref().map(|up| up.session_id.as_str()));
                user.updated_at = now;
                if let Some(up) = &upgrade {
                    if !upgrade_session(&mut t, &id, up, now)? {
                        return Ok(Updated::SessionEnded);
                    }
                    up.apply_to_user(&mut user, now);
                }
                put(&mut t, &user_key(&id), &user)?;
                apply_also(&mut t, &also)?;
            }
            txn.commit().map_err(unavailable)?;
            Ok(Updated::Done)
        })
        .await
    }

    async fn create_session(&self, session: &Session, also: &Also) -> StoreResult<Decided> {
        let session = session.clone();
        self.decide(also, move |t| {
            put(t, &session_key(&session.user_id, &session.id), &session)?;
            Ok(Ok(()))
        })
        .await
    }

    async fn delete_session(&self, user_id: &str, session_id: &str, also: &Also) -> StoreResult<bool> {
        let k = session_key(user_id, session_id);
        let deleted = self.decide(also, move |t| Ok(if remove(t, &k)? { Ok(()) } else { Err(Refused::Rejected) }));
        Ok(deleted.await?.is_ok())
    }

    async fn put_challenge(&self, challenge: &Challenge, also: &Also) -> StoreResult<Decided> {
        let c = challenge.clone();
        self.decide(also, move |t| {
            put(t, &challenge_key(&c.user_id, c.slot()), &c)?;
            Ok(Ok(()))
        })
        .await
    }

    async fn withdraw_challenge(&self, challenge: &Challenge) -> StoreResult<()> {
        let c = challenge.clone();
        self.run(move |s| {
            s.write(|t| {
                let k = challenge_key(&c.user_id, c.slot());
                if get::<Challenge>(t, &k)?.is_some_and(|stored| stored.id == c.id) {
                    remove(t, &k)?;
                }
                Ok(())
            })
        })
        .await
    }

    async fn miss_challenge(
        &self,
        user_id: &str,
        challenge_id: &str,
        now: Millis,
        also: &Also,
    ) -> StoreResult<Decided> {
        let (user_id, id) = (user_id.to_string(), challenge_id.to_string());
        self.decide(also, move |t| {
            let Some(slot) = Challenge::slot_of(&id) else { return Ok(Err(Refused::Rejected)) };
            let k = challenge_key(&user_id, slot);
            match get::<Challenge>(t, &k)? {
                Some(mut c) if c.id == id && c.is_usable(now) => {
                    c.attempts_left -= 1;
                    put(t, &k, &c)?;
                    Ok(Ok(()))
                }
                _ => Ok(Err(Refused::Rejected)),
            }
        })
        .await
    }

    async fn finish_challenge(&self, win: &ChallengeWin, also: &Also) -> StoreResult<Decided> {
        let win = win.clone();
        self.decide(also, move |t| {
            let Some(slot) = Challenge::slot_of(&win.challenge_id) else { return Ok(Err(Refused::Rejected)) };
            let k = challenge_key(&win.user_id, slot);
            match get::<Challenge>(t, &k)? {
                Some(c) if c.id == win.challenge_id && c.is_usable(win.now) => {
                    remove(t, &k)?;
                }
                _ => return Ok(Err(Refused::Rejected)),
            }
            let uk = user_key(&win.user_id);
            let Some(mut user) = get_user(t, &uk)? else { return Ok(Err(Refused::Rejected)) };
            if win.confirmed_at < user.sessions_valid_from {
                // The session was ended while its code was being checked.
                return Ok(Err(Refused::Rejected));
            }
            if !win.apply_to_user(&mut user) {
                return Ok(Err(Refused::Rejected));
            }
            put(t, &uk, &user)?;
            if !upgrade_session(t, &win.user_id, &win.upgrade(), win.now)? {
                return Ok(Err(Refused::Rejected));
            }
            Ok(Ok(()))
        })
        .await
    }

    async fn put_token(&self, token: &VerificationToken, also: &Also) -> StoreResult<Decided> {
        let token = token.clone();
        self.decide(also, move |t| {
            put(t, &token_key(&token.user_id, token.channel), &token)?;
            Ok(Ok(()))
        })
        .await
    }

    async fn withdraw_token(&self, token: &VerificationToken) -> StoreResult<()> {
        let token = token.clone();
        self.run(move |s| {
            s.write(|t| {
                let k = token_key(&token.user_id, token.channel);
                if get::<VerificationToken>(t, &k)?.is_some_and(|stored| stored.id == token.id) {
                    remove(t, &k)?;
                }
                Ok(())
            })
        })
        .await
    }

    async fn miss_token(
        &self,
        user_id: &str,
        channel: Channel,
        token_id: &str,
        now: Millis,
        also: &Also,
    ) -> StoreResult<Decided> {
        let (k, id) = (token_key(user_id, channel), token_id.to_string());
        self.decide(also, move |t| match get::<VerificationToken>(t, &k)? {
            Some(mut token) if token.id == id && token.is_usable(now) => {
                token.attempts_left -= 1;
                put(t, &k, &token)?;
                Ok(Ok(()))
            }
            _ => Ok(Err(Refused::Rejected)),
        })
        .await
    }

    async fn redeem_token(&self, token: &VerificationToken, now: Millis, also: &Also) -> StoreResult<Decided> {
        let token = token.clone();
        self.decide(also, move |t| {
            let (tk, uk) = (token_key(&token.user_id, token.channel), user_key(&token.user_id));
            let Some(stored) = get::<VerificationToken>(t, &tk)? else { return Ok(Err(Refused::Rejected)) };
            let Some(mut user) = get_user(t, &uk)? else { return Ok(Err(Refused::Rejected)) };
            let target = match token.channel {
                Channel::Email => user.email.as_deref(),
                Channel::Phone => user.phone.as_deref(),
            };
            if stored.id != token.id || !stored.is_usable(now) || target != Some(stored.target.as_str()) {
                return Ok(Err(Refused::Rejected));
            }
            remove(t, &tk)?;
            match token.channel {
                Channel::Email => user.email_verified = true,
                Channel::Phone => user.phone_verified = true,
            }
            user.updated_at = now;
            put(t, &uk, &user)?;
            Ok(Ok(()))
        })
        .await
    }

    async fn count(&self, also: &Also) -> StoreResult<Decided> {
        self.decide(also, |_| Ok(Ok(()))).await
    }

    async fn sessions(&self, user_id: &str) -> StoreResult<Vec<Session>> {
        let prefix = key(&format!("USER#{user_id}"), "SESSION#");
        self.run(move |s| s.read(|t| in_range(t, &prefix))).await
    }

    async fn events(&self, user_id: &str, now: Millis) -> StoreResult<Vec<Event>> {
        let prefix = key(&format!("USER#{user_id}"), "LOG#");
        let mut events: Vec<Event> = self.run(move |s| s.read(|t| in_range(t, &prefix))).await?;
        // Expired events are skipped, as DynamoDB's TTL would have deleted them.
        events.retain(|e| e.expire > now);
        events.reverse();
        Ok(events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{HOUR, SECOND};
    use crate::domain::limits::Limit;

    fn counter_keys(store: &EmbeddedStore) -> Vec<String> {
        store.dump().unwrap().into_iter().map(|(k, _)| k).filter(|k| k.starts_with("RATE#")).collect()
    }

    #[tokio::test]
    async fn expired_rate_counters_are_dropped_while_the_store_runs() {
        let dir = tempfile::tempdir().unwrap();
        let t = 1_800_000_000_000;
        let store = EmbeddedStore::open(&dir.path().join("mfa.redb"), t).unwrap();
        let short = Limit { scope: "short", max: 10, window: SECOND };
        let long = Limit { scope: "long", max: 10, window: HOUR };
        store.count(&vec![short.hit("a", t, 0), long.hit("a", t, 0)].into()).await.unwrap().unwrap();
        assert_eq!(counter_keys(&store).len(), 2);

        // Requests go on; a minute later the next write drops the counter that expired.
        let later = t + PRUNE_EVERY;
        store.load(&Lookup::default(), later).await.unwrap();
        store.count(&vec![long.hit("b", later, 0)].into()).await.unwrap().unwrap();
        let left = counter_keys(&store);
        assert_eq!(left.len(), 2, "{left:?}");
        assert!(left.iter().all(|k| k.starts_with("RATE#long#")), "{left:?}");
    }
}
