//! `GET /account/logs`: the caller's activity log, newest first.

use super::models::{Log, LogList};
use super::App;
use crate::domain::query::ListQuery;
use crate::error::ApiError;
use crate::http::{Ctx, Reply};

/// The `queries[]` parameters of a list request, as the SDKs send them.
pub(super) fn queries(ctx: &Ctx) -> Vec<String> {
    ctx.query.iter().filter(|(k, _)| k == "queries" || k.starts_with("queries[")).map(|(_, v)| v.clone()).collect()
}

/// A page of `events`' logs as `query` asks (limit and offset; no filters).
pub(super) fn page(
    ctx: &Ctx,
    events: &[crate::domain::activity::Event],
    user: &crate::domain::User,
) -> Result<LogList, ApiError> {
    let query = ListQuery::parse(&queries(ctx), &[]).map_err(|e| ApiError::QueryInvalid(e.0))?;
    let logs = events.iter().skip(query.offset).take(query.limit).map(|e| Log::of(e, user)).collect();
    Ok(LogList { total: events.len(), logs })
}

pub async fn account_logs(app: &App, ctx: &mut Ctx) -> Result<Reply, ApiError> {
    let user = &ctx.authed()?.user;
    let events = app.store.events(&user.id, ctx.now).await?;
    Ok(Reply::model(200, &page(ctx, &events, user)?))
}
