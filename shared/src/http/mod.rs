//! The HTTP edge over `lambda_http` types: request context, replies, errors, cookies, CORS.

pub mod params;
pub mod request;
pub mod response;

pub use request::{Authed, Credentials, Ctx};
pub use response::Reply;

/// Matches a route pattern (`/v1/account/sessions/:sessionId`) against a path,
/// returning the named segments.
pub fn match_path(pattern: &str, path: &str) -> Option<Vec<(String, String)>> {
    let path = path.strip_suffix('/').filter(|p| !p.is_empty()).unwrap_or(path);
    let mut params = Vec::new();
    let mut pat = pattern.split('/');
    let mut got = path.split('/');
    loop {
        match (pat.next(), got.next()) {
            (None, None) => return Some(params),
            (Some(p), Some(g)) if p.starts_with(':') && !g.is_empty() => {
                params.push((p[1..].to_string(), g.to_string()));
            }
            (Some(p), Some(g)) if p == g => {}
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_match_patterns_with_params() {
        assert_eq!(match_path("/v1/account", "/v1/account"), Some(vec![]));
        assert_eq!(match_path("/v1/account", "/v1/account/"), Some(vec![]));
        assert_eq!(
            match_path("/v1/account/sessions/:id", "/v1/account/sessions/current"),
            Some(vec![("id".into(), "current".into())])
        );
        assert_eq!(match_path("/v1/account/sessions/:id", "/v1/account/sessions/"), None);
        assert_eq!(match_path("/v1/account", "/v1/accounts"), None);
        assert_eq!(match_path("/v1/account", "/v1/account/x"), None);
    }
}
