//! `PATCH /v1/account/prefs`

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    mfa_core::lambda::serve(mfa_core::api::functions::update_prefs()).await
}
