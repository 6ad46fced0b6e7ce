//! `DELETE /v1/users/{userId}/sessions/{sessionId}` (server API, with an API key)

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    mfa_core::lambda::serve(mfa_core::api::functions::delete_user_session()).await
}
