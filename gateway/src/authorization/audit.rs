//! The audit log: one JSON line per authorization that ended, appended to a file.
//!
//! A line holds what an auditor needs to answer "who approved what, when, how": the id, the
//! client, the masked MSISDN, operator, channel, LoA asked and achieved, status and reason,
//! the times and the card's MAC for STK approvals. Never a PIN, a key or a full MSISDN.
//! Each line is written with one `write` call on a file opened in append mode, so lines of
//! concurrent writers (and of a process killed mid-way) never interleave.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::Serialize;

use super::service::{AuthorizationState, AuthorizationView};
use crate::routing::Msisdn;

/// One audit line.
#[derive(Debug, Serialize)]
pub struct AuditLine<'a> {
    pub id: &'a str,
    pub client_id: &'a str,
    /// Masked, e.g. `48600***200`.
    pub msisdn: String,
    #[serde(flatten)]
    pub view: &'a AuthorizationView,
}

/// Append-only JSON lines file.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    file: Mutex<File>,
}

impl AuditLog {
    /// Opens (creates) `path` for appending, mode 0600 on Unix.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let mut options = OpenOptions::new();
        options.create(true).append(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let file = options.open(path)?;
        Ok(Self {
            path: path.to_owned(),
            file: Mutex::new(file),
        })
    }

    /// The default place: beside the store file, `<store stem>.audit.jsonl`.
    pub fn beside_store(store_path: &Path) -> PathBuf {
        let stem = store_path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "gateway".into());
        store_path.with_file_name(format!("{stem}.audit.jsonl"))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends the line of a terminal view. A failure is logged, not returned: the result
    /// already reached the store and the client; the audit must not undo it.
    pub fn record(&self, client_id: &str, msisdn: &str, view: &AuthorizationView) {
        if !matches!(view.state, AuthorizationState::Terminal { .. }) {
            return;
        }
        let masked = match Msisdn::parse(msisdn) {
            Ok(m) => m.masked().to_string(),
            Err(_) => "invalid".to_owned(),
        };
        let line = AuditLine {
            id: &view.id,
            client_id,
            msisdn: masked,
            view,
        };
        let mut bytes = match serde_json::to_vec(&line) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "audit line not serializable");
                return;
            }
        };
        bytes.push(b'\n');
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = file.write_all(&bytes) {
            tracing::error!(error = %e, path = %self.path.display(), "audit write failed");
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::authorization::service::{ChannelKind, Loa, TerminalStatus};

    #[test]
    fn audit_line_masks_the_msisdn_and_is_one_json_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.jsonl");
        let log = AuditLog::open(&path).unwrap();
        let view = AuthorizationView {
            id: "x1".into(),
            state: AuthorizationState::Terminal {
                status: TerminalStatus::Approved,
                reason: "user_approved".into(),
            },
            loa_requested: Loa::Loa2,
            loa_achieved: Some(Loa::Loa2),
            channel: Some(ChannelKind::Stk),
            operator: Some("red".into()),
            created_at_ms: 1,
            completed_at_ms: Some(2),
            gateway_ms: None,
            proof: Some("00ff".into()),
        };
        log.record("rp", "48600123456", &view);
        let pending = AuthorizationView {
            state: AuthorizationState::Pending {
                step: crate::authorization::service::PendingState::Routed,
            },
            ..view.clone()
        };
        log.record("rp", "48600123456", &pending);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 1);
        assert!(!text.contains("48600123456"));
        let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(v["status"], "approved");
        assert_eq!(v["client_id"], "rp");
        assert!(v["msisdn"].as_str().unwrap().contains('*'));
    }

    #[test]
    fn default_path_is_beside_the_store() {
        assert_eq!(
            AuditLog::beside_store(Path::new("/var/lib/gw/store.redb")),
            PathBuf::from("/var/lib/gw/store.audit.jsonl")
        );
    }
}
