//! `PUT /v1/account/verifications/phone`
//! `PUT /v1/account/verification/phone`

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    mfa_core::lambda::serve(mfa_core::api::functions::update_phone_verification()).await
}
