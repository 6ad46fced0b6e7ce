//! The server keys mfa-local keeps in its data folder: `secret.key` (the first key, made on
//! first start) until a rotation, then `server-keys` (`id=secret` per line, the active one
//! first), which `mfa-local keys rotate` and `keys retire` rewrite.

use std::path::Path;

use crate::config::parse_key_ring;
use crate::domain::crypto::{random_secret, FIRST_KEY_ID};

const FIRST: &str = "secret.key";
const RING: &str = "server-keys";

pub type Ring = Vec<(String, Vec<u8>)>;

/// The keys of the data folder, active first; makes the first key on first start.
pub fn load(data_dir: &Path) -> Result<Ring, String> {
    let ring_path = data_dir.join(RING);
    if ring_path.exists() {
        let raw = std::fs::read_to_string(&ring_path).map_err(|e| format!("{}: {e}", ring_path.display()))?;
        return parse_key_ring(&raw).map_err(|e| format!("{}: {e}", ring_path.display()));
    }
    let path = data_dir.join(FIRST);
    let mut file = super::private_file(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let existing = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    if existing.trim().len() >= 32 {
        return Ok(vec![(FIRST_KEY_ID.to_string(), existing.trim().as_bytes().to_vec())]);
    }
    let secret = random_secret();
    file.set_len(0).map_err(|e| e.to_string())?;
    std::io::Write::write_all(&mut file, secret.as_bytes()).map_err(|e| e.to_string())?;
    Ok(vec![(FIRST_KEY_ID.to_string(), secret.into_bytes())])
}

/// Writes the ring (owner-only); the first key's own file goes once the first key is
/// retired, so that no retired secret stays on disk.
pub fn save(data_dir: &Path, ring: &Ring) -> Result<(), String> {
    let text: String = ring.iter().map(|(id, secret)| format!("{id}={}\n", String::from_utf8_lossy(secret))).collect();
    let path = data_dir.join(RING);
    let temp = data_dir.join(format!("{RING}.new"));
    let _ = std::fs::remove_file(&temp);
    let mut file = super::private_file(&temp).map_err(|e| format!("{}: {e}", temp.display()))?;
    std::io::Write::write_all(&mut file, text.as_bytes()).map_err(|e| e.to_string())?;
    file.sync_all().map_err(|e| e.to_string())?;
    std::fs::rename(&temp, &path).map_err(|e| format!("{}: {e}", path.display()))?;
    if !ring.iter().any(|(id, _)| id == FIRST_KEY_ID) {
        let _ = std::fs::remove_file(data_dir.join(FIRST));
    }
    Ok(())
}

/// A new key, active from now on: `k<n>` after the highest id so far.
pub fn rotate(ring: &mut Ring) -> String {
    let next = ring.iter().filter_map(|(id, _)| id.strip_prefix('k')?.parse::<u32>().ok()).max().map_or(0, |n| n + 1);
    let id = format!("k{next}");
    ring.insert(0, (id.clone(), random_secret().into_bytes()));
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rotation_adds_an_active_key_and_keeps_the_older_ones() {
        let dir = tempfile::tempdir().unwrap();
        let first = load(dir.path()).unwrap();
        assert_eq!(first.len(), 1);
        assert_eq!(load(dir.path()).unwrap(), first, "kept across starts");
        let mut ring = first.clone();
        assert_eq!(rotate(&mut ring), "k1");
        save(dir.path(), &ring).unwrap();
        let loaded = load(dir.path()).unwrap();
        assert_eq!(loaded.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(), ["k1", "k0"]);
        assert_eq!(loaded[1], first[0]);
        ring.pop();
        save(dir.path(), &ring).unwrap();
        assert!(!dir.path().join(FIRST).exists(), "a retired first key leaves no file behind");
        assert_eq!(load(dir.path()).unwrap().len(), 1);
    }
}
