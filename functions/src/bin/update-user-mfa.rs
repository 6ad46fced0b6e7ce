//! `PATCH /v1/users/{userId}/mfa` (server API, with an API key)

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    mfa_core::lambda::serve(mfa_core::api::functions::update_user_mfa()).await
}
