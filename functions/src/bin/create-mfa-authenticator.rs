//! `POST /v1/account/mfa/authenticators/:type`

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    mfa_core::lambda::serve(mfa_core::api::functions::create_mfa_authenticator()).await
}
