//! `GET /v1/users/{userId}/mfa/recovery-codes` (server API, with an API key)

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    mfa_core::lambda::serve(mfa_core::api::functions::get_user_mfa_recovery_codes()).await
}
