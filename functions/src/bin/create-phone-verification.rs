//! `POST /v1/account/verifications/phone`
//! `POST /v1/account/verification/phone`

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    mfa_core::lambda::serve(mfa_core::api::functions::create_phone_verification()).await
}
