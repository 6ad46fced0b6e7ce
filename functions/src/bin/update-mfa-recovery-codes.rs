//! `PATCH /v1/account/mfa/recovery-codes`

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    mfa_core::lambda::serve(mfa_core::api::functions::update_mfa_recovery_codes()).await
}
