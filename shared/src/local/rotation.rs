//! `mfa-local keys rotate|usage|retire`: the server keys of the data folder's ring, and what
//! the store still keeps under each (on the embedded store or, with `MFA_STORE=dynamodb`,
//! the table).

use std::collections::BTreeMap;

use super::{server_keys, LocalSettings};
use crate::clock::{Clock, SystemClock};

/// Adds a key, active from the next start.
pub fn rotate() -> Result<(), String> {
    let settings = LocalSettings::from_env();
    super::create_private_dir(&settings.data_dir).map_err(|e| e.to_string())?;
    let mut ring = server_keys::load(&settings.data_dir)?;
    let id = server_keys::rotate(&mut ring);
    server_keys::save(&settings.data_dir, &ring)?;
    println!("added server key {id}; restart mfa-local to seal new values under it");
    println!("keys, active first: {}", ids(&ring).join(", "));
    Ok(())
}

/// What each key of the ring still protects.
async fn counts() -> Result<(server_keys::Ring, BTreeMap<String, u64>), String> {
    // Opened as the API-key commands open it (the data folder made owner-only first), and
    // not while mfa-local serves it.
    let store = super::keys::store().await?;
    let ring = server_keys::load(&LocalSettings::from_env().data_dir)?;
    let usage = store.key_usage(SystemClock.now()).await.map_err(|e| e.to_string())?;
    Ok((ring, usage))
}

pub async fn usage() -> Result<(), String> {
    let (ring, usage) = counts().await?;
    for (i, id) in ids(&ring).iter().enumerate() {
        let role = if i == 0 { " (active)" } else { "" };
        println!("{id}{role}: {} stored values", usage.get(*id).copied().unwrap_or(0));
    }
    for (id, n) in usage.iter().filter(|(id, _)| !ids(&ring).contains(&id.as_str())) {
        println!("{id} (not configured: its values are refused): {n} stored values");
    }
    Ok(())
}

/// Removes a key nothing depends on any more.
pub async fn retire(id: &str) -> Result<(), String> {
    let (mut ring, usage) = counts().await?;
    let position = ring.iter().position(|(k, _)| k == id).ok_or_else(|| format!("no server key {id:?}"))?;
    if position == 0 {
        return Err(format!("{id} is the active key: rotate first"));
    }
    let left = usage.get(id).copied().unwrap_or(0);
    if left > 0 {
        return Err(format!(
            "{left} stored values still depend on {id}: TOTP secrets are sealed again when next used, \
             recovery codes when replaced; retire it once `keys usage` shows none"
        ));
    }
    ring.remove(position);
    server_keys::save(&LocalSettings::from_env().data_dir, &ring)?;
    println!("retired server key {id}; keys, active first: {}", ids(&ring).join(", "));
    Ok(())
}

fn ids(ring: &server_keys::Ring) -> Vec<&str> {
    ring.iter().map(|(id, _)| id.as_str()).collect()
}
