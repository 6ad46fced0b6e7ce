//! A request's parameters (its JSON body, or for `GET` its query) read into a typed
//! struct of parsing newtypes; a failure is Appwrite's 400 naming the parameter.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::Ctx;
use crate::error::ApiError;

impl Ctx {
    /// The request's parameters as `T`.
    pub fn params<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        if self.method == lambda_http::http::Method::GET {
            read(self.query.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect())
        } else {
            read(self.body.clone())
        }
    }
}

/// Reads `T` from a parameter object. A `null` is an absent parameter, as in Appwrite.
fn read<T: DeserializeOwned>(mut object: Map<String, Value>) -> Result<T, ApiError> {
    object.retain(|_, v| !v.is_null());
    serde_path_to_error::deserialize(Value::Object(object)).map_err(|e| {
        let param = e.path().to_string();
        rejection(&param, &e.into_inner().to_string())
    })
}

/// Appwrite's message for a parameter `serde` refused with `message`: a parse rule of ours
/// as it is, serde's own wording (a missing field, a value of the wrong JSON type) as
/// Appwrite words it.
fn rejection(param: &str, message: &str) -> ApiError {
    if let Some(missing) = message.strip_prefix("missing field `").and_then(|m| m.strip_suffix('`')) {
        return ApiError::missing(missing);
    }
    if message.starts_with("invalid type") {
        let expected = if message.ends_with("a boolean") {
            "Value must be a valid boolean"
        } else {
            "Value must be a valid string"
        };
        return ApiError::invalid(param, expected);
    }
    ApiError::invalid(param, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::values::{Email, NewPassword};

    #[derive(Debug, serde::Deserialize)]
    struct SignUp {
        #[allow(dead_code)]
        email: Email,
        #[allow(dead_code)]
        password: NewPassword,
        #[allow(dead_code)]
        #[serde(default)]
        mfa: Option<bool>,
    }

    fn read(body: Value) -> Result<SignUp, String> {
        super::read(body.as_object().unwrap().clone()).map_err(|e: ApiError| e.to_string())
    }

    #[test]
    fn refusals_name_the_parameter_as_appwrite_does() {
        assert_eq!(read(serde_json::json!({"password": "12345678"})).unwrap_err(), "Param \"email\" is not optional.");
        assert_eq!(
            read(serde_json::json!({"email": null, "password": "12345678"})).unwrap_err(),
            "Param \"email\" is not optional."
        );
        assert_eq!(
            read(serde_json::json!({"email": 5, "password": "12345678"})).unwrap_err(),
            "Invalid `email` param: Value must be a valid string"
        );
        assert_eq!(
            read(serde_json::json!({"email": "a@b.co", "password": "short"})).unwrap_err(),
            "Invalid `password` param: Password must be between 8 and 256 characters long."
        );
        assert_eq!(
            read(serde_json::json!({"email": "a@b.co", "password": "12345678", "mfa": "true"})).unwrap_err(),
            "Invalid `mfa` param: Value must be a valid boolean"
        );
        assert!(read(serde_json::json!({"email": "a@b.co", "password": "12345678", "extra": 1})).is_ok());
    }
}
