//! Items handed to a provider's own batch API ("remote jobs").
//!
//! A job is stored before anything is sent: its row (`submitting`) and
//! its items' `remote` column, in one transaction. Then the provider's
//! batch is created and its id stored (`submitted`). Items of a live job
//! are not read for running here. When the job ends, its items still
//! pending are released to run another way. After a crash, a job that has
//! its provider id is polled again (nothing is sent twice); one without
//! (the crash fell between the two steps) is released, so its items run
//! here; if the provider had created that batch, it is abandoned (paid
//! for, its answers unused).

use rusqlite::{OptionalExtension, params};

use super::{Endpoint, Pending, Store, StoreError, lock, sql};

/// A provider batch in progress.
#[derive(Debug, Clone)]
pub struct RemoteJob {
    pub id: i64,
    pub batch: i64,
    /// The deployment's id (`provider/model`).
    pub deployment: String,
    pub endpoint: Endpoint,
    /// The provider's batch id, once created.
    pub remote_id: Option<String>,
}

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS remote_jobs (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  batch INTEGER NOT NULL,
  deployment TEXT NOT NULL,
  endpoint TEXT NOT NULL,
  remote_id TEXT,
  -- 'submitting', 'submitted', 'done'
  state TEXT NOT NULL,
  created_ms INTEGER NOT NULL
);
";

/// Adds `items.remote` to a database made before remote jobs existed.
pub(super) fn migrate(conn: &rusqlite::Connection) -> Result<(), StoreError> {
    let has: bool = conn
        .query_row(
            "SELECT count(*) FROM pragma_table_info('items') WHERE name = 'remote'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .map_err(sql("migrate"))?
        > 0;
    if !has {
        conn.execute_batch("ALTER TABLE items ADD COLUMN remote INTEGER")
            .map_err(sql("migrate"))?;
    }
    conn.execute_batch(
        "CREATE INDEX IF NOT EXISTS items_remote ON items (remote) WHERE remote IS NOT NULL",
    )
    .map_err(sql("migrate"))?;
    // Owners (tenants, issue #8); rows from before have none: `default`.
    for (table, column) in [
        ("files", "owner"),
        ("batches", "owner"),
        ("batches", "owner_key"),
    ] {
        let has: i64 = conn
            .query_row(
                &format!("SELECT count(*) FROM pragma_table_info('{table}') WHERE name = ?1"),
                [column],
                |r| r.get(0),
            )
            .map_err(sql("migrate"))?;
        if has == 0 {
            conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} TEXT"))
                .map_err(sql("migrate"))?;
        }
    }
    Ok(())
}

impl Store {
    /// Stores a job for `deployment` and claims those of `keys` (items of
    /// batch `batch`) still pending and unclaimed. Returns the job's id
    /// and the keys it claimed.
    pub fn claim_remote(
        &self,
        batch: i64,
        deployment: &str,
        endpoint: Endpoint,
        keys: &[i64],
    ) -> Result<(i64, Vec<i64>), StoreError> {
        let mut conn = lock(&self.write);
        let tx = conn.transaction().map_err(sql("begin"))?;
        tx.execute(
            "INSERT INTO remote_jobs (batch, deployment, endpoint, state, created_ms) \
             VALUES (?1, ?2, ?3, 'submitting', ?4)",
            params![batch, deployment, endpoint.path(), super::super::now_ms()],
        )
        .map_err(sql("remote job"))?;
        let job = tx.last_insert_rowid();
        let mut claimed = Vec::with_capacity(keys.len());
        {
            let mut st = tx
                .prepare_cached(
                    "UPDATE items SET remote = ?1 WHERE key = ?2 AND state = 0 AND remote IS NULL",
                )
                .map_err(sql("claim"))?;
            for &k in keys {
                if st.execute(params![job, k]).map_err(sql("claim"))? == 1 {
                    claimed.push(k);
                }
            }
        }
        tx.commit().map_err(sql("commit claim"))?;
        Ok((job, claimed))
    }

    /// Records the provider's id for job `job`.
    pub fn remote_submitted(&self, job: i64, remote_id: &str) -> Result<(), StoreError> {
        lock(&self.write)
            .execute(
                "UPDATE remote_jobs SET remote_id = ?2, state = 'submitted' WHERE id = ?1",
                params![job, remote_id],
            )
            .map(|_| ())
            .map_err(sql("remote submitted"))
    }

    /// Ends job `job`: its items still pending are released (to run
    /// another way). Returns them.
    pub fn remote_finish(&self, job: i64) -> Result<Vec<Pending>, StoreError> {
        let mut conn = lock(&self.write);
        let tx = conn.transaction().map_err(sql("begin"))?;
        let released = pending_of(&tx, job)?;
        tx.execute(
            "UPDATE items SET remote = NULL WHERE remote = ?1 AND state = 0",
            [job],
        )
        .map_err(sql("release"))?;
        tx.execute("UPDATE remote_jobs SET state = 'done' WHERE id = ?1", [job])
            .map_err(sql("release"))?;
        tx.commit().map_err(sql("commit release"))?;
        Ok(released)
    }

    /// Jobs not yet done.
    pub fn remote_jobs(&self) -> Result<Vec<RemoteJob>, StoreError> {
        let conn = lock(&self.read);
        let mut st = conn
            .prepare_cached(
                "SELECT id, batch, deployment, endpoint, remote_id FROM remote_jobs \
                 WHERE state != 'done' ORDER BY id",
            )
            .map_err(sql("remote jobs"))?;
        let rows = st
            .query_map([], |r| {
                let endpoint: String = r.get(3)?;
                Ok(RemoteJob {
                    id: r.get(0)?,
                    batch: r.get(1)?,
                    deployment: r.get(2)?,
                    endpoint: Endpoint::from_path(&endpoint).unwrap_or(Endpoint::ChatCompletions),
                    remote_id: r.get(4)?,
                })
            })
            .map_err(sql("remote jobs"))?;
        rows.collect::<Result<_, _>>().map_err(sql("remote jobs"))
    }

    /// Job `job`'s items still pending.
    pub fn remote_items(&self, job: i64) -> Result<Vec<Pending>, StoreError> {
        pending_of(&lock(&self.read), job)
    }

    /// Items of batch `batch` pending in live jobs.
    pub fn remote_pending(&self, batch: i64) -> Result<i64, StoreError> {
        lock(&self.read)
            .query_row(
                "SELECT count(*) FROM items WHERE key >= ?1 AND key < ?2 AND state = 0 \
                 AND remote IS NOT NULL",
                params![batch << 32, (batch + 1) << 32],
                |r| r.get(0),
            )
            .optional()
            .map(Option::unwrap_or_default)
            .map_err(sql("remote pending"))
    }
}

fn pending_of(conn: &rusqlite::Connection, job: i64) -> Result<Vec<Pending>, StoreError> {
    let mut st = conn
        .prepare_cached(
            "SELECT key, endpoint, body FROM items WHERE remote = ?1 AND state = 0 ORDER BY key",
        )
        .map_err(sql("remote items"))?;
    let rows = st
        .query_map([job], |r| {
            let endpoint: String = r.get(1)?;
            Ok(Pending {
                key: r.get(0)?,
                endpoint: Endpoint::from_path(&endpoint).unwrap_or(Endpoint::ChatCompletions),
                body: r.get(2)?,
            })
        })
        .map_err(sql("remote items"))?;
    rows.collect::<Result<_, _>>().map_err(sql("remote items"))
}
