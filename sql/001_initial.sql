-- pact-journal schema, migration 1: the Raft log, its persistent state and
-- the journal's state machine. Applied inside one transaction; afterwards
-- PRAGMA user_version = 1.
--
-- Integers are SQLite INTEGER (i64); terms and indices stay below 2^63.

-- Who this data directory belongs to (node_id, cluster, created_ms).
CREATE TABLE node_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

-- Raft's hard state: written before any message that depends on it.
CREATE TABLE raft_hard_state (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    term         INTEGER NOT NULL,
    vote         INTEGER,
    commit_index INTEGER NOT NULL
);

-- How far the state machine tables include the log (same transaction as
-- the apply, so the two never disagree).
CREATE TABLE raft_applied (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    applied_index INTEGER NOT NULL
);

-- The log after the latest snapshot. kind: 0 normal, 1 noop, 2 membership.
CREATE TABLE raft_log (
    idx  INTEGER PRIMARY KEY,
    term INTEGER NOT NULL,
    kind INTEGER NOT NULL,
    data BLOB    NOT NULL
);

-- Snapshot metadata, newest three kept. The snapshot's data is not copied
-- here: the state machine tables are append-only, so the state as of any
-- snapshot index is regenerated from them (see StateMachine::snapshot).
CREATE TABLE raft_snapshots (
    idx        INTEGER PRIMARY KEY,
    term       INTEGER NOT NULL,
    membership BLOB    NOT NULL,
    data_len   INTEGER NOT NULL,
    created_ms INTEGER NOT NULL
);

-- The membership in effect at the applied index (for inspect and status).
CREATE TABLE raft_membership (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    idx      INTEGER NOT NULL,
    voters   TEXT    NOT NULL,
    learners TEXT    NOT NULL
);

-- The journal itself: one row per applied client entry. seq starts at 0
-- and has no gaps; raft_index is the log position it was committed at.
CREATE TABLE journal_entries (
    seq        INTEGER PRIMARY KEY,
    raft_index INTEGER NOT NULL UNIQUE,
    data       BLOB    NOT NULL
);
