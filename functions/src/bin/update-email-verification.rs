//! `PUT /v1/account/verifications/email`
//! `PUT /v1/account/verification`

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    mfa_core::lambda::serve("update-email-verification").await
}
