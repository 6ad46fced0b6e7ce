//! `GET /v1/account/mfa/recovery-codes`

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    mfa_core::lambda::serve(mfa_core::api::functions::get_mfa_recovery_codes()).await
}
