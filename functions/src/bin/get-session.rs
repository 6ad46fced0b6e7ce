//! `GET /v1/account/sessions/:sessionId`

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    mfa_core::lambda::serve(mfa_core::api::functions::get_session()).await
}
