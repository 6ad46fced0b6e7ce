//! `PUT /v1/account/recovery`

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    mfa_core::lambda::serve(mfa_core::api::functions::update_recovery()).await
}
