-- pact-journal schema, migration 3: fewer pages written per applied batch.
--
-- In WAL mode every page a transaction changes is written whole (8 KiB)
-- to the WAL and flushed by the next fsync, so the pages an append
-- touches set the journal's commit latency. Applying one entry used to
-- change five: the hard state (commit index), the applied index (its own
-- table), the entry's row and its UNIQUE raft_index index. Now:
--  * the applied index lives in the hard state's row (one page for both);
--  * journal_entries has no index on raft_index. raft_index grows with
--    seq (entries are applied in log order), so the snapshot's
--    `raft_index <= N` scan in seq order needs none.

ALTER TABLE raft_hard_state ADD COLUMN applied_index INTEGER NOT NULL DEFAULT 0;
INSERT INTO raft_hard_state (id, term, vote, commit_index, applied_index)
    SELECT 1, 0, NULL, 0, 0 FROM raft_applied WHERE id = 1
    AND NOT EXISTS (SELECT 1 FROM raft_hard_state WHERE id = 1);
UPDATE raft_hard_state
    SET applied_index = (SELECT applied_index FROM raft_applied WHERE id = 1)
    WHERE EXISTS (SELECT 1 FROM raft_applied WHERE id = 1);
DROP TABLE raft_applied;

CREATE TABLE journal_entries_v3 (
    seq        INTEGER PRIMARY KEY,
    raft_index INTEGER NOT NULL,
    data       BLOB    NOT NULL
);
INSERT INTO journal_entries_v3 (seq, raft_index, data)
    SELECT seq, raft_index, data FROM journal_entries ORDER BY seq;
DROP TABLE journal_entries;
ALTER TABLE journal_entries_v3 RENAME TO journal_entries;
