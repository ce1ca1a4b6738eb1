-- pact-journal schema, migration 2: the configuration journal's state
-- tables (issue: configuration journal). They are derived from
-- journal_entries and rebuilt by replaying them (restore from a
-- snapshot), so every replica holds identical tables (J5, J8).

-- Every applied entry, decoded: for `log`, `watch`, rollback targets.
CREATE TABLE config_entries (
    seq        INTEGER PRIMARY KEY,
    entry_type TEXT    NOT NULL,
    scope      TEXT    NOT NULL,   -- global | vcluster:<name> | node:<name>
    timestamp  INTEGER NOT NULL,   -- unix ms, set by the proposing node
    principal  TEXT    NOT NULL,
    role       TEXT    NOT NULL,
    summary    TEXT    NOT NULL,   -- one line for `pact log`
    entry      TEXT    NOT NULL    -- the ConfigEntry as JSON
);
CREATE INDEX config_entries_by_scope ON config_entries (scope, seq);

-- The current overlay of each vCluster: canonical TOML, version = the
-- sequence of the last entry that changed it, checksum = SHA-256 (J5).
CREATE TABLE overlays (
    vcluster TEXT PRIMARY KEY,
    toml     TEXT    NOT NULL,
    version  INTEGER NOT NULL,
    checksum TEXT    NOT NULL
) WITHOUT ROWID;

-- Every version an overlay had (what rollback restores).
CREATE TABLE overlay_versions (
    vcluster TEXT    NOT NULL,
    seq      INTEGER NOT NULL,
    toml     TEXT    NOT NULL,
    PRIMARY KEY (vcluster, seq)
) WITHOUT ROWID;

-- Each node's committed delta: an overlay fragment on top of its vCluster.
CREATE TABLE node_deltas (
    node         TEXT PRIMARY KEY,
    vcluster     TEXT    NOT NULL,
    toml         TEXT    NOT NULL,
    removed      TEXT    NOT NULL,  -- keys the node dropped, one per line
    version      INTEGER NOT NULL,
    commits      TEXT    NOT NULL,  -- sequences of its commits, comma separated
    committed_ms INTEGER NOT NULL,
    expires_ms   INTEGER            -- NULL: no TTL
) WITHOUT ROWID;

-- Every version a node delta had ('' toml: no delta).
CREATE TABLE node_delta_versions (
    node     TEXT    NOT NULL,
    seq      INTEGER NOT NULL,
    vcluster TEXT    NOT NULL,
    toml     TEXT    NOT NULL,
    removed  TEXT    NOT NULL,
    PRIMARY KEY (node, seq)
) WITHOUT ROWID;

-- Which vCluster a node belongs to.
CREATE TABLE node_assignments (
    node     TEXT PRIMARY KEY,
    vcluster TEXT    NOT NULL,
    seq      INTEGER NOT NULL
) WITHOUT ROWID;

-- One policy per vCluster (J6); also part of its overlay.
CREATE TABLE policies (
    vcluster TEXT PRIMARY KEY,
    toml     TEXT    NOT NULL,
    seq      INTEGER NOT NULL
) WITHOUT ROWID;
