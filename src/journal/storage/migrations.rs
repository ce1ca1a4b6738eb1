//! Numbered schema migrations from `sql/`, applied in order and tracked by
//! `PRAGMA user_version`. A database newer than this binary is refused.

use rusqlite::Connection;

use super::StorageError;

/// `(version, sql)`: migration `n` brings `user_version` from `n - 1` to `n`.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../../sql/001_initial.sql")),
    (2, include_str!("../../../sql/002_config.sql")),
    (3, include_str!("../../../sql/003_fewer_pages.sql")),
];

/// The schema version this binary writes.
pub const SCHEMA_VERSION: i64 = 3;

/// The database's schema version, if this binary can read it (it is not
/// newer than [`SCHEMA_VERSION`]).
pub fn check_readable(conn: &Connection) -> Result<i64, StorageError> {
    let current: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| StorageError::new(format!("read the schema version: {e}")))?;
    if current > SCHEMA_VERSION {
        return Err(StorageError::new(format!(
            "the database has schema version {current}, newer than this binary's {SCHEMA_VERSION}: \
             run a newer pact-journal"
        )));
    }
    Ok(current)
}

pub fn migrate(conn: &mut Connection) -> Result<(), StorageError> {
    let current = check_readable(conn)?;
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
        let tx = conn
            .transaction()
            .map_err(|e| StorageError::new(format!("begin migration {version}: {e}")))?;
        tx.execute_batch(sql)
            .map_err(|e| StorageError::new(format!("migration {version}: {e}")))?;
        tx.pragma_update(None, "user_version", version)
            .map_err(|e| StorageError::new(format!("migration {version}: {e}")))?;
        tx.commit()
            .map_err(|e| StorageError::new(format!("commit migration {version}: {e}")))?;
    }
    Ok(())
}
