//! `PATCH /v1/account/phone`

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    mfa_core::lambda::serve("update-phone").await
}
