//! `PATCH /v1/account/email`

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    mfa_core::lambda::serve("update-email").await
}
