//! `PUT /v1/account/verifications/email`
//! `PUT /v1/account/verification`

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    mfa_core::lambda::serve(mfa_core::api::functions::update_email_verification()).await
}
