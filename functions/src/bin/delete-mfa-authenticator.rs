//! `DELETE /v1/account/mfa/authenticators/:type`, `DELETE /v1/account/mfa/authenticators/:type/:authenticatorId`

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    mfa_core::lambda::serve(mfa_core::api::functions::delete_mfa_authenticator()).await
}
