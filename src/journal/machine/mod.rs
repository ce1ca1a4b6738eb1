//! The configuration journal on top of Raft: entries, overlays, node
//! deltas, assignments and policies ([`ConfigMachine`]).
//!
//! Raft payloads are tagged: [`entry::TAG_RAW`] then bytes is the
//! low-level `append` (opaque, as the journal's own API has it);
//! [`entry::TAG_COMMAND`] then JSON is a configuration [`entry::Command`].
//! Both take journal sequence numbers (0, 1, 2 … without gaps, J1); a
//! refused command takes none and changes nothing.
//!
//! Every table is derived from `journal_entries`: a snapshot is the entries
//! up to an index, and a restore replays them through [`apply::apply`], so
//! replicas (and a replay from scratch) end identical.

pub mod apply;
pub mod delta;
pub mod entry;
pub mod query;
pub mod tables;

#[cfg(test)]
mod tests;

use rusqlite::{params, Connection, OptionalExtension, Transaction};

use crate::journal::state_machine::{
    append_log_snapshot, decode_snapshot, insert_entry, read_entries, seq_status, stored_next_seq,
    ApplyOutcome, CommittedEntry, ReadOp, ReadReply, Snapshotter, StateMachine,
};
use crate::journal::storage::StorageError;
use crate::proto::{ExitCode, Record};
use apply::Change;
use entry::{validate_entry, Command, TAG_COMMAND, TAG_RAW};
use tables::sql_err;

#[derive(Debug, Default)]
pub struct ConfigMachine {
    next_seq: u64,
    /// What applied entries changed, for subscriptions (drained by the
    /// daemon after each committed batch).
    changes: Vec<(u64, Change)>,
    /// A configuration entry was applied since the last drain (watchers
    /// read the new entries from the table).
    applied: bool,
    /// A restore replaced everything: every subscription must refresh.
    pub refresh_all: bool,
}

impl ConfigMachine {
    pub fn new() -> ConfigMachine {
        ConfigMachine::default()
    }

    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Changes of the batches committed since the last call, and whether
    /// they applied any configuration entry.
    pub fn take_changes(&mut self) -> (Vec<(u64, Change)>, bool) {
        (
            std::mem::take(&mut self.changes),
            std::mem::take(&mut self.applied),
        )
    }
}

/// The payload `append` proposes for opaque bytes.
pub fn raw_payload(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 1);
    out.push(TAG_RAW);
    out.extend_from_slice(body);
    out
}

/// The opaque bytes of a raw entry (without its tag).
fn raw_body(data: &[u8]) -> &[u8] {
    match data.split_first() {
        Some((&TAG_RAW, rest)) => rest,
        _ => data,
    }
}

impl StateMachine for ConfigMachine {
    fn load(&mut self, conn: &Connection) -> Result<(), StorageError> {
        self.next_seq = stored_next_seq(conn)?;
        // Whatever was pending belonged to a batch that did not commit.
        self.changes.clear();
        self.applied = false;
        Ok(())
    }

    fn apply(
        &mut self,
        tx: &Transaction<'_>,
        e: CommittedEntry<'_>,
    ) -> Result<ApplyOutcome, StorageError> {
        let seq = self.next_seq;
        let mut cmd = match Command::decode(e.data) {
            Ok(Some(c)) => c,
            Ok(None) => {
                insert_entry(tx, seq, e.index, e.data)?;
                self.next_seq += 1;
                return Ok(ApplyOutcome::Applied(Record::new().field("seq", seq)));
            }
            Err(why) => return Ok(ApplyOutcome::Rejected(ExitCode::Invalid, why)),
        };
        if let Err(why) = validate_entry(cmd.entry(), seq) {
            return Ok(ApplyOutcome::Rejected(ExitCode::Invalid, why));
        }
        // A refused command leaves nothing behind, whatever it wrote
        // before deciding (the digest: "nothing is written").
        tx.execute_batch("SAVEPOINT command")
            .map_err(tables::sql_err("begin a command"))?;
        let (rec, summary, changes) = match apply::apply(tx, seq, &mut cmd) {
            Ok(Ok(ok)) => {
                tx.execute_batch("RELEASE command")
                    .map_err(tables::sql_err("end a command"))?;
                ok
            }
            Ok(Err((code, why))) => {
                tx.execute_batch("ROLLBACK TO command; RELEASE command")
                    .map_err(tables::sql_err("undo a refused command"))?;
                return Ok(ApplyOutcome::Rejected(code, why));
            }
            Err(e) => return Err(e),
        };
        let entry = cmd.entry_mut();
        entry.sequence = seq;
        let entry = &*entry;
        insert_entry(tx, seq, e.index, e.data)?;
        tx.prepare_cached(
            "INSERT INTO config_entries (seq, entry_type, scope, timestamp, principal, role, summary, entry) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )
        .and_then(|mut st| {
            st.execute(params![
                seq as i64,
                entry.entry_type.as_str(),
                entry.scope.to_text(),
                entry.timestamp as i64,
                entry.author.principal,
                entry.author.role,
                summary,
                serde_json::to_string(entry).unwrap_or_default()
            ])
        })
        .map_err(sql_err("record a configuration entry"))?;
        self.next_seq += 1;
        self.changes.extend(changes.into_iter().map(|c| (seq, c)));
        self.applied = true;
        Ok(ApplyOutcome::Applied(rec))
    }

    fn snapshotter(&self) -> Snapshotter {
        std::sync::Arc::new(append_log_snapshot)
    }

    fn restore(&mut self, tx: &Transaction<'_>, data: &[u8]) -> Result<(), StorageError> {
        let entries = decode_snapshot(data)?;
        tables::clear(tx)?;
        self.next_seq = 0;
        for (seq, index, payload) in &entries {
            let outcome = self.apply(
                tx,
                CommittedEntry {
                    index: *index,
                    term: 0,
                    data: payload,
                },
            )?;
            if let ApplyOutcome::Rejected(_, why) = outcome {
                return Err(StorageError::new(format!(
                    "snapshot entry {seq} does not replay: {why}"
                )));
            }
            if self.next_seq != seq + 1 {
                return Err(StorageError::new(format!(
                    "snapshot entry {seq} replays out of order"
                )));
            }
        }
        self.changes.clear();
        self.applied = false;
        self.refresh_all = true;
        Ok(())
    }

    fn read(&self, conn: &Connection, op: ReadOp) -> Result<ReadReply, (ExitCode, String)> {
        let internal = |e: rusqlite::Error| (ExitCode::General, format!("storage: {e}"));
        read_entries(conn, op, self.next_seq, |seq, index, data| {
            let body = if data.first() == Some(&TAG_COMMAND) {
                let json: Option<String> = conn
                    .query_row(
                        "SELECT entry FROM config_entries WHERE seq = ?1",
                        params![seq as i64],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(internal)?;
                json.unwrap_or_default().into_bytes()
            } else {
                raw_body(&data).to_vec()
            };
            let rec = Record::new()
                .field("seq", seq)
                .field("index", index)
                .field("len", body.len());
            Ok((rec, Some(body)))
        })
    }

    fn status(&self) -> Record {
        seq_status(self.next_seq)
    }
}
