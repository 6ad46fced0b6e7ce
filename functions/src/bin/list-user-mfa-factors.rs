//! `GET /v1/users/{userId}/mfa/factors` (server API, with an API key)

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    mfa_core::lambda::serve(mfa_core::api::functions::list_user_mfa_factors()).await
}
