//! `GET /v1/account/mfa/factors`

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    mfa_core::lambda::serve(mfa_core::api::functions::list_mfa_factors()).await
}
