//! `POST /v1/account/mfa/challenges`
//! `POST /v1/account/mfa/challenge`

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    mfa_core::lambda::serve(mfa_core::api::functions::create_mfa_challenge()).await
}
