//! The DynamoDB store: one table with string keys `pk`/`sk` and the TTL attribute
//! `expiresAt` (epoch seconds) on every expiring item. A request costs two calls: one
//! BatchGetItem reads everything it needs (session with its challenges, user, token, rate
//! counters), and one conditional write decides it, with its rate counts, so that of N
//! parallel attempts DynamoDB lets exactly one through and no limit is outrun: a single
//! PutItem or UpdateItem where it changes one item (half the cost), else a
//! TransactWriteItems. Completing a challenge with a TOTP step, a key or a sent code is two
//! single writes, the user's first (see `finish_challenge`). Only this module knows
//! attribute names; failed conditions become the trait's domain results, never errors.
//!
//! | item          | pk                | sk                           |
//! |---------------|-------------------|------------------------------|
//! | user          | `USER#<id>`       | `PROFILE`                    |
//! | email claim   | `EMAIL#<email>`   | `EMAIL` (user id, password hash: sign-in is one read) |
//! | phone claim   | `PHONE#<phone>`   | `PHONE`                      |
//! | session       | `USER#<userId>`   | `SESSION#<sessionId>` (SHA-256 of the secret inside) |
//! | challenge     | in its session's item: `challenge_<slot>` (the id's first letter names the slot) | |
//! | token         | `USER#<userId>`   | `TOKEN#<email or phone>`     |
//! | rate counter  | `RATE#<scope>#<key>` | `RATE` (its two latest windows; counts per user, session or email live in their items) |
//! | API key       | `APIKEYS`         | `KEY#<keyId>` (SHA-256 of the secret, name, scopes) |
//!
//! API keys share one partition, so that listing them is one Query; a keyed request reads
//! its key by (pk, sk) in its BatchGetItem. Keys are few and read by support tools only.
//!
//! Sessions live under the user's partition (design.md puts them in their own): the cookie
//! carries the user id and a secret that names its session, so a session is read and
//! deleted by its key; "sign out everywhere" is one write to the user (`sessionsValidFrom`).
//!
//! A session item also keeps the activity events of what happened to it (created, its
//! challenges, ended), up to [`INLINE_EVENTS`] of them: recorded in the write that changes
//! the session anyway, they cost no item of their own. Other events, and a session's past
//! that cap, are `LOG#` items. So that those events outlive the session, an ended session
//! stays as a tombstone (`endedAt`), and a session item is kept for the log's lifetime
//! past the session's expiry.
//!
//! Expiring items keep their exact expiry in milliseconds (`expire`) for the checks, and
//! `expiresAt` in whole seconds (rounded up) for DynamoDB's TTL, which deletes lazily.

use std::collections::HashMap;
use std::future::Future;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::client::Waiters;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::create_table::CreateTableError;
use aws_sdk_dynamodb::operation::delete_item::DeleteItemError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, ConditionCheck, ConsumedCapacity, Delete, KeySchemaElement,
    KeyType, KeysAndAttributes, Put, ReturnConsumedCapacity, ReturnValue, ReturnValuesOnConditionCheckFailure,
    ScalarAttributeType, TimeToLiveSpecification, TimeToLiveStatus, TransactWriteItem, Update,
};
use aws_sdk_dynamodb::Client;

use super::{
    Also, ChallengeWin, Decided, Found, Login, Lookup, Refused, SessionUpgrade, Spend, Store, StoreError, StoreResult,
    Updated, UserChange,
};
use crate::clock::Millis;
use crate::domain::activity::{Action, Actor, Event};
use crate::domain::api_key::{ApiKey, Scope};
use crate::domain::challenge::Ceremony;
use crate::domain::crypto::{constant_time_eq, new_id, Keys};
use crate::domain::limits::{Count, CHALLENGE_PER_SESSION, CODE_FAILURES_PER_USER, LOGIN_PER_EMAIL};
use crate::domain::session::merge_factors;
use crate::domain::webauthn::KeyUse;
use crate::domain::{Authenticator, AuthenticatorSecret, Challenge, Channel, Factor, Session, User, VerificationToken};

type Item = HashMap<String, AttributeValue>;

const PK: &str = "pk";
/// The id of the last single (non-transactional) write to an item: see [`DynamoStore::single`].
const LAST_WRITE: &str = "lastWrite";
const SK: &str = "sk";
const TTL_ATTRIBUTE: &str = "expiresAt";

/// Tries of a write that met another transaction on one of its items: DynamoDB cancels
/// such a write rather than queueing it, and the next try sees the other one's outcome.
const CONFLICT_TRIES: u32 = 10;
/// Tries of a BatchGetItem, which may leave keys unprocessed under load.
const BATCH_TRIES: u32 = 10;

pub struct DynamoStore {
    client: Client,
    table: String,
    metrics: Metrics,
}

impl DynamoStore {
    /// A store over `table`, which must exist (see [`create_table`]).
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DynamoStore { client, table: table.into(), metrics: Metrics::default() }
    }

    /// Calls sent to DynamoDB by this store so far, and the capacity they consumed.
    pub fn metrics(&self) -> Usage {
        self.metrics.usage()
    }
}

/// DynamoDB calls and the capacity units they cost, as AWS bills them: every call asks
/// for `ReturnConsumedCapacity::Total`, and where DynamoDB Local reports less than AWS
/// charges, the rule AWS documents is applied (see [`Metrics`]).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    pub calls: u64,
    pub read_units: f64,
    pub write_units: f64,
}

impl std::ops::Sub for Usage {
    type Output = Usage;
    fn sub(self, before: Usage) -> Usage {
        Usage {
            calls: self.calls - before.calls,
            read_units: self.read_units - before.read_units,
            write_units: self.write_units - before.write_units,
        }
    }
}

/// Counted where each call is sent; capacity in thousandths of a unit (reads can be halves).
///
/// DynamoDB Local's reports are AWS's for single-item writes (the larger of the item's
/// images, per KB) and for the items a read returns, but not for the rest, where AWS's
/// rules are applied: a key a BatchGetItem asks for and finds no item at costs a whole
/// read unit (strongly consistent); every item of a transaction costs at least two write
/// units (Local sometimes reports two for a whole transaction of small items); a write
/// refused by its condition, or a cancelled transaction, still costs its units (at least
/// one per item, two per transaction item), which Local does not report.
#[derive(Default)]
struct Metrics {
    calls: AtomicU64,
    read_milli: AtomicU64,
    write_milli: AtomicU64,
}

#[derive(Clone, Copy)]
enum Capacity {
    Read,
    Write,
}

fn reported<'a>(kind: Capacity, consumed: impl IntoIterator<Item = &'a ConsumedCapacity>) -> f64 {
    consumed
        .into_iter()
        .map(|c| match kind {
            Capacity::Read => c.read_capacity_units().or(c.capacity_units()),
            Capacity::Write => c.write_capacity_units().or(c.capacity_units()),
        })
        .map(|units| units.unwrap_or(0.0))
        .sum()
}

impl Metrics {
    fn add(&self, kind: Capacity, units: f64) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let milli = (units * 1000.0).round() as u64;
        match kind {
            Capacity::Read => self.read_milli.fetch_add(milli, Ordering::Relaxed),
            Capacity::Write => self.write_milli.fetch_add(milli, Ordering::Relaxed),
        };
    }

    /// A read or a single-item write, as reported; a read that failed costs nothing.
    fn record<'a>(&self, kind: Capacity, consumed: impl IntoIterator<Item = &'a ConsumedCapacity>) {
        self.add(kind, reported(kind, consumed));
    }

    /// A BatchGetItem that asked for `asked` keys and got `found` items.
    fn batch_read<'a>(&self, consumed: impl IntoIterator<Item = &'a ConsumedCapacity>, asked: usize, found: usize) {
        self.add(Capacity::Read, reported(Capacity::Read, consumed) + asked.saturating_sub(found) as f64);
    }

    /// A transaction of `items` items; `consumed` is `None` when it was cancelled.
    fn transaction<'a>(&self, consumed: Option<impl IntoIterator<Item = &'a ConsumedCapacity>>, items: usize) {
        let floor = 2.0 * items as f64;
        self.add(Capacity::Write, consumed.map_or(floor, |c| reported(Capacity::Write, c).max(floor)));
    }

    /// A single-item write refused by its condition (or otherwise failed): one unit.
    fn failed_write(&self) {
        self.add(Capacity::Write, 1.0);
    }

    fn usage(&self) -> Usage {
        Usage {
            calls: self.calls.load(Ordering::Relaxed),
            read_units: self.read_milli.load(Ordering::Relaxed) as f64 / 1000.0,
            write_units: self.write_milli.load(Ordering::Relaxed) as f64 / 1000.0,
        }
    }
}

/// Creates the table (on-demand billing, `pk`/`sk` strings) and switches on TTL on
/// `expiresAt`; does nothing that is already done, so it can run on every deployment.
pub async fn create_table(client: &Client, table_name: &str) -> StoreResult<()> {
    let created = client
        .create_table()
        .table_name(table_name)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attribute_definition(PK)?)
        .attribute_definitions(attribute_definition(SK)?)
        .key_schema(key_schema(PK, KeyType::Hash)?)
        .key_schema(key_schema(SK, KeyType::Range)?)
        .send()
        .await;
    match created {
        Ok(_) => {}
        Err(SdkError::ServiceError(e)) if matches!(e.err(), CreateTableError::ResourceInUseException(_)) => {}
        Err(e) => return Err(sdk_error(e)),
    }
    client
        .wait_until_table_exists()
        .table_name(table_name)
        .wait(Duration::from_secs(300))
        .await
        .map_err(|e| StoreError::Unavailable(Box::new(e)))?;
    enable_ttl(client, table_name).await
}

fn attribute_definition(name: &str) -> StoreResult<AttributeDefinition> {
    AttributeDefinition::builder().attribute_name(name).attribute_type(ScalarAttributeType::S).build().map_err(bug)
}

fn key_schema(name: &str, key_type: KeyType) -> StoreResult<KeySchemaElement> {
    KeySchemaElement::builder().attribute_name(name).key_type(key_type).build().map_err(bug)
}

/// UpdateTimeToLive fails when TTL is already on, so look first.
async fn enable_ttl(client: &Client, table_name: &str) -> StoreResult<()> {
    let described = client.describe_time_to_live().table_name(table_name).send().await.map_err(sdk_error)?;
    let on = described.time_to_live_description().is_some_and(|d| {
        d.attribute_name() == Some(TTL_ATTRIBUTE)
            && matches!(d.time_to_live_status(), Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling))
    });
    if on {
        return Ok(());
    }
    let spec = TimeToLiveSpecification::builder().enabled(true).attribute_name(TTL_ATTRIBUTE).build().map_err(bug)?;
    client
        .update_time_to_live()
        .table_name(table_name)
        .time_to_live_specification(spec)
        .send()
        .await
        .map_err(sdk_error)?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Keys

fn key(pk: String, sk: String) -> Item {
    HashMap::from([(PK.to_string(), AttributeValue::S(pk)), (SK.to_string(), AttributeValue::S(sk))])
}
fn user_pk(id: &str) -> String {
    format!("USER#{id}")
}
fn user_key(id: &str) -> Item {
    key(user_pk(id), "PROFILE".into())
}
const SESSION_PREFIX: &str = "SESSION#";
fn session_key(user_id: &str, session_id: &str) -> Item {
    key(user_pk(user_id), format!("{SESSION_PREFIX}{session_id}"))
}
/// The start of a session item's attributes holding its challenges, one per slot.
const CHALLENGE_ATTRIBUTE: &str = "challenge_";
/// The session item's attribute holding its challenge in `slot`.
fn challenge_attribute(slot: &str) -> String {
    format!("{CHALLENGE_ATTRIBUTE}{slot}")
}
fn token_key(user_id: &str, channel: Channel) -> Item {
    key(user_pk(user_id), format!("TOKEN#{}", channel.as_str()))
}
/// A counter of its own (per address, phone number, API key...), `<scope>#<key>`: one item
/// for its two latest windows.
fn rate_key(counter: &str) -> Item {
    key(format!("RATE#{counter}"), "RATE".into())
}
const API_KEYS_PK: &str = "APIKEYS";
const API_KEY_PREFIX: &str = "KEY#";
fn api_key_key(id: &str) -> Item {
    key(API_KEYS_PK.into(), format!("{API_KEY_PREFIX}{id}"))
}

/// The unique email or phone index; the user item names its attributes the same way.
#[derive(Debug, Clone, Copy)]
enum Target {
    Email,
    Phone,
}

impl Target {
    fn index_key(self, value: &str) -> Item {
        match self {
            Target::Email => key(format!("EMAIL#{value}"), "EMAIL".into()),
            Target::Phone => key(format!("PHONE#{value}"), "PHONE".into()),
        }
    }
    /// The claim of `value` by `user`. An email's claim also keeps the password hash, so
    /// that signing in is one read.
    fn index_item(self, value: &str, user: &User) -> Item {
        let mut item = self.index_key(value);
        item.insert("userId".into(), s(&user.id));
        if let Target::Email = self {
            item.insert("passwordHash".into(), s(&user.password_hash));
        }
        item
    }
    fn factor(self) -> Factor {
        match self {
            Target::Email => Factor::Email,
            Target::Phone => Factor::Phone,
        }
    }

    fn of(self, user: &User) -> Option<&str> {
        match self {
            Target::Email => user.email.as_deref(),
            Target::Phone => user.phone.as_deref(),
        }
    }
    /// The user attribute holding it, and the one holding its verification flag.
    fn attributes(self) -> (&'static str, &'static str) {
        match self {
            Target::Email => ("#email", "#emailVerified"),
            Target::Phone => ("#phone", "#phoneVerified"),
        }
    }
}

impl From<Channel> for Target {
    fn from(channel: Channel) -> Self {
        match channel {
            Channel::Email => Target::Email,
            Channel::Phone => Target::Phone,
            // A reset link goes to the email.
            Channel::Recovery => Target::Email,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Attribute values

fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_string())
}
fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}
fn b(value: bool) -> AttributeValue {
    AttributeValue::Bool(value)
}
/// TTL wants whole seconds; rounding up keeps an item until its exact expiry has passed.
fn ttl_seconds(expire: Millis) -> AttributeValue {
    n((expire + 999).div_euclid(1000))
}
/// Order of a factor in a session: when it was added, then its place in that addition.
fn factor_rank(at: Millis, place: usize) -> i64 {
    at * Factor::ALL.len() as i64 + place as i64
}

/// Typed access to an item's attributes; a missing or mistyped attribute is corruption.
struct Reader<'a>(&'a Item);

impl<'a> Reader<'a> {
    fn corrupt(&self, attribute: &str, expected: &str) -> StoreError {
        let id = |a: &str| self.0.get(a).and_then(|v| v.as_s().ok()).map_or("?", String::as_str);
        StoreError::Corrupt(format!("{}/{}: {attribute} is not {expected}", id(PK), id(SK)).into())
    }
    fn opt_s(&self, attribute: &str) -> StoreResult<Option<String>> {
        match self.0.get(attribute) {
            None | Some(AttributeValue::Null(_)) => Ok(None),
            Some(AttributeValue::S(v)) => Ok(Some(v.clone())),
            Some(_) => Err(self.corrupt(attribute, "a string")),
        }
    }
    fn s(&self, attribute: &str) -> StoreResult<String> {
        self.opt_s(attribute)?.ok_or_else(|| self.corrupt(attribute, "a string"))
    }
    fn opt_n<T: FromStr>(&self, attribute: &str) -> StoreResult<Option<T>> {
        match self.0.get(attribute) {
            None | Some(AttributeValue::Null(_)) => Ok(None),
            Some(AttributeValue::N(v)) => v.parse().map(Some).map_err(|_| self.corrupt(attribute, "a number")),
            Some(_) => Err(self.corrupt(attribute, "a number")),
        }
    }
    fn n<T: FromStr>(&self, attribute: &str) -> StoreResult<T> {
        self.opt_n(attribute)?.ok_or_else(|| self.corrupt(attribute, "a number"))
    }
    fn opt_bool(&self, attribute: &str) -> StoreResult<Option<bool>> {
        match self.0.get(attribute) {
            None | Some(AttributeValue::Null(_)) => Ok(None),
            Some(AttributeValue::Bool(v)) => Ok(Some(*v)),
            Some(_) => Err(self.corrupt(attribute, "a boolean")),
        }
    }
    fn bool(&self, attribute: &str) -> StoreResult<bool> {
        self.opt_bool(attribute)?.ok_or_else(|| self.corrupt(attribute, "a boolean"))
    }
    /// A map of names to numbers, as (name, number) pairs ordered by the number.
    fn ranked(&self, attribute: &str) -> StoreResult<Vec<(String, i64)>> {
        let map = match self.0.get(attribute) {
            None => return Ok(Vec::new()),
            Some(AttributeValue::M(map)) => map,
            Some(_) => return Err(self.corrupt(attribute, "a map")),
        };
        let mut pairs = map
            .iter()
            .map(|(name, v)| match v {
                AttributeValue::N(rank) => rank.parse().map(|r| (name.clone(), r)).ok(),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| self.corrupt(attribute, "a map of numbers"))?;
        pairs.sort_by_key(|(_, rank)| *rank);
        Ok(pairs)
    }
    fn factor(&self, attribute: &str) -> StoreResult<Factor> {
        let name = self.s(attribute)?;
        Factor::from_name(&name).ok_or_else(|| self.corrupt(attribute, "a factor"))
    }
    fn channel(&self, attribute: &str) -> StoreResult<Channel> {
        match self.s(attribute)?.as_str() {
            "email" => Ok(Channel::Email),
            "phone" => Ok(Channel::Phone),
            "recovery" => Ok(Channel::Recovery),
            _ => Err(self.corrupt(attribute, "a channel")),
        }
    }
}

fn canonical_place(factor: Factor) -> usize {
    Factor::ALL.iter().position(|f| *f == factor).unwrap_or(Factor::ALL.len())
}

// ---------------------------------------------------------------------------------------
// Items

fn user_item(user: &User) -> Item {
    let mut item = user_key(&user.id);
    let mut put = |name: &str, value: AttributeValue| {
        item.insert(name.to_string(), value);
    };
    put("id", s(&user.id));
    put("createdAt", n(user.created_at));
    put("updatedAt", n(user.updated_at));
    put("name", s(&user.name));
    if let Some(email) = &user.email {
        put("email", s(email));
    }
    put("emailVerified", b(user.email_verified));
    if let Some(phone) = &user.phone {
        put("phone", s(phone));
    }
    put("phoneVerified", b(user.phone_verified));
    put("passwordHash", s(&user.password_hash));
    put("passwordUpdatedAt", n(user.password_updated_at));
    put("mfa", b(user.mfa));
    if let Some(at) = user.mfa_updated_at {
        put("mfaUpdatedAt", n(at));
    }
    put(
        AUTHENTICATORS,
        AttributeValue::M(user.authenticators.iter().map(|a| (a.id.clone(), authenticator_value(a))).collect()),
    );
    put("recoveryCodes", recovery_codes(&user.recovery_codes));
    put("sessionsValidFrom", n(user.sessions_valid_from));
    if !user.prefs.is_empty() {
        put("prefs", s(&serde_json::Value::Object(user.prefs.clone()).to_string()));
    }
    for (factor, by) in &user.added_by {
        put(&added_by_attribute(*factor), s(by));
    }
    item
}

/// A user's authenticators: a map of id to the authenticator's attributes. Items written
/// before authenticators were a collection hold one TOTP authenticator as `totp*`
/// attributes (`LEGACY_TOTP`) and no map: they are read as such and moved to the map by the
/// first write that touches an authenticator.
const AUTHENTICATORS: &str = "authenticators";
const LEGACY_TOTP: [&str; 4] = ["totpSecret", "totpVerified", "totpCreatedAt", "totpLastStep"];

fn authenticator_value(a: &Authenticator) -> AttributeValue {
    let mut m = HashMap::new();
    m.insert("name".to_string(), s(&a.name));
    m.insert("createdAt".into(), n(a.created_at));
    if let Some(at) = a.last_used_at {
        m.insert("lastUsedAt".into(), n(at));
    }
    m.insert("verified".into(), b(a.verified));
    match &a.secret {
        AuthenticatorSecret::Totp { sealed, last_step, spent_by } => {
            m.insert("kind".into(), s("totp"));
            m.insert("secret".into(), s(sealed));
            if let Some(step) = last_step {
                m.insert("lastStep".into(), n(step));
            }
            if let Some(by) = spent_by {
                m.insert("spentBy".into(), s(by));
            }
        }
        AuthenticatorSecret::Webauthn { credential, credential_id, counter, registered_by } => {
            m.insert("kind".into(), s("webauthn"));
            m.insert("registeredBy".into(), s(registered_by));
            m.insert("credential".into(), s(credential));
            m.insert("credentialId".into(), s(credential_id));
            m.insert("counter".into(), n(counter));
        }
    }
    AttributeValue::M(m)
}

fn authenticator_from(r: &Reader<'_>, id: &str, item: &AttributeValue) -> StoreResult<Authenticator> {
    let AttributeValue::M(m) = item else { return Err(r.corrupt(AUTHENTICATORS, "a map of maps")) };
    let a = Reader(m);
    let secret = match a.s("kind")?.as_str() {
        "totp" => AuthenticatorSecret::Totp {
            sealed: a.s("secret")?,
            last_step: a.opt_n("lastStep")?,
            spent_by: a.opt_s("spentBy")?,
        },
        "webauthn" => AuthenticatorSecret::Webauthn {
            credential: a.s("credential")?,
            credential_id: a.s("credentialId")?,
            counter: a.n("counter")?,
            registered_by: a.s("registeredBy")?,
        },
        _ => return Err(r.corrupt(AUTHENTICATORS, "authenticators of known kinds")),
    };
    Ok(Authenticator {
        id: id.to_string(),
        name: a.s("name")?,
        created_at: a.n("createdAt")?,
        last_used_at: a.opt_n("lastUsedAt")?,
        verified: a.bool("verified")?,
        secret,
    })
}

/// The authenticators of a user item, in either layout.
fn authenticators_from(r: &Reader<'_>) -> StoreResult<Vec<Authenticator>> {
    match r.0.get(AUTHENTICATORS) {
        Some(AttributeValue::M(map)) => {
            let mut all = map.iter().map(|(id, v)| authenticator_from(r, id, v)).collect::<StoreResult<Vec<_>>>()?;
            all.sort_by(|x, y| (x.created_at, &x.id).cmp(&(y.created_at, &y.id)));
            Ok(all)
        }
        Some(_) => Err(r.corrupt(AUTHENTICATORS, "a map")),
        None => match r.opt_s("totpSecret")? {
            None => Ok(vec![]),
            Some(sealed) => Ok(vec![Authenticator {
                verified: r.bool("totpVerified")?,
                secret: AuthenticatorSecret::Totp { sealed, last_step: r.opt_n("totpLastStep")?, spent_by: None },
                ..Authenticator::totp(String::new(), r.n("totpCreatedAt")?)
            }]),
        },
    }
}

/// Whether write `index` was refused because the user item it met is still in the layout
/// from before authenticators were a collection; that item, if so.
fn legacy_user(r: &Rejection, index: usize) -> Option<&Item> {
    r.0.iter()
        .find(|(i, old)| *i == index && old.as_ref().is_some_and(|o| !o.is_empty() && !o.contains_key(AUTHENTICATORS)))
        .and_then(|(_, old)| old.as_ref())
}

/// Moves a user item to the current layout: its authenticators into the map.
fn migrate_user_write(old: &Item) -> StoreResult<Write> {
    let r = Reader(old);
    let user_id = r.s("id")?;
    let map =
        AttributeValue::M(authenticators_from(&r)?.iter().map(|a| (a.id.clone(), authenticator_value(a))).collect());
    let mut e = Expr::default();
    e.when("attribute_exists(#pk) AND attribute_not_exists(#authenticators)")
        .set("#authenticators = :authenticators")
        .bind(":authenticators", map);
    for attribute in LEGACY_TOTP {
        e.remove(format!("#{attribute}"));
    }
    Ok(Write::Update { key: user_key(&user_id), expr: e })
}

/// The attribute naming the session that added or changed a factor (`totpAddedBy`, ...).
fn added_by_attribute(factor: Factor) -> String {
    format!("{}AddedBy", factor.as_str())
}

/// Records which session added or changed `factor` (`by`), or forgets it (`None`: a change
/// made without a session, or the factor removed).
fn record_source(e: &mut Expr, factor: Factor, by: Option<&str>) {
    let attribute = format!("#{}", added_by_attribute(factor));
    match by {
        Some(by) => e.set(format!("{attribute} = :addedBy")).bind(":addedBy", s(by)),
        None => e.remove(attribute),
    };
}

/// [`record_source`] for a user change made with `upgrade` (the acting session), if any.
fn record_change_source(e: &mut Expr, change: &UserChange, upgrade: Option<&SessionUpgrade>) {
    if let UserChange::RemoveAuthenticators { factor, last, .. } = change {
        if *last {
            record_source(e, *factor, None);
        }
    } else if let Some(factor) = change.adds_factor() {
        record_source(e, factor, upgrade.map(|up| up.session_id.as_str()));
    }
}

/// Recovery code hashes as a map to their place in the set, so that one code can be
/// spent by a conditional REMOVE of its key while the set keeps its order.
fn recovery_codes(hashes: &[String]) -> AttributeValue {
    AttributeValue::M(hashes.iter().enumerate().map(|(i, h)| (h.clone(), n(i))).collect())
}

fn user_from(item: &Item) -> StoreResult<User> {
    let r = Reader(item);
    Ok(User {
        id: r.s("id")?,
        created_at: r.n("createdAt")?,
        updated_at: r.n("updatedAt")?,
        name: r.s("name")?,
        email: r.opt_s("email")?,
        email_verified: r.bool("emailVerified")?,
        phone: r.opt_s("phone")?,
        phone_verified: r.bool("phoneVerified")?,
        password_hash: r.s("passwordHash")?,
        password_updated_at: r.n("passwordUpdatedAt")?,
        mfa: r.bool("mfa")?,
        mfa_updated_at: r.opt_n("mfaUpdatedAt")?,
        authenticators: authenticators_from(&r)?,
        recovery_codes: r.ranked("recoveryCodes")?.into_iter().map(|(hash, _)| hash).collect(),
        sessions_valid_from: r.opt_n("sessionsValidFrom")?.unwrap_or(0),
        added_by: Factor::second()
            .filter_map(|f| r.opt_s(&added_by_attribute(f)).map(|by| by.map(|by| (f, by))).transpose())
            .collect::<StoreResult<_>>()?,
        prefs: match r.opt_s("prefs")? {
            None => Default::default(),
            Some(json) => serde_json::from_str(&json).map_err(|_| r.corrupt("prefs", "a JSON object"))?,
        },
    })
}

/// Events a session item keeps; past them, a session's events are items of their own.
const INLINE_EVENTS: usize = 8;
const EVENTS: &str = "events";
const ENDED_AT: &str = "endedAt";

/// A new session's item, keeping `events` (those of its creation); one made without any
/// keeps none. Its TTL lets every event it may keep (all made before the session expires,
/// each kept as long as these) live out its own time.
fn session_item(session: &Session, events: &[Event]) -> Item {
    let kept_for = events.iter().map(|e| e.expire - e.time).max().unwrap_or(0).max(0);
    let mut item = session_key(&session.user_id, &session.id);
    let factors = session
        .factors
        .iter()
        .enumerate()
        .map(|(place, f)| (f.as_str().to_string(), n(factor_rank(session.created_at, place))))
        .collect();
    item.extend([
        ("id".to_string(), s(&session.id)),
        ("userId".to_string(), s(&session.user_id)),
        ("secretHash".to_string(), s(&session.secret_hash)),
        ("createdAt".to_string(), n(session.created_at)),
        ("updatedAt".to_string(), n(session.updated_at)),
        ("expire".to_string(), n(session.expire)),
        (TTL_ATTRIBUTE.to_string(), ttl_seconds(session.expire + kept_for)),
        ("factors".to_string(), AttributeValue::M(factors)),
        ("ip".to_string(), s(&session.ip)),
        ("userAgent".to_string(), s(&session.user_agent)),
        ("confirmedAt".to_string(), n(session.confirmed_at)),
    ]);
    if let Some(at) = session.mfa_updated_at {
        item.insert("mfaUpdatedAt".into(), n(at));
    }
    if !events.is_empty() {
        item.insert(EVENTS.into(), inline_events(events, Some((&session.ip, &session.user_agent))));
    }
    item
}

/// Whether a session item is the tombstone of an ended session.
fn is_tombstone(item: &Item) -> bool {
    item.contains_key(ENDED_AT)
}

fn session_from(item: &Item) -> StoreResult<Session> {
    let r = Reader(item);
    let mut factors = r
        .ranked("factors")?
        .into_iter()
        .map(|(name, rank)| Factor::from_name(&name).map(|f| (rank, canonical_place(f), f)))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| r.corrupt("factors", "a map of factors"))?;
    factors.sort_by_key(|(rank, place, _)| (*rank, *place));
    Ok(Session {
        id: r.s("id")?,
        user_id: r.s("userId")?,
        secret_hash: r.s("secretHash")?,
        created_at: r.n("createdAt")?,
        updated_at: r.n("updatedAt")?,
        expire: r.n("expire")?,
        factors: factors.into_iter().map(|(_, _, f)| f).collect(),
        mfa_updated_at: r.opt_n("mfaUpdatedAt")?,
        ip: r.s("ip")?,
        user_agent: r.s("userAgent")?,
        confirmed_at: r.opt_n("confirmedAt")?.unwrap_or(0),
    })
}

/// A challenge, as its session item keeps it.
fn challenge_value(c: &Challenge) -> AttributeValue {
    let mut m = HashMap::from([
        ("id".to_string(), s(&c.id)),
        ("factor".to_string(), s(c.factor.as_str())),
        ("attemptsLeft".to_string(), n(c.attempts_left)),
        ("createdAt".to_string(), n(c.created_at)),
        ("expire".to_string(), n(c.expire)),
    ]);
    if let Some(hash) = &c.code_hash {
        m.insert("codeHash".into(), s(hash));
    }
    if let Some(ceremony) = &c.ceremony {
        m.insert("ceremony".into(), s(&ceremony.state));
        m.insert("registration".into(), b(ceremony.registration));
    }
    AttributeValue::M(m)
}

/// The challenges a session item keeps, by slot.
fn session_challenges(item: &Item) -> StoreResult<Vec<Challenge>> {
    let r = Reader(item);
    let (user_id, session_id) = (r.s("userId")?, r.s("id")?);
    let mut all = Vec::new();
    for (name, value) in item.iter().filter(|(name, _)| name.starts_with(CHALLENGE_ATTRIBUTE)) {
        let AttributeValue::M(m) = value else { return Err(r.corrupt(name, "a map")) };
        let c = Reader(m);
        all.push(Challenge {
            id: c.s("id")?,
            user_id: user_id.clone(),
            session_id: session_id.clone(),
            factor: c.factor("factor")?,
            code_hash: c.opt_s("codeHash")?,
            attempts_left: c.n("attemptsLeft")?,
            created_at: c.n("createdAt")?,
            expire: c.n("expire")?,
            ceremony: match c.opt_s("ceremony")? {
                Some(state) => Some(Ceremony { registration: c.bool("registration")?, state }),
                None => None,
            },
        });
    }
    Ok(all)
}

const LOG_PREFIX: &str = "LOG#";

/// An activity event, in its user's partition under `LOG#<id>` (ids sort by time).
fn event_item(e: &Event) -> Item {
    let mut item = key(user_pk(&e.user_id), format!("{LOG_PREFIX}{}", e.id));
    item.extend([
        ("id".to_string(), s(&e.id)),
        ("userId".to_string(), s(&e.user_id)),
        ("action".to_string(), s(e.action.as_str())),
        ("detail".to_string(), s(&e.detail)),
        ("time".to_string(), n(e.time)),
        ("ip".to_string(), s(&e.ip)),
        ("userAgent".to_string(), s(&e.user_agent)),
        ("expire".to_string(), n(e.expire)),
        (TTL_ATTRIBUTE.to_string(), ttl_seconds(e.expire)),
    ]);
    if let Actor::Key(id) = &e.actor {
        item.insert("keyId".into(), s(id));
    }
    item
}

fn event_from(item: &Item) -> StoreResult<Event> {
    let r = Reader(item);
    let action = r.s("action")?;
    Ok(Event {
        id: r.s("id")?,
        user_id: r.s("userId")?,
        action: Action::parse(&action).ok_or_else(|| r.corrupt("action", "a known action"))?,
        detail: r.s("detail")?,
        actor: r.opt_s("keyId")?.map_or(Actor::User, Actor::Key),
        time: r.n("time")?,
        ip: r.s("ip")?,
        user_agent: r.s("userAgent")?,
        expire: r.n("expire")?,
    })
}

/// Events kept in a session item: an event's address and user agent are left out where
/// they are the session's (`client`, when known).
fn inline_events(events: &[Event], client: Option<(&str, &str)>) -> AttributeValue {
    let (ip, user_agent) = (client.map(|c| c.0), client.map(|c| c.1));
    let inline = |e: &Event| {
        let mut m = HashMap::from([
            ("id".to_string(), s(&e.id)),
            ("action".to_string(), s(e.action.as_str())),
            ("detail".to_string(), s(&e.detail)),
            ("time".to_string(), n(e.time)),
            ("expire".to_string(), n(e.expire)),
        ]);
        if ip != Some(e.ip.as_str()) {
            m.insert("ip".into(), s(&e.ip));
        }
        if user_agent != Some(e.user_agent.as_str()) {
            m.insert("userAgent".into(), s(&e.user_agent));
        }
        if let Actor::Key(id) = &e.actor {
            m.insert("keyId".into(), s(id));
        }
        AttributeValue::M(m)
    };
    AttributeValue::L(events.iter().map(inline).collect())
}

/// The events a session item keeps.
fn session_events(item: &Item) -> StoreResult<Vec<Event>> {
    let r = Reader(item);
    let list = match item.get(EVENTS) {
        None => return Ok(Vec::new()),
        Some(AttributeValue::L(list)) => list,
        Some(_) => return Err(r.corrupt(EVENTS, "a list")),
    };
    let (user_id, ip, user_agent) = (r.s("userId")?, r.s("ip")?, r.s("userAgent")?);
    list.iter()
        .map(|v| {
            let AttributeValue::M(m) = v else { return Err(r.corrupt(EVENTS, "a list of maps")) };
            let mut event = m.clone();
            event.entry("ip".into()).or_insert_with(|| s(&ip));
            event.entry("userAgent".into()).or_insert_with(|| s(&user_agent));
            event.insert("userId".into(), s(&user_id));
            event_from(&event)
        })
        .collect()
}

fn api_key_item(k: &ApiKey) -> Item {
    let mut item = api_key_key(&k.id);
    item.extend([
        ("id".to_string(), s(&k.id)),
        ("name".to_string(), s(&k.name)),
        ("scopes".to_string(), AttributeValue::L(k.scopes.iter().map(|sc| s(sc.as_str())).collect())),
        ("secretHash".to_string(), s(&k.secret_hash)),
        ("createdAt".to_string(), n(k.created_at)),
    ]);
    item
}

fn api_key_from(item: &Item) -> StoreResult<ApiKey> {
    let r = Reader(item);
    let scopes = match item.get("scopes") {
        Some(AttributeValue::L(list)) => list
            .iter()
            .map(|v| v.as_s().ok().and_then(|raw| Scope::parse(raw)))
            .collect::<Option<Vec<Scope>>>()
            .ok_or_else(|| r.corrupt("scopes", "a list of known scopes"))?,
        _ => return Err(r.corrupt("scopes", "a list")),
    };
    Ok(ApiKey {
        id: r.s("id")?,
        name: r.s("name")?,
        scopes,
        secret_hash: r.s("secretHash")?,
        created_at: r.n("createdAt")?,
    })
}

fn token_item(t: &VerificationToken) -> Item {
    let mut item = token_key(&t.user_id, t.channel);
    item.extend([
        ("id".to_string(), s(&t.id)),
        ("userId".to_string(), s(&t.user_id)),
        ("channel".to_string(), s(t.channel.as_str())),
        ("target".to_string(), s(&t.target)),
        ("secretHash".to_string(), s(&t.secret_hash)),
        ("attemptsLeft".to_string(), n(t.attempts_left)),
        ("createdAt".to_string(), n(t.created_at)),
        ("expire".to_string(), n(t.expire)),
        (TTL_ATTRIBUTE.to_string(), ttl_seconds(t.expire)),
    ]);
    item
}

fn token_from(item: &Item) -> StoreResult<VerificationToken> {
    let r = Reader(item);
    Ok(VerificationToken {
        id: r.s("id")?,
        user_id: r.s("userId")?,
        channel: r.channel("channel")?,
        target: r.s("target")?,
        secret_hash: r.s("secretHash")?,
        attempts_left: r.n("attemptsLeft")?,
        created_at: r.n("createdAt")?,
        expire: r.n("expire")?,
    })
}

// ---------------------------------------------------------------------------------------
// Expressions

/// The expressions of one write. Attributes are written `#name` and resolve to `name`
/// (so reserved words such as `name` or `count` need no care); data-dependent names such as
/// map keys get explicit placeholders through [`Expr::key`]. Values are bound by name; only
/// what the expressions use is sent, as DynamoDB rejects unused names and values.
#[derive(Debug, Default, Clone)]
struct Expr {
    set: Vec<String>,
    remove: Vec<String>,
    conditions: Vec<String>,
    keys: HashMap<String, String>,
    values: HashMap<String, AttributeValue>,
}

impl Expr {
    fn set(&mut self, clause: impl Into<String>) -> &mut Self {
        self.set.push(clause.into());
        self
    }
    fn remove(&mut self, path: impl Into<String>) -> &mut Self {
        self.remove.push(path.into());
        self
    }
    /// Adds a condition; all of them must hold.
    fn when(&mut self, condition: impl Into<String>) -> &mut Self {
        self.conditions.push(condition.into());
        self
    }
    fn bind(&mut self, placeholder: &str, value: AttributeValue) -> &mut Self {
        self.values.insert(placeholder.to_string(), value);
        self
    }
    fn key(&mut self, placeholder: &str, name: &str) -> &mut Self {
        self.keys.insert(placeholder.to_string(), name.to_string());
        self
    }

    fn update(&self) -> Option<String> {
        let parts: Vec<String> = [("SET", &self.set), ("REMOVE", &self.remove)]
            .into_iter()
            .filter(|(_, clauses)| !clauses.is_empty())
            .map(|(verb, clauses)| format!("{verb} {}", clauses.join(", ")))
            .collect();
        (!parts.is_empty()).then(|| parts.join(" "))
    }

    fn condition(&self) -> Option<String> {
        let parts: Vec<String> = self.conditions.iter().map(|c| format!("({c})")).collect();
        (!parts.is_empty()).then(|| parts.join(" AND "))
    }

    fn names(&self) -> Option<HashMap<String, String>> {
        let text = [self.update(), self.condition()].into_iter().flatten().collect::<Vec<_>>().join(" ");
        let mut names = HashMap::new();
        let mut rest = text.as_str();
        while let Some(at) = rest.find('#') {
            let tail = &rest[at + 1..];
            let len = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
            rest = &tail[len..];
            if len == 0 {
                continue;
            }
            let placeholder = format!("#{}", &tail[..len]);
            let name = self.keys.get(&placeholder).cloned().unwrap_or_else(|| tail[..len].to_string());
            names.insert(placeholder, name);
        }
        (!names.is_empty()).then_some(names)
    }

    fn values(&self) -> Option<HashMap<String, AttributeValue>> {
        (!self.values.is_empty()).then(|| self.values.clone())
    }
}

/// One write of a transaction.
#[derive(Clone)]
enum Write {
    Put {
        item: Item,
        expr: Expr,
    },
    Update {
        key: Item,
        expr: Expr,
    },
    Delete {
        key: Item,
        expr: Expr,
    },
    /// Changes nothing; the transaction applies only if its condition holds.
    Check {
        key: Item,
        expr: Expr,
    },
}

/// What every write of a transaction sets besides its item or key. The SDK's Put, Update
/// and Delete builders are distinct types with these same setters.
macro_rules! conditional {
    ($builder:expr, $table:expr, $expr:expr) => {
        $builder
            .table_name($table)
            .set_condition_expression($expr.condition())
            .set_expression_attribute_names($expr.names())
            .set_expression_attribute_values($expr.values())
            // The item as it was comes back with a failed condition: it tells "missing"
            // from "not in the required state" without another read.
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .map_err(bug)?
    };
}

/// Sends one single-item write and records its cost: the SDK's PutItem and UpdateItem
/// builders are distinct types with these same setters.
macro_rules! single_write {
    ($store:ident, $builder:expr, $expr:expr) => {
        $builder
            .table_name(&$store.table)
            .set_condition_expression($expr.condition())
            .set_expression_attribute_names($expr.names())
            .set_expression_attribute_values($expr.values())
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .inspect(|out| $store.metrics.record(Capacity::Write, out.consumed_capacity()))
            .inspect_err(|_| $store.metrics.failed_write())
            .map(drop)
            .map_err(classify)
    };
}

impl Write {
    /// The key of the item it writes.
    fn key(&self) -> Item {
        match self {
            Write::Put { item, .. } => {
                let part = |name: &str| item.get(name).cloned().unwrap_or_else(|| s(""));
                HashMap::from([(PK.to_string(), part(PK)), (SK.to_string(), part(SK))])
            }
            Write::Update { key, .. } | Write::Delete { key, .. } | Write::Check { key, .. } => key.clone(),
        }
    }

    /// Adds what `add` writes to this write of the same item (a check becomes an update).
    fn merge(&mut self, add: impl FnOnce(&mut Expr)) -> StoreResult<()> {
        match self {
            Write::Update { expr, .. } => add(expr),
            Write::Check { key, expr } => {
                let mut expr = std::mem::take(expr);
                add(&mut expr);
                *self = Write::Update { key: std::mem::take(key), expr };
            }
            Write::Put { .. } | Write::Delete { .. } => {
                return Err(StoreError::Refused("a count kept in an item that the write replaces or deletes".into()))
            }
        }
        Ok(())
    }

    fn transact_item(&self, table: &str) -> StoreResult<TransactWriteItem> {
        let item = match self {
            Write::Put { item, expr } => {
                TransactWriteItem::builder().put(conditional!(Put::builder().set_item(Some(item.clone())), table, expr))
            }
            Write::Update { key, expr } => TransactWriteItem::builder().update(conditional!(
                Update::builder().set_key(Some(key.clone())).set_update_expression(expr.update()),
                table,
                expr
            )),
            Write::Delete { key, expr } => TransactWriteItem::builder().delete(conditional!(
                Delete::builder().set_key(Some(key.clone())),
                table,
                expr
            )),
            Write::Check { key, expr } => TransactWriteItem::builder().condition_check(conditional!(
                ConditionCheck::builder().set_key(Some(key.clone())),
                table,
                expr
            )),
        };
        Ok(item.build())
    }
}

// ---------------------------------------------------------------------------------------
// Outcomes of writes

/// Which conditions failed: (index of the write in its transaction, 0 for a single
/// write; the item as it was, if it existed).
#[derive(Debug, Default)]
struct Rejection(Vec<(usize, Option<Item>)>);

impl Rejection {
    fn failed(&self, write: usize) -> bool {
        self.0.iter().any(|(i, _)| *i == write)
    }
    /// Whether write `write` failed on an item that exists.
    fn failed_on_existing(&self, write: usize) -> bool {
        self.0.iter().any(|(i, old)| *i == write && old.as_ref().is_some_and(|o| !o.is_empty()))
    }
}

#[derive(Debug)]
enum WriteError {
    /// A condition did not hold: a domain outcome, not an error.
    Rejected(Rejection),
    Store(StoreError),
}

impl From<StoreError> for WriteError {
    fn from(e: StoreError) -> Self {
        WriteError::Store(e)
    }
}

/// What one try of a write ran into.
enum Failure {
    Rejected(Rejection),
    /// Another transaction held one of the items; trying again can succeed.
    Conflict,
    Error(StoreError),
}

/// A request this module built wrongly: a bug.
fn bug(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Refused(Box::new(e))
}

/// Service error codes that say "not now": throttling and DynamoDB's own failures.
const TRANSIENT: [&str; 7] = [
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
    "InternalServerError",
    "ServiceUnavailable",
    "LimitExceededException",
    "TransactionInProgressException",
];

/// Sorts a call's failure by kind: no answer, a timeout, throttling or DynamoDB's own
/// failure is an outage; a service error otherwise (validation, a missing table, access
/// denied) or a request that could not be built is a bug or misconfiguration.
fn sdk_error<E, R>(e: SdkError<E, R>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let transient = match &e {
        SdkError::ServiceError(service) => service.err().code().is_some_and(|code| TRANSIENT.contains(&code)),
        SdkError::ConstructionFailure(_) => false,
        _ => true,
    };
    if transient {
        StoreError::Unavailable(Box::new(e))
    } else {
        StoreError::Refused(Box::new(e))
    }
}

/// Sorts an operation's service error into a [`Failure`].
trait Classify: ProvideErrorMetadata + std::error::Error + Send + Sync + Sized + 'static {
    fn classify(self) -> Failure;
}

/// A service error that is neither a failed condition nor a conflict.
fn other<E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static>(e: E) -> Failure {
    let transient = e.code().is_some_and(|code| TRANSIENT.contains(&code));
    Failure::Error(if transient { StoreError::Unavailable(Box::new(e)) } else { StoreError::Refused(Box::new(e)) })
}

impl Classify for DeleteItemError {
    fn classify(self) -> Failure {
        match self {
            DeleteItemError::ConditionalCheckFailedException(e) => Failure::Rejected(Rejection(vec![(0, e.item)])),
            DeleteItemError::TransactionConflictException(_) => Failure::Conflict,
            e => other(e),
        }
    }
}

impl Classify for PutItemError {
    fn classify(self) -> Failure {
        match self {
            PutItemError::ConditionalCheckFailedException(e) => Failure::Rejected(Rejection(vec![(0, e.item)])),
            PutItemError::TransactionConflictException(_) => Failure::Conflict,
            e => other(e),
        }
    }
}

impl Classify for UpdateItemError {
    fn classify(self) -> Failure {
        match self {
            UpdateItemError::ConditionalCheckFailedException(e) => Failure::Rejected(Rejection(vec![(0, e.item)])),
            UpdateItemError::TransactionConflictException(_) => Failure::Conflict,
            e => other(e),
        }
    }
}

impl Classify for TransactWriteItemsError {
    /// A cancelled transaction lists one reason per write, in order: a failed condition
    /// anywhere decides the outcome; a conflict alone is worth another try; a throttled
    /// write is an outage; any other reason (a validation error) is a bug.
    fn classify(self) -> Failure {
        let TransactWriteItemsError::TransactionCanceledException(cancelled) = self else {
            return other(self);
        };
        let reasons = cancelled.cancellation_reasons();
        let failed: Vec<_> = reasons
            .iter()
            .enumerate()
            .filter(|(_, r)| r.code() == Some("ConditionalCheckFailed"))
            .map(|(i, r)| (i, r.item().cloned()))
            .collect();
        let throttled =
            reasons.iter().any(|r| matches!(r.code(), Some("ThrottlingError" | "ProvisionedThroughputExceeded")));
        if !failed.is_empty() {
            Failure::Rejected(Rejection(failed))
        } else if reasons.iter().any(|r| r.code() == Some("TransactionConflict")) {
            Failure::Conflict
        } else if throttled {
            Failure::Error(StoreError::Unavailable(Box::new(cancelled)))
        } else {
            Failure::Error(StoreError::Refused(Box::new(cancelled)))
        }
    }
}

fn classify<E: Classify, R: std::fmt::Debug + Send + Sync + 'static>(e: SdkError<E, R>) -> Failure {
    match e {
        SdkError::ServiceError(service) => service.into_err().classify(),
        e => Failure::Error(sdk_error(e)),
    }
}

/// Runs a write, trying again (with jittered backoff) while it meets other transactions.
async fn retry_conflicts<T, F, Fut>(mut attempt: F) -> Result<T, WriteError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Failure>>,
{
    for tries in 1..=CONFLICT_TRIES {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(Failure::Rejected(rejection)) => return Err(WriteError::Rejected(rejection)),
            Err(Failure::Error(e)) => return Err(e.into()),
            Err(Failure::Conflict) => tokio::time::sleep(backoff(tries)).await,
        }
    }
    Err(StoreError::Unavailable(format!("transaction conflicts persisted over {CONFLICT_TRIES} tries").into()).into())
}

fn backoff(tries: u32) -> Duration {
    let ceiling = 10u64 << tries.min(6);
    Duration::from_millis(rand::random_range(ceiling / 2..=ceiling))
}

// ---------------------------------------------------------------------------------------
// Operations on the table

impl DynamoStore {
    /// Deletes one item and returns it as it was, if it existed.
    async fn delete(&self, key: Item, expr: &Expr) -> Result<Option<Item>, WriteError> {
        let key = &key;
        retry_conflicts(|| async move {
            self.client
                .delete_item()
                .table_name(&self.table)
                .set_key(Some(key.clone()))
                .set_condition_expression(expr.condition())
                .set_expression_attribute_names(expr.names())
                .set_expression_attribute_values(expr.values())
                .return_values(ReturnValue::AllOld)
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .send()
                .await
                .inspect(|out| self.metrics.record(Capacity::Write, out.consumed_capacity()))
                .inspect_err(|_| self.metrics.failed_write())
                .map(|out| out.attributes.filter(|item| !item.is_empty()))
                .map_err(classify)
        })
        .await
    }

    /// Applies one Put or Update on its own, at half a transaction's cost. The SDK retries
    /// a request whose answer was lost; so the write records a fresh id in its item
    /// (`lastWrite`) and applies only to an item without it: a retry of a write that
    /// applied is refused by an item carrying that id, which is the write's own success (and
    /// a count is not counted twice). A Delete leaves no item to carry it, so it is a
    /// transaction (whose request token makes retries idempotent).
    async fn single(&self, write: &Write) -> Result<(), WriteError> {
        let id = new_id();
        let once = |e: &mut Expr| {
            e.when(format!("attribute_not_exists(#{LAST_WRITE}) OR #{LAST_WRITE} <> :{LAST_WRITE}"))
                .bind(&format!(":{LAST_WRITE}"), s(&id));
        };
        let ours = |r: &Rejection| {
            r.0.iter().any(|(_, old)| {
                old.as_ref().and_then(|o| o.get(LAST_WRITE)).is_some_and(|w| w.as_s().is_ok_and(|w| *w == id))
            })
        };
        let outcome = match write {
            Write::Put { item, expr } => {
                let mut item = item.clone();
                item.insert(LAST_WRITE.into(), s(&id));
                let mut expr = expr.clone();
                once(&mut expr);
                let (item, expr) = (&item, &expr);
                retry_conflicts(|| async move {
                    single_write!(self, self.client.put_item().set_item(Some(item.clone())), expr)
                })
                .await
            }
            Write::Update { key, expr } => {
                let mut expr = expr.clone();
                expr.set(format!("#{LAST_WRITE} = :{LAST_WRITE}"));
                once(&mut expr);
                let (key, expr) = (key, &expr);
                retry_conflicts(|| async move {
                    let update = self.client.update_item().set_key(Some(key.clone()));
                    single_write!(self, update.set_update_expression(expr.update()), expr)
                })
                .await
            }
            Write::Delete { .. } | Write::Check { .. } => return self.transact(std::slice::from_ref(write)).await,
        };
        match outcome {
            Err(WriteError::Rejected(r)) if ours(&r) => Ok(()),
            outcome => outcome,
        }
    }

    /// Applies all writes or none.
    async fn transact(&self, writes: &[Write]) -> Result<(), WriteError> {
        let items = writes.iter().map(|w| w.transact_item(&self.table)).collect::<StoreResult<Vec<_>>>()?;
        let items = &items;
        retry_conflicts(|| async move {
            self.client
                .transact_write_items()
                .set_transact_items(Some(items.clone()))
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .send()
                .await
                .inspect(|out| self.metrics.transaction(Some(out.consumed_capacity()), items.len()))
                .inspect_err(|_| self.metrics.transaction(None::<&[ConsumedCapacity]>, items.len()))
                .map(|_| ())
                .map_err(classify)
        })
        .await
    }

    /// Applies `writes` and the counts' writes all or none, in one call: a transaction, or
    /// a single write where they come to one. A count kept in an item of the request is
    /// written with that item; one that met another request's count in its window since it
    /// was read is tried again as that count now stands.
    async fn commit(&self, writes: Vec<Write>, also: &Also) -> StoreResult<Result<(), Veto>> {
        let mut seen: Vec<u32> = also.counts.iter().map(|c| c.seen).collect();
        for _ in 0..COUNT_TRIES {
            match self.commit_counted(writes.clone(), also, &seen).await? {
                Counted::Decided(outcome) => return Ok(outcome),
                Counted::Raced(i, now) => seen[i] = now,
            }
        }
        Err(StoreError::Unavailable(format!("counts kept changing over {COUNT_TRIES} tries").into()))
    }

    async fn commit_counted(&self, mut writes: Vec<Write>, also: &Also, seen: &[u32]) -> StoreResult<Counted> {
        let mut kept = Vec::new();
        for (i, count) in also.counts.iter().enumerate() {
            let home = homed(&count.counter)?;
            if count.max == 0 {
                return Ok(Counted::Decided(Err(Veto::Limited(i))));
            }
            let at = match writes.iter().position(|w| w.key() == home.home) {
                Some(at) => at,
                None => {
                    let mut e = Expr::default();
                    if home.own {
                        // Kept while its windows can still be read.
                        e.set(format!("#{TTL_ATTRIBUTE} = :rateTtl{i}"))
                            .bind(&format!(":rateTtl{i}"), ttl_seconds(count.expire));
                    } else if home.scope != LOGIN_PER_EMAIL.scope {
                        // A user or session item must exist; an email's claim may be kept
                        // for its counts alone.
                        e.when("attribute_exists(#pk)");
                    }
                    writes.push(Write::Update { key: home.home.clone(), expr: e });
                    writes.len() - 1
                }
            };
            writes[at].merge(|e| home.write(e, count, seen[i], i))?;
            kept.push((at, i, home));
        }
        writes.extend(also.events.iter().map(|e| Write::Put { item: event_item(e), expr: Expr::default() }));
        let result = match writes.as_slice() {
            [] => Ok(()),
            [write] => self.single(write).await,
            _ => self.transact(&writes).await,
        };
        let r = match result {
            Ok(()) => return Ok(Counted::Decided(Ok(()))),
            Err(WriteError::Store(e)) => return Err(e),
            Err(WriteError::Rejected(r)) => r,
        };
        // A count at its limit is reported first: the request is refused as such.
        let mut raced = None;
        for (at, i, home) in &kept {
            let Some(item) = r.0.iter().find(|(j, _)| j == at).and_then(|(_, old)| old.as_ref()) else { continue };
            match home.judge(&also.counts[*i], seen[*i], item)? {
                Judged::Limited => return Ok(Counted::Decided(Err(Veto::Limited(*i)))),
                Judged::Raced(now) => raced = raced.or(Some((*i, now))),
                Judged::Held => {}
            }
        }
        Ok(match raced {
            Some((i, now)) => Counted::Raced(i, now),
            None => Counted::Decided(Err(Veto::Rejected(r))),
        })
    }

    /// [`Self::commit`], keeping `also`'s events in the session item that write `session`
    /// updates while that item has room for them (and was made to keep events), else as
    /// items of their own. The acting session as read (`also.session`) tells whether it has
    /// room, sparing a refused try; the write's condition decides.
    async fn commit_in_session(
        &self,
        writes: Vec<Write>,
        session: usize,
        also: &Also,
    ) -> StoreResult<Result<(), Veto>> {
        let count = also.events.len();
        let room = also.session.as_ref().is_none_or(|s| s.kept as usize + count <= INLINE_EVENTS);
        let client = also.session.as_ref().map(|s| (s.ip.as_str(), s.user_agent.as_str()));
        let mut inline = writes.clone();
        match inline.get_mut(session) {
            Some(Write::Update { expr, .. }) if room && count > 0 && count <= INLINE_EVENTS => {
                expr.when(format!("attribute_exists(#{EVENTS}) AND size(#{EVENTS}) <= :room"))
                    .set(format!("#{EVENTS} = list_append(#{EVENTS}, :inline)"))
                    .bind(":room", n(INLINE_EVENTS - count))
                    .bind(":inline", inline_events(&also.events, client));
            }
            _ => return self.commit(writes, also).await,
        }
        let kept = Also { events: Vec::new(), ..also.clone() };
        let outcome = self.commit(inline, &kept).await?;
        let full = |r: &Rejection| {
            r.0.iter().any(|(i, old)| {
                *i == session
                    && old.as_ref().is_some_and(|item| match item.get(EVENTS) {
                        Some(AttributeValue::L(list)) => list.len() + count > INLINE_EVENTS,
                        _ => !item.is_empty(),
                    })
            })
        };
        match outcome {
            Err(Veto::Rejected(r)) if full(&r) => self.commit(writes, also).await,
            outcome => Ok(outcome),
        }
    }

    /// [`Self::commit`] of the writes `build` makes, whose write `user_write` is the user
    /// item's. Refused because that item is still in the layout from before authenticators
    /// were a collection, it moves the item to the current layout and commits again: two
    /// calls more, once per such user.
    async fn commit_migrating(
        &self,
        build: impl Fn() -> Vec<Write>,
        user_write: usize,
        also: &Also,
    ) -> StoreResult<Result<(), Veto>> {
        let outcome = self.commit(build(), also).await?;
        let legacy = match &outcome {
            Err(Veto::Rejected(r)) => legacy_user(r, user_write).map(migrate_user_write).transpose()?,
            _ => None,
        };
        let Some(migrate) = legacy else { return Ok(outcome) };
        // Refused only when another request moved it first: the retry finds it moved either way.
        decided(self.transact(&[migrate]).await)?;
        self.commit(build(), also).await
    }

    /// Reads items by key in one strongly consistent BatchGetItem, asking again for what
    /// DynamoDB left unprocessed; returns them by key.
    async fn batch_get(&self, keys: Vec<Item>) -> StoreResult<HashMap<(String, String), Item>> {
        let mut found = HashMap::new();
        let mut unique: Vec<Item> = Vec::new();
        for k in keys {
            // BatchGetItem refuses a key asked twice.
            if !unique.contains(&k) {
                unique.push(k);
            }
        }
        if unique.is_empty() {
            return Ok(found);
        }
        let mut request =
            KeysAndAttributes::builder().set_keys(Some(unique)).consistent_read(true).build().map_err(bug)?;
        for tries in 1..=BATCH_TRIES {
            let asked = request.keys().len();
            let out = self
                .client
                .batch_get_item()
                .request_items(&self.table, request)
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .send()
                .await;
            let out = match out {
                Ok(out) => out,
                Err(e) => {
                    self.metrics.record(Capacity::Read, []);
                    return Err(sdk_error(e));
                }
            };
            let items = out.responses.and_then(|mut r| r.remove(&self.table)).unwrap_or_default();
            let rest = out.unprocessed_keys.and_then(|mut u| u.remove(&self.table)).filter(|k| !k.keys().is_empty());
            let unprocessed = rest.as_ref().map_or(0, |k| k.keys().len());
            self.metrics.batch_read(out.consumed_capacity.iter().flatten(), asked - unprocessed, items.len());
            for item in items {
                let r = Reader(&item);
                found.insert((r.s(PK)?, r.s(SK)?), item);
            }
            match rest {
                None => return Ok(found),
                Some(rest) => request = rest,
            }
            if tries == BATCH_TRIES {
                break;
            }
            tokio::time::sleep(backoff(tries)).await;
        }
        Err(StoreError::Unavailable("batch reads left unprocessed".into()))
    }

    /// The items of a partition (a user's, the API keys') whose sort key starts with
    /// `prefix` (every item for ""), in one Query (one page: up to 1 MB of items), highest
    /// sort key first when `descending`.
    async fn query_prefix(&self, pk: &str, prefix: &str, descending: bool) -> StoreResult<Vec<Item>> {
        let query = self
            .client
            .query()
            .table_name(&self.table)
            .expression_attribute_names("#pk", PK)
            .expression_attribute_values(":pk", s(pk));
        // The whole partition for an empty prefix: a key condition cannot hold an empty string.
        let query = match prefix {
            "" => query.key_condition_expression("#pk = :pk"),
            _ => query
                .key_condition_expression("#pk = :pk AND begins_with(#sk, :prefix)")
                .expression_attribute_names("#sk", SK)
                .expression_attribute_values(":prefix", s(prefix)),
        };
        let out =
            query.scan_index_forward(!descending).return_consumed_capacity(ReturnConsumedCapacity::Total).send().await;
        self.metrics.record(Capacity::Read, out.as_ref().ok().and_then(|o| o.consumed_capacity()));
        Ok(out.map_err(sdk_error)?.items.unwrap_or_default())
    }
}

/// A domain outcome from a write: `Ok(None)` when a condition did not hold.
fn decided<T>(result: Result<T, WriteError>) -> StoreResult<Option<T>> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(WriteError::Rejected(_)) => Ok(None),
        Err(WriteError::Store(e)) => Err(e),
    }
}

/// Tries of a write whose counts met other requests' counts in their windows.
const COUNT_TRIES: usize = 4;

/// One try of [`DynamoStore::commit`].
enum Counted {
    Decided(Result<(), Veto>),
    /// The count at this index stands at this now: try again.
    Raced(usize, u32),
}

/// Why [`DynamoStore::commit`] changed nothing.
#[derive(Debug)]
enum Veto {
    /// The count at this index is at its limit.
    Limited(usize),
    /// A condition of the request's own writes failed.
    Rejected(Rejection),
}

fn refused(veto: Result<(), Veto>) -> Decided {
    veto.map_err(|v| match v {
        Veto::Limited(i) => Refused::Limited(i),
        Veto::Rejected(_) => Refused::Rejected,
    })
}

// ---------------------------------------------------------------------------------------
// Counts

/// Where a counter lives. One that counts for a user, a session or an email lives in that
/// user's, session's or email claim's item, which the request reads (and mostly writes)
/// anyway, so that it costs no read and no write of its own; any other has an item of its
/// own (`RATE#<scope>#<key>`, with a TTL). Either way a counter's two latest windows are two
/// slots of the item, `rate_<scope>_<0|1>` (by the window's parity), each `{w: window
/// start, n: count}`, so that a request reads one item per counter. A claim may be kept for
/// its counts alone (an email without an account): it has no `userId`, and counts as no
/// claim.
struct Homed {
    home: Item,
    scope: String,
    start: Millis,
    /// The counter's own item (else another record's).
    own: bool,
}

/// Where the counter `<scope>#<key>#<window start>` lives.
fn homed(counter: &str) -> StoreResult<Homed> {
    let malformed = || StoreError::Refused(format!("a counter key without scope, key and window: {counter}").into());
    let (scope, rest) = counter.split_once('#').ok_or_else(malformed)?;
    let (key, start) = rest.rsplit_once('#').ok_or_else(malformed)?;
    let start = start.parse().map_err(|_| malformed())?;
    let in_session = || key.split_once('/').map(|(user_id, session_id)| session_key(user_id, session_id));
    let home = match scope {
        s if s == CODE_FAILURES_PER_USER.scope => Some(user_key(key)),
        s if s == CHALLENGE_PER_SESSION.scope => Some(in_session().ok_or_else(malformed)?),
        s if s == LOGIN_PER_EMAIL.scope => Some(Target::Email.index_key(key)),
        _ => None,
    };
    let own = home.is_none();
    let home = home.unwrap_or_else(|| rate_key(&format!("{scope}#{key}")));
    Ok(Homed { home, scope: scope.to_string(), start, own })
}

fn rate_slot(scope: &str, parity: i64) -> String {
    format!("rate_{scope}_{parity}")
}

/// A window's count in a counter's own item: `r_<window start>_<expiry>`.
fn window_attribute(start: Millis, expire: Millis) -> String {
    format!("r_{start}_{expire}")
}

/// The count of window `start` as `item` keeps it at `now`, if any.
fn homed_count(item: Option<&Item>, home: &Homed, now: Millis) -> StoreResult<u32> {
    let Some(item) = item else { return Ok(0) };
    let r = Reader(item);
    if home.own {
        let prefix = format!("r_{}_", home.start);
        for (name, _) in item.iter().filter(|(name, _)| name.starts_with(&prefix)) {
            let expire: Millis = name[prefix.len()..].parse().map_err(|_| r.corrupt(name, "a window's count"))?;
            if expire > now {
                return r.n(name);
            }
        }
        return Ok(0);
    }
    for parity in 0..2 {
        let name = rate_slot(&home.scope, parity);
        let Some(slot) = item.get(&name) else { continue };
        let AttributeValue::M(m) = slot else { return Err(r.corrupt(&name, "a map")) };
        let slot = Reader(m);
        if slot.n::<Millis>("w")? == home.start && slot.opt_n::<Millis>("x")?.is_none_or(|x| x > now) {
            return slot.n("n");
        }
    }
    Ok(0)
}

impl Homed {
    /// The window's length.
    fn window(&self, count: &Count) -> Millis {
        ((count.expire - self.start) / 2).max(1)
    }

    /// Adds count number `i` to the home item's write `e`: applies only while the count is
    /// below its limit.
    ///
    /// In a counter's own item each window's count is an attribute of its own: a count
    /// adds one to it whatever it holds, and removes the window before the previous one
    /// (the item's TTL ends any older). In another record's item the two windows take turns
    /// in two slots, so that nothing is left behind; there `seen`, the window's count as
    /// read, tells how: an empty window is started afresh (over whatever older window its
    /// slot held), a started one counted on.
    fn write(&self, e: &mut Expr, count: &Count, seen: u32, i: usize) {
        let window = self.window(count);
        let (cur, max) = (format!("#rate{i}"), format!(":rateMax{i}"));
        if self.own {
            let previous = format!("#ratePrevious{i}");
            e.key(&cur, &window_attribute(self.start, count.expire))
                .key(&previous, &window_attribute(self.start - window, count.expire - window))
                .when(format!("attribute_not_exists({cur}) OR {cur} < {max}"))
                .bind(&max, n(count.max));
            if count.reset {
                e.remove(cur).remove(previous);
            } else {
                let stale = format!("#rateStale{i}");
                let (zero, one) = (format!(":rateZero{i}"), format!(":rateOne{i}"));
                e.key(&stale, &window_attribute(self.start - 2 * window, count.expire - 2 * window))
                    .set(format!("{cur} = if_not_exists({cur}, {zero}) + {one}"))
                    .remove(stale)
                    .bind(&zero, n(0))
                    .bind(&one, n(1));
            }
            return;
        }
        let parity = (self.start / window).rem_euclid(2);
        let (slot, other) = (rate_slot(&self.scope, parity), rate_slot(&self.scope, 1 - parity));
        let start = format!(":rateStart{i}");
        e.key(&cur, &slot).bind(&start, n(self.start));
        if seen > 0 || count.reset {
            e.bind(&max, n(count.max));
        }
        if count.reset {
            let other_name = format!("#rateOther{i}");
            e.key(&other_name, &other)
                .when(format!("attribute_not_exists({cur}) OR {cur}.#w <> {start} OR {cur}.#n < {max}"))
                .remove(cur)
                .remove(other_name);
        } else if seen > 0 {
            let one = format!(":rateOne{i}");
            e.when(format!("{cur}.#w = {start} AND {cur}.#n < {max}"))
                .set(format!("{cur}.#n = {cur}.#n + {one}"))
                .bind(&one, n(1));
        } else {
            let fresh = format!(":rateFresh{i}");
            let value = AttributeValue::M(HashMap::from([
                ("w".to_string(), n(self.start)),
                ("n".to_string(), n(1)),
                ("x".to_string(), n(count.expire)),
            ]));
            e.when(format!("attribute_not_exists({cur}) OR {cur}.#w <> {start}"))
                .set(format!("{cur} = {fresh}"))
                .bind(&fresh, value);
        }
    }

    /// Why a write carrying this count was refused, judged from the home item as it was:
    /// the count at its limit, another request having started or cleared the window since
    /// it was read (`Raced`, with the count now), or neither (the write's own condition).
    fn judge(&self, count: &Count, seen: u32, item: &Item) -> StoreResult<Judged> {
        // The window's own count, as at any time within it.
        let counted = homed_count(Some(item), self, self.start)?;
        Ok(if counted >= count.max {
            Judged::Limited
        } else if !self.own && !count.reset && (counted > 0) != (seen > 0) {
            Judged::Raced(counted)
        } else {
            Judged::Held
        })
    }
}

enum Judged {
    Limited,
    Raced(u32),
    Held,
}

// ---------------------------------------------------------------------------------------
// User changes

fn mfa_expr(on: bool) -> Expr {
    let mut e = Expr::default();
    e.set("#mfa = :mfa").bind(":mfa", b(on));
    e
}

/// Adds the authenticator, or replaces the one with its id while that is unverified. Like
/// every write that touches an authenticator, it applies only to a user item in the current
/// layout.
fn put_authenticator_expr(auth: &Authenticator) -> Expr {
    let mut e = Expr::default();
    e.key("#authId", &auth.id)
        .when("attribute_exists(#authenticators)")
        .when("attribute_not_exists(#authenticators.#authId) OR #authenticators.#authId.#verified = :false")
        .set("#authenticators.#authId = :auth")
        .bind(":false", b(false))
        .bind(":auth", authenticator_value(auth));
    e
}

/// Uses TOTP step `step` of the (verified, or with `verified == false` the unverified)
/// TOTP authenticator: only a step newer than any used.
fn totp_step_expr(e: &mut Expr, step: u64, verified: bool, now: Millis) {
    e.key("#totpId", Authenticator::TOTP_ID)
        .when("attribute_exists(#authenticators)")
        .when("#authenticators.#totpId.#verified = :verified")
        .when("attribute_not_exists(#authenticators.#totpId.#lastStep) OR #authenticators.#totpId.#lastStep < :step")
        .set("#authenticators.#totpId.#lastStep = :step, #authenticators.#totpId.#lastUsedAt = :usedAt")
        .bind(":verified", b(verified))
        .bind(":step", n(step))
        .bind(":usedAt", n(now));
}

/// Spends TOTP step `step` for `challenge`: a step newer than any used, or the step this
/// same challenge spent before. A challenge is completed by two writes, this one first; if
/// the second never happened (the process died between them), completing the challenge
/// again with the same code finishes it. No other challenge can use the step, and this
/// one is gone once completed.
fn totp_challenge_step_expr(e: &mut Expr, step: u64, challenge: &str, now: Millis) {
    e.key("#totpId", Authenticator::TOTP_ID)
        .when("attribute_exists(#authenticators)")
        .when("#authenticators.#totpId.#verified = :verified")
        .when(
            "attribute_not_exists(#authenticators.#totpId.#lastStep) OR #authenticators.#totpId.#lastStep < :step \
             OR (#authenticators.#totpId.#lastStep = :step AND #authenticators.#totpId.#spentBy = :spentBy)",
        )
        .set("#authenticators.#totpId.#lastStep = :step, #authenticators.#totpId.#lastUsedAt = :usedAt")
        .set("#authenticators.#totpId.#spentBy = :spentBy")
        .bind(":verified", b(true))
        .bind(":step", n(step))
        .bind(":spentBy", s(challenge))
        .bind(":usedAt", n(now));
}

/// Applies only to the unverified authenticator whose code was checked, and only with a
/// step newer than any used.
fn verify_authenticator_expr(step: u64, secret_sealed: &str, now: Millis) -> Expr {
    let mut e = Expr::default();
    totp_step_expr(&mut e, step, false, now);
    e.when("#authenticators.#totpId.#secret = :checked")
        .bind(":checked", s(secret_sealed))
        .set("#authenticators.#totpId.#verified = :true")
        .bind(":true", b(true));
    e
}

fn remove_authenticators_expr(ids: &[String]) -> Expr {
    let mut e = Expr::default();
    e.when("attribute_exists(#authenticators)");
    for (i, id) in ids.iter().enumerate() {
        let placeholder = format!("#authId{i}");
        e.key(&placeholder, id)
            .when(format!("attribute_exists(#authenticators.{placeholder})"))
            .remove(format!("#authenticators.{placeholder}"));
    }
    e
}

/// Uses a security key: its new counter and credential, only while the key is the user's
/// and the counter may follow the stored one (forward, or 0 on a key that keeps none).
fn key_use_expr(e: &mut Expr, used: &KeyUse, now: Millis) {
    e.key("#keyId", &used.authenticator_id)
        .when("attribute_exists(#authenticators)")
        .when("#authenticators.#keyId.#verified = :true")
        .set("#authenticators.#keyId.#counter = :counter, #authenticators.#keyId.#credential = :credential")
        .set("#authenticators.#keyId.#lastUsedAt = :usedAt")
        .bind(":true", b(true))
        .bind(":counter", n(used.counter))
        .bind(":credential", s(&used.credential))
        .bind(":usedAt", n(now));
    if used.counter == 0 {
        e.when("#authenticators.#keyId.#counter = :counter");
    } else {
        e.when("#authenticators.#keyId.#counter < :counter");
    }
}

/// Registers a security key while the user has no authenticator with its id.
fn register_expr(e: &mut Expr, auth: &Authenticator) {
    e.key("#newId", &auth.id)
        .when("attribute_exists(#authenticators)")
        .when("attribute_not_exists(#authenticators.#newId)")
        .set("#authenticators.#newId = :newAuth")
        .bind(":newAuth", authenticator_value(auth));
}

/// Sets the recovery codes while the user has none (`create`) or has some (replace).
fn recovery_codes_expr(codes: &[String], create: bool) -> Expr {
    let mut e = Expr::default();
    if create {
        e.when("attribute_not_exists(#recoveryCodes) OR size(#recoveryCodes) = :zero");
    } else {
        e.when("size(#recoveryCodes) > :zero");
    }
    e.set("#recoveryCodes = :codes").bind(":zero", n(0)).bind(":codes", recovery_codes(codes));
    e
}

/// What every applied change also records: when, and the proof of a factor if any.
fn stamp(e: &mut Expr, upgrade: Option<&SessionUpgrade>, now: Millis) {
    e.when("attribute_exists(#pk)").set("#updatedAt = :now").bind(":now", n(now));
    if let Some(up) = upgrade {
        still_valid(e, up.confirmed_at);
    }
    if let Some(at) = upgrade.and_then(|up| up.mfa_updated_at) {
        e.set("#mfaUpdatedAt = :mfaAt").bind(":mfaAt", n(at));
    }
    if upgrade.is_some_and(|up| up.end_other_sessions) {
        e.set("#sessionsValidFrom = :now");
    }
}

/// Applies only while sessions confirmed at `confirmed_at` are still valid: the acting
/// session was not ended meanwhile (and so cannot undo a later end either).
fn still_valid(e: &mut Expr, confirmed_at: Millis) {
    e.when("attribute_not_exists(#sessionsValidFrom) OR #sessionsValidFrom <= :confirmedAt")
        .bind(":confirmedAt", n(confirmed_at));
}

/// Whether a rejected write of the user (at `index`) failed because the acting session had
/// been ended, as the user item it failed on shows.
fn ended(r: &Rejection, index: usize, up: Option<&SessionUpgrade>) -> bool {
    let Some(up) = up else { return false };
    r.0.iter().any(|(i, old)| {
        *i == index
            && old.as_ref().is_some_and(|item| {
                Reader(item)
                    .opt_n::<Millis>("sessionsValidFrom")
                    .ok()
                    .flatten()
                    .is_some_and(|cut| cut > up.confirmed_at)
            })
    })
}

/// Adds factors to a live session, once each, keeping the order they were proven in.
fn upgrade_write(user_id: &str, up: &SessionUpgrade, now: Millis) -> Write {
    let mut add = Vec::new();
    merge_factors(&mut add, &up.add);
    let mut e = Expr::default();
    session_live(&mut e, now);
    e.set("#updatedAt = :now");
    for (place, factor) in add.iter().enumerate() {
        let (k, v) = (format!("#factor{place}"), format!(":rank{place}"));
        e.set(format!("#factors.{k} = if_not_exists(#factors.{k}, {v})"))
            .key(&k, factor.as_str())
            .bind(&v, n(factor_rank(now, place)));
    }
    if let Some(at) = up.mfa_updated_at {
        e.set("#mfaUpdatedAt = :mfaAt").bind(":mfaAt", n(at));
    }
    if up.end_other_sessions {
        e.set("#confirmedAt = :now");
    }
    Write::Update { key: session_key(user_id, &up.session_id), expr: e }
}

impl DynamoStore {
    /// Moves the user to a new email or phone: the user item (still holding the value the
    /// caller read), the new claim (taken only if free or already the user's) and the old
    /// claim change in one transaction.
    async fn move_target(
        &self,
        user: &User,
        target: Target,
        value: &str,
        upgrade: Option<&SessionUpgrade>,
        now: Millis,
        also: &Also,
    ) -> StoreResult<Updated> {
        let (attribute, verified) = target.attributes();
        let old = target.of(user);
        let mut user_expr = Expr::default();
        user_expr
            .set(format!("{attribute} = :value, {verified} = :false"))
            .bind(":value", s(value))
            .bind(":false", b(false));
        match old {
            Some(old) => user_expr.when(format!("{attribute} = :old")).bind(":old", s(old)),
            None => user_expr.when(format!("attribute_not_exists({attribute})")),
        };
        stamp(&mut user_expr, upgrade, now);
        record_source(&mut user_expr, target.factor(), upgrade.map(|up| up.session_id.as_str()));

        let mut claim = Expr::default();
        claim.when("attribute_not_exists(#userId) OR #userId = :me").bind(":me", s(&user.id));
        let mut writes = vec![
            Write::Update { key: user_key(&user.id), expr: user_expr },
            Write::Put { item: target.index_item(value, user), expr: claim.clone() },
        ];
        if let Some(old) = old.filter(|old| *old != value) {
            writes.push(Write::Delete { key: target.index_key(old), expr: claim });
        }
        let session_write = upgrade.map(|up| {
            writes.push(upgrade_write(&user.id, up, now));
            writes.len() - 1
        });
        Ok(match self.commit(writes, also).await? {
            Ok(()) => Updated::Done,
            Err(Veto::Limited(i)) => Updated::Limited(i),
            Err(Veto::Rejected(r)) if r.failed(1) => Updated::Taken,
            Err(Veto::Rejected(r)) if r.failed(0) && !r.failed_on_existing(0) => Updated::NotFound,
            Err(Veto::Rejected(r)) if ended(&r, 0, upgrade) || session_write.is_some_and(|i| r.failed(i)) => {
                Updated::SessionEnded
            }
            // The user's value changed since it was read.
            Err(Veto::Rejected(_)) => Updated::Rejected,
        })
    }
}

/// Applies only to the token `id` while it has attempts left and is unexpired.
fn usable(id: &str, now: Millis) -> Expr {
    let mut e = Expr::default();
    e.when("#id = :id AND #attemptsLeft > :zero AND #expire > :now")
        .bind(":id", s(id))
        .bind(":zero", n(0))
        .bind(":now", n(now));
    e
}

/// Applies only while the session keeps the challenge `id` in `slot` with attempts left
/// and unexpired; `#challenge` names that attribute.
fn challenge_usable(e: &mut Expr, slot: &str, id: &str, now: Millis) {
    e.key("#challenge", &challenge_attribute(slot))
        .when("#challenge.#id = :challengeId AND #challenge.#attemptsLeft > :zero AND #challenge.#expire > :now")
        .bind(":challengeId", s(id))
        .bind(":zero", n(0))
        .bind(":now", n(now));
}

/// Applies only to a live session: there, not ended, unexpired.
fn session_live(e: &mut Expr, now: Millis) {
    e.when("attribute_exists(#pk)")
        .when(format!("attribute_not_exists(#{ENDED_AT})"))
        .when("#expire > :now")
        .bind(":now", n(now));
}

/// The part of completing a challenge that uses up a TOTP step or a recovery code and
/// marks the challenge recent; with neither, only its conditions on the user remain.
fn user_spend(win: &ChallengeWin) -> Write {
    let (key, expr) = (user_key(&win.user_id), spend_expr(win));
    match expr.update() {
        Some(_) => Write::Update { key, expr },
        None => Write::Check { key, expr },
    }
}

fn spend_expr(win: &ChallengeWin) -> Expr {
    let (spend, now) = (&win.spend, win.now);
    let mut e = Expr::default();
    e.when("attribute_exists(#pk)");
    still_valid(&mut e, win.confirmed_at);
    match spend {
        Spend::Nothing => {}
        Spend::TotpStep(step) => totp_challenge_step_expr(&mut e, *step, &win.challenge_id, now),
        Spend::RecoveryCode(hash) => {
            e.key("#code", hash).when("attribute_exists(#recoveryCodes.#code)").remove("#recoveryCodes.#code");
        }
        Spend::Key(used) => key_use_expr(&mut e, used, now),
        Spend::Register(auth) => register_expr(&mut e, auth),
    }
    if let Some(reseal) = &win.reseal {
        e.key("#totpId", Authenticator::TOTP_ID)
            .when("#authenticators.#totpId.#secret = :sealedFrom")
            .set("#authenticators.#totpId.#secret = :sealedTo")
            .bind(":sealedFrom", s(&reseal.from))
            .bind(":sealedTo", s(&reseal.to));
    }
    e
}

#[async_trait]
impl Store for DynamoStore {
    async fn load(&self, lookup: &Lookup, now: Millis) -> StoreResult<Found> {
        let session = lookup.session.as_ref().map(|(user_id, id, _)| session_key(user_id, id));
        let user = lookup.user.as_deref().map(user_key);
        let login = lookup.login.as_deref().map(|email| Target::Email.index_key(email));
        let token = lookup.token.as_ref().map(|(user_id, channel)| token_key(user_id, *channel));
        // A counter is read with the item it lives in: one read for both of its windows.
        let homes = lookup.counters.iter().map(|c| homed(c)).collect::<StoreResult<Vec<_>>>()?;
        let counters: Vec<Item> = homes.iter().map(|h| h.home.clone()).collect();
        let api_key = lookup.api_key.as_deref().map(api_key_key);
        let claims: Vec<Item> = lookup.emails.iter().map(|e| Target::Email.index_key(e)).collect();
        let keys =
            [&session, &user, &login, &token, &api_key].into_iter().flatten().chain(&counters).chain(&claims).cloned();
        let items = self.batch_get(keys.collect()).await?;
        let at = |k: &Option<Item>| k.as_ref().and_then(|k| items.get(&key_id(k)));

        let mut found = Found {
            session: at(&session).filter(|item| !is_tombstone(item)).map(session_from).transpose()?.filter(|x| {
                lookup.session.as_ref().is_some_and(|(_, _, hash)| constant_time_eq(&x.secret_hash, hash))
                    && x.is_live(now)
            }),
            user: at(&user).map(user_from).transpose()?,
            ..Found::default()
        };
        // A claim kept for its counts alone names no user.
        let login_claim = at(&login).map(|item| Reader(item).opt_s("userId").map(|id| (item, id))).transpose()?;
        if let Some((item, Some(user_id))) = login_claim {
            let r = Reader(item);
            let password_hash = match r.opt_s("passwordHash")? {
                Some(hash) => hash,
                // A claim stored before claims kept the hash: the user item has it.
                None => match self.batch_get(vec![user_key(&user_id)]).await?.into_values().next() {
                    Some(user) => Reader(&user).s("passwordHash")?,
                    None => return Err(StoreError::Corrupt(format!("email claim of missing user {user_id}").into())),
                },
            };
            found.login = Some(Login { user_id, password_hash });
        }
        if let Some(item) = at(&session).filter(|_| found.session.is_some()) {
            // A session stored before sessions kept events has no room for any.
            found.session_events = match item.get(EVENTS) {
                Some(AttributeValue::L(list)) => list.len() as u32,
                _ => INLINE_EVENTS as u32,
            };
        }
        // The challenge is the request's session's.
        if let (Some(slot), Some(item)) = (lookup.challenge, at(&session).filter(|_| found.session.is_some())) {
            found.challenge = session_challenges(item)?.into_iter().find(|c| c.slot() == slot && c.expire > now);
        }
        found.token = at(&token).map(token_from).transpose()?.filter(|t| t.expire > now);
        for home in &homes {
            found.counts.push(homed_count(items.get(&key_id(&home.home)), home, now)?);
        }
        found.api_key = at(&api_key).map(api_key_from).transpose()?;
        for k in &claims {
            if let Some(owner) = items.get(&key_id(k)).map(|item| Reader(item).opt_s("userId")).transpose()?.flatten() {
                found.email_owners.push(owner);
            }
        }
        Ok(found)
    }

    async fn create_user(&self, user: &User) -> StoreResult<bool> {
        let mut absent = Expr::default();
        absent.when("attribute_not_exists(#pk)");
        // A claim kept for an email's counts alone is no claim.
        let mut unclaimed = Expr::default();
        unclaimed.when("attribute_not_exists(#userId)");
        let mut writes = vec![Write::Put { item: user_item(user), expr: absent }];
        for (target, value) in [(Target::Email, &user.email), (Target::Phone, &user.phone)] {
            if let Some(value) = value {
                writes.push(Write::Put { item: target.index_item(value, user), expr: unclaimed.clone() });
            }
        }
        Ok(decided(self.transact(&writes).await)?.is_some())
    }

    async fn update_user(
        &self,
        user: &User,
        change: UserChange,
        upgrade: Option<SessionUpgrade>,
        now: Millis,
        also: &Also,
    ) -> StoreResult<Updated> {
        let upgrade = upgrade.as_ref();
        let mut e = match &change {
            UserChange::Email(email) => return self.move_target(user, Target::Email, email, upgrade, now, also).await,
            UserChange::Phone(phone) => return self.move_target(user, Target::Phone, phone, upgrade, now, also).await,
            UserChange::Mfa(on) => mfa_expr(*on),
            UserChange::Name(name) => {
                let mut e = Expr::default();
                e.set("#name = :name").bind(":name", s(name));
                e
            }
            UserChange::Prefs(prefs) => {
                let mut e = Expr::default();
                e.set("#prefs = :prefs").bind(":prefs", s(&serde_json::Value::Object(prefs.clone()).to_string()));
                e
            }
            UserChange::Password(hash) => {
                let mut e = Expr::default();
                e.set("#passwordHash = :hash, #passwordUpdatedAt = :changedAt")
                    .bind(":hash", s(hash))
                    .bind(":changedAt", n(now));
                e
            }
            UserChange::EndSessions(at) => {
                // The cut only moves forward: a late request cannot revive ended sessions.
                let mut e = Expr::default();
                e.when("attribute_not_exists(#sessionsValidFrom) OR #sessionsValidFrom <= :from")
                    .set("#sessionsValidFrom = :from")
                    .bind(":from", n(at));
                e
            }
            UserChange::PutAuthenticator(auth) => put_authenticator_expr(auth),
            UserChange::VerifyAuthenticator { step, secret_sealed } => {
                verify_authenticator_expr(*step, secret_sealed, now)
            }
            UserChange::RemoveAuthenticators { ids, .. } => remove_authenticators_expr(ids),
            UserChange::CreateRecoveryCodes(codes) => recovery_codes_expr(codes, true),
            UserChange::ReplaceRecoveryCodes(codes) => recovery_codes_expr(codes, false),
        };
        stamp(&mut e, upgrade, now);
        record_change_source(&mut e, &change, upgrade);
        // Signing in reads the password hash kept with the email's claim: it changes with the user's.
        let claim = match (&change, &user.email) {
            (UserChange::Password(hash), Some(email)) => {
                let mut e = Expr::default();
                e.when("#userId = :owner")
                    .set("#passwordHash = :hash")
                    .bind(":owner", s(&user.id))
                    .bind(":hash", s(hash));
                Some(Write::Update { key: Target::Email.index_key(email), expr: e })
            }
            _ => None,
        };
        let writes = || {
            let mut writes = vec![Write::Update { key: user_key(&user.id), expr: e.clone() }];
            writes.extend(upgrade.map(|up| upgrade_write(&user.id, up, now)));
            writes.extend(claim.clone());
            writes
        };
        Ok(match self.commit_migrating(writes, 0, also).await? {
            Ok(()) => Updated::Done,
            Err(Veto::Limited(i)) => Updated::Limited(i),
            Err(Veto::Rejected(r)) if r.failed(0) && !r.failed_on_existing(0) => Updated::NotFound,
            Err(Veto::Rejected(r)) if ended(&r, 0, upgrade) || r.failed(1) => Updated::SessionEnded,
            Err(Veto::Rejected(_)) => Updated::Rejected,
        })
    }

    async fn create_session(&self, session: &Session, also: &Also) -> StoreResult<Decided> {
        let (inline, own) =
            if also.events.len() <= INLINE_EVENTS { (&also.events[..], &[][..]) } else { (&[][..], &also.events[..]) };
        let put = Write::Put { item: session_item(session, inline), expr: Expr::default() };
        let rest = Also { events: own.to_vec(), ..also.clone() };
        Ok(refused(self.commit(vec![put], &rest).await?))
    }

    async fn delete_session(&self, user_id: &str, session_id: &str, also: &Also) -> StoreResult<bool> {
        // Kept as a tombstone: the events it keeps outlive it. A transaction like every
        // write, so that a retry after a lost answer still tells that the session was there.
        let mut e = Expr::default();
        e.when(format!("attribute_exists(#pk) AND attribute_not_exists(#{ENDED_AT})"))
            .set(format!("#{ENDED_AT} = :endedAt"))
            .bind(":endedAt", n(also.events.first().map_or(0, |e| e.time)));
        let end = Write::Update { key: session_key(user_id, session_id), expr: e };
        Ok(self.commit_in_session(vec![end], 0, also).await?.is_ok())
    }

    async fn put_challenge(&self, c: &Challenge, also: &Also) -> StoreResult<Decided> {
        // One slot per kind: the new challenge replaces the session's previous one.
        let mut e = Expr::default();
        session_live(&mut e, c.created_at);
        e.key("#challenge", &challenge_attribute(c.slot()))
            .set("#challenge = :challenge")
            .bind(":challenge", challenge_value(c));
        let put = Write::Update { key: session_key(&c.user_id, &c.session_id), expr: e };
        Ok(refused(self.commit_in_session(vec![put], 0, also).await?))
    }

    async fn withdraw_challenge(&self, c: &Challenge) -> StoreResult<()> {
        let mut e = Expr::default();
        e.key("#challenge", &challenge_attribute(c.slot()))
            .when("#challenge.#id = :challengeId")
            .remove("#challenge")
            .bind(":challengeId", s(&c.id));
        // Already replaced or gone: nothing to withdraw.
        let withdraw = Write::Update { key: session_key(&c.user_id, &c.session_id), expr: e };
        decided(self.single(&withdraw).await).map(|_| ())
    }

    async fn miss_challenge(&self, c: &Challenge, now: Millis, also: &Also) -> StoreResult<Decided> {
        let mut e = Expr::default();
        challenge_usable(&mut e, c.slot(), &c.id, now);
        e.set("#challenge.#attemptsLeft = #challenge.#attemptsLeft - :one").bind(":one", n(1));
        let miss = Write::Update { key: session_key(&c.user_id, &c.session_id), expr: e };
        Ok(refused(self.commit_in_session(vec![miss], 0, also).await?))
    }

    async fn finish_challenge(&self, win: &ChallengeWin, also: &Also) -> StoreResult<Decided> {
        let Some(slot) = Challenge::slot_of(&win.challenge_id) else { return Ok(Err(Refused::Rejected)) };
        let writes = || {
            let mut session = upgrade_write(&win.user_id, &win.upgrade(), win.now);
            if let Write::Update { expr, .. } = &mut session {
                challenge_usable(expr, slot, &win.challenge_id, win.now);
                expr.remove("#challenge");
            }
            vec![user_spend(win), session]
        };
        // What a TOTP step, a key's use or a sent code spends is the user's to spend and
        // proves the factor only with the session's write that follows: two single writes,
        // the user's first (a crash between them leaves a spent step and no upgrade, as a
        // wrong answer would). A recovery code or a new key would be lost that way: one
        // transaction.
        let user = user_key(&win.user_id);
        let counted_with_user = also.counts.iter().all(|c| homed(&c.counter).is_ok_and(|h| h.home == user));
        if counted_with_user && matches!(win.spend, Spend::Nothing | Spend::TotpStep(_) | Spend::Key(_)) {
            let counts = Also { counts: also.counts.clone(), ..Also::default() };
            let spent = self.commit_migrating(|| vec![user_spend(win)], 0, &counts).await?;
            if spent.is_err() {
                return Ok(refused(spent));
            }
            let session = writes().pop().into_iter().collect();
            let rest = Also { counts: Vec::new(), ..also.clone() };
            return Ok(refused(self.commit_in_session(session, 0, &rest).await?));
        }
        let outcome = self.commit_in_session(writes(), 1, also).await?;
        let legacy = match &outcome {
            Err(Veto::Rejected(r)) => legacy_user(r, 0).map(migrate_user_write).transpose()?,
            _ => None,
        };
        let Some(migrate) = legacy else { return Ok(refused(outcome)) };
        // Refused only when another request moved it first: the retry finds it moved either way.
        decided(self.transact(&[migrate]).await)?;
        Ok(refused(self.commit_in_session(writes(), 1, also).await?))
    }

    async fn put_token(&self, token: &VerificationToken, also: &Also) -> StoreResult<Decided> {
        let put = Write::Put { item: token_item(token), expr: Expr::default() };
        Ok(refused(self.commit(vec![put], also).await?))
    }

    async fn withdraw_token(&self, token: &VerificationToken) -> StoreResult<()> {
        let mut e = Expr::default();
        e.when("#id = :id").bind(":id", s(&token.id));
        decided(self.delete(token_key(&token.user_id, token.channel), &e).await).map(|_| ())
    }

    async fn miss_token(
        &self,
        user_id: &str,
        channel: Channel,
        token_id: &str,
        now: Millis,
        also: &Also,
    ) -> StoreResult<Decided> {
        let mut e = usable(token_id, now);
        e.set("#attemptsLeft = #attemptsLeft - :one").bind(":one", n(1));
        let miss = Write::Update { key: token_key(user_id, channel), expr: e };
        Ok(refused(self.commit(vec![miss], also).await?))
    }

    async fn redeem_token(&self, token: &VerificationToken, now: Millis, also: &Also) -> StoreResult<Decided> {
        if token.channel == Channel::Recovery {
            // A reset link verifies nothing.
            return Ok(Err(Refused::Rejected));
        }
        let delete = usable(&token.id, now);
        let (attribute, verified) = Target::from(token.channel).attributes();
        let mut verify = Expr::default();
        verify
            .when(format!("{attribute} = :target"))
            .set(format!("{verified} = :true, #updatedAt = :now"))
            .bind(":target", s(&token.target))
            .bind(":true", b(true))
            .bind(":now", n(now));
        let writes = vec![
            Write::Delete { key: token_key(&token.user_id, token.channel), expr: delete },
            Write::Update { key: user_key(&token.user_id), expr: verify },
        ];
        Ok(refused(self.commit(writes, also).await?))
    }

    async fn reset_password(
        &self,
        token: &VerificationToken,
        password_hash: &str,
        now: Millis,
        also: &Also,
    ) -> StoreResult<Decided> {
        let mut reset = Expr::default();
        // Every session confirmed up to now ends; the cut only moves forward.
        reset
            .when("#email = :target")
            .when("attribute_not_exists(#sessionsValidFrom) OR #sessionsValidFrom <= :from")
            .set("#passwordHash = :hash, #passwordUpdatedAt = :now, #updatedAt = :now, #sessionsValidFrom = :from")
            .bind(":target", s(&token.target))
            .bind(":hash", s(password_hash))
            .bind(":now", n(now))
            .bind(":from", n(now + 1));
        let mut claim = Expr::default();
        claim
            .when("#userId = :owner")
            .set("#passwordHash = :hash")
            .bind(":owner", s(&token.user_id))
            .bind(":hash", s(password_hash));
        let writes = vec![
            Write::Delete { key: token_key(&token.user_id, token.channel), expr: usable(&token.id, now) },
            Write::Update { key: user_key(&token.user_id), expr: reset },
            Write::Update { key: Target::Email.index_key(&token.target), expr: claim },
        ];
        Ok(refused(self.commit(writes, also).await?))
    }

    async fn key_usage(&self, now: Millis) -> StoreResult<std::collections::BTreeMap<String, u64>> {
        let mut usage = std::collections::BTreeMap::new();
        let mut count = |value: &str| *usage.entry(Keys::split(value).0.to_string()).or_insert(0) += 1;
        let mut start = None;
        loop {
            let out = self
                .client
                .scan()
                .table_name(&self.table)
                .set_exclusive_start_key(start)
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .send()
                .await;
            self.metrics.record(Capacity::Read, out.as_ref().ok().and_then(|o| o.consumed_capacity()));
            let out = out.map_err(sdk_error)?;
            for item in out.items.unwrap_or_default() {
                let sk = Reader(&item).s(SK)?;
                if sk == "PROFILE" {
                    user_from(&item)?.keyed_values().for_each(&mut count);
                } else if sk.starts_with(SESSION_PREFIX) {
                    for c in session_challenges(&item)?.iter().filter(|c| c.expire > now) {
                        c.code_hash.iter().for_each(|h| count(h));
                    }
                } else if sk == format!("TOKEN#{}", Channel::Phone.as_str()) {
                    let token = token_from(&item)?;
                    if token.expire > now {
                        count(&token.secret_hash);
                    }
                }
            }
            match out.last_evaluated_key.filter(|k| !k.is_empty()) {
                Some(next) => start = Some(next),
                None => return Ok(usage),
            }
        }
    }

    async fn sessions(&self, user_id: &str) -> StoreResult<Vec<Session>> {
        let items = self.query_prefix(&user_pk(user_id), SESSION_PREFIX, false).await?;
        items.iter().filter(|item| !is_tombstone(item)).map(session_from).collect()
    }

    async fn events(&self, user_id: &str, now: Millis) -> StoreResult<Vec<Event>> {
        // The log items and the sessions keeping their own events, in one Query.
        let items = self.query_prefix(&user_pk(user_id), "", true).await?;
        let mut events = Vec::new();
        for item in &items {
            let sk = Reader(item).s(SK)?;
            if sk.starts_with(LOG_PREFIX) {
                events.push(event_from(item)?);
            } else if sk.starts_with(SESSION_PREFIX) {
                events.extend(session_events(item)?);
            }
        }
        // Ids sort by time; TTL deletes lazily.
        events.retain(|e| e.expire > now);
        events.sort_by(|a, b| b.id.cmp(&a.id));
        Ok(events)
    }

    async fn count(&self, also: &Also) -> StoreResult<Decided> {
        Ok(refused(self.commit(vec![], also).await?))
    }

    async fn users(&self, ids: &[String]) -> StoreResult<Vec<User>> {
        let items = self.batch_get(ids.iter().map(|id| user_key(id)).collect()).await?;
        ids.iter().filter_map(|id| items.get(&key_id(&user_key(id)))).map(user_from).collect()
    }

    async fn put_api_key(&self, api_key: &ApiKey) -> StoreResult<bool> {
        let mut absent = Expr::default();
        absent.when("attribute_not_exists(#pk)");
        let put = Write::Put { item: api_key_item(api_key), expr: absent };
        Ok(decided(self.transact(&[put]).await)?.is_some())
    }

    async fn api_keys(&self) -> StoreResult<Vec<ApiKey>> {
        let items = self.query_prefix(API_KEYS_PK, API_KEY_PREFIX, false).await?;
        let mut keys = items.iter().map(api_key_from).collect::<StoreResult<Vec<_>>>()?;
        keys.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(keys)
    }

    async fn delete_api_key(&self, id: &str) -> StoreResult<bool> {
        let mut e = Expr::default();
        e.when("attribute_exists(#pk)");
        let delete = Write::Delete { key: api_key_key(id), expr: e };
        Ok(decided(self.transact(&[delete]).await)?.is_some())
    }
}

/// The (pk, sk) of a key.
fn key_id(key: &Item) -> (String, String) {
    let part = |name| match key.get(name) {
        Some(AttributeValue::S(v)) => v.clone(),
        _ => String::new(),
    };
    (part(PK), part(SK))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expressions_name_every_attribute_they_use_and_nothing_else() {
        let mut e = Expr::default();
        e.key("#code", "ab/cd+ef==")
            .when("attribute_exists(#recoveryCodes.#code)")
            .remove("#recoveryCodes.#code")
            .set("#name = :name")
            .bind(":name", s("x"));
        assert_eq!(e.update().as_deref(), Some("SET #name = :name REMOVE #recoveryCodes.#code"));
        let names = e.names().unwrap();
        assert_eq!(names.len(), 3);
        assert_eq!(names["#code"], "ab/cd+ef==");
        assert_eq!(names["#recoveryCodes"], "recoveryCodes");
        assert_eq!(names["#name"], "name");
        assert!(Expr::default().names().is_none() && Expr::default().values().is_none());
    }

    fn cancelled(codes: &[&str]) -> Failure {
        use aws_sdk_dynamodb::types::error::TransactionCanceledException;
        use aws_sdk_dynamodb::types::CancellationReason;
        let mut e = TransactionCanceledException::builder().message("cancelled");
        for code in codes {
            e = e.cancellation_reasons(CancellationReason::builder().code(*code).build());
        }
        TransactWriteItemsError::TransactionCanceledException(e.build()).classify()
    }

    // DynamoDB Local runs transactions one at a time and never reports conflicts, so the
    // conflict handling real DynamoDB needs is checked here.
    #[test]
    fn a_failed_condition_decides_a_cancelled_transaction_and_a_conflict_alone_is_retried() {
        assert!(matches!(
            cancelled(&["None", "ConditionalCheckFailed", "TransactionConflict"]),
            Failure::Rejected(r) if r.failed(1) && !r.failed(0) && !r.failed(2)
        ));
        assert!(matches!(cancelled(&["TransactionConflict", "None"]), Failure::Conflict));
        assert!(matches!(cancelled(&["ValidationError"]), Failure::Error(StoreError::Refused(_))));
        assert!(matches!(cancelled(&["ThrottlingError"]), Failure::Error(StoreError::Unavailable(_))));
    }

    #[tokio::test(start_paused = true)]
    async fn conflicts_are_tried_again_until_they_clear_or_persist() {
        let mut tries = 0;
        let cleared = retry_conflicts(|| {
            tries += 1;
            let outcome = if tries < 3 { Err(Failure::Conflict) } else { Ok(tries) };
            async move { outcome }
        })
        .await;
        assert!(matches!(cleared, Ok(3)));
        let persisted = retry_conflicts(|| async { Err::<(), _>(Failure::Conflict) }).await;
        assert!(matches!(persisted, Err(WriteError::Store(StoreError::Unavailable(_)))));
    }

    #[test]
    fn users_stored_with_one_totp_authenticator_read_as_the_collection() {
        let mut item = user_key("u");
        for (name, value) in [
            ("id", s("u")),
            ("createdAt", n(1)),
            ("updatedAt", n(1)),
            ("name", s("")),
            ("emailVerified", b(false)),
            ("phoneVerified", b(false)),
            ("passwordHash", s("h")),
            ("passwordUpdatedAt", n(1)),
            ("mfa", b(true)),
            ("totpSecret", s("sealed")),
            ("totpVerified", b(true)),
            ("totpCreatedAt", n(2)),
            ("totpLastStep", n(7)),
        ] {
            item.insert(name.to_string(), value);
        }
        let user = user_from(&item).unwrap();
        assert_eq!(user.totp().and_then(|a| a.totp_secret()), Some(("sealed", Some(7))));
        assert!(user.totp_verified());
        let Write::Update { expr, .. } = migrate_user_write(&item).unwrap() else { panic!("an update") };
        assert_eq!(expr.update().unwrap().matches("REMOVE").count(), 1);
        let Some(AttributeValue::M(map)) = expr.values().unwrap().remove(":authenticators") else { panic!("a map") };
        let moved =
            user_from(&[(AUTHENTICATORS.to_string(), AttributeValue::M(map))].into_iter().chain(item).collect())
                .unwrap();
        assert_eq!(moved.authenticators, user.authenticators, "the map holds what the attributes held");
    }

    #[test]
    fn ttl_never_ends_an_item_before_its_expiry() {
        assert_eq!(ttl_seconds(1_000), n(1));
        assert_eq!(ttl_seconds(1_001), n(2));
    }

    #[test]
    fn items_round_trip() {
        let user = User {
            id: "u".into(),
            created_at: 1,
            updated_at: 2,
            name: String::new(),
            email: Some("u@example.com".into()),
            email_verified: true,
            phone: None,
            phone_verified: false,
            password_hash: "h".into(),
            password_updated_at: 3,
            mfa: true,
            mfa_updated_at: Some(4),
            authenticators: vec![Authenticator {
                verified: true,
                last_used_at: Some(8),
                secret: AuthenticatorSecret::Totp { sealed: "s".into(), last_step: Some(9), spent_by: None },
                ..Authenticator::totp(String::new(), 5)
            }],
            recovery_codes: vec!["z".into(), "a".into(), "m".into()],
            sessions_valid_from: 6,
            added_by: [(Factor::Totp, "s1".to_string()), (Factor::Phone, "s2".to_string())].into(),
            prefs: [("theme".to_string(), serde_json::json!("dark"))].into_iter().collect(),
        };
        assert_eq!(user_from(&user_item(&user)).unwrap(), user);
        let session = Session {
            id: "s".into(),
            user_id: "u".into(),
            secret_hash: "h".into(),
            created_at: 10,
            updated_at: 10,
            expire: 20,
            factors: vec![Factor::Password, Factor::Email, Factor::Totp],
            mfa_updated_at: None,
            ip: "127.0.0.1".into(),
            user_agent: String::new(),
            confirmed_at: 10,
        };
        assert_eq!(session_from(&session_item(&session, &[])).unwrap(), session);
    }
}
