//! One conformance suite for every `Store`: each behaviour below is a function of a store,
//! run against the embedded store always (`embedded::<behaviour>`) and against DynamoDB
//! (`dynamodb::<behaviour>`) when `MFA_TEST_DYNAMODB_ENDPOINT` names one, e.g. DynamoDB
//! Local from `infra/dynamodb-local.sh`. With `MFA_REQUIRE_DYNAMODB=1` a missing or
//! unreachable endpoint fails the DynamoDB tests instead of skipping them.
//!
//! Stores are shared across tests (one DynamoDB table per run), so every test works on
//! fresh random ids. Times are real ones: DynamoDB Local's TTL really deletes items whose
//! `expiresAt` has passed, so "later" is passed as `now` rather than waited for.

use std::future::Future;
use std::sync::Arc;

use mfa_core::clock::{Clock, Millis, SystemClock, HOUR, MINUTE, SECOND};
use mfa_core::domain::activity::{Action, Event, Origin, LOG_TTL};
use mfa_core::domain::challenge::CHALLENGE_TTL;
use mfa_core::domain::crypto::{new_id, random_secret, sha256_hex};
use mfa_core::domain::limits::{Count, Limit, CHALLENGE_PER_SESSION, CODE_FAILURES_PER_USER, LOGIN_PER_EMAIL};
use mfa_core::domain::webauthn::{KeyUse, NewKey};
use mfa_core::domain::{
    Authenticator, AuthenticatorSecret, Challenge, Channel, Factor, Session, User, VerificationToken,
};
use mfa_core::store::dynamo::{create_table, DynamoStore};
use mfa_core::store::embedded::EmbeddedStore;
use mfa_core::store::{
    Also, ChallengeWin, Decided, Lookup, Refused, SessionUpgrade, Spend, Store, Updated, UserChange,
};
use tokio::sync::OnceCell;

mod common;

// ---------------------------------------------------------------------------------------
// The stores under test

/// A store and whatever must live as long as it.
struct Subject {
    store: Arc<dyn Store>,
    _dir: Option<tempfile::TempDir>,
}

fn embedded_store() -> Subject {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = EmbeddedStore::open(&dir.path().join("mfa.redb"), now()).expect("embedded store opens");
    Subject { store: Arc::new(store), _dir: Some(dir) }
}

/// The table of this test run, created by the first DynamoDB test that gets here.
static TABLE: OnceCell<String> = OnceCell::const_new();

/// The DynamoDB store, or `None` (skip) when no endpoint is configured and none is required.
async fn dynamodb_store() -> Option<Subject> {
    // Each test runs on its own runtime, so each gets its own client.
    let client = common::dynamodb_client().await?;
    let table = TABLE
        .get_or_init(|| async {
            let name = format!("mfa-conformance-{}-{}", std::process::id(), new_id());
            if let Err(e) = create_table(&client, &name).await {
                panic!("cannot create a DynamoDB table: {e}");
            }
            name
        })
        .await;
    Some(Subject { store: Arc::new(DynamoStore::new(client, table.clone())), _dir: None })
}

/// Deploying again must find the table as it is and leave it so.
#[tokio::test]
async fn dynamodb_creating_the_table_again_changes_nothing() {
    let Some(subject) = dynamodb_store().await else { return };
    let (client, table) = (common::dynamodb_client().await.unwrap(), TABLE.get().unwrap());
    let user = created(&subject.store, new_user(now())).await;
    create_table(&client, table).await.expect("creating an existing table succeeds");
    assert_eq!(reload(&subject.store, &user).await, user);
}

/// Generates `embedded::<case>` and `dynamodb::<case>` for every case.
macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let subject = super::embedded_store();
                    super::$case(subject.store.clone()).await;
                }
            )*
        }
        mod dynamodb {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let Some(subject) = super::dynamodb_store().await else { return };
                    super::$case(subject.store.clone()).await;
                }
            )*
        }
    };
}

conformance!(
    a_created_user_is_found_by_id_and_email,
    a_taken_id_or_email_cannot_be_created_again,
    a_created_users_phone_is_claimed,
    changing_email_moves_the_index_and_unverifies_it,
    an_email_or_phone_of_another_user_is_taken,
    changing_phone_frees_the_old_number,
    an_address_change_applies_only_to_the_address_it_was_read_with,
    changes_to_an_unknown_user_are_not_found,
    mfa_can_be_switched_on_and_off,
    a_session_is_found_by_its_secret_until_it_expires,
    deleting_one_session_leaves_the_others,
    ending_every_session_ends_the_users_sessions_only,
    a_session_ended_meanwhile_can_neither_act_nor_undo_the_end,
    a_new_challenge_replaces_the_previous_one_of_its_factor,
    challenge_attempts_count_down_and_stop_at_zero,
    an_expired_challenge_can_be_neither_attempted_nor_completed,
    completing_a_challenge_twice_fails,
    completing_needs_the_same_challenge_and_a_live_session,
    a_totp_step_is_accepted_once,
    a_recovery_code_is_used_once,
    token_attempts_count_down_and_stop_at_zero,
    redeeming_a_token_verifies_its_target_once,
    an_expired_token_cannot_be_redeemed,
    a_token_for_a_changed_address_verifies_nothing,
    a_withdrawn_challenge_or_token_is_gone_unless_replaced,
    counts_hold_until_their_limit_and_reset,
    the_previous_window_carries_into_the_next_and_a_reset_clears_both,
    a_count_at_its_limit_refuses_the_whole_write,
    counts_for_a_session_a_user_or_an_email_hold_under_parallel_requests,
    an_authenticator_is_replaceable_only_until_verified,
    verifying_an_authenticator_refuses_a_used_step,
    recovery_codes_are_created_once_and_replaced_only_when_present,
    a_session_upgrade_applies_with_its_change,
    a_session_upgrade_for_a_dead_session_applies_nothing,
    a_factor_records_the_session_that_added_it_and_proves_nothing_to_that_session,
    a_change_that_ends_other_sessions_keeps_only_the_current_one,
    twenty_parallel_completions_of_one_challenge_let_one_win,
    twenty_parallel_spends_of_one_recovery_code_let_one_win,
    twenty_parallel_uses_of_one_totp_step_let_one_win,
    a_key_use_moves_its_counter_forward_only,
    a_key_registration_keeps_its_ceremony_apart_and_is_spent_once,
    removing_keys_removes_exactly_those,
    an_event_is_stored_only_with_its_change,
    a_sessions_events_outlive_it_however_many,
    events_are_read_newest_first_until_they_expire,
    a_users_sessions_are_listed_and_only_theirs,
    an_api_key_is_stored_once_read_by_id_listed_and_revoked,
    users_are_found_by_their_emails_and_read_together,
);

// ---------------------------------------------------------------------------------------
// Fixtures

fn now() -> Millis {
    SystemClock.now()
}

fn new_user(now: Millis) -> User {
    let id = new_id();
    User {
        email: Some(format!("{id}@example.com")),
        id,
        created_at: now,
        updated_at: now,
        name: "Ada Lovelace".into(),
        email_verified: false,
        phone: None,
        phone_verified: false,
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        password_updated_at: now,
        mfa: false,
        mfa_updated_at: None,
        authenticators: vec![],
        recovery_codes: vec![],
        sessions_valid_from: 0,
        added_by: Default::default(),
        prefs: Default::default(),
    }
}

async fn created(store: &Arc<dyn Store>, user: User) -> User {
    assert!(store.create_user(&user).await.unwrap(), "user {} is created", user.id);
    user
}

async fn reload(store: &Arc<dyn Store>, user: &User) -> User {
    store.user(&user.id).await.unwrap().expect("user exists")
}

fn new_phone() -> String {
    format!("+1{}", 100_000_000 + rand::random_range(0..900_000_000u64))
}

fn new_session(user: &User, now: Millis) -> Session {
    Session {
        id: new_id(),
        user_id: user.id.clone(),
        secret_hash: sha256_hex(&random_secret()),
        created_at: now,
        updated_at: now,
        expire: now + HOUR,
        factors: vec![Factor::Password],
        mfa_updated_at: None,
        ip: "127.0.0.1".into(),
        user_agent: "conformance".into(),
        confirmed_at: now,
    }
}

async fn signed_in(store: &Arc<dyn Store>, user: &User, now: Millis) -> Session {
    let session = new_session(user, now);
    store.create_session(&session, &Also::NONE).await.unwrap().unwrap();
    session
}

/// A challenge of `session`, stored.
async fn challenged(store: &Arc<dyn Store>, session: &Session, factor: Factor, now: Millis) -> Challenge {
    let mut challenge = Challenge::new(&session.user_id, &session.id, factor, now, CHALLENGE_TTL);
    if matches!(factor, Factor::Email | Factor::Phone) {
        challenge.code_hash = Some(format!("code-hash-{}", new_id()));
    }
    store.put_challenge(&challenge, &Also::NONE).await.unwrap().unwrap();
    challenge
}

fn win(challenge: &Challenge, session: &Session, spend: Spend, now: Millis) -> ChallengeWin {
    ChallengeWin {
        user_id: challenge.user_id.clone(),
        challenge_id: challenge.id.clone(),
        session_id: session.id.clone(),
        confirmed_at: session.confirmed_at,
        factor: challenge.factor,
        spend,
        now,
        recent: true,
        reseal: None,
    }
}

fn authenticator(verified: bool, last_step: Option<u64>, now: Millis) -> Authenticator {
    let secret = AuthenticatorSecret::Totp { sealed: format!("sealed-{}", new_id()), last_step, spent_by: None };
    Authenticator { verified, secret, ..Authenticator::totp(String::new(), now) }
}

fn sealed(a: &Authenticator) -> String {
    a.totp_secret().map(|(sealed, _)| sealed.to_string()).unwrap()
}

/// The TOTP authenticator's (verified, newest used step), if the user has one.
fn totp_state(user: &User) -> Option<(bool, Option<u64>)> {
    user.totp().map(|a| (a.verified, a.totp_secret().and_then(|(_, step)| step)))
}

fn token(user: &User, channel: Channel, target: &str, now: Millis) -> VerificationToken {
    VerificationToken {
        id: new_id(),
        user_id: user.id.clone(),
        channel,
        target: target.to_string(),
        secret_hash: sha256_hex(&random_secret()),
        attempts_left: 5,
        created_at: now,
        expire: now + 15 * MINUTE,
    }
}

/// Recovery code hashes with characters that are awkward in expressions and keys.
fn recovery_hashes(count: usize) -> Vec<String> {
    (0..count).map(|i| format!("rc{i}+/={}", new_id())).collect()
}

/// The user after a change that must have applied.
async fn done(store: &Arc<dyn Store>, user: &User, updated: Updated) -> User {
    assert_eq!(updated, Updated::Done, "the change applies");
    reload(store, user).await
}

/// The user an email signs in as, through its claim (which carries the password hash).
async fn user_by_email(store: &Arc<dyn Store>, email: &str) -> Option<User> {
    let lookup = Lookup { login: Some(email.to_string()), ..Lookup::default() };
    let login = store.load(&lookup, now()).await.unwrap().login?;
    let user = store.user(&login.user_id).await.unwrap().expect("a claimed email's user exists");
    assert_eq!(login.password_hash, user.password_hash, "the claim carries the password hash");
    Some(user)
}

/// The live session `id` of `user_id`, if its secret hashes to `hash`.
async fn session_at(store: &Arc<dyn Store>, user_id: &str, id: &str, hash: &str, now: Millis) -> Option<Session> {
    let lookup = Lookup { session: Some((user_id.to_string(), id.to_string(), hash.to_string())), ..Lookup::default() };
    store.load(&lookup, now).await.unwrap().session
}

async fn session_of(store: &Arc<dyn Store>, session: &Session, now: Millis) -> Option<Session> {
    session_at(store, &session.user_id, &session.id, &session.secret_hash, now).await
}

// ---------------------------------------------------------------------------------------
// Users

async fn a_created_user_is_found_by_id_and_email(store: Arc<dyn Store>) {
    let t = now();
    let user = created(&store, new_user(t)).await;
    assert_eq!(store.user(&user.id).await.unwrap(), Some(user.clone()));
    let email = user.email.clone().unwrap();
    assert_eq!(user_by_email(&store, &email).await, Some(user));
    assert_eq!(store.user(&new_id()).await.unwrap(), None);
    assert_eq!(user_by_email(&store, &format!("{}@example.com", new_id())).await, None);
}

async fn a_taken_id_or_email_cannot_be_created_again(store: Arc<dyn Store>) {
    let t = now();
    let first = created(&store, new_user(t)).await;

    let same_id = User { id: first.id.clone(), ..new_user(t) };
    assert!(!store.create_user(&same_id).await.unwrap(), "the id is taken");
    let unclaimed = same_id.email.clone().unwrap();
    assert_eq!(user_by_email(&store, &unclaimed).await, None, "a refused user claims no email");

    let same_email = User { email: first.email.clone(), ..new_user(t) };
    assert!(!store.create_user(&same_email).await.unwrap(), "the email is taken");
    assert_eq!(store.user(&same_email.id).await.unwrap(), None, "a refused user is not stored");
    assert_eq!(user_by_email(&store, first.email.as_deref().unwrap()).await, Some(first));
}

async fn a_created_users_phone_is_claimed(store: Arc<dyn Store>) {
    let t = now();
    let phone = new_phone();
    let first = created(&store, User { phone: Some(phone.clone()), ..new_user(t) }).await;
    assert_eq!(reload(&store, &first).await.phone, Some(phone.clone()));
    let other = created(&store, new_user(t)).await;
    assert_eq!(
        store
            .update_user(&reload(&store, &other).await, UserChange::Phone(phone.clone()), None, t, &Also::NONE)
            .await
            .unwrap(),
        Updated::Taken
    );
    let twin = User { phone: Some(phone), ..new_user(t) };
    assert!(!store.create_user(&twin).await.unwrap(), "the phone is taken");
}

async fn changing_email_moves_the_index_and_unverifies_it(store: Arc<dyn Store>) {
    let t = now();
    let user = created(&store, User { email_verified: true, ..new_user(t) }).await;
    let old = user.email.clone().unwrap();
    let new = format!("{}@example.org", new_id());

    let changed = done(
        &store,
        &user,
        store
            .update_user(&reload(&store, &user).await, UserChange::Email(new.clone()), None, t + 5, &Also::NONE)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(changed.email.as_deref(), Some(new.as_str()));
    assert!(!changed.email_verified);
    assert_eq!(changed.updated_at, t + 5);
    assert_eq!(reload(&store, &user).await, changed);
    assert_eq!(user_by_email(&store, &new).await, Some(changed));
    assert_eq!(user_by_email(&store, &old).await, None, "the old email is released");

    let next = created(&store, User { email: Some(old.clone()), ..new_user(t) }).await;
    assert_eq!(user_by_email(&store, &old).await, Some(next));
}

async fn an_email_or_phone_of_another_user_is_taken(store: Arc<dyn Store>) {
    let t = now();
    let a = created(&store, User { email_verified: true, ..new_user(t) }).await;
    let b = created(&store, new_user(t)).await;

    let b_email = b.email.clone().unwrap();
    assert_eq!(
        store
            .update_user(&reload(&store, &a).await, UserChange::Email(b_email.clone()), None, t, &Also::NONE)
            .await
            .unwrap(),
        Updated::Taken
    );
    assert_eq!(reload(&store, &a).await, a, "a refused change changes nothing");
    assert_eq!(user_by_email(&store, &b_email).await, Some(b.clone()));

    let phone = new_phone();
    done(
        &store,
        &b,
        store
            .update_user(&reload(&store, &b).await, UserChange::Phone(phone.clone()), None, t, &Also::NONE)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        store.update_user(&reload(&store, &a).await, UserChange::Phone(phone), None, t, &Also::NONE).await.unwrap(),
        Updated::Taken
    );
    assert_eq!(reload(&store, &a).await.phone, None);

    // Setting one's own address again is no conflict; it asks for verification again.
    let own = a.email.clone().unwrap();
    let again = done(
        &store,
        &a,
        store
            .update_user(&reload(&store, &a).await, UserChange::Email(own.clone()), None, t + 1, &Also::NONE)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(again.email, Some(own.clone()));
    assert!(!again.email_verified);
    assert_eq!(user_by_email(&store, &own).await, Some(again));
}

async fn an_address_change_applies_only_to_the_address_it_was_read_with(store: Arc<dyn Store>) {
    let t = now();
    let user = created(&store, new_user(t)).await;
    let first = format!("{}@example.com", new_id().to_lowercase());
    let second = format!("{}@example.com", new_id().to_lowercase());
    assert_eq!(
        store.update_user(&user, UserChange::Email(first.clone()), None, t, &Also::NONE).await.unwrap(),
        Updated::Done
    );
    // A second change from the same read: the address changed meanwhile.
    let late = store.update_user(&user, UserChange::Email(second.clone()), None, t, &Also::NONE).await.unwrap();
    assert_eq!(late, Updated::Rejected);
    assert_eq!(reload(&store, &user).await.email, Some(first));
    assert!(user_by_email(&store, &second).await.is_none(), "the later address is not claimed");

    let phone = new_phone();
    assert_eq!(
        store.update_user(&user, UserChange::Phone(phone.clone()), None, t, &Also::NONE).await.unwrap(),
        Updated::Done
    );
    let late = store.update_user(&user, UserChange::Phone(new_phone()), None, t, &Also::NONE).await.unwrap();
    assert_eq!(late, Updated::Rejected);
    assert_eq!(reload(&store, &user).await.phone, Some(phone));
}

async fn changing_phone_frees_the_old_number(store: Arc<dyn Store>) {
    let t = now();
    let a = created(&store, new_user(t)).await;
    let b = created(&store, new_user(t)).await;
    let (first, second) = (new_phone(), new_phone());

    let changed = done(
        &store,
        &a,
        store
            .update_user(&reload(&store, &a).await, UserChange::Phone(first.clone()), None, t, &Also::NONE)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(changed.phone, Some(first.clone()));
    assert!(!changed.phone_verified);
    done(
        &store,
        &a,
        store
            .update_user(&reload(&store, &a).await, UserChange::Phone(second.clone()), None, t, &Also::NONE)
            .await
            .unwrap(),
    )
    .await;
    let taken_over = done(
        &store,
        &b,
        store
            .update_user(&reload(&store, &b).await, UserChange::Phone(first.clone()), None, t, &Also::NONE)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(taken_over.phone, Some(first.clone()));
    assert_eq!(
        store.update_user(&reload(&store, &a).await, UserChange::Phone(first), None, t, &Also::NONE).await.unwrap(),
        Updated::Taken
    );
    assert_eq!(reload(&store, &a).await.phone, Some(second));
}

async fn changes_to_an_unknown_user_are_not_found(store: Arc<dyn Store>) {
    let t = now();
    let nobody = new_id();
    let changes = [
        UserChange::Mfa(true),
        UserChange::Email(format!("{}@example.com", new_id())),
        UserChange::Phone(new_phone()),
        UserChange::PutAuthenticator(authenticator(false, None, t)),
        UserChange::CreateRecoveryCodes(recovery_hashes(2)),
    ];
    for change in changes {
        assert_eq!(
            store
                .update_user(&User { id: nobody.clone(), ..new_user(t) }, change.clone(), None, t, &Also::NONE)
                .await
                .unwrap(),
            Updated::NotFound,
            "{change:?}"
        );
    }
    assert_eq!(store.user(&nobody).await.unwrap(), None, "no change creates a user");
}

async fn mfa_can_be_switched_on_and_off(store: Arc<dyn Store>) {
    let t = now();
    let user = created(&store, new_user(t)).await;
    let on = done(
        &store,
        &user,
        store.update_user(&reload(&store, &user).await, UserChange::Mfa(true), None, t + 1, &Also::NONE).await.unwrap(),
    )
    .await;
    assert!(on.mfa);
    assert_eq!(on.updated_at, t + 1);
    assert_eq!(User { mfa: true, updated_at: t + 1, ..user.clone() }, on, "nothing else changes");
    let off = done(
        &store,
        &user,
        store
            .update_user(&reload(&store, &user).await, UserChange::Mfa(false), None, t + 2, &Also::NONE)
            .await
            .unwrap(),
    )
    .await;
    assert!(!off.mfa);
    assert_eq!(reload(&store, &user).await, off);
}

// ---------------------------------------------------------------------------------------
// Sessions

async fn a_session_is_found_by_its_secret_until_it_expires(store: Arc<dyn Store>) {
    let t = now();
    let user = created(&store, new_user(t)).await;
    let session = signed_in(&store, &user, t).await;

    assert_eq!(session_of(&store, &session, t).await, Some(session.clone()));
    assert_eq!(session_of(&store, &session, session.expire - 1).await, Some(session.clone()));
    assert_eq!(session_of(&store, &session, session.expire).await, None, "expiry is exclusive");
    let wrong_secret = session_at(&store, &user.id, &session.id, &sha256_hex(&random_secret()), t).await;
    assert_eq!(wrong_secret, None, "its id with another secret");
    let other_id = session_at(&store, &user.id, &new_id(), &session.secret_hash, t).await;
    assert_eq!(other_id, None, "its secret with another id");
    let other_user = session_at(&store, &new_id(), &session.id, &session.secret_hash, t).await;
    assert_eq!(other_user, None, "another user's id");
}

async fn deleting_one_session_leaves_the_others(store: Arc<dyn Store>) {
    let t = now();
    let user = created(&store, new_user(t)).await;
    let other = created(&store, new_user(t)).await;
    let (one, two) = (signed_in(&store, &user, t).await, signed_in(&store, &user, t).await);

    assert!(!store.delete_session(&other.id, &two.id, &Also::NONE).await.unwrap(), "not another user's session");
    assert!(store.delete_session(&user.id, &one.id, &Also::NONE).await.unwrap());
    assert!(!store.delete_session(&user.id, &one.id, &Also::NONE).await.unwrap(), "already gone");
    assert_eq!(session_of(&store, &one, t).await, None);
    assert_eq!(session_of(&store, &two, t).await, Some(two));
}

async fn ending_every_session_ends_the_users_sessions_only(store: Arc<dyn Store>) {
    let t = now();
    let user = created(&store, new_user(t)).await;
    let other = created(&store, new_user(t)).await;
    let mine = [signed_in(&store, &user, t).await, signed_in(&store, &user, t).await];
    let theirs = signed_in(&store, &other, t).await;

    let ended = done(
        &store,
        &user,
        store.update_user(&user, UserChange::EndSessions(t + 1), None, t, &Also::NONE).await.unwrap(),
    )
    .await;
    assert_eq!(ended.sessions_valid_from, t + 1);
    for session in &mine {
        assert!(!session.survives(&ended), "every session of the user is over");
    }
    assert!(theirs.survives(&reload(&store, &other).await), "other users keep theirs");
    let later = signed_in(&store, &user, t + 2).await;
    assert!(later.survives(&ended), "a later sign-in is not");
}

async fn a_session_ended_meanwhile_can_neither_act_nor_undo_the_end(store: Arc<dyn Store>) {
    let t = now();
    let user = created(&store, User { recovery_codes: recovery_hashes(8), ..new_user(t) }).await;
    let stolen = signed_in(&store, &user, t).await;
    let challenge = challenged(&store, &stolen, Factor::Email, t).await;
    let cut = t + 10 * SECOND;
    let ended = store.update_user(&user, UserChange::EndSessions(cut), None, t, &Also::NONE).await.unwrap();
    assert_eq!(ended, Updated::Done);

    // Requests the stolen session started before the end land after it.
    let ending = SessionUpgrade { end_other_sessions: true, ..SessionUpgrade::of(&stolen) };
    let replace = UserChange::ReplaceRecoveryCodes(recovery_hashes(8));
    let late = store.update_user(&user, replace, Some(ending), cut + 1, &Also::NONE).await.unwrap();
    assert_eq!(late, Updated::SessionEnded, "an ended session cannot end the others");
    let attempt = win(&challenge, &stolen, Spend::Nothing, cut + 1);
    assert_eq!(store.finish_challenge(&attempt, &Also::NONE).await.unwrap(), REJECTED, "nor complete a challenge");
    let earlier =
        store.update_user(&user, UserChange::EndSessions(t + SECOND), None, cut + 1, &Also::NONE).await.unwrap();
    assert_eq!(earlier, Updated::Rejected, "an older end does not move the cut back");

    let after = reload(&store, &user).await;
    assert_eq!(after.sessions_valid_from, cut, "the end holds");
    assert_eq!(after.recovery_codes, user.recovery_codes, "nothing changed");
    assert!(!stolen.survives(&after));
    let fresh = signed_in(&store, &user, cut + 2).await;
    let ending = SessionUpgrade { end_other_sessions: true, ..SessionUpgrade::of(&fresh) };
    let replace = UserChange::ReplaceRecoveryCodes(recovery_hashes(8));
    assert_eq!(store.update_user(&after, replace, Some(ending), cut + 3, &Also::NONE).await.unwrap(), Updated::Done);
}

// ---------------------------------------------------------------------------------------
// Challenges

const REJECTED: Decided = Err(Refused::Rejected);

fn totp_removal() -> UserChange {
    UserChange::RemoveAuthenticators { ids: vec![Authenticator::TOTP_ID.into()], factor: Factor::Totp, last: true }
}

/// The session's challenge with this id, as stored, if it is there and unexpired.
async fn challenge_of(store: &Arc<dyn Store>, session: &Session, id: &str, now: Millis) -> Option<Challenge> {
    let slot = Challenge::slot_of(id)?;
    let lookup = Lookup {
        session: Some((session.user_id.clone(), session.id.clone(), session.secret_hash.clone())),
        challenge: Some(slot),
        ..Lookup::default()
    };
    store.load(&lookup, now).await.unwrap().challenge.filter(|c| c.id == id)
}

async fn miss(store: &Arc<dyn Store>, c: &Challenge, now: Millis) -> Decided {
    store.miss_challenge(c, now, &Also::NONE).await.unwrap()
}

async fn a_new_challenge_replaces_the_previous_one_of_its_factor(store: Arc<dyn Store>) {
    let t = now();
    let user = created(&store, new_user(t)).await;
    let session = signed_in(&store, &user, t).await;
    let first = challenged(&store, &session, Factor::Email, t).await;
    let second = challenged(&store, &session, Factor::Email, t).await;
    let totp = challenged(&store, &session, Factor::Totp, t).await;

    assert_eq!(challenge_of(&store, &session, &first.id, t).await, None, "replaced");
    assert_eq!(miss(&store, &first, t).await, REJECTED, "a replaced challenge takes no attempt");
    assert_eq!(challenge_of(&store, &session, &second.id, t).await, Some(second.clone()));
    assert_eq!(challenge_of(&store, &session, &totp.id, t).await, Some(totp.clone()), "other factors stay");
    let other = signed_in(&store, &user, t).await;
    assert_eq!(challenge_of(&store, &other, &totp.id, t).await, None, "not another session's");
    let foreign = Challenge { session_id: other.id.clone(), ..totp.clone() };
    assert_eq!(miss(&store, &foreign, t).await, REJECTED, "nor spent through another session");
    let stranger = created(&store, new_user(t)).await;
    let theirs = signed_in(&store, &stranger, t).await;
    assert_eq!(challenge_of(&store, &theirs, &totp.id, t).await, None, "not another user's");
    let foreign = Challenge { user_id: stranger.id.clone(), session_id: theirs.id.clone(), ..totp.clone() };
    assert_eq!(miss(&store, &foreign, t).await, REJECTED);
    assert_eq!(challenge_of(&store, &session, "x-not-an-id", t).await, None);
    assert!(store.delete_session(&user.id, &session.id, &Also::NONE).await.unwrap());
    let late = Challenge::new(&user.id, &session.id, Factor::Email, t, CHALLENGE_TTL);
    assert_eq!(store.put_challenge(&late, &Also::NONE).await.unwrap(), REJECTED, "an ended session takes none");
}

async fn challenge_attempts_count_down_and_stop_at_zero(store: Arc<dyn Store>) {
    let t = now();
    let user = created(&store, new_user(t)).await;
    let session = signed_in(&store, &user, t).await;
    let challenge = challenged(&store, &session, Factor::Phone, t).await;

    for left in (0..challenge.attempts_left).rev() {
        assert_eq!(miss(&store, &challenge, t).await, Ok(()));
        assert_eq!(challenge_of(&store, &session, &challenge.id, t).await.map(|c| c.attempts_left), Some(left));
    }
    assert_eq!(miss(&store, &challenge, t).await, REJECTED, "no attempts left");
    // The fifth wrong code burns it: not even the right one completes it now.
    let done = store.finish_challenge(&win(&challenge, &session, Spend::Nothing, t), &Also::NONE).await.unwrap();
    assert_eq!(done, REJECTED);
}

async fn an_expired_challenge_can_be_neither_attempted_nor_completed(store: Arc<dyn Store>) {
    let t = now();
    let user = created(&store, new_user(t)).await;
    let session = signed_in(&store, &user, t).await;
    let challenge = challenged(&store, &session, Factor::Email, t).await;
    let end = challenge.expire;

    assert_eq!(challenge_of(&store, &session, &challenge.id, end).await, None);
    assert_eq!(miss(&store, &challenge, end).await, REJECTED);
    assert_eq!(miss(&store, &challenge, end - 1).await, Ok(()));
    let late = store.finish_challenge(&win(&challenge, &session, Spend::Nothing, end), &Also::NONE).await.unwrap();
    assert_eq!(late, REJECTED);
    let in_time =
        store.finish_challenge(&win(&challenge, &session, Spend::Nothing, end - 1), &Also::NONE).await.unwrap();
    assert_eq!(in_time, Ok(()));
}

async fn completing_a_challenge_twice_fails(store: Arc<dyn Store>) {
    let t = now();
    let user = created(&store, new_user(t)).await;
    let session = signed_in(&store, &user, t).await;
    let challenge = challenged(&store, &session, Factor::Email, t).await;
    let at = t + SECOND;

    let attempt = win(&challenge, &session, Spend::Nothing, at);
    assert_eq!(store.finish_challenge(&attempt, &Also::NONE).await.unwrap(), Ok(()));
    let expected = Session {
        factors: vec![Factor::Password, Factor::Email],
        mfa_updated_at: Some(at),
        updated_at: at,
        ..session.clone()
    };
    assert_eq!(session_of(&store, &session, at).await, Some(expected.clone()));
    let mut in_memory = session.clone();
    attempt.upgrade().apply_to_session(&mut in_memory, at);
    assert_eq!(in_memory, expected, "callers can tell the result without reading it back");
    assert_eq!(reload(&store, &user).await.mfa_updated_at, None, "the proof is the session's");

    assert_eq!(store.finish_challenge(&attempt, &Also::NONE).await.unwrap(), REJECTED);
    assert_eq!(challenge_of(&store, &session, &challenge.id, at).await, None, "it is gone");
}

async fn completing_needs_the_same_challenge_and_a_live_session(store: Arc<dyn Store>) {
    let t = now();
    let user = created(&store, new_user(t)).await;
    let session = Session { expire: t + MINUTE, ..new_session(&user, t) };
    store.create_session(&session, &Also::NONE).await.unwrap().unwrap();
    let challenge = challenged(&store, &session, Factor::Email, t).await;

    let other_id = ChallengeWin { challenge_id: new_id(), ..win(&challenge, &session, Spend::Nothing, t) };
    assert_eq!(store.finish_challenge(&other_id, &Also::NONE).await.unwrap(), REJECTED, "another challenge id");
    let unknown = ChallengeWin { session_id: new_id(), ..win(&challenge, &session, Spend::Nothing, t) };
    assert_eq!(store.finish_challenge(&unknown, &Also::NONE).await.unwrap(), REJECTED, "an unknown session");
    let dead = win(&challenge, &session, Spend::Nothing, session.expire);
    assert_eq!(store.finish_challenge(&dead, &Also::NONE).await.unwrap(), REJECTED, "an expired session");

    // None of the failures used anything up.
    assert_eq!(reload(&store, &user).await.mfa_updated_at, None);
    assert_eq!(
        store.finish_challenge(&win(&challenge, &session, Spend::Nothing, t), &Also::NONE).await.unwrap(),
        Ok(())
    );
    let factors = session_of(&store, &session, t).await.map(|s| s.factors);
    assert_eq!(factors, Some(vec![Factor::Password, Factor::Email]));
}

async fn a_totp_step_is_accepted_once(store: Arc<dyn Store>) {
    let t = now();
    let user = created(&store, User { authenticators: vec![authenticator(true, Some(100), t)], ..new_user(t) }).await;
    let session = signed_in(&store, &user, t).await;
    let challenge = challenged(&store, &session, Factor::Totp, t).await;

    for used in [100, 99] {
        let again = win(&challenge, &session, Spend::TotpStep(used), t);
        assert_eq!(store.finish_challenge(&again, &Also::NONE).await.unwrap(), REJECTED, "step {used} is not newer");
    }
    let fresh = win(&challenge, &session, Spend::TotpStep(101), t);
    assert_eq!(store.finish_challenge(&fresh, &Also::NONE).await.unwrap(), Ok(()));
    let factors = session_of(&store, &session, t).await.map(|s| s.factors);
    assert_eq!(factors, Some(vec![Factor::Password, Factor::Totp]));
    assert_eq!(reload(&store, &user).await.totp().and_then(|a| a.totp_secret()).and_then(|(_, step)| step), Some(101));

    let next = challenged(&store, &session, Factor::Totp, t).await;
    assert_eq!(
        store.finish_challenge(&win(&next, &session, Spend::TotpStep(101), t), &Also::NONE).await.unwrap(),
        REJECTED
    );
    assert_eq!(
        store.finish_challenge(&win(&next, &session, Spend::TotpStep(102), t), &Also::NONE).await.unwrap(),
        Ok(())
    );

    let unverified = created(&store, User { authenticators: vec![authenticator(false, None, t)], ..new_user(t) }).await;
    let session = signed_in(&store, &unverified, t).await;
    let challenge = challenged(&store, &session, Factor::Totp, t).await;
    let spend = win(&challenge, &session, Spend::TotpStep(5), t);
    assert_eq!(
        store.finish_challenge(&spend, &Also::NONE).await.unwrap(),
        REJECTED,
        "an unverified authenticator proves nothing"
    );
}

async fn a_recovery_code_is_used_once(store: Arc<dyn Store>) {
    let t = now();
    let codes = recovery_hashes(3);
    let user = created(&store, User { recovery_codes: codes.clone(), ..new_user(t) }).await;
    let session = signed_in(&store, &user, t).await;

    let first = challenged(&store, &session, Factor::RecoveryCode, t).await;
    let used = win(&first, &session, Spend::RecoveryCode(codes[1].clone()), t);
    assert_eq!(store.finish_challenge(&used, &Also::NONE).await.unwrap(), Ok(()));
    let factors = session_of(&store, &session, t).await.map(|s| s.factors);
    assert_eq!(factors, Some(vec![Factor::Password, Factor::RecoveryCode]));
    assert_eq!(reload(&store, &user).await.recovery_codes, vec![codes[0].clone(), codes[2].clone()]);

    let second = challenged(&store, &session, Factor::RecoveryCode, t).await;
    for spent in [codes[1].clone(), "never-issued".to_string()] {
        let again = win(&second, &session, Spend::RecoveryCode(spent), t);
        assert_eq!(store.finish_challenge(&again, &Also::NONE).await.unwrap(), REJECTED);
    }
    let other = win(&second, &session, Spend::RecoveryCode(codes[2].clone()), t);
    assert_eq!(store.finish_challenge(&other, &Also::NONE).await.unwrap(), Ok(()));
    assert_eq!(reload(&store, &user).await.recovery_codes, vec![codes[0].clone()]);
}

// ---------------------------------------------------------------------------------------
// Verification tokens

async fn token_of(store: &Arc<dyn Store>, user: &User, channel: Channel, now: Millis) -> Option<VerificationToken> {
    let lookup = Lookup { token: Some((user.id.clone(), channel)), ..Lookup::default() };
    store.load(&lookup, now).await.unwrap().token
}

async fn token_attempts_count_down_and_stop_at_zero(store: Arc<dyn Store>) {
    let t = now();
    let user = created(&store, new_user(t)).await;
    let first = token(&user, Channel::Phone, &new_phone(), t);
    store.put_token(&first, &Also::NONE).await.unwrap().unwrap();
    assert_eq!(token_of(&store, &user, Channel::Phone, t).await, Some(first.clone()));
    assert_eq!(token_of(&store, &user, Channel::Email, t).await, None, "no email token");

    for left in (0..first.attempts_left).rev() {
        assert_eq!(store.miss_token(&user.id, Channel::Phone, &first.id, t, &Also::NONE).await.unwrap(), Ok(()));
        let stored = token_of(&store, &user, Channel::Phone, t).await;
        assert_eq!(stored, Some(VerificationToken { attempts_left: left, ..first.clone() }));
    }
    assert_eq!(store.miss_token(&user.id, Channel::Phone, &first.id, t, &Also::NONE).await.unwrap(), REJECTED);
    assert_eq!(store.redeem_token(&first, t, &Also::NONE).await.unwrap(), REJECTED, "a burned token verifies nothing");

    let second = token(&user, Channel::Phone, &new_phone(), t);
    store.put_token(&second, &Also::NONE).await.unwrap().unwrap();
    assert_eq!(token_of(&store, &user, Channel::Phone, t).await.map(|x| x.id), Some(second.id.clone()), "replaced");
    let stale = store.miss_token(&user.id, Channel::Phone, &first.id, t, &Also::NONE).await.unwrap();
    assert_eq!(stale, REJECTED, "a replaced token takes no attempt");
    assert_eq!(
        store.miss_token(&user.id, Channel::Phone, &second.id, second.expire, &Also::NONE).await.unwrap(),
        REJECTED
    );
    assert_eq!(token_of(&store, &user, Channel::Phone, second.expire).await, None, "expired");
}

async fn redeeming_a_token_verifies_its_target_once(store: Arc<dyn Store>) {
    let t = now();
    let user = created(&store, new_user(t)).await;
    let email = token(&user, Channel::Email, user.email.as_deref().unwrap(), t);
    store.put_token(&email, &Also::NONE).await.unwrap().unwrap();

    let replaced = token(&user, Channel::Email, user.email.as_deref().unwrap(), t);
    assert_eq!(store.redeem_token(&replaced, t, &Also::NONE).await.unwrap(), REJECTED, "not the stored token");
    assert!(!reload(&store, &user).await.email_verified);
    assert_eq!(store.redeem_token(&email, t + 1, &Also::NONE).await.unwrap(), Ok(()));
    let verified = reload(&store, &user).await;
    assert!(verified.email_verified);
    assert_eq!(verified.updated_at, t + 1);
    assert_eq!(store.redeem_token(&email, t + 1, &Also::NONE).await.unwrap(), REJECTED, "used up");

    let number = new_phone();
    done(
        &store,
        &user,
        store
            .update_user(&reload(&store, &user).await, UserChange::Phone(number.clone()), None, t, &Also::NONE)
            .await
            .unwrap(),
    )
    .await;
    let phone = token(&user, Channel::Phone, &number, t);
    store.put_token(&phone, &Also::NONE).await.unwrap().unwrap();
    assert_eq!(store.redeem_token(&phone, t, &Also::NONE).await.unwrap(), Ok(()));
    let both = reload(&store, &user).await;
    assert!(both.phone_verified && both.email_verified);
}

async fn an_expired_token_cannot_be_redeemed(store: Arc<dyn Store>) {
    let t = now();
    let user = created(&store, new_user(t)).await;
    let email = token(&user, Channel::Email, user.email.as_deref().unwrap(), t);
    store.put_token(&email, &Also::NONE).await.unwrap().unwrap();

    assert_eq!(store.redeem_token(&email, email.expire, &Also::NONE).await.unwrap(), REJECTED);
    assert!(!reload(&store, &user).await.email_verified);
    assert_eq!(
        store.redeem_token(&email, email.expire - 1, &Also::NONE).await.unwrap(),
        Ok(()),
        "usable just before expiry"
    );
}

async fn a_token_for_a_changed_address_verifies_nothing(store: Arc<dyn Store>) {
    let t = now();
    let user = created(&store, new_user(t)).await;
    let email = token(&user, Channel::Email, user.email.as_deref().unwrap(), t);
    store.put_token(&email, &Also::NONE).await.unwrap().unwrap();
    let moved = format!("{}@example.net", new_id());
    done(&store, &user, store.update_user(&user, UserChange::Email(moved), None, t, &Also::NONE).await.unwrap()).await;

    assert_eq!(store.redeem_token(&email, t, &Also::NONE).await.unwrap(), REJECTED);
    assert!(!reload(&store, &user).await.email_verified, "the new address is not verified by the old link");
    assert!(token_of(&store, &user, Channel::Email, t).await.is_some(), "a refused redemption deletes nothing");
}

async fn a_withdrawn_challenge_or_token_is_gone_unless_replaced(store: Arc<dyn Store>) {
    let t = now();
    let user = created(&store, new_user(t)).await;
    let session = signed_in(&store, &user, t).await;
    let first = challenged(&store, &session, Factor::Email, t).await;
    store.withdraw_challenge(&first).await.unwrap();
    assert_eq!(challenge_of(&store, &session, &first.id, t).await, None);
    let second = challenged(&store, &session, Factor::Email, t).await;
    store.withdraw_challenge(&first).await.unwrap();
    assert_eq!(challenge_of(&store, &session, &second.id, t).await, Some(second), "a newer one stays");

    let old = token(&user, Channel::Email, user.email.as_deref().unwrap(), t);
    store.put_token(&old, &Also::NONE).await.unwrap().unwrap();
    let new = token(&user, Channel::Email, user.email.as_deref().unwrap(), t);
    store.put_token(&new, &Also::NONE).await.unwrap().unwrap();
    store.withdraw_token(&old).await.unwrap();
    assert_eq!(token_of(&store, &user, Channel::Email, t).await, Some(new.clone()), "a newer one stays");
    store.withdraw_token(&new).await.unwrap();
    assert_eq!(token_of(&store, &user, Channel::Email, t).await, None);
}

// ---------------------------------------------------------------------------------------
// Rate counts

fn test_limit(max: u32) -> Limit {
    // A fresh scope per test: stores are shared across tests.
    Limit { scope: Box::leak(format!("test-{}", new_id()).into_boxed_str()), max, window: HOUR }
}

async fn counts_of(store: &Arc<dyn Store>, counts: &[Count], now: Millis) -> Vec<u32> {
    let lookup = Lookup { counters: counts.iter().map(|c| c.counter.clone()).collect(), ..Lookup::default() };
    store.load(&lookup, now).await.unwrap().counts
}

async fn counts_hold_until_their_limit_and_reset(store: Arc<dyn Store>) {
    let t = now();
    let (limit, other) = (test_limit(3), test_limit(3));
    let hit = [limit.hit("k", t, 0)];
    for _ in 0..3 {
        assert_eq!(store.count(&Also::from(hit.to_vec())).await.unwrap(), Ok(()));
    }
    assert_eq!(counts_of(&store, &hit, t).await, vec![3]);
    assert_eq!(
        store.count(&Also::from(hit.to_vec())).await.unwrap(),
        Err(Refused::Limited(0)),
        "the fourth is refused"
    );
    assert_eq!(counts_of(&store, &hit, t).await, vec![3], "a refused count is not counted");
    assert_eq!(
        store.count(&Also::from([limit.reset("k", t, 0)].to_vec())).await.unwrap(),
        Err(Refused::Limited(0)),
        "no reset past it"
    );

    // Counts of one write apply together or not at all.
    let both = [other.hit("k", t, 0), limit.hit("k", t, 0)];
    assert_eq!(store.count(&Also::from(both.to_vec())).await.unwrap(), Err(Refused::Limited(1)));
    assert_eq!(counts_of(&store, &both, t).await, vec![0, 3]);

    let (fresh, fresh_two) = (test_limit(3), test_limit(3));
    let pair = [fresh.hit("k", t, 0), fresh_two.hit("k", t, 0)];
    assert_eq!(store.count(&Also::from(pair.to_vec())).await.unwrap(), Ok(()));
    assert_eq!(store.count(&Also::from([fresh.reset("k", t, 0)].to_vec())).await.unwrap(), Ok(()));
    assert_eq!(counts_of(&store, &pair, t).await, vec![0, 1], "a reset starts over");
    assert_eq!(counts_of(&store, &pair, t + HOUR).await, vec![0, 1], "kept as the next window's previous");
    assert_eq!(counts_of(&store, &pair, t + 2 * HOUR).await, vec![0, 0], "then it ends");
    assert_eq!(store.count(&Also::NONE).await.unwrap(), Ok(()));
}

async fn the_previous_window_carries_into_the_next_and_a_reset_clears_both(store: Arc<dyn Store>) {
    let limit = test_limit(3);
    // The last moment of one window, then the first of the next.
    let end = limit.window_start(now()) + HOUR - 1;
    let next = end + 1;
    for _ in 0..3 {
        assert_eq!(store.count(&Also::from([limit.hit("k", end, 0)].to_vec())).await.unwrap(), Ok(()));
    }
    let read = |at: Millis| Lookup {
        counters: vec![limit.counter_key("k", at), limit.previous_key("k", at)],
        ..Lookup::default()
    };
    let counts = store.load(&read(next), next).await.unwrap().counts;
    assert_eq!(counts, vec![0, 3]);
    assert_eq!(
        store.count(&Also::from([limit.hit("k", next, counts[1])].to_vec())).await.unwrap(),
        Err(Refused::Limited(0)),
        "no second burst"
    );
    let later = next + HOUR / 3;
    assert_eq!(
        store.count(&Also::from([limit.hit("k", later, 3)].to_vec())).await.unwrap(),
        Ok(()),
        "a third of the window later"
    );
    assert_eq!(store.count(&Also::from([limit.hit("k", later, 3)].to_vec())).await.unwrap(), Err(Refused::Limited(0)));

    // Two thirds on, the previous window carries 1 of its 3: a reset is within the limit.
    let reset = next + 2 * HOUR / 3;
    assert_eq!(store.count(&Also::from([limit.reset("k", reset, 3)].to_vec())).await.unwrap(), Ok(()));
    assert_eq!(store.load(&read(reset), reset).await.unwrap().counts, vec![0, 0], "both windows start over");
}

/// Counts for a session, a user or an email (a store may keep them in that session's,
/// user's or email's own record): parallel requests that all read an empty window still
/// get exactly the limit through, an email without an account is counted too, and a reset
/// starts the count over.
async fn counts_for_a_session_a_user_or_an_email_hold_under_parallel_requests(store: Arc<dyn Store>) {
    let t = now();
    let user = created(&store, new_user(t)).await;
    let session = signed_in(&store, &user, t).await;
    let nobody = format!("{}@example.com", new_id());
    let keyed: [(Limit, String); 4] = [
        (CHALLENGE_PER_SESSION, format!("{}/{}", user.id, session.id)),
        (CODE_FAILURES_PER_USER, user.id.clone()),
        (LOGIN_PER_EMAIL, user.email.clone().unwrap()),
        (LOGIN_PER_EMAIL, nobody.clone()),
    ];
    for (limit, key) in keyed {
        let won = winners(|_| {
            let (store, count) = (store.clone(), limit.hit(&key, t, 0));
            async move { store.count(&Also::from(vec![count])).await.unwrap().is_ok() }
        })
        .await;
        assert_eq!(won, limit.max as usize, "{}: as many as the limit", limit.scope);
        let read = counts_of(&store, &[limit.hit(&key, t, 0)], t).await;
        assert_eq!(read[0], limit.max, "{}: read back", limit.scope);
    }
    // Wrong codes start over after a success, which itself is refused at the limit.
    let failures = CODE_FAILURES_PER_USER;
    let refused = store.count(&Also::from(vec![failures.reset(&user.id, t, 0)])).await.unwrap();
    assert_eq!(refused, Err(Refused::Limited(0)), "a success past the limit is refused");
    let next = t + 2 * failures.window;
    store.count(&Also::from(vec![failures.hit(&user.id, next, 0)])).await.unwrap().unwrap();
    store.count(&Also::from(vec![failures.reset(&user.id, next, 0)])).await.unwrap().unwrap();
    assert_eq!(counts_of(&store, &[failures.hit(&user.id, next, 0)], next).await, vec![0], "started over");
    // An email counted before it had an account can still be claimed.
    let claimed = created(&store, User { email: Some(nobody.clone()), ..new_user(t) }).await;
    assert_eq!(user_by_email(&store, &nobody).await.map(|u| u.id), Some(claimed.id));
}

async fn a_count_at_its_limit_refuses_the_whole_write(store: Arc<dyn Store>) {
    let t = now();
    let user = created(&store, new_user(t)).await;
    let limit = test_limit(1);
    let spent = Also::from(vec![limit.hit("k", t, 0)]);
    store.count(&spent).await.unwrap().unwrap();

    let session = new_session(&user, t);
    assert_eq!(store.create_session(&session, &spent).await.unwrap(), Err(Refused::Limited(0)));
    assert_eq!(session_of(&store, &session, t).await, None, "no session");
    let live = signed_in(&store, &user, t).await;
    let challenge = Challenge::new(&user.id, &live.id, Factor::Totp, t, CHALLENGE_TTL);
    assert_eq!(store.put_challenge(&challenge, &spent).await.unwrap(), Err(Refused::Limited(0)));
    assert_eq!(challenge_of(&store, &live, &challenge.id, t).await, None, "no challenge");
    let verify = token(&user, Channel::Email, user.email.as_deref().unwrap(), t);
    assert_eq!(store.put_token(&verify, &spent).await.unwrap(), Err(Refused::Limited(0)));
    assert_eq!(token_of(&store, &user, Channel::Email, t).await, None, "no token");
    let changed = store.update_user(&user, UserChange::Mfa(true), None, t, &spent).await.unwrap();
    assert_eq!(changed, Updated::Limited(0));
    assert_eq!(reload(&store, &user).await, user, "no change");

    let signed = signed_in(&store, &user, t).await;
    let challenge = challenged(&store, &signed, Factor::Email, t).await;
    assert_eq!(store.miss_challenge(&challenge, t, &spent).await.unwrap(), Err(Refused::Limited(0)));
    let attempt = win(&challenge, &signed, Spend::Nothing, t);
    assert_eq!(store.finish_challenge(&attempt, &spent).await.unwrap(), Err(Refused::Limited(0)));
    assert_eq!(challenge_of(&store, &signed, &challenge.id, t).await, Some(challenge.clone()), "untouched");
    assert_eq!(session_of(&store, &signed, t).await, Some(signed.clone()), "not upgraded");

    // Within the limit, the counts apply with the write.
    let open = test_limit(5);
    let counted = Also::from(vec![open.hit("k", t, 0)]);
    assert_eq!(store.finish_challenge(&attempt, &counted).await.unwrap(), Ok(()));
    assert_eq!(counts_of(&store, &counted.counts, t).await, vec![1]);
}

// ---------------------------------------------------------------------------------------
// Authenticator, recovery codes and session upgrades

async fn an_authenticator_is_replaceable_only_until_verified(store: Arc<dyn Store>) {
    let t = now();
    let user = created(&store, new_user(t)).await;
    let put = |a: &Authenticator| UserChange::PutAuthenticator(a.clone());
    let (first, second) = (authenticator(false, None, t), authenticator(false, None, t));

    let verify = |step: u64, a: &Authenticator| UserChange::VerifyAuthenticator { step, secret_sealed: sealed(a) };
    assert_eq!(
        store.update_user(&reload(&store, &user).await, verify(3, &first), None, t, &Also::NONE).await.unwrap(),
        Updated::Rejected,
        "none to verify"
    );
    assert_eq!(
        done(
            &store,
            &user,
            store.update_user(&reload(&store, &user).await, put(&first), None, t, &Also::NONE).await.unwrap()
        )
        .await
        .totp()
        .cloned(),
        Some(first.clone())
    );
    assert_eq!(
        done(
            &store,
            &user,
            store.update_user(&reload(&store, &user).await, put(&second), None, t, &Also::NONE).await.unwrap()
        )
        .await
        .totp()
        .cloned(),
        Some(second.clone())
    );

    assert_eq!(
        store.update_user(&reload(&store, &user).await, verify(7, &first), None, t, &Also::NONE).await.unwrap(),
        Updated::Rejected,
        "checked against a replaced secret"
    );
    let verified = done(
        &store,
        &user,
        store.update_user(&reload(&store, &user).await, verify(7, &second), None, t, &Also::NONE).await.unwrap(),
    )
    .await;
    assert_eq!(totp_state(&verified), Some((true, Some(7))));
    assert_eq!(sealed(verified.totp().unwrap()), sealed(&second));
    assert_eq!(
        store.update_user(&reload(&store, &user).await, verify(8, &second), None, t, &Also::NONE).await.unwrap(),
        Updated::Rejected
    );
    assert_eq!(
        store
            .update_user(&reload(&store, &user).await, put(&authenticator(false, None, t)), None, t, &Also::NONE)
            .await
            .unwrap(),
        Updated::Rejected
    );
    assert_eq!(reload(&store, &user).await, verified, "refused changes change nothing");

    assert_eq!(
        done(
            &store,
            &user,
            store.update_user(&reload(&store, &user).await, totp_removal(), None, t, &Also::NONE).await.unwrap()
        )
        .await
        .totp()
        .cloned(),
        None
    );
    assert_eq!(
        store.update_user(&reload(&store, &user).await, totp_removal(), None, t, &Also::NONE).await.unwrap(),
        Updated::Rejected
    );
    let fresh = authenticator(false, None, t);
    assert_eq!(
        done(
            &store,
            &user,
            store.update_user(&reload(&store, &user).await, put(&fresh), None, t, &Also::NONE).await.unwrap()
        )
        .await
        .totp()
        .cloned(),
        Some(fresh),
        "a new one after removal"
    );
}

async fn verifying_an_authenticator_refuses_a_used_step(store: Arc<dyn Store>) {
    let t = now();
    let user = created(&store, new_user(t)).await;
    let used = authenticator(false, Some(10), t);
    let verify = |step: u64| UserChange::VerifyAuthenticator { step, secret_sealed: sealed(&used) };
    done(
        &store,
        &user,
        store
            .update_user(&reload(&store, &user).await, UserChange::PutAuthenticator(used.clone()), None, t, &Also::NONE)
            .await
            .unwrap(),
    )
    .await;

    assert_eq!(
        store.update_user(&reload(&store, &user).await, verify(10), None, t, &Also::NONE).await.unwrap(),
        Updated::Rejected
    );
    let verified = done(
        &store,
        &user,
        store.update_user(&reload(&store, &user).await, verify(11), None, t, &Also::NONE).await.unwrap(),
    )
    .await;
    assert_eq!(totp_state(&verified), Some((true, Some(11))));
}

async fn recovery_codes_are_created_once_and_replaced_only_when_present(store: Arc<dyn Store>) {
    let t = now();
    let user = created(&store, new_user(t)).await;
    let (first, second, third) = (recovery_hashes(8), recovery_hashes(8), recovery_hashes(8));

    assert_eq!(
        store
            .update_user(
                &reload(&store, &user).await,
                UserChange::ReplaceRecoveryCodes(first.clone()),
                None,
                t,
                &Also::NONE
            )
            .await
            .unwrap(),
        Updated::Rejected,
        "none to replace"
    );
    assert_eq!(
        done(
            &store,
            &user,
            store
                .update_user(
                    &reload(&store, &user).await,
                    UserChange::CreateRecoveryCodes(first.clone()),
                    None,
                    t,
                    &Also::NONE
                )
                .await
                .unwrap()
        )
        .await
        .recovery_codes,
        first
    );
    assert_eq!(
        store
            .update_user(
                &reload(&store, &user).await,
                UserChange::CreateRecoveryCodes(second.clone()),
                None,
                t,
                &Also::NONE
            )
            .await
            .unwrap(),
        Updated::Rejected,
        "already there"
    );
    assert_eq!(reload(&store, &user).await.recovery_codes, first);
    assert_eq!(
        done(
            &store,
            &user,
            store
                .update_user(
                    &reload(&store, &user).await,
                    UserChange::ReplaceRecoveryCodes(second.clone()),
                    None,
                    t,
                    &Also::NONE
                )
                .await
                .unwrap()
        )
        .await
        .recovery_codes,
        second
    );

    // Once none are left, new ones may be created.
    done(
        &store,
        &user,
        store
            .update_user(&reload(&store, &user).await, UserChange::ReplaceRecoveryCodes(vec![]), None, t, &Also::NONE)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        done(
            &store,
            &user,
            store
                .update_user(
                    &reload(&store, &user).await,
                    UserChange::CreateRecoveryCodes(third.clone()),
                    None,
                    t,
                    &Also::NONE
                )
                .await
                .unwrap()
        )
        .await
        .recovery_codes,
        third
    );
}

async fn a_session_upgrade_applies_with_its_change(store: Arc<dyn Store>) {
    let t = now();
    let user = created(&store, User { email_verified: true, ..new_user(t) }).await;
    let session = signed_in(&store, &user, t).await;

    let upgrade = SessionUpgrade {
        session_id: session.id.clone(),
        confirmed_at: session.confirmed_at,
        add: vec![Factor::Password, Factor::Totp, Factor::Email],
        mfa_updated_at: None,
        end_other_sessions: false,
    };
    let on = done(
        &store,
        &user,
        store
            .update_user(&reload(&store, &user).await, UserChange::Mfa(true), Some(upgrade), t + 1, &Also::NONE)
            .await
            .unwrap(),
    )
    .await;
    assert!(on.mfa);
    assert_eq!(on.mfa_updated_at, None);
    let upgraded = session_of(&store, &session, t + 1).await.unwrap();
    assert_eq!(upgraded.factors, vec![Factor::Password, Factor::Totp, Factor::Email], "each once, in order");
    assert_eq!((upgraded.updated_at, upgraded.mfa_updated_at), (t + 1, None));

    let fresh = authenticator(false, None, t);
    done(
        &store,
        &user,
        store
            .update_user(
                &reload(&store, &user).await,
                UserChange::PutAuthenticator(fresh.clone()),
                None,
                t,
                &Also::NONE,
            )
            .await
            .unwrap(),
    )
    .await;
    let proof = SessionUpgrade {
        session_id: session.id.clone(),
        confirmed_at: session.confirmed_at,
        add: vec![Factor::Totp],
        mfa_updated_at: Some(t + 2),
        end_other_sessions: false,
    };
    let change = UserChange::VerifyAuthenticator { step: 1, secret_sealed: sealed(&fresh) };
    let verified = done(
        &store,
        &user,
        store.update_user(&reload(&store, &user).await, change, Some(proof), t + 2, &Also::NONE).await.unwrap(),
    )
    .await;
    assert_eq!(verified.mfa_updated_at, Some(t + 2));
    assert!(verified.totp_verified());
    let proven = session_of(&store, &session, t + 2).await.unwrap();
    assert_eq!(proven.mfa_updated_at, Some(t + 2));
    assert_eq!(proven.factors, vec![Factor::Password, Factor::Totp, Factor::Email]);
}

async fn a_factor_records_the_session_that_added_it_and_proves_nothing_to_that_session(store: Arc<dyn Store>) {
    let t = now();
    let user = created(&store, User { email_verified: true, ..new_user(t) }).await;
    let session = signed_in(&store, &user, t).await;
    let codes = recovery_hashes(3);
    let by_session = Some(SessionUpgrade::of(&session));
    let change = UserChange::CreateRecoveryCodes(codes.clone());
    let user =
        done(&store, &user, store.update_user(&user, change, by_session.clone(), t, &Also::NONE).await.unwrap()).await;
    assert_eq!(user.added_by.get(&Factor::RecoveryCode), Some(&session.id));
    let change = UserChange::PutAuthenticator(authenticator(false, None, t));
    let user = done(&store, &user, store.update_user(&user, change, by_session, t, &Also::NONE).await.unwrap()).await;
    assert_eq!(user.added_by.get(&Factor::Totp), Some(&session.id));
    assert_eq!(reload(&store, &user).await.added_by, user.added_by, "read back as written");

    // Completing a challenge with a factor the session added adds the factor but is no
    // recent challenge, whether it spends something or not.
    for (factor, spend) in
        [(Factor::RecoveryCode, Spend::RecoveryCode(codes[0].clone())), (Factor::Email, Spend::Nothing)]
    {
        let challenge = challenged(&store, &session, factor, t).await;
        let w = ChallengeWin { recent: false, ..win(&challenge, &session, spend, t + 1) };
        assert_eq!(store.finish_challenge(&w, &Also::NONE).await.unwrap(), Ok(()));
        let after = session_of(&store, &session, t + 1).await.unwrap();
        assert!(after.factors.contains(&factor));
        assert_eq!(after.mfa_updated_at, None);
        assert_eq!(reload(&store, &user).await.mfa_updated_at, None);
    }
    assert_eq!(reload(&store, &user).await.recovery_codes, codes[1..].to_vec(), "the code was spent");

    // Removing the authenticator forgets who added it.
    let removed = store.update_user(&user, totp_removal(), None, t + 2, &Also::NONE).await.unwrap();
    let user = done(&store, &user, removed).await;
    assert_eq!(user.added_by.get(&Factor::Totp), None);
    assert_eq!(reload(&store, &user).await.added_by.get(&Factor::Totp), None);
}

async fn a_session_upgrade_for_a_dead_session_applies_nothing(store: Arc<dyn Store>) {
    let t = now();
    let user = created(&store, new_user(t)).await;
    let session = signed_in(&store, &user, t).await;
    let upgrade = |id: &str| SessionUpgrade {
        session_id: id.to_string(),
        confirmed_at: session.confirmed_at,
        add: vec![Factor::Email],
        mfa_updated_at: Some(t),
        end_other_sessions: false,
    };
    let unknown = new_id();

    let refused = store
        .update_user(&reload(&store, &user).await, UserChange::Mfa(true), Some(upgrade(&unknown)), t, &Also::NONE)
        .await
        .unwrap();
    assert_eq!(refused, Updated::SessionEnded, "an unknown session");
    let refused = store
        .update_user(&user, UserChange::Mfa(true), Some(upgrade(&session.id)), session.expire, &Also::NONE)
        .await
        .unwrap();
    assert_eq!(refused, Updated::SessionEnded, "an expired session");
    let old = user.email.clone().unwrap();
    let moved = UserChange::Email(format!("{}@example.net", new_id()));
    assert_eq!(
        store.update_user(&reload(&store, &user).await, moved, Some(upgrade(&unknown)), t, &Also::NONE).await.unwrap(),
        Updated::SessionEnded
    );

    assert_eq!(reload(&store, &user).await, user, "the user is unchanged");
    assert_eq!(user_by_email(&store, &old).await, Some(user), "the email index is unchanged");
    assert_eq!(session_of(&store, &session, t).await, Some(session), "the session is unchanged");
}

async fn a_change_that_ends_other_sessions_keeps_only_the_current_one(store: Arc<dyn Store>) {
    let t = now();
    let user = created(&store, User { recovery_codes: recovery_hashes(8), ..new_user(t) }).await;
    let current = signed_in(&store, &user, t).await;
    let other = signed_in(&store, &user, t).await;
    let at = t + SECOND;
    let ending = SessionUpgrade { end_other_sessions: true, ..SessionUpgrade::of(&current) };
    let change = UserChange::ReplaceRecoveryCodes(recovery_hashes(8));
    let changed = done(
        &store,
        &user,
        store.update_user(&reload(&store, &user).await, change, Some(ending), at, &Also::NONE).await.unwrap(),
    )
    .await;
    assert_eq!(changed.sessions_valid_from, at);
    let kept = session_of(&store, &current, at).await.unwrap();
    assert_eq!(kept.confirmed_at, at);
    assert!(kept.survives(&changed), "the session that made the change stays");
    let ended = session_of(&store, &other, at).await.unwrap();
    assert!(!ended.survives(&changed), "every other session is over");
}

// ---------------------------------------------------------------------------------------
// Races: of N parallel single-use actions exactly one wins

const RACERS: usize = 20;

/// Runs `RACERS` copies of `race(i)` at once and counts the ones that won.
async fn winners<F, Fut>(race: F) -> usize
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = bool> + Send + 'static,
{
    let tasks: Vec<_> = (0..RACERS).map(|i| tokio::spawn(race(i))).collect();
    let mut won = 0;
    for task in tasks {
        won += usize::from(task.await.expect("racer ran to the end"));
    }
    won
}

async fn twenty_parallel_completions_of_one_challenge_let_one_win(store: Arc<dyn Store>) {
    let t = now();
    let user = created(&store, new_user(t)).await;
    let session = signed_in(&store, &user, t).await;
    let challenge = challenged(&store, &session, Factor::Email, t).await;
    let attempt = win(&challenge, &session, Spend::Nothing, t);

    let won = winners(|_| {
        let (store, attempt) = (store.clone(), attempt.clone());
        async move { store.finish_challenge(&attempt, &Also::NONE).await.unwrap().is_ok() }
    })
    .await;
    assert_eq!(won, 1);
}

/// One live challenge per factor, so the racers share four challenges and the one
/// resource that only one of them may use; the losers must leave their challenge alone.
async fn race_to_spend(store: &Arc<dyn Store>, user: &User, spend: Spend, t: Millis) -> (usize, usize) {
    let session = signed_in(store, user, t).await;
    let factors = [Factor::Totp, Factor::Email, Factor::Phone, Factor::RecoveryCode];
    let mut challenges = Vec::new();
    for factor in factors {
        challenges.push(challenged(store, &session, factor, t).await);
    }
    let won = winners(|i| {
        let (store, attempt) = (store.clone(), win(&challenges[i % challenges.len()], &session, spend.clone(), t));
        async move { store.finish_challenge(&attempt, &Also::NONE).await.unwrap().is_ok() }
    })
    .await;
    let mut untouched = 0;
    for c in &challenges {
        untouched += usize::from(challenge_of(store, &session, &c.id, t).await.is_some());
    }
    (won, untouched)
}

async fn twenty_parallel_spends_of_one_recovery_code_let_one_win(store: Arc<dyn Store>) {
    let t = now();
    let codes = recovery_hashes(2);
    let user = created(&store, User { recovery_codes: codes.clone(), ..new_user(t) }).await;

    let (won, untouched) = race_to_spend(&store, &user, Spend::RecoveryCode(codes[0].clone()), t).await;
    assert_eq!(won, 1);
    assert_eq!(untouched, 3, "only the winner's challenge is used up");
    assert_eq!(reload(&store, &user).await.recovery_codes, vec![codes[1].clone()]);
}

async fn twenty_parallel_uses_of_one_totp_step_let_one_win(store: Arc<dyn Store>) {
    let t = now();
    let user = created(&store, User { authenticators: vec![authenticator(true, Some(41), t)], ..new_user(t) }).await;

    let (won, untouched) = race_to_spend(&store, &user, Spend::TotpStep(42), t).await;
    assert_eq!(won, 1);
    assert_eq!(untouched, 3, "only the winner's challenge is used up");
    assert_eq!(reload(&store, &user).await.totp().and_then(|a| a.totp_secret()).and_then(|(_, step)| step), Some(42));
}

// ---------------------------------------------------------------------------------------
// Security keys

fn key(counter: u32, by: &str, now: Millis) -> Authenticator {
    let id = new_id();
    let new = NewKey { credential: format!("{{\"cred\":\"{id}\"}}"), credential_id: format!("cred-{id}"), counter };
    Authenticator::webauthn(id, "Key".into(), new, by, now)
}

fn key_state(user: &User, id: &str) -> Option<(u32, String, Option<Millis>)> {
    user.authenticators.iter().find(|a| a.id == id).and_then(|a| match &a.secret {
        AuthenticatorSecret::Webauthn { counter, credential, .. } => {
            Some((*counter, credential.clone(), a.last_used_at))
        }
        AuthenticatorSecret::Totp { .. } => None,
    })
}

fn key_use(key: &Authenticator, counter: u32) -> Spend {
    Spend::Key(KeyUse { authenticator_id: key.id.clone(), counter, credential: format!("{{\"counter\":{counter}}}") })
}

async fn webauthn_challenge(store: &Arc<dyn Store>, session: &Session, now: Millis) -> Challenge {
    let challenge =
        Challenge::webauthn(&session.user_id, &session.id, format!("state-{}", new_id()), now, CHALLENGE_TTL);
    store.put_challenge(&challenge, &Also::NONE).await.unwrap().unwrap();
    challenge
}

async fn a_key_use_moves_its_counter_forward_only(store: Arc<dyn Store>) {
    let t = now();
    let (counting, counterless) = (key(5, "s0", t), key(0, "s0", t));
    let user =
        created(&store, User { authenticators: vec![counting.clone(), counterless.clone()], ..new_user(t) }).await;
    let session = signed_in(&store, &user, t).await;

    let challenge = webauthn_challenge(&store, &session, t).await;
    let stored = challenge_of(&store, &session, &challenge.id, t).await.unwrap();
    assert_eq!(stored.ceremony_state(false), challenge.ceremony_state(false), "the ceremony state is kept");
    for regressed in [5, 4, 0] {
        let spend = win(&challenge, &session, key_use(&counting, regressed), t);
        assert_eq!(store.finish_challenge(&spend, &Also::NONE).await.unwrap(), REJECTED, "counter {regressed}");
    }
    let spend = win(&challenge, &session, key_use(&counting, 6), t + 1);
    assert_eq!(store.finish_challenge(&spend, &Also::NONE).await.unwrap(), Ok(()));
    let after = reload(&store, &user).await;
    assert_eq!(key_state(&after, &counting.id), Some((6, "{\"counter\":6}".into(), Some(t + 1))));
    let factors = session_of(&store, &session, t).await.map(|s| s.factors);
    assert_eq!(factors, Some(vec![Factor::Password, Factor::Webauthn]));

    // A key that keeps no counter always sends 0; once it counts, 0 is a regression.
    let challenge = webauthn_challenge(&store, &session, t).await;
    assert_eq!(
        store.finish_challenge(&win(&challenge, &session, key_use(&counterless, 0), t), &Also::NONE).await.unwrap(),
        Ok(())
    );
    let challenge = webauthn_challenge(&store, &session, t).await;
    assert_eq!(
        store.finish_challenge(&win(&challenge, &session, key_use(&counterless, 2), t), &Also::NONE).await.unwrap(),
        Ok(())
    );
    let challenge = webauthn_challenge(&store, &session, t).await;
    assert_eq!(
        store.finish_challenge(&win(&challenge, &session, key_use(&counterless, 0), t), &Also::NONE).await.unwrap(),
        REJECTED
    );
    assert_eq!(key_state(&reload(&store, &user).await, &counterless.id).map(|k| k.0), Some(2));

    // A key the user no longer has proves nothing.
    let challenge = webauthn_challenge(&store, &session, t).await;
    let gone = key(0, "s0", t);
    assert_eq!(
        store.finish_challenge(&win(&challenge, &session, key_use(&gone, 1), t), &Also::NONE).await.unwrap(),
        REJECTED
    );
}

async fn a_key_registration_keeps_its_ceremony_apart_and_is_spent_once(store: Arc<dyn Store>) {
    let t = now();
    let user = created(&store, new_user(t)).await;
    let session = signed_in(&store, &user, t).await;
    let sign_in = webauthn_challenge(&store, &session, t).await;
    let registration = Challenge::registration(&user.id, &session.id, "registration-state".into(), t, CHALLENGE_TTL);
    store.put_challenge(&registration, &Also::NONE).await.unwrap().unwrap();
    // Both live: a registration does not replace a sign-in, nor the other way round.
    assert!(challenge_of(&store, &session, &sign_in.id, t).await.is_some());
    let stored = challenge_of(&store, &session, &registration.id, t).await.unwrap();
    assert_eq!((stored.is_registration(), stored.ceremony_state(true)), (true, Some("registration-state")));

    let new_key = key(0, &session.id, t);
    let register = |key: Authenticator| ChallengeWin {
        factor: Factor::Webauthn,
        recent: false,
        ..win(&registration, &session, Spend::Register(key), t)
    };
    assert_eq!(store.finish_challenge(&register(new_key.clone()), &Also::NONE).await.unwrap(), Ok(()));
    assert_eq!(
        store.finish_challenge(&register(key(0, &session.id, t)), &Also::NONE).await.unwrap(),
        REJECTED,
        "spent"
    );
    let after = reload(&store, &user).await;
    assert_eq!(after.keys().map(|k| k.id.clone()).collect::<Vec<_>>(), vec![new_key.id.clone()]);
    assert_eq!(after.keys().next().unwrap().registered_by(), Some(session.id.as_str()));
    assert!(after.has_factor(Factor::Webauthn));
    assert!(challenge_of(&store, &session, &registration.id, t).await.is_none());
    assert!(challenge_of(&store, &session, &sign_in.id, t).await.is_some(), "the sign-in ceremony is untouched");
    let factors = session_of(&store, &session, t).await.map(|s| s.factors);
    assert_eq!(factors, Some(vec![Factor::Password, Factor::Webauthn]));
}

async fn removing_keys_removes_exactly_those(store: Arc<dyn Store>) {
    let t = now();
    let (a, b, c) = (key(0, "s0", t), key(0, "s0", t), key(0, "s0", t));
    let user = created(&store, User { authenticators: vec![a.clone(), b.clone(), c.clone()], ..new_user(t) }).await;
    let remove = |ids: Vec<&Authenticator>| UserChange::RemoveAuthenticators {
        ids: ids.into_iter().map(|k| k.id.clone()).collect(),
        factor: Factor::Webauthn,
        last: false,
    };
    let user =
        done(&store, &user, store.update_user(&user, remove(vec![&a, &c]), None, t, &Also::NONE).await.unwrap()).await;
    assert_eq!(user.keys().map(|k| k.id.clone()).collect::<Vec<_>>(), vec![b.id.clone()]);
    let again = store.update_user(&user, remove(vec![&a, &b]), None, t, &Also::NONE).await.unwrap();
    assert_eq!(again, Updated::Rejected, "one of them is gone: nothing is removed");
    assert_eq!(reload(&store, &user).await.keys().count(), 1);
}

// ---------------------------------------------------------------------------------------
// Activity log and listings

fn event(user: &User, action: Action, at: Millis, ttl: Millis) -> Event {
    let origin = Origin { ip: "203.0.113.9".into(), user_agent: "tests".into(), key_id: None, ttl };
    origin.event(&user.id, action, "detail", at)
}

async fn an_event_is_stored_only_with_its_change(store: Arc<dyn Store>) {
    let t = now();
    let user = created(&store, User { mfa: false, ..new_user(t) }).await;
    let on = Also::events(vec![event(&user, Action::MfaUpdate, t, LOG_TTL)]);
    assert_eq!(store.update_user(&user, UserChange::Mfa(true), None, t, &on).await.unwrap(), Updated::Done);
    // A change whose condition fails records nothing.
    let create = Also::events(vec![event(&user, Action::RecoveryCodesCreate, t + 1, LOG_TTL)]);
    let codes = UserChange::ReplaceRecoveryCodes(recovery_hashes(8));
    assert_eq!(store.update_user(&user, codes, None, t + 1, &create).await.unwrap(), Updated::Rejected);
    // Nor does a write a count refuses.
    let limit = test_limit(0);
    let refused = Also {
        counts: vec![limit.hit("k", t, 0)],
        events: vec![event(&user, Action::SessionCreate, t + 2, LOG_TTL)],
        session: None,
    };
    let session = new_session(&user, t);
    assert_eq!(store.create_session(&session, &refused).await.unwrap(), Err(Refused::Limited(0)));
    // A session deleted with its event; a second delete finds none and records none.
    let session = signed_in(&store, &user, t).await;
    let ended = Also::events(vec![event(&user, Action::SessionDelete, t + 3, LOG_TTL)]);
    assert!(store.delete_session(&user.id, &session.id, &ended).await.unwrap());
    let again = Also::events(vec![event(&user, Action::SessionDelete, t + 4, LOG_TTL)]);
    assert!(!store.delete_session(&user.id, &session.id, &again).await.unwrap());

    let actions: Vec<Action> = store.events(&user.id, t).await.unwrap().iter().map(|e| e.action).collect();
    assert_eq!(actions, vec![Action::SessionDelete, Action::MfaUpdate]);
    let stored = &store.events(&user.id, t).await.unwrap()[1];
    assert_eq!(
        (stored.ip.as_str(), stored.user_agent.as_str(), stored.detail.as_str()),
        ("203.0.113.9", "tests", "detail")
    );
}

/// A session's sign-in (its creation, many challenges completed, its end) is logged in
/// full, and stays in the log after the session has ended, which stays ended.
async fn a_sessions_events_outlive_it_however_many(store: Arc<dyn Store>) {
    let t = now();
    let user = created(&store, new_user(t)).await;
    let session = new_session(&user, t);
    let created = Also::events(vec![event(&user, Action::SessionCreate, t, LOG_TTL)]);
    store.create_session(&session, &created).await.unwrap().unwrap();
    let completions = 12;
    for i in 0..completions {
        let at = t + 1 + i;
        let c = challenged(&store, &session, Factor::Email, at).await;
        let done = Also::events(vec![event(&user, Action::ChallengeComplete, at, LOG_TTL)]);
        store.finish_challenge(&win(&c, &session, Spend::Nothing, at), &done).await.unwrap().unwrap();
    }
    let end = t + 1 + completions;
    let ended = Also::events(vec![event(&user, Action::SessionDelete, end, LOG_TTL)]);
    assert!(store.delete_session(&user.id, &session.id, &ended).await.unwrap());
    assert!(session_of(&store, &session, end).await.is_none(), "ended");
    assert!(store.sessions(&user.id).await.unwrap().is_empty(), "an ended session is not listed");
    let c = Challenge::new(&user.id, &session.id, Factor::Email, end, CHALLENGE_TTL);
    assert_eq!(store.put_challenge(&c, &Also::NONE).await.unwrap(), Err(Refused::Rejected), "nor challenged");
    let late = store.finish_challenge(&win(&c, &session, Spend::Nothing, end), &Also::NONE).await.unwrap();
    assert_eq!(late, Err(Refused::Rejected), "an ended session is not upgraded");

    let events = store.events(&user.id, end).await.unwrap();
    let mut want = vec![Action::SessionDelete];
    want.extend(std::iter::repeat_n(Action::ChallengeComplete, completions as usize));
    want.push(Action::SessionCreate);
    assert_eq!(events.iter().map(|e| e.action).collect::<Vec<_>>(), want, "newest first, none lost");
    assert!(events
        .iter()
        .all(|e| (e.ip.as_str(), e.user_agent.as_str(), e.user_id.as_str())
            == ("203.0.113.9", "tests", user.id.as_str())));
}

async fn events_are_read_newest_first_until_they_expire(store: Arc<dyn Store>) {
    let t = now();
    let user = created(&store, new_user(t)).await;
    let other = created(&store, new_user(t)).await;
    let events = vec![
        event(&user, Action::SessionCreate, t, LOG_TTL),
        event(&user, Action::ChallengeCreate, t + 1, LOG_TTL),
        event(&user, Action::ChallengeComplete, t + 2, MINUTE),
        event(&other, Action::SessionCreate, t + 3, LOG_TTL),
    ];
    store.count(&Also::events(events)).await.unwrap().unwrap();
    let read = |at: Millis| {
        let store = store.clone();
        let id = user.id.clone();
        async move { store.events(&id, at).await.unwrap().iter().map(|e| e.action).collect::<Vec<_>>() }
    };
    assert_eq!(read(t + 3).await, vec![Action::ChallengeComplete, Action::ChallengeCreate, Action::SessionCreate]);
    assert_eq!(read(t + 2 + MINUTE).await, vec![Action::ChallengeCreate, Action::SessionCreate], "expired");
}

async fn a_users_sessions_are_listed_and_only_theirs(store: Arc<dyn Store>) {
    let t = now();
    let user = created(&store, new_user(t)).await;
    let other = created(&store, new_user(t)).await;
    let (one, two) = (signed_in(&store, &user, t).await, signed_in(&store, &user, t + 1).await);
    signed_in(&store, &other, t).await;
    let mut ids: Vec<String> = store.sessions(&user.id).await.unwrap().into_iter().map(|s| s.id).collect();
    ids.sort();
    let mut want = vec![one.id, two.id];
    want.sort();
    assert_eq!(ids, want);
}

// ---------------------------------------------------------------------------------------
// API keys and the server API's reads

async fn an_api_key_is_stored_once_read_by_id_listed_and_revoked(store: Arc<dyn Store>) {
    use mfa_core::domain::api_key::{new_key, Scope};
    let now = now();
    let (key, secret) = new_key("support desk", vec![Scope::UsersRead, Scope::UsersWrite], now);
    let (other, _) = new_key("reports", vec![Scope::UsersRead], now + 1);
    assert!(store.put_api_key(&key).await.unwrap());
    assert!(!store.put_api_key(&key).await.unwrap(), "an id is stored once");
    assert!(store.put_api_key(&other).await.unwrap());

    let read = |id: &str| Lookup { api_key: Some(id.to_string()), ..Lookup::default() };
    let found = store.load(&read(&key.id), now).await.unwrap().api_key.expect("the key is read by its id");
    assert_eq!(found, key);
    assert_eq!(found.secret_hash, sha256_hex(&secret), "only the hash is stored");
    assert!(store.load(&read(&new_id()), now).await.unwrap().api_key.is_none());

    let listed = store.api_keys().await.unwrap();
    let ours: Vec<&str> =
        listed.iter().filter(|k| [&key.id, &other.id].contains(&&k.id)).map(|k| k.name.as_str()).collect();
    assert_eq!(ours, ["support desk", "reports"], "oldest first");
    assert!(listed.iter().all(|k| !k.secret_hash.contains(&secret)));

    assert!(store.delete_api_key(&key.id).await.unwrap());
    assert!(!store.delete_api_key(&key.id).await.unwrap(), "revoked once");
    assert!(store.load(&read(&key.id), now).await.unwrap().api_key.is_none(), "a revoked key is gone at once");
    assert!(store.api_keys().await.unwrap().iter().all(|k| k.id != key.id));
    assert!(store.load(&read(&other.id), now).await.unwrap().api_key.is_some(), "the other key stays");
}

async fn users_are_found_by_their_emails_and_read_together(store: Arc<dyn Store>) {
    let now = now();
    let a = created(&store, new_user(now)).await;
    let b = created(&store, new_user(now)).await;
    let (a_email, b_email) = (a.email.clone().unwrap(), b.email.clone().unwrap());
    let lookup = Lookup { emails: vec![b_email, format!("{}@example.com", new_id()), a_email], ..Lookup::default() };
    let found = store.load(&lookup, now).await.unwrap();
    assert_eq!(found.email_owners, [b.id.clone(), a.id.clone()], "owners in the order asked; unknown emails left out");
    assert!(found.user.is_none(), "a lookup by email reads no user");

    let users = store.users(&[a.id.clone(), new_id(), b.id.clone()]).await.unwrap();
    assert_eq!(users, [reload(&store, &a).await, reload(&store, &b).await], "missing ids left out");
    assert!(store.users(&[]).await.unwrap().is_empty());
}
