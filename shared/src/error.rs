//! The one error type of the API. `http::response` turns it into Appwrite's error body.

use crate::delivery::DeliveryError;
use crate::domain::limits::RateVerdict;
use crate::domain::webauthn::Refusal;
use crate::store::{Cause, StoreError};

/// The Appwrite API version whose wire format this service speaks.
pub const API_VERSION: &str = "1.9.0";

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("Request body must be a JSON object.")]
    InvalidBody,
    #[error("Request body is larger than {0} bytes.")]
    BodyTooLarge(usize),
    #[error("The requested route was not found. Please refer to the API docs and try again.")]
    RouteNotFound,
    #[error("Project with the requested ID could not be found.")]
    ProjectNotFound,
    #[error("The request originated from an unknown origin. If you trust this domain, add it to MFA_ALLOWED_ORIGINS.")]
    UnknownOrigin,
    #[error("User (role: guests) missing scopes ([\"account\"])")]
    Unauthorized,
    /// A route of the server API without a key that allows it.
    #[error("{who} (role: {role}) missing scope ({scope})")]
    MissingScope { who: String, role: &'static str, scope: &'static str },
    #[error("API key and session used in the same request. Use either `setSession` or `setKey`. Learn about which authentication method to use in the SSR docs: https://appwrite.io/docs/products/auth/server-side-rendering")]
    KeyAndSession,
    #[error("More factors are required to complete the sign in process.")]
    MoreFactorsRequired,
    #[error("Rate limit for the current endpoint has been exceeded. Please try again after some time.")]
    RateLimited(RateVerdict),
    #[error("Too many wrong codes. Wait for the limit to reset, then try again.")]
    TooManyFailures(RateVerdict),
    #[error("A user with the same id, email, or phone already exists in this project.")]
    UserAlreadyExists,
    #[error("Invalid credentials. Please check the email and password.")]
    InvalidCredentials,
    #[error("Creation of a session is prohibited when a session is active.")]
    SessionAlreadyExists,
    #[error("The current user session could not be found.")]
    SessionNotFound,
    #[error("User with the requested ID could not be found.")]
    UserNotFound,
    #[error("Invalid token passed in the request.")]
    InvalidToken,
    #[error("A user with the same email already exists in the current project.")]
    EmailTaken,
    #[error("A user with the same phone number already exists in the current project.")]
    PhoneTaken,
    #[error("User email is already verified")]
    EmailAlreadyVerified,
    #[error("User phone is already verified")]
    PhoneAlreadyVerified,
    #[error("The current user does not have an email address.")]
    EmailNotFound,
    #[error("The current user does not have a phone number.")]
    PhoneNotFound,
    #[error("The current user's email address is not verified.")]
    EmailNotVerified,
    #[error("The current user's phone number is not verified.")]
    PhoneNotVerified,
    #[error("Authenticator could not be found on the current user.")]
    AuthenticatorNotFound,
    #[error("This authenticator is already verified on the current user.")]
    AuthenticatorAlreadyVerified,
    /// A security key's answer that parsed but does not hold.
    #[error("{}", .0.message())]
    KeyRefused(Refusal),
    #[error("A user can register at most {0} security keys or passkeys. Remove one first.")]
    TooManyKeys(usize),
    #[error(
        "This authenticator was set up under a server key that has since been retired. Remove it and add it again."
    )]
    KeyRetired,
    /// A list query this API does not serve: refused, never ignored.
    #[error("{0}")]
    QueryInvalid(String),
    #[error("A recently succeeded challenge is required to complete this action.")]
    ChallengeRequired,
    #[error(
        "The current user already generated recovery codes; regenerate them with PATCH /v1/account/mfa/recovery-codes."
    )]
    RecoveryCodesAlreadyExist,
    #[error("The account was changed by another request at the same time. Nothing was changed; please try again.")]
    UpdateConflict,
    #[error("The current user does not have recovery codes.")]
    RecoveryCodesNotFound,
    #[error("Recovery codes are stored hashed and are shown only once, when created. Generate a new set with PATCH /v1/account/mfa/recovery-codes.")]
    RecoveryCodesNotReadable,
    #[error("The requested authentication method is not supported.")]
    AuthMethodUnsupported,
    #[error("The service could not reach its data store; please try again.")]
    StoreUnavailable(#[source] StoreError),
    #[error("The message could not be sent; please request a new code.")]
    DeliveryFailed(#[source] DeliveryError),
    /// A bug or a misconfiguration, never an outage: its cause goes to the log.
    #[error("The server failed to process the request.")]
    Internal(#[source] Cause),
    #[error("The server is busy checking other passwords; please try again in a moment.")]
    Busy,
}

impl ApiError {
    pub fn status(&self) -> u16 {
        use ApiError::*;
        match self {
            InvalidArgument(_) | InvalidBody | EmailNotFound | PhoneNotFound | EmailNotVerified | PhoneNotVerified => {
                400
            }
            Unauthorized
            | MissingScope { .. }
            | MoreFactorsRequired
            | InvalidCredentials
            | SessionAlreadyExists
            | InvalidToken
            | ChallengeRequired => 401,
            KeyRefused(Refusal::AlreadyRegistered) => 409,
            KeyRefused(_) | KeyRetired => 401,
            TooManyKeys(_) | QueryInvalid(_) => 400,
            RouteNotFound
            | ProjectNotFound
            | SessionNotFound
            | UserNotFound
            | AuthenticatorNotFound
            | RecoveryCodesNotFound => 404,
            UserAlreadyExists
            | EmailTaken
            | PhoneTaken
            | EmailAlreadyVerified
            | PhoneAlreadyVerified
            | AuthenticatorAlreadyVerified
            | RecoveryCodesAlreadyExist
            | UpdateConflict => 409,
            UnknownOrigin | KeyAndSession => 403,
            RecoveryCodesNotReadable => 410,
            BodyTooLarge(_) => 413,
            RateLimited(_) | TooManyFailures(_) => 429,
            Internal(_) => 500,
            AuthMethodUnsupported => 501,
            DeliveryFailed(_) => 502,
            StoreUnavailable(_) | Busy => 503,
        }
    }

    /// Appwrite's error `type`.
    pub fn kind(&self) -> &'static str {
        use ApiError::*;
        match self {
            InvalidArgument(_) | InvalidBody | BodyTooLarge(_) | TooManyKeys(_) => "general_argument_invalid",
            KeyRefused(Refusal::AlreadyRegistered) => "user_authenticator_already_verified",
            KeyRefused(_) | KeyRetired => "user_invalid_token",
            QueryInvalid(_) => "general_query_invalid",
            RouteNotFound => "general_route_not_found",
            ProjectNotFound => "project_not_found",
            UnknownOrigin => "general_unknown_origin",
            Unauthorized | MissingScope { .. } => "general_unauthorized_scope",
            KeyAndSession => "user_api_key_and_session_set",
            MoreFactorsRequired => "user_more_factors_required",
            RateLimited(_) | TooManyFailures(_) => "general_rate_limit_exceeded",
            UserAlreadyExists => "user_already_exists",
            InvalidCredentials => "user_invalid_credentials",
            SessionAlreadyExists => "user_session_already_exists",
            SessionNotFound => "user_session_not_found",
            UserNotFound => "user_not_found",
            InvalidToken => "user_invalid_token",
            EmailTaken => "user_target_already_exists",
            PhoneTaken => "user_phone_already_exists",
            EmailAlreadyVerified => "user_email_already_verified",
            PhoneAlreadyVerified => "user_phone_already_verified",
            EmailNotFound => "user_email_not_found",
            PhoneNotFound => "user_phone_not_found",
            EmailNotVerified => "user_email_not_verified",
            PhoneNotVerified => "user_phone_not_verified",
            AuthenticatorNotFound => "user_authenticator_not_found",
            AuthenticatorAlreadyVerified => "user_authenticator_already_verified",
            ChallengeRequired => "user_challenge_required",
            RecoveryCodesAlreadyExist => "user_recovery_codes_already_exists",
            UpdateConflict => "document_update_conflict",
            RecoveryCodesNotFound => "user_recovery_codes_not_found",
            RecoveryCodesNotReadable => "user_recovery_codes_not_readable",
            AuthMethodUnsupported => "user_auth_method_unsupported",
            StoreUnavailable(_) | Busy => "general_server_error",
            Internal(_) => "general_unknown",
            DeliveryFailed(_) => "general_provider_failure",
        }
    }

    pub fn rate(&self) -> Option<RateVerdict> {
        match self {
            ApiError::RateLimited(v) | ApiError::TooManyFailures(v) => Some(*v),
            _ => None,
        }
    }

    pub fn missing(param: &str) -> Self {
        ApiError::InvalidArgument(format!("Param \"{param}\" is not optional."))
    }

    pub fn invalid(param: &str, rule: &str) -> Self {
        ApiError::InvalidArgument(format!("Invalid `{param}` param: {rule}"))
    }
}

impl From<crate::hashing::HashingError> for ApiError {
    fn from(e: crate::hashing::HashingError) -> Self {
        match e {
            crate::hashing::HashingError::Busy => ApiError::Busy,
            crate::hashing::HashingError::Failed => ApiError::Internal(Box::new(e)),
        }
    }
}

impl From<StoreError> for ApiError {
    /// An outage is a 503 worth trying again; a store that refused a request or holds an
    /// item that does not decode is a bug (500).
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(_) => ApiError::StoreUnavailable(e),
            StoreError::Refused(_) | StoreError::Corrupt(_) => ApiError::Internal(Box::new(e)),
        }
    }
}

/// An error and its causes, outermost first, as one line for the log.
pub fn cause_chain(e: &dyn std::error::Error) -> String {
    let mut line = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        line.push_str(": ");
        line.push_str(&cause.to_string());
        source = cause.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argument_errors_use_appwrite_messages() {
        let e = ApiError::missing("email");
        assert_eq!((e.status(), e.kind()), (400, "general_argument_invalid"));
        assert_eq!(e.to_string(), "Param \"email\" is not optional.");
        assert_eq!(
            ApiError::invalid("mfa", "Value must be a valid boolean").to_string(),
            "Invalid `mfa` param: Value must be a valid boolean"
        );
    }

    #[test]
    fn server_side_failures_are_5xx_and_do_not_leak_details() {
        let e = ApiError::from(StoreError::Unavailable("secret detail".into()));
        assert_eq!((e.status(), e.kind()), (503, "general_server_error"));
        assert!(!e.to_string().contains("secret detail"));
        assert!(cause_chain(&e).ends_with(": the store is unavailable: secret detail"), "{}", cause_chain(&e));
        assert_eq!(ApiError::DeliveryFailed(DeliveryError("smtp said x".into())).status(), 502);
    }

    #[test]
    fn bugs_are_500_not_outages() {
        for e in [StoreError::Refused("ValidationException".into()), StoreError::Corrupt("USER#u: id".into())] {
            let e = ApiError::from(e);
            assert_eq!((e.status(), e.kind()), (500, "general_unknown"));
            assert!(!e.to_string().contains("USER#") && !e.to_string().contains("Validation"));
        }
    }
}
