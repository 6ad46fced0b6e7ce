//! Appwrite's list queries (`queries[]`, each the JSON of the SDKs' `Query` helpers), reduced
//! to what the list routes serve: exact filters on named attributes, a limit and an offset.
//! Anything else is refused, never ignored: an unsupported filter must not turn into a
//! listing of everything.

use serde::Deserialize;
use serde_json::Value;

/// Appwrite's default and largest page.
pub const DEFAULT_LIMIT: usize = 25;
pub const MAX_LIMIT: usize = 5000;

/// A parsed list request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    /// `equal` filters, by attribute: a value matches if it equals any of the values.
    pub equal: Vec<(String, Vec<String>)>,
    pub limit: usize,
    pub offset: usize,
}

impl Default for ListQuery {
    fn default() -> Self {
        ListQuery { equal: vec![], limit: DEFAULT_LIMIT, offset: 0 }
    }
}

#[derive(Deserialize)]
struct Raw {
    method: String,
    #[serde(default)]
    attribute: Option<String>,
    #[serde(default)]
    values: Vec<Value>,
}

/// Why a query was refused: Appwrite's `general_query_invalid` message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryError(pub String);

impl ListQuery {
    /// Parses `queries`, allowing `equal` only on `filterable` attributes.
    pub fn parse(queries: &[String], filterable: &[&str]) -> Result<ListQuery, QueryError> {
        let mut query = ListQuery::default();
        for text in queries {
            let raw: Raw =
                serde_json::from_str(text).map_err(|_| QueryError(format!("Invalid query: {}", short(text))))?;
            let single = |values: &[Value]| -> Result<usize, QueryError> {
                match values {
                    [Value::Number(n)] => n
                        .as_u64()
                        .and_then(|n| usize::try_from(n).ok())
                        .ok_or_else(|| QueryError(format!("Invalid {} value", raw.method))),
                    _ => Err(QueryError(format!("Invalid {} query: one number expected", raw.method))),
                }
            };
            match raw.method.as_str() {
                "limit" => {
                    let limit = single(&raw.values)?;
                    if limit == 0 || limit > MAX_LIMIT {
                        return Err(QueryError(format!("Invalid limit: must be between 1 and {MAX_LIMIT}")));
                    }
                    query.limit = limit;
                }
                "offset" => query.offset = single(&raw.values)?,
                "equal" => {
                    let attribute = raw.attribute.clone().unwrap_or_default();
                    if !filterable.contains(&attribute.as_str()) {
                        return Err(QueryError(format!(
                            "Invalid query: Attribute not found in schema: {attribute}; filterable: {}",
                            filterable.join(", ")
                        )));
                    }
                    let values = raw
                        .values
                        .iter()
                        .map(|v| v.as_str().map(str::to_string))
                        .collect::<Option<Vec<String>>>()
                        .filter(|v| !v.is_empty() && v.len() <= 100)
                        .ok_or_else(|| QueryError("Invalid query: equal needs 1 to 100 string values".into()))?;
                    query.equal.push((attribute, values));
                }
                other => return Err(QueryError(format!("Invalid query method: {other}"))),
            }
        }
        Ok(query)
    }

    /// The values an `equal` filter on `attribute` asks for, if there is one.
    pub fn equal_on(&self, attribute: &str) -> Option<&[String]> {
        self.equal.iter().find(|(a, _)| a == attribute).map(|(_, v)| v.as_slice())
    }
}

fn short(text: &str) -> String {
    text.chars().take(60).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_sdk_queries_parse() {
        let parsed = ListQuery::parse(
            &q(&[
                r#"{"method":"equal","attribute":"email","values":["a@b.co"]}"#,
                r#"{"method":"limit","values":[10]}"#,
                r#"{"method":"offset","values":[20]}"#,
            ]),
            &["email"],
        )
        .unwrap();
        assert_eq!(parsed.equal_on("email"), Some(&["a@b.co".to_string()][..]));
        assert_eq!((parsed.limit, parsed.offset), (10, 20));
        assert_eq!(ListQuery::parse(&[], &[]).unwrap(), ListQuery::default());
    }

    #[test]
    fn anything_else_is_refused_not_ignored() {
        for bad in [
            r#"{"method":"search","attribute":"name","values":["x"]}"#,
            r#"{"method":"equal","attribute":"name","values":["x"]}"#,
            r#"{"method":"equal","attribute":"email","values":[]}"#,
            r#"{"method":"equal","attribute":"email","values":[5]}"#,
            r#"{"method":"limit","values":[0]}"#,
            r#"{"method":"limit","values":["10"]}"#,
            r#"{"method":"cursorAfter","values":["x"]}"#,
            "not json",
        ] {
            assert!(ListQuery::parse(&q(&[bad]), &["email"]).is_err(), "{bad}");
        }
    }
}
