//! WebAuthn (security keys and passkeys) as a second factor, on `webauthn-rs`: the relying
//! party, its two ceremonies, and why a browser's answer is refused. Ceremony states are
//! opaque strings to the rest of the service; they stay server-side, in a challenge.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use serde::Deserialize as _;
use serde_json::Value;
use sha2::{Digest, Sha256};
use webauthn_rs::prelude::{
    CredentialID, PublicKeyCredential, RegisterPublicKeyCredential, SecurityKey, SecurityKeyAuthentication,
    SecurityKeyRegistration, Url, Uuid, Webauthn, WebauthnBuilder, WebauthnError,
};

use super::authenticator::{Authenticator, AuthenticatorSecret};
use super::user::User;
use crate::clock::Millis;

/// The most security keys and passkeys one user may register.
pub const MAX_KEYS: usize = 10;
/// The largest attestation or assertion accepted, as JSON text. Real ones, certificate
/// chains included, stay under a few KiB.
pub const MAX_ANSWER_BYTES: usize = 12 * 1024;

/// Who the browser is asked to create and use credentials for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The RP id: a registrable domain (`localhost` on this machine), never an IP address.
    pub rp_id: String,
    pub rp_name: String,
    /// The origins pages may call from; on `localhost` any port of them is accepted.
    pub origins: Vec<Url>,
}

/// The service as a WebAuthn relying party.
#[derive(Debug, Clone)]
pub struct RelyingParty {
    webauthn: Webauthn,
}

/// Why an attestation or assertion was refused, in words a person can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// It does not parse as the answer of a browser (400).
    Malformed,
    /// Made for another site: another origin or RP id.
    WrongSite,
    /// Answers another challenge (or a reused one).
    WrongChallenge,
    /// Made with a key that is not one of this user's.
    UnknownKey,
    /// The key's signature counter did not move forward: it may have been cloned.
    CounterRegressed,
    /// The signature or attestation does not verify.
    BadSignature,
    /// The key is already registered to this user.
    AlreadyRegistered,
}

impl Refusal {
    pub fn message(self) -> &'static str {
        match self {
            Refusal::Malformed => "Value must be the JSON of a WebAuthn credential as the browser returned it",
            Refusal::WrongSite => {
                "The security key answered for another site: its origin or RP ID is not this service's."
            }
            Refusal::WrongChallenge => "The security key answered another challenge. Start again.",
            Refusal::UnknownKey => "This security key is not registered to this account.",
            Refusal::CounterRegressed => {
                "The security key's signature counter went backwards, a sign that the key was cloned. It was refused."
            }
            Refusal::BadSignature => "The security key's signature does not verify.",
            Refusal::AlreadyRegistered => "This security key is already registered to this account.",
        }
    }

    fn of(error: &WebauthnError) -> Refusal {
        use WebauthnError::*;
        match error {
            InvalidRPOrigin | InvalidRPIDHash => Refusal::WrongSite,
            MismatchedChallenge | ChallengeNotFound | InvalidClientDataType => Refusal::WrongChallenge,
            CredentialNotFound | CredentialAlteredAlgFromRequest => Refusal::UnknownKey,
            CredentialPossibleCompromise => Refusal::CounterRegressed,
            CredentialExcludedFromRequest | CredentialAlreadyExists => Refusal::AlreadyRegistered,
            ParseBase64Failure(_)
            | ParseCBORFailure(_)
            | ParseJSONFailure(_)
            | ParseNOMFailure
            | ParseInsufficientBytesAvailable => Refusal::Malformed,
            _ => Refusal::BadSignature,
        }
    }
}

/// A newly registered key, ready to become one of the user's authenticators.
#[derive(Debug, Clone, PartialEq)]
pub struct NewKey {
    /// The credential (public key, counter, flags) as `webauthn-rs` serialises it.
    pub credential: String,
    /// The credential id, base64url.
    pub credential_id: String,
    pub counter: u32,
}

/// A verified assertion: which key signed, and the key as it stands after this use.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyUse {
    pub authenticator_id: String,
    pub counter: u32,
    pub credential: String,
}

/// The failure of a ceremony state or stored credential that does not round-trip: a bug
/// or corrupt data, never the user's doing.
#[derive(Debug, thiserror::Error)]
#[error("WebAuthn state: {0}")]
pub struct StateError(String);

fn state_error(e: impl std::fmt::Display) -> StateError {
    StateError(e.to_string())
}

impl RelyingParty {
    pub fn new(settings: &Settings) -> Result<RelyingParty, String> {
        let bare = settings.rp_id.trim_matches(['[', ']']);
        if bare.parse::<std::net::IpAddr>().is_ok() {
            return Err(format!(
                "RP id {:?} is an IP address; WebAuthn needs a domain name (localhost on this machine)",
                settings.rp_id
            ));
        }
        let first = settings.origins.first().ok_or("at least one WebAuthn origin is required")?;
        let mut builder = WebauthnBuilder::new(&settings.rp_id, first)
            .map_err(|e| format!("RP id {:?} does not fit origin {first}: {e}", settings.rp_id))?
            .rp_name(&settings.rp_name)
            .allow_any_port(settings.rp_id == "localhost");
        for origin in &settings.origins[1..] {
            builder = builder.append_allowed_origin(origin);
        }
        let webauthn = builder.build().map_err(|e| format!("WebAuthn settings: {e}"))?;
        Ok(RelyingParty { webauthn })
    }

    /// The creation options for a new key of `user` (its keys excluded, so a key is not
    /// registered twice) and the ceremony state to keep.
    pub fn start_registration(&self, user: &User) -> Result<(Value, String), StateError> {
        let exclude = user_keys(user)
            .map(|(_, key)| key.map(|k| k.cred_id().clone()))
            .collect::<Result<Vec<CredentialID>, _>>()?;
        let name = user.email.clone().unwrap_or_else(|| user.id.clone());
        let display = if user.name.is_empty() { name.clone() } else { user.name.clone() };
        let (options, state) = self
            .webauthn
            .start_securitykey_registration(user_handle(&user.id), &name, &display, Some(exclude), None, None)
            .map_err(state_error)?;
        let options = without_cred_protect(serde_json::to_value(options).map_err(state_error)?);
        Ok((options, serde_json::to_string(&state).map_err(state_error)?))
    }

    /// Checks the browser's attestation against the ceremony `state`.
    pub fn finish_registration(&self, state: &str, answer: &Value) -> Result<Result<NewKey, Refusal>, StateError> {
        let state: SecurityKeyRegistration = serde_json::from_str(state).map_err(state_error)?;
        let Some(raw_id) = credential_id_of(answer) else { return Ok(Err(Refusal::Malformed)) };
        let Ok(answer) = RegisterPublicKeyCredential::deserialize(answer) else { return Ok(Err(Refusal::Malformed)) };
        let key = match self.webauthn.finish_securitykey_registration(&answer, &state) {
            Ok(key) => key,
            Err(e) => return Ok(Err(Refusal::of(&e))),
        };
        // The key attested this id; a browser sends the same one beside it.
        if key.cred_id().as_slice() != raw_id.as_slice() {
            return Ok(Err(Refusal::Malformed));
        }
        let credential = serde_json::to_value(&key).map_err(state_error)?;
        Ok(Ok(NewKey {
            credential_id: URL_SAFE_NO_PAD.encode(key.cred_id().as_slice()),
            counter: counter_of(&credential),
            credential: credential.to_string(),
        }))
    }

    /// The request options for a sign-in with any of the user's keys, and the ceremony
    /// state to keep; `None` when the user has no key.
    pub fn start_authentication(&self, user: &User) -> Result<Option<(Value, String)>, StateError> {
        let keys = user_keys(user).map(|(_, key)| key).collect::<Result<Vec<SecurityKey>, _>>()?;
        if keys.is_empty() {
            return Ok(None);
        }
        let (options, state) = self.webauthn.start_securitykey_authentication(&keys).map_err(state_error)?;
        Ok(Some((
            serde_json::to_value(options).map_err(state_error)?,
            serde_json::to_string(&state).map_err(state_error)?,
        )))
    }

    /// Checks the browser's assertion against the ceremony `state` and the user's keys as
    /// stored now: a key removed since, or whose counter moved past this assertion's, is
    /// refused.
    pub fn finish_authentication(
        &self,
        user: &User,
        state: &str,
        answer: &Value,
    ) -> Result<Result<KeyUse, Refusal>, StateError> {
        let state: SecurityKeyAuthentication = serde_json::from_str(state).map_err(state_error)?;
        if credential_id_of(answer).is_none() {
            return Ok(Err(Refusal::Malformed));
        }
        // The key may name whose it is (WebAuthn 7.2, step 6): then it must be this user.
        match &answer["response"]["userHandle"] {
            Value::Null => {}
            Value::String(handle) if handle.is_empty() => {}
            Value::String(handle) => match URL_SAFE_NO_PAD.decode(handle) {
                Ok(bytes) if bytes == user_handle(&user.id).as_bytes() => {}
                Ok(_) => return Ok(Err(Refusal::UnknownKey)),
                Err(_) => return Ok(Err(Refusal::Malformed)),
            },
            _ => return Ok(Err(Refusal::Malformed)),
        }
        let Ok(answer) = PublicKeyCredential::deserialize(answer) else { return Ok(Err(Refusal::Malformed)) };
        let result = match self.webauthn.finish_securitykey_authentication(&answer, &state) {
            Ok(result) => result,
            Err(e) => return Ok(Err(Refusal::of(&e))),
        };
        for (authenticator, key) in user_keys(user) {
            let mut key = key?;
            if key.cred_id() != result.cred_id() {
                continue;
            }
            let counter = result.counter();
            if !authenticator.accepts_counter(counter) {
                return Ok(Err(Refusal::CounterRegressed));
            }
            key.update_credential(&result);
            let credential = serde_json::to_string(&key).map_err(state_error)?;
            return Ok(Ok(KeyUse { authenticator_id: authenticator.id.clone(), counter, credential }));
        }
        Ok(Err(Refusal::UnknownKey))
    }
}

/// The credential id of a browser's answer, if the answer has the shape the WebAuthn JSON
/// encoding gives it: `type` is `public-key`, and `id` (base64url) names the same bytes as
/// `rawId`. The checks of `webauthn-rs` read neither `type` nor `id`; a browser never sends
/// them otherwise, so an answer that does was altered.
fn credential_id_of(answer: &Value) -> Option<Vec<u8>> {
    if answer["type"] != "public-key" {
        return None;
    }
    let id = URL_SAFE_NO_PAD.decode(answer["id"].as_str()?).ok()?;
    let raw = answer["rawId"].as_str()?;
    let raw_bytes = URL_SAFE_NO_PAD.decode(raw).or_else(|_| STANDARD.decode(raw)).ok()?;
    (id == raw_bytes).then_some(id)
}

/// A user's registered keys, with the authenticator each is stored in.
fn user_keys(user: &User) -> impl Iterator<Item = (&Authenticator, Result<SecurityKey, StateError>)> {
    user.authenticators.iter().filter(|a| a.verified).filter_map(|a| match &a.secret {
        AuthenticatorSecret::Webauthn { credential, .. } => {
            Some((a, serde_json::from_str::<SecurityKey>(credential).map_err(state_error)))
        }
        AuthenticatorSecret::Totp { .. } => None,
    })
}

/// The WebAuthn user handle of a user: derived from the id, so it names no one and needs
/// no storage.
fn user_handle(user_id: &str) -> Uuid {
    let digest = Sha256::digest(format!("webauthn-user|{user_id}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    Uuid::from_bytes(bytes)
}

/// The signature counter of a serialised key (`webauthn-rs` keeps it private).
fn counter_of(credential: &Value) -> u32 {
    credential["cred"]["counter"].as_u64().and_then(|c| u32::try_from(c).ok()).unwrap_or(0)
}

impl Authenticator {
    /// A security key or passkey registered by the session `by`.
    pub fn webauthn(id: String, name: String, key: NewKey, by: &str, now: Millis) -> Authenticator {
        Authenticator {
            id,
            name,
            created_at: now,
            last_used_at: None,
            verified: true,
            secret: AuthenticatorSecret::Webauthn {
                credential: key.credential,
                credential_id: key.credential_id,
                counter: key.counter,
                registered_by: by.to_string(),
            },
        }
    }
}

/// Creation options without the credProtect request. webauthn-rs asks security keys for
/// credProtect "userVerificationRequired" while user verification is only preferred, and
/// Chromium refuses that pair ("Requested protection policy is inconsistent", a
/// NotSupportedError before any key is asked). Keys keep their default protection; the
/// ceremony state only records whether a key reported one, which is not checked.
fn without_cred_protect(mut options: Value) -> Value {
    if let Some(extensions) = options.pointer_mut("/publicKey/extensions").and_then(Value::as_object_mut) {
        extensions.remove("credentialProtectionPolicy");
        extensions.remove("enforceCredentialProtectionPolicy");
    }
    options
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn creation_options_ask_no_credential_protection_chromium_would_refuse() {
        let rp = RelyingParty::new(&Settings {
            rp_id: "localhost".into(),
            rp_name: "p".into(),
            origins: vec![Url::parse("http://localhost:8080").unwrap()],
        })
        .unwrap();
        let (options, _) = rp
            .webauthn
            .start_securitykey_registration(user_handle("alice"), "alice", "Alice", None, None, None)
            .unwrap();
        let options = without_cred_protect(serde_json::to_value(options).unwrap());
        let extensions = &options["publicKey"]["extensions"];
        assert!(extensions.get("credentialProtectionPolicy").is_none(), "{extensions}");
        assert!(extensions.get("enforceCredentialProtectionPolicy").is_none(), "{extensions}");
        assert_eq!(extensions["credProps"], true, "other extensions stay");
        assert_eq!(options["publicKey"]["authenticatorSelection"]["userVerification"], "preferred");
    }

    #[test]
    fn an_answer_must_say_public_key_and_name_one_credential() {
        let ok = json!({"type": "public-key", "id": "AQID", "rawId": "AQID"});
        assert_eq!(credential_id_of(&ok), Some(vec![1, 2, 3]));
        let standard_raw_id = json!({"type": "public-key", "id": "-_8", "rawId": "+/8="});
        assert_eq!(credential_id_of(&standard_raw_id), Some(vec![0xfb, 0xff]), "rawId may be plain base64");
        for bad in [
            json!({"type": "public-keys", "id": "AQID", "rawId": "AQID"}),
            json!({"id": "AQID", "rawId": "AQID"}),
            json!({"type": "public-key", "id": "AQIE", "rawId": "AQID"}),
            json!({"type": "public-key", "rawId": "AQID"}),
            json!({"type": "public-key", "id": "AQID", "rawId": 5}),
            json!({"type": "public-key", "id": "%%", "rawId": "%%"}),
        ] {
            assert_eq!(credential_id_of(&bad), None, "{bad}");
        }
    }

    #[test]
    fn the_user_handle_is_stable_per_user_and_names_no_one() {
        assert_eq!(user_handle("alice"), user_handle("alice"));
        assert_ne!(user_handle("alice"), user_handle("bob"));
        assert!(!user_handle("alice").as_bytes().windows(5).any(|w| w == b"alice"));
    }

    #[test]
    fn the_counter_is_read_from_a_serialised_key() {
        assert_eq!(counter_of(&json!({"cred": {"counter": 7}})), 7);
        assert_eq!(counter_of(&json!({"cred": {}})), 0);
    }

    #[test]
    fn refusals_say_why_in_words() {
        assert_eq!(Refusal::of(&WebauthnError::InvalidRPOrigin), Refusal::WrongSite);
        assert_eq!(Refusal::of(&WebauthnError::InvalidRPIDHash), Refusal::WrongSite);
        assert_eq!(Refusal::of(&WebauthnError::MismatchedChallenge), Refusal::WrongChallenge);
        assert_eq!(Refusal::of(&WebauthnError::CredentialPossibleCompromise), Refusal::CounterRegressed);
        assert_eq!(Refusal::of(&WebauthnError::ParseNOMFailure), Refusal::Malformed);
        assert_eq!(Refusal::of(&WebauthnError::AuthenticationFailure), Refusal::BadSignature);
        assert!(Refusal::CounterRegressed.message().contains("counter"));
    }

    #[test]
    fn an_ip_address_is_no_rp_id_and_origins_must_fit_it() {
        let settings = |rp_id: &str, origin: &str| Settings {
            rp_id: rp_id.into(),
            rp_name: "p".into(),
            origins: vec![Url::parse(origin).unwrap()],
        };
        assert!(RelyingParty::new(&settings("localhost", "http://localhost:8080")).is_ok());
        assert!(RelyingParty::new(&settings("example.com", "https://app.example.com")).is_ok());
        assert!(RelyingParty::new(&settings("example.com", "https://example.org")).is_err());
        let ip = RelyingParty::new(&settings("127.0.0.1", "http://127.0.0.1:8080")).unwrap_err();
        assert!(ip.contains("IP address"), "{ip}");
        assert!(RelyingParty::new(&settings("[::1]", "http://[::1]:8080")).is_err());
    }
}
