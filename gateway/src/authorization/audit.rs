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
    /// Stable per ending (`<id>:audit`): a line written twice (a crash between the write and
    /// the outbox removal) is recognised by it.
    pub event_id: &'a str,
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

    /// Appends the line of a terminal view (a pending view writes nothing). The outbox calls
    /// this and keeps the entry until it succeeds: the result is already durable, the audit
    /// line follows it.
    pub fn record(
        &self,
        event_id: &str,
        client_id: &str,
        msisdn: &str,
        view: &AuthorizationView,
    ) -> std::io::Result<()> {
        if !matches!(view.state, AuthorizationState::Terminal { .. }) {
            return Ok(());
        }
        let masked = match Msisdn::parse(msisdn) {
            Ok(m) => m.masked().to_string(),
            Err(_) => "invalid".to_owned(),
        };
        let line = AuditLine {
            event_id,
            id: &view.id,
            client_id,
            msisdn: masked,
            view,
        };
        let mut bytes = serde_json::to_vec(&line).map_err(std::io::Error::other)?;
        bytes.push(b'\n');
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        file.write_all(&bytes).inspect_err(|e| {
            tracing::error!(error = %e, path = %self.path.display(), "audit write failed");
        })
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
        log.record("x1:audit", "rp", "48600123456", &view).unwrap();
        let pending = AuthorizationView {
            state: AuthorizationState::Pending {
                step: crate::authorization::service::PendingState::Routed,
            },
            ..view.clone()
        };
        log.record("x1:audit", "rp", "48600123456", &pending)
            .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 1);
        assert!(!text.contains("48600123456"));
        let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(v["status"], "approved");
        assert_eq!(v["client_id"], "rp");
        assert_eq!(v["event_id"], "x1:audit");
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
