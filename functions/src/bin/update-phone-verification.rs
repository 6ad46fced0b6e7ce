//! `PUT /v1/account/verifications/phone`
//! `PUT /v1/account/verification/phone`

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    mfa_core::lambda::serve("update-phone-verification").await
}
