//! The embedded store: one redb database file, keys laid out like the DynamoDB table
//! (`<pk>` + `<sk>`).
//!
//! Writes are decided by one writer thread with group commit: the writes that arrive while
//! the previous commit is on its way to the disk are decided together, in arrival order, in
//! one redb write transaction with one fsync. Each write runs against the state the writes
//! before it in its batch left, through an overlay of its own: a write whose conditions fail
//! (or that fails) leaves nothing behind, and the next one sees exactly what was kept. No
//! write is answered before the commit that holds its batch is durable; if that commit
//! fails, every write of the batch is answered as unavailable and none of them applied.
//! Reads are redb read transactions: they see committed state only.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use async_trait::async_trait;
use redb::{Database, ReadableDatabase, ReadableTable, Table, TableDefinition};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::{
    Also, ChallengeWin, Decided, Found, Login, Lookup, Refused, SessionUpgrade, Store, StoreError, StoreResult,
    Updated, UserChange,
};
use crate::clock::{Millis, MINUTE};
use crate::domain::activity::Event;
use crate::domain::api_key::ApiKey;
use crate::domain::crypto::{constant_time_eq, Keys};
use crate::domain::limits::Count;
use crate::domain::{Authenticator, Challenge, Channel, Session, User, VerificationToken};

const ITEMS: TableDefinition<&str, &[u8]> = TableDefinition::new("items");

/// At most this many writes are decided in one commit; more wait for the next one.
const MAX_BATCH: usize = 512;

#[derive(Clone)]
pub struct EmbeddedStore {
    db: Arc<Database>,
    times: Arc<Times>,
    writer: Arc<Writer>,
}

/// The latest time a request was served at, and when expired counters were last pruned:
/// counters expire all the time while the store runs, and each failed attempt leaves one
/// behind.
struct Times {
    latest: AtomicI64,
    pruned_at: AtomicI64,
}

/// How often writes also drop the rate counters whose time has passed.
const PRUNE_EVERY: Millis = MINUTE;

/// The queue of the writer thread; dropping the last handle stops the thread after the
/// writes already queued, and waits for it, so the database file is closed when the store
/// is gone.
struct Writer {
    /// `None` only while dropping.
    queue: Option<mpsc::Sender<Box<dyn Pending>>>,
    thread: Option<JoinHandle<()>>,
    commits: Arc<AtomicU64>,
}

impl Drop for Writer {
    fn drop(&mut self) {
        drop(self.queue.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
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
fn session_key(user_id: &str, session_id: &str) -> String {
    key(&format!("USER#{user_id}"), &format!("SESSION#{session_id}"))
}
/// A session's challenge in `slot`.
fn challenge_key(user_id: &str, session_id: &str, slot: &str) -> String {
    key(&format!("USER#{user_id}"), &format!("CHALLENGE#{session_id}#{slot}"))
}
fn event_key(user_id: &str, event_id: &str) -> String {
    key(&format!("USER#{user_id}"), &format!("LOG#{event_id}"))
}
fn token_key(user_id: &str, channel: Channel) -> String {
    key(&format!("USER#{user_id}"), &format!("TOKEN#{}", channel.as_str()))
}
fn rate_key(counter: &str) -> String {
    key(&format!("RATE#{counter}"), "RATE")
}
/// API keys share one partition, as in the DynamoDB table.
fn api_key_key(id: &str) -> String {
    key("APIKEYS", &format!("KEY#{id}"))
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

/// The commit holding a write failed (or its writer stopped): the write did not apply.
#[derive(Debug, thiserror::Error)]
#[error("the write was not committed: {0}")]
struct NotCommitted(String);

type Items<'t> = Table<'t, &'static str, &'static [u8]>;
type ReadItems = redb::ReadOnlyTable<&'static str, &'static [u8]>;

/// Where stored values are read from: a read transaction's table, or a write's overlay.
trait Source {
    /// `f` of the stored value of `k`, if there is one.
    fn value<R>(&self, k: &str, f: impl FnOnce(&[u8]) -> R) -> StoreResult<Option<R>>;
}

impl Source for ReadItems {
    fn value<R>(&self, k: &str, f: impl FnOnce(&[u8]) -> R) -> StoreResult<Option<R>> {
        Ok(self.get(k).map_err(unavailable)?.map(|v| f(v.value())))
    }
}

/// One write's view of its batch: what the writes before it kept (in the transaction's
/// table) with its own changes on top, which reach the table only if the write is kept.
struct Overlay<'a, 't> {
    table: &'a Items<'t>,
    changes: HashMap<String, Option<Vec<u8>>>,
}

impl Source for Overlay<'_, '_> {
    fn value<R>(&self, k: &str, f: impl FnOnce(&[u8]) -> R) -> StoreResult<Option<R>> {
        match self.changes.get(k) {
            Some(changed) => Ok(changed.as_deref().map(f)),
            None => Ok(self.table.get(k).map_err(unavailable)?.map(|v| f(v.value()))),
        }
    }
}

fn exists(t: &impl Source, k: &str) -> StoreResult<bool> {
    Ok(t.value(k, |_| ())?.is_some())
}

fn get<T: DeserializeOwned>(t: &impl Source, k: &str) -> StoreResult<Option<T>> {
    match t.value(k, |v| serde_json::from_slice::<T>(v))? {
        None => Ok(None),
        Some(Ok(value)) => Ok(Some(value)),
        Some(Err(e)) => Err(StoreError::Corrupt(format!("{k}: {e}").into())),
    }
}

/// A user as stored, in either layout: users written before authenticators were a
/// collection hold one `totp` object, read here as the collection's TOTP authenticator
/// (and written back in the current layout by their next change).
fn get_user(t: &impl Source, k: &str) -> StoreResult<Option<User>> {
    let parsed = t.value(k, parse_user)?;
    parsed.transpose().map_err(|e| StoreError::Corrupt(format!("{k}: {e}").into()))
}

fn parse_user(v: &[u8]) -> serde_json::Result<User> {
    /// Which layout a record is in, read without building its values.
    #[derive(Deserialize)]
    struct Layout {
        #[serde(default)]
        totp: Option<serde::de::IgnoredAny>,
        #[serde(default)]
        authenticators: Option<serde::de::IgnoredAny>,
    }
    let layout: Layout = serde_json::from_slice(v)?;
    if layout.totp.is_none() || layout.authenticators.is_some() {
        // Today's layout (an earlier `totp` beside the collection is ignored).
        return serde_json::from_slice(v);
    }
    let mut value: serde_json::Value = serde_json::from_slice(v)?;
    if let Some(record) = value.as_object_mut() {
        if let Some(legacy) = record.remove("totp") {
            record.insert("authenticators".into(), legacy_authenticators(legacy));
        }
    }
    serde_json::from_value(value)
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

fn put<T: Serialize>(t: &mut Overlay<'_, '_>, k: &str, value: &T) -> StoreResult<()> {
    let bytes = serde_json::to_vec(value).map_err(|e| StoreError::Refused(Box::new(e)))?;
    t.changes.insert(k.to_string(), Some(bytes));
    Ok(())
}

fn remove(t: &mut Overlay<'_, '_>, k: &str) {
    t.changes.insert(k.to_string(), None);
}

/// Applies `up` to the live session it names; `false` when there is none.
fn upgrade_session(t: &mut Overlay<'_, '_>, user_id: &str, up: &SessionUpgrade, now: Millis) -> StoreResult<bool> {
    let k = session_key(user_id, &up.session_id);
    match get::<Session>(t, &k)? {
        Some(mut session) if session.is_live(now) => {
            up.apply_to_session(&mut session, now);
            put(t, &k, &session)?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// A write waiting for its batch: decided in turn, answered once the batch is committed.
trait Pending: Send {
    /// Decides the write against the batch so far; `true` keeps its changes.
    fn decide(&mut self, t: &mut Overlay<'_, '_>) -> bool;
    /// Answers the write: `committed` is how its batch's commit ended.
    fn answer(self: Box<Self>, committed: Result<(), &str>);
}

struct Write<R, F> {
    work: Option<F>,
    /// Whether an outcome keeps the write's changes (a refusal keeps none).
    keeps: fn(&R) -> bool,
    outcome: Option<StoreResult<R>>,
    reply: oneshot::Sender<StoreResult<R>>,
}

impl<R, F> Pending for Write<R, F>
where
    R: Send,
    F: FnOnce(&mut Overlay<'_, '_>) -> StoreResult<R> + Send,
{
    fn decide(&mut self, t: &mut Overlay<'_, '_>) -> bool {
        let Some(work) = self.work.take() else { return false };
        let outcome = work(t);
        let keep = matches!(&outcome, Ok(r) if (self.keeps)(r));
        self.outcome = Some(outcome);
        keep
    }

    fn answer(self: Box<Self>, committed: Result<(), &str>) {
        let not_committed = |why: &str| StoreError::Unavailable(Box::new(NotCommitted(why.to_string())));
        let answer = match (self.outcome, committed) {
            // A failed write is answered with its own failure, whatever its batch did.
            (Some(Err(e)), _) => Err(e),
            // A refusal too was decided against the batch: it holds only if the batch does.
            (Some(Ok(outcome)), Ok(())) => Ok(outcome),
            (Some(Ok(_)), Err(why)) => Err(not_committed(why)),
            (None, Err(why)) => Err(not_committed(why)),
            // It panicked: a bug, not an outage.
            (None, Ok(())) => Err(StoreError::Refused(Box::new(NotCommitted("the write failed to run".into())))),
        };
        // The caller may have stopped waiting; the outcome stands all the same.
        let _ = self.reply.send(answer);
    }
}

/// The writer thread: takes every write queued (up to [`MAX_BATCH`]), decides them in one
/// transaction, commits it, then answers them all.
fn write_batches(
    db: Arc<Database>,
    times: Arc<Times>,
    queue: mpsc::Receiver<Box<dyn Pending>>,
    commits: Arc<AtomicU64>,
) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(write) => batch.push(write),
                Err(_) => break,
            }
        }
        let committed = commit_batch(&db, &times, &mut batch).map_err(|e| describe(&e));
        commits.fetch_add(1, Ordering::Relaxed);
        for write in batch {
            write.answer(committed.as_ref().map(|_| ()).map_err(String::as_str));
        }
    }
}

/// An error with its causes, for the writes of a batch that failed.
fn describe(e: &StoreError) -> String {
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

fn commit_batch(db: &Database, times: &Times, batch: &mut [Box<dyn Pending>]) -> StoreResult<()> {
    let txn = db.begin_write().map_err(unavailable)?;
    {
        let mut table = txn.open_table(ITEMS).map_err(unavailable)?;
        prune_if_due(times, &mut table)?;
        for write in batch.iter_mut() {
            let mut overlay = Overlay { table: &table, changes: HashMap::new() };
            // A write that panics (in builds that unwind) changed only its overlay: it is
            // dropped and answered as failed, and the writer goes on with the batch.
            let decided = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| write.decide(&mut overlay)));
            let keep = decided.unwrap_or(false);
            let changes = overlay.changes;
            if keep {
                // A failure here leaves the write half applied: the whole batch is dropped.
                for (k, v) in changes {
                    match v {
                        Some(v) => table.insert(k.as_str(), v.as_slice()).map(drop),
                        None => table.remove(k.as_str()).map(drop),
                    }
                    .map_err(unavailable)?;
                }
            }
        }
    }
    // Durable before any write of the batch is answered (redb's default, immediate).
    txn.commit().map_err(unavailable)
}

/// Rate counter keys run from here (`RATE#...`) up to, not including, the end.
const RATE_KEYS: std::ops::Range<&str> = "RATE#".."RATE$";

/// Within a write transaction, at most every [`PRUNE_EVERY`] of request time: drops the
/// rate counters whose time has passed.
fn prune_if_due(times: &Times, t: &mut Items<'_>) -> StoreResult<()> {
    let now = times.latest.load(Ordering::Relaxed);
    let last = times.pruned_at.load(Ordering::Relaxed);
    if now - last < PRUNE_EVERY
        || times.pruned_at.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_err()
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
        t.remove(k.as_str()).map_err(unavailable)?;
    }
    Ok(())
}

impl EmbeddedStore {
    /// Opens (or creates) the database file, drops items whose time has passed and starts
    /// the writer thread.
    pub fn open(path: &Path, now: Millis) -> StoreResult<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(unavailable)?;
        }
        let db = Arc::new(Database::create(path).map_err(unavailable)?);
        let txn = db.begin_write().map_err(unavailable)?;
        {
            let mut t = txn.open_table(ITEMS).map_err(unavailable)?;
            t.retain(|_, v| {
                #[derive(Deserialize)]
                struct Expiring {
                    expire: Option<Millis>,
                }
                serde_json::from_slice::<Expiring>(v).ok().and_then(|e| e.expire).is_none_or(|e| e > now)
            })
            .map_err(unavailable)?;
        }
        txn.commit().map_err(unavailable)?;

        let times = Arc::new(Times { latest: AtomicI64::new(now), pruned_at: AtomicI64::new(now) });
        let commits = Arc::new(AtomicU64::new(0));
        let (queue, receiver) = mpsc::channel();
        let thread = {
            let (db, times, commits) = (db.clone(), times.clone(), commits.clone());
            std::thread::Builder::new()
                .name("store-writer".into())
                .spawn(move || write_batches(db, times, receiver, commits))
                .map_err(unavailable)?
        };
        let writer = Writer { queue: Some(queue), thread: Some(thread), commits };
        Ok(EmbeddedStore { db, times, writer: Arc::new(writer) })
    }

    /// How many commits the writer has made (each holding one or more writes).
    pub fn commits(&self) -> u64 {
        self.writer.commits.load(Ordering::Relaxed)
    }

    /// Queues `work` for the writer; its changes are kept when `keeps` says so of its outcome.
    fn enqueue<R, F>(&self, keeps: fn(&R) -> bool, work: F) -> oneshot::Receiver<StoreResult<R>>
    where
        R: Send + 'static,
        F: FnOnce(&mut Overlay<'_, '_>) -> StoreResult<R> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let write = Box::new(Write { work: Some(work), keeps, outcome: None, reply });
        if let Some(queue) = &self.writer.queue {
            // A writer that stopped drops the write, and its answer says so.
            let _ = queue.send(write);
        }
        answer
    }

    /// Decides `work` in the writer's next batch and waits until that batch is durable.
    async fn write<R, F>(&self, keeps: fn(&R) -> bool, work: F) -> StoreResult<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut Overlay<'_, '_>) -> StoreResult<R> + Send + 'static,
    {
        self.enqueue(keeps, work)
            .await
            .unwrap_or_else(|_| Err(StoreError::Unavailable(Box::new(NotCommitted("the writer stopped".into())))))
    }

    fn read<R>(&self, f: impl FnOnce(&ReadItems) -> StoreResult<R>) -> StoreResult<R> {
        let txn = self.db.begin_read().map_err(unavailable)?;
        // The table exists from `open` on.
        let table = txn.open_table(ITEMS).map_err(unavailable)?;
        f(&table)
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
    t: &mut Overlay<'_, '_>,
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
            remove(t, &old);
        }
        put(t, &new, &Index { user_id: user.id.clone() })?;
    }
    Ok(if change.apply(user, now) { Updated::Done } else { Updated::Rejected })
}

/// The index of the first count at its limit.
fn over_limit(t: &impl Source, counts: &[Count]) -> StoreResult<Option<usize>> {
    for (i, count) in counts.iter().enumerate() {
        if get::<Counter>(t, &rate_key(&count.counter))?.map_or(0, |c| c.count) >= count.max {
            return Ok(Some(i));
        }
    }
    Ok(None)
}

/// Stores what a decided write carries: its events and its counts.
fn apply_also(t: &mut Overlay<'_, '_>, also: &Also) -> StoreResult<()> {
    for event in &also.events {
        put(t, &event_key(&event.user_id, &event.id), event)?;
    }
    for count in &also.counts {
        let k = rate_key(&count.counter);
        if count.reset {
            remove(t, &k);
            if let Some(previous) = &count.previous {
                remove(t, &rate_key(previous));
            }
        } else {
            let n = get::<Counter>(t, &k)?.map_or(0, |c| c.count) + 1;
            put(t, &k, &Counter { count: n, expire: count.expire })?;
        }
    }
    Ok(())
}

impl EmbeddedStore {
    /// Decides `change` with the counts in the writer's next batch: kept only when the
    /// counts are within their limits and `change` was not refused.
    async fn decide<R: Send + 'static>(
        &self,
        also: &Also,
        change: impl FnOnce(&mut Overlay<'_, '_>) -> StoreResult<Result<R, Refused>> + Send + 'static,
    ) -> StoreResult<Result<R, Refused>> {
        let also = also.clone();
        self.write(Result::is_ok, move |t| {
            if let Some(i) = over_limit(t, &also.counts)? {
                return Ok(Err(Refused::Limited(i)));
            }
            let outcome = change(t)?;
            if outcome.is_ok() {
                apply_also(t, &also)?;
            }
            Ok(outcome)
        })
        .await
    }

    /// Every item whose key starts with `prefix`, in key order, read on the calling thread.
    fn in_range<T: DeserializeOwned>(&self, prefix: &str) -> StoreResult<Vec<T>> {
        self.read(|t| {
            let mut items = Vec::new();
            for entry in t.range::<&str>(prefix..).map_err(unavailable)? {
                let (k, v) = entry.map_err(unavailable)?;
                if !k.value().starts_with(prefix) {
                    break;
                }
                let item = serde_json::from_slice(v.value())
                    .map_err(|e| StoreError::Corrupt(format!("{}: {e}", k.value()).into()))?;
                items.push(item);
            }
            Ok(items)
        })
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn load(&self, lookup: &Lookup, now: Millis) -> StoreResult<Found> {
        self.times.latest.fetch_max(now, Ordering::Relaxed);
        // On the calling thread: a read transaction sees committed state without waiting
        // for the writer, and its pages are in redb's cache (or the OS's) after the first
        // reads. Handing it to another thread cost more CPU than the read itself.
        self.read(|t| {
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
            let challenge = match (&lookup.challenge, &lookup.session) {
                (Some(slot), Some((user_id, session_id, _))) => {
                    get::<Challenge>(t, &challenge_key(user_id, session_id, slot))?.filter(|c| c.expire > now)
                }
                _ => None,
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
            let api_key = match &lookup.api_key {
                Some(id) => get::<ApiKey>(t, &api_key_key(id))?,
                None => None,
            };
            let mut email_owners = Vec::new();
            for email in &lookup.emails {
                if let Some(index) = get::<Index>(t, &email_key(email))? {
                    email_owners.push(index.user_id);
                }
            }
            Ok(Found { session, user, login, challenge, token, counts, api_key, email_owners, session_events: 0 })
        })
    }

    async fn create_user(&self, user: &User) -> StoreResult<bool> {
        let user = user.clone();
        self.write(
            |created| *created,
            move |t| {
                if exists(t, &user_key(&user.id))? {
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
                    if exists(t, claim)? {
                        return Ok(false);
                    }
                }
                for claim in &claims {
                    put(t, claim, &Index { user_id: user.id.clone() })?;
                }
                put(t, &user_key(&user.id), &user)?;
                Ok(true)
            },
        )
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
        self.write(
            |updated| *updated == Updated::Done,
            move |t| {
                let id = read.id.as_str();
                if let Some(i) = over_limit(t, &also.counts)? {
                    return Ok(Updated::Limited(i));
                }
                let Some(mut user) = get_user(t, &user_key(id))? else { return Ok(Updated::NotFound) };
                if upgrade.as_ref().is_some_and(|up| up.confirmed_at < user.sessions_valid_from) {
                    return Ok(Updated::SessionEnded);
                }
                // Anything but `Done` keeps none of the write's changes.
                let outcome = apply_change(t, &mut user, &read, &change, now)?;
                if outcome != Updated::Done {
                    return Ok(outcome);
                }
                change.record_source(&mut user, upgrade.as_ref().map(|up| up.session_id.as_str()));
                user.updated_at = now;
                if let Some(up) = &upgrade {
                    if !upgrade_session(t, id, up, now)? {
                        return Ok(Updated::SessionEnded);
                    }
                    up.apply_to_user(&mut user, now);
                }
                put(t, &user_key(id), &user)?;
                apply_also(t, &also)?;
                Ok(Updated::Done)
            },
        )
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
        let deleted = self.decide(also, move |t| {
            if !exists(t, &k)? {
                return Ok(Err(Refused::Rejected));
            }
            remove(t, &k);
            Ok(Ok(()))
        });
        Ok(deleted.await?.is_ok())
    }

    async fn put_challenge(&self, challenge: &Challenge, also: &Also) -> StoreResult<Decided> {
        let c = challenge.clone();
        self.decide(also, move |t| {
            let live =
                get::<Session>(t, &session_key(&c.user_id, &c.session_id))?.is_some_and(|x| x.expire > c.created_at);
            if !live {
                return Ok(Err(Refused::Rejected));
            }
            put(t, &challenge_key(&c.user_id, &c.session_id, c.slot()), &c)?;
            Ok(Ok(()))
        })
        .await
    }

    async fn withdraw_challenge(&self, challenge: &Challenge) -> StoreResult<()> {
        let c = challenge.clone();
        self.write(
            |_| true,
            move |t| {
                let k = challenge_key(&c.user_id, &c.session_id, c.slot());
                if get::<Challenge>(t, &k)?.is_some_and(|stored| stored.id == c.id) {
                    remove(t, &k);
                }
                Ok(())
            },
        )
        .await
    }

    async fn miss_challenge(&self, challenge: &Challenge, now: Millis, also: &Also) -> StoreResult<Decided> {
        let missed = challenge.clone();
        self.decide(also, move |t| {
            let k = challenge_key(&missed.user_id, &missed.session_id, missed.slot());
            match get::<Challenge>(t, &k)? {
                Some(mut c) if c.id == missed.id && c.is_usable(now) => {
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
            let k = challenge_key(&win.user_id, &win.session_id, slot);
            match get::<Challenge>(t, &k)? {
                Some(c) if c.id == win.challenge_id && c.is_usable(win.now) => remove(t, &k),
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
        self.write(
            |_| true,
            move |t| {
                let k = token_key(&token.user_id, token.channel);
                if get::<VerificationToken>(t, &k)?.is_some_and(|stored| stored.id == token.id) {
                    remove(t, &k);
                }
                Ok(())
            },
        )
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
                // A reset link verifies nothing.
                Channel::Recovery => return Ok(Err(Refused::Rejected)),
            };
            if stored.id != token.id || !stored.is_usable(now) || target != Some(stored.target.as_str()) {
                return Ok(Err(Refused::Rejected));
            }
            remove(t, &tk);
            match token.channel {
                Channel::Email => user.email_verified = true,
                Channel::Phone => user.phone_verified = true,
                Channel::Recovery => return Ok(Err(Refused::Rejected)),
            }
            user.updated_at = now;
            put(t, &uk, &user)?;
            Ok(Ok(()))
        })
        .await
    }

    async fn reset_password(
        &self,
        token: &VerificationToken,
        password_hash: &str,
        now: Millis,
        also: &Also,
    ) -> StoreResult<Decided> {
        let (token, hash) = (token.clone(), password_hash.to_string());
        self.decide(also, move |t| {
            let (tk, uk) = (token_key(&token.user_id, token.channel), user_key(&token.user_id));
            let Some(stored) = get::<VerificationToken>(t, &tk)? else { return Ok(Err(Refused::Rejected)) };
            let Some(mut user) = get_user(t, &uk)? else { return Ok(Err(Refused::Rejected)) };
            if stored.id != token.id || !stored.is_usable(now) || user.email.as_deref() != Some(stored.target.as_str())
            {
                return Ok(Err(Refused::Rejected));
            }
            remove(t, &tk);
            UserChange::Password(hash).apply(&mut user, now);
            // Every session confirmed up to now ends.
            UserChange::EndSessions(now + 1).apply(&mut user, now);
            user.updated_at = now;
            put(t, &uk, &user)?;
            Ok(Ok(()))
        })
        .await
    }

    async fn count(&self, also: &Also) -> StoreResult<Decided> {
        self.decide(also, |_| Ok(Ok(()))).await
    }

    async fn key_usage(&self, now: Millis) -> StoreResult<BTreeMap<String, u64>> {
        self.read(|t| {
            let mut usage = BTreeMap::new();
            let mut count = |value: &str| *usage.entry(Keys::split(value).0.to_string()).or_insert(0) += 1;
            for entry in t.iter().map_err(unavailable)? {
                let (k, v) = entry.map_err(unavailable)?;
                let (k, v) = (k.value(), v.value());
                let corrupt = |e: serde_json::Error| StoreError::Corrupt(format!("{k}: {e}").into());
                if k.ends_with("\u{1}PROFILE") {
                    parse_user(v).map_err(corrupt)?.keyed_values().for_each(&mut count);
                } else if k.contains("\u{1}CHALLENGE#") {
                    let c: Challenge = serde_json::from_slice(v).map_err(corrupt)?;
                    c.code_hash.iter().filter(|_| c.expire > now).for_each(|h| count(h));
                } else if k.ends_with("\u{1}TOKEN#phone") {
                    let token: VerificationToken = serde_json::from_slice(v).map_err(corrupt)?;
                    if token.expire > now {
                        count(&token.secret_hash);
                    }
                }
            }
            Ok(usage)
        })
    }

    async fn sessions(&self, user_id: &str) -> StoreResult<Vec<Session>> {
        self.in_range(&key(&format!("USER#{user_id}"), "SESSION#"))
    }

    async fn events(&self, user_id: &str, now: Millis) -> StoreResult<Vec<Event>> {
        let mut events: Vec<Event> = self.in_range(&key(&format!("USER#{user_id}"), "LOG#"))?;
        // Expired events are skipped, as DynamoDB's TTL would have deleted them.
        events.retain(|e| e.expire > now);
        events.reverse();
        Ok(events)
    }

    async fn users(&self, ids: &[String]) -> StoreResult<Vec<User>> {
        self.read(|t| {
            let mut users = Vec::new();
            for id in ids {
                users.extend(get_user(t, &user_key(id))?);
            }
            Ok(users)
        })
    }

    async fn put_api_key(&self, api_key: &ApiKey) -> StoreResult<bool> {
        let api_key = api_key.clone();
        self.write(
            |created| *created,
            move |t| {
                let k = api_key_key(&api_key.id);
                if exists(t, &k)? {
                    return Ok(false);
                }
                put(t, &k, &api_key)?;
                Ok(true)
            },
        )
        .await
    }

    async fn api_keys(&self) -> StoreResult<Vec<ApiKey>> {
        let mut keys: Vec<ApiKey> = self.in_range(&key("APIKEYS", "KEY#"))?;
        keys.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(keys)
    }

    async fn delete_api_key(&self, id: &str) -> StoreResult<bool> {
        let k = api_key_key(id);
        self.write(
            |deleted| *deleted,
            move |t| {
                if !exists(t, &k)? {
                    return Ok(false);
                }
                remove(t, &k);
                Ok(true)
            },
        )
        .await
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

    /// Polls `write` once, which queues it for the writer, and hands it back to be awaited.
    async fn queued<F: std::future::Future>(write: F) -> std::pin::Pin<Box<F>> {
        let mut write = Box::pin(write);
        std::future::poll_fn(|cx| {
            let _ = write.as_mut().poll(cx);
            std::task::Poll::Ready(())
        })
        .await;
        write
    }

    /// Holds the writer inside a batch of its own until the returned sender is used.
    fn hold_writer(store: &EmbeddedStore) -> (mpsc::Sender<()>, oneshot::Receiver<StoreResult<()>>) {
        let (started, has_started) = mpsc::channel();
        let (release, released) = mpsc::channel::<()>();
        let held = store.enqueue(
            |_| true,
            move |_| {
                let _ = started.send(());
                let _ = released.recv();
                Ok(())
            },
        );
        has_started.recv().unwrap();
        (release, held)
    }

    #[tokio::test]
    async fn writes_queued_together_are_decided_in_turn_in_one_commit() {
        let dir = tempfile::tempdir().unwrap();
        let t = 1_800_000_000_000;
        let store = EmbeddedStore::open(&dir.path().join("mfa.redb"), t).unwrap();
        let limit = Limit { scope: "turns", max: 5, window: HOUR };
        let (release, held) = hold_writer(&store);
        let before = store.commits();

        let count = Also::from(vec![limit.hit("k", t, 0)]);
        let mut writes = Vec::new();
        for _ in 0..20 {
            writes.push(queued(store.count(&count)).await);
        }
        release.send(()).unwrap();
        held.await.unwrap().unwrap();
        let mut outcomes = Vec::new();
        for write in writes {
            outcomes.push(write.await.unwrap());
        }

        // Each saw the counts of those before it: the first five counted, the rest refused.
        let expected: Vec<Decided> = (0..20).map(|i| if i < 5 { Ok(()) } else { Err(Refused::Limited(0)) }).collect();
        assert_eq!(outcomes, expected);
        assert_eq!(store.commits() - before, 2, "the held batch, then all twenty in one");
        let found = store.load(&Lookup { counters: vec![limit.hit("k", t, 0).counter], ..Lookup::default() }, t).await;
        assert_eq!(found.unwrap().counts, vec![5]);
    }

    #[tokio::test]
    async fn a_refused_write_leaves_nothing_for_the_writes_after_it_in_its_batch() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("mfa.redb"), 1_800_000_000_000).unwrap();
        let (release, held) = hold_writer(&store);

        let refused = store.enqueue(
            |kept: &bool| *kept,
            |t| {
                put(t, "a", &1)?;
                put(t, "b", &1)?;
                Ok(false)
            },
        );
        let failed = store.enqueue(
            |_: &()| true,
            |t| {
                put(t, "c", &1)?;
                Err(StoreError::Corrupt("a write that fails halfway".into()))
            },
        );
        let kept = store.enqueue(
            |_: &(bool, bool, bool)| true,
            |t| {
                let seen = (exists(t, "a")?, exists(t, "b")?, exists(t, "c")?);
                put(t, "d", &1)?;
                Ok(seen)
            },
        );
        let after = store.enqueue(|_: &bool| true, |t| exists(t, "d"));
        release.send(()).unwrap();
        held.await.unwrap().unwrap();

        assert!(!refused.await.unwrap().unwrap(), "a refusal is answered as such");
        assert!(matches!(failed.await.unwrap(), Err(StoreError::Corrupt(_))), "a failure keeps its kind");
        assert_eq!(kept.await.unwrap().unwrap(), (false, false, false), "nothing of either is seen");
        assert!(after.await.unwrap().unwrap(), "what a kept write changed is seen by the next");
        let keys: Vec<String> = store.dump().unwrap().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, vec!["d".to_string()]);
    }

    #[tokio::test]
    async fn dropping_the_store_closes_its_file_with_every_answered_write_in_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mfa.redb");
        let t = 1_800_000_000_000;
        let limit = Limit { scope: "closed", max: 5, window: HOUR };
        let store = EmbeddedStore::open(&path, t).unwrap();
        store.count(&vec![limit.hit("k", t, 0)].into()).await.unwrap().unwrap();
        drop(store);
        // redb refuses a second open of a file still open: the writer thread has let go.
        let store = EmbeddedStore::open(&path, t).unwrap();
        let found = store.load(&Lookup { counters: vec![limit.hit("k", t, 0).counter], ..Lookup::default() }, t).await;
        assert_eq!(found.unwrap().counts, vec![1]);
    }

    #[tokio::test]
    async fn a_write_that_panics_fails_alone_and_the_writer_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("mfa.redb"), 1_800_000_000_000).unwrap();
        let (release, held) = hold_writer(&store);
        let panics = store.enqueue(
            |_: &()| true,
            |t| {
                put(t, "half", &1)?;
                panic!("a bug in a write");
            },
        );
        let next = store.enqueue(|_: &()| true, |t| put(t, "next", &1));
        release.send(()).unwrap();
        held.await.unwrap().unwrap();
        assert!(matches!(panics.await.unwrap(), Err(StoreError::Refused(_))), "a bug, answered as one");
        next.await.unwrap().unwrap();
        store.enqueue(|_: &()| true, |t| put(t, "later", &1)).await.unwrap().unwrap();
        let keys: Vec<String> = store.dump().unwrap().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, vec!["later".to_string(), "next".to_string()]);
    }
}
