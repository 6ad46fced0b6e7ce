//! `mfa-local keys create|list|revoke`: the API keys of the server API, in the store the
//! environment names (the embedded database of MFA_DATA_DIR, or DynamoDB with
//! MFA_STORE=dynamodb and MFA_TABLE).

use std::sync::Arc;

use super::{create_private_dir, private_file, LocalSettings};
use crate::backends::StoreKind;
use crate::clock::{iso, Clock, SystemClock};
use crate::domain::api_key::{new_key, Scope};
use crate::store::Store;

/// Longest key name kept.
const MAX_NAME: usize = 128;

pub(super) async fn store() -> Result<Arc<dyn Store>, String> {
    let settings = LocalSettings::from_env();
    let backends = settings.backends()?;
    if backends.store == StoreKind::Embedded {
        create_private_dir(&settings.data_dir)
            .map_err(|e| format!("cannot create data folder {}: {e}", settings.data_dir.display()))?;
        private_file(&backends.database)
            .map_err(|e| format!("cannot create the database {}: {e}", backends.database.display()))?;
    }
    let (store, _) = backends.build(SystemClock.now()).await.map_err(|e| match backends.store {
        // redb lets one process open the file.
        StoreKind::Embedded => format!("{e} (is mfa-local serving this data folder? stop it, then try again)"),
        StoreKind::DynamoDb => e.to_string(),
    })?;
    Ok(store)
}

pub async fn create(name: &str, scopes: &str) -> Result<(), String> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME {
        return Err(format!("--name must be 1 to {MAX_NAME} characters"));
    }
    let scopes = Scope::parse_list(scopes)?;
    let (key, secret) = new_key(name, scopes, SystemClock.now());
    if !store().await?.put_api_key(&key).await.map_err(|e| crate::error::cause_chain(&e))? {
        return Err("a key with this id exists already; try again".into());
    }
    println!("id: {}", key.id);
    println!("name: {}", key.name);
    println!("scopes: {}", scope_list(&key.scopes));
    println!("secret: {secret}");
    eprintln!("Keep the secret now: it is stored hashed and cannot be shown again.");
    Ok(())
}

pub async fn list() -> Result<(), String> {
    let keys = store().await?.api_keys().await.map_err(|e| crate::error::cause_chain(&e))?;
    if keys.is_empty() {
        eprintln!("no API keys");
    }
    for key in keys {
        println!("{}\t{}\t{}\t{}", key.id, key.name, scope_list(&key.scopes), iso(key.created_at));
    }
    Ok(())
}

pub async fn revoke(id: &str) -> Result<(), String> {
    let id = crate::domain::values::parse_id(id).ok_or("not a key id")?;
    if !store().await?.delete_api_key(&id).await.map_err(|e| crate::error::cause_chain(&e))? {
        return Err(format!("no API key {id}"));
    }
    println!("revoked {id}");
    Ok(())
}

fn scope_list(scopes: &[Scope]) -> String {
    scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(",")
}
