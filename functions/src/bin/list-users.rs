//! `GET /v1/users` (server API, with an API key)

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    mfa_core::lambda::serve(mfa_core::api::functions::list_users()).await
}
