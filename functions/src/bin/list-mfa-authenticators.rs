//! `GET /v1/account/mfa/authenticators/:type`

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    mfa_core::lambda::serve(mfa_core::api::functions::list_mfa_authenticators()).await
}
