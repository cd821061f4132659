//! The batch store: one SQLite database in WAL mode with `synchronous =
//! FULL`, so a committed batch or result survives a crash of the process
//! and of the machine.
//!
//! Exactly-once results come from one rule: an item's result is written by
//! `UPDATE … WHERE state = pending`, in the same transaction as the
//! batch's counters. A result that arrives twice (an item re-run after a
//! restart whose first result had already committed, or a result racing a
//! cancel) changes nothing the second time. Nothing about an item being
//! *in flight* is stored, so after a crash every unfinished item simply
//! runs again.
//!
//! Item rows are keyed by `batch seq × 2³² + index`, so one batch's items
//! are one contiguous range of the table's own B-tree, read in order.
//!
//! All calls block: callers run them on tokio's blocking pool.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use rusqlite::{Connection, OptionalExtension, Transaction, params};

use super::{BatchRow, Counts, Endpoint, ItemState, NewItem, ResultRow, State};

mod remote;
pub use remote::RemoteJob;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS files (
  id TEXT PRIMARY KEY,
  purpose TEXT NOT NULL,
  filename TEXT NOT NULL,
  bytes INTEGER NOT NULL,
  created_ms INTEGER NOT NULL,
  -- 'upload', or a batch's 'output' / 'error' file (content generated
  -- from its items)
  kind TEXT NOT NULL,
  batch INTEGER
);
CREATE TABLE IF NOT EXISTS batches (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  id TEXT NOT NULL UNIQUE,
  state TEXT NOT NULL,
  endpoint TEXT NOT NULL,
  priority INTEGER NOT NULL,
  metadata TEXT NOT NULL,
  input_file_id TEXT,
  completion_window TEXT NOT NULL,
  created_ms INTEGER NOT NULL,
  deadline_ms INTEGER NOT NULL,
  finished_ms INTEGER,
  total INTEGER NOT NULL DEFAULT 0,
  succeeded INTEGER NOT NULL DEFAULT 0,
  failed INTEGER NOT NULL DEFAULT 0,
  cancelled INTEGER NOT NULL DEFAULT 0,
  expired INTEGER NOT NULL DEFAULT 0,
  placed_local INTEGER NOT NULL DEFAULT 0,
  placed_external INTEGER NOT NULL DEFAULT 0,
  from_cache INTEGER NOT NULL DEFAULT 0,
  -- the last result cursor handed out
  cursor INTEGER NOT NULL DEFAULT 0,
  output_file_id TEXT,
  error_file_id TEXT
);
CREATE TABLE IF NOT EXISTS items (
  key INTEGER PRIMARY KEY,
  batch INTEGER NOT NULL,
  custom_id TEXT,
  endpoint TEXT NOT NULL,
  body BLOB NOT NULL,
  state INTEGER NOT NULL,
  status INTEGER,
  response BLOB,
  placement TEXT,
  finished_ms INTEGER,
  cursor INTEGER
);
CREATE UNIQUE INDEX IF NOT EXISTS items_custom_id ON items (batch, custom_id);
CREATE INDEX IF NOT EXISTS items_cursor ON items (batch, cursor) WHERE cursor IS NOT NULL;
";

/// An item's row key.
pub fn item_key(batch: i64, index: u64) -> i64 {
    (batch << 32) | (index as i64 & 0xffff_ffff)
}

/// A store error, as text (SQLite's message with what was being done).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("batch store: {0}")]
    Sqlite(String),
    /// A second item with the same `custom_id` (its index).
    #[error("duplicate custom_id `{custom_id}` (item {index})")]
    Duplicate { custom_id: String, index: u64 },
}

fn sql(what: &str) -> impl FnOnce(rusqlite::Error) -> StoreError + '_ {
    move |e| StoreError::Sqlite(format!("{what}: {e}"))
}

/// One finished item, to record.
#[derive(Debug, Clone)]
pub struct Finished {
    pub batch: i64,
    pub key: i64,
    pub state: ItemState,
    pub status: Option<u16>,
    pub response: Vec<u8>,
    /// `local:…`, `external:…`, `cache`, or empty.
    pub placement: String,
    pub finished_ms: i64,
}

/// A pending item, to run.
#[derive(Debug, Clone)]
pub struct Pending {
    pub key: i64,
    pub endpoint: Endpoint,
    pub body: Vec<u8>,
}

impl Pending {
    /// The `model` its body names.
    pub fn body_model(&self) -> Option<String> {
        #[derive(serde::Deserialize)]
        struct Model {
            model: String,
        }
        serde_json::from_slice::<Model>(&self.body)
            .ok()
            .map(|m| m.model)
    }
}

#[derive(Debug)]
pub struct Store {
    write: Mutex<Connection>,
    read: Mutex<Connection>,
    files: PathBuf,
    /// Held (locked) while this process uses the directory.
    _lock: std::fs::File,
}

fn lock(m: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn open(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path).map_err(sql("open"))?;
    conn.busy_timeout(std::time::Duration::from_secs(30))
        .map_err(sql("busy_timeout"))?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;",
    )
    .map_err(sql("pragmas"))?;
    Ok(conn)
}

const BATCH_COLUMNS: &str = "seq, id, state, endpoint, priority, metadata, input_file_id, \
    completion_window, created_ms, deadline_ms, finished_ms, total, succeeded, failed, \
    cancelled, expired, placed_local, placed_external, from_cache, cursor, output_file_id, \
    error_file_id, COALESCE(owner, 'default'), owner_key";

fn batch_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<BatchRow> {
    let state: String = r.get(2)?;
    let endpoint: String = r.get(3)?;
    Ok(BatchRow {
        seq: r.get(0)?,
        id: r.get(1)?,
        state: State::parse(&state).unwrap_or(State::Failed),
        endpoint: Endpoint::from_path(&endpoint).unwrap_or(Endpoint::ChatCompletions),
        priority: r.get(4)?,
        metadata: r.get(5)?,
        input_file_id: r.get(6)?,
        completion_window: r.get(7)?,
        created_ms: r.get(8)?,
        deadline_ms: r.get(9)?,
        finished_ms: r.get(10)?,
        counts: Counts {
            total: r.get(11)?,
            succeeded: r.get(12)?,
            failed: r.get(13)?,
            cancelled: r.get(14)?,
            expired: r.get(15)?,
            placed_local: r.get(16)?,
            placed_external: r.get(17)?,
            from_cache: r.get(18)?,
        },
        cursor: r.get(19)?,
        output_file_id: r.get(20)?,
        error_file_id: r.get(21)?,
        owner: r.get(22)?,
        owner_key: r.get(23)?,
    })
}

/// A batch being created: its items go in as they arrive, in
/// transactions of many items each.
#[derive(Debug)]
pub struct NewBatch {
    pub seq: i64,
    pub id: String,
    pub next_index: u64,
    /// Items recorded failed at insertion (invalid), with their cursors.
    pub failed: u64,
}

/// A new batch's fixed fields.
#[derive(Debug, Clone)]
pub struct BatchSpec {
    pub id: String,
    pub endpoint: Endpoint,
    pub priority: i64,
    pub metadata: String,
    pub input_file_id: Option<String>,
    pub completion_window: String,
    pub created_ms: i64,
    pub deadline_ms: i64,
    /// The tenant that created it (only its keys see it).
    pub owner: String,
    /// The virtual key that created it (its items' usage is that key's).
    pub owner_key: Option<String>,
}

/// A stored file's row.
#[derive(Debug, Clone)]
pub struct FileRow {
    pub id: String,
    pub purpose: String,
    pub filename: String,
    pub bytes: i64,
    pub created_ms: i64,
    pub kind: String,
    pub batch: Option<i64>,
    /// The tenant that uploaded it (a batch's output: the batch's tenant).
    pub owner: String,
}

fn file_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<FileRow> {
    Ok(FileRow {
        id: r.get(0)?,
        purpose: r.get(1)?,
        filename: r.get(2)?,
        bytes: r.get(3)?,
        created_ms: r.get(4)?,
        kind: r.get(5)?,
        batch: r.get(6)?,
        owner: r.get(7)?,
    })
}

impl Store {
    /// Opens (creating) `dir/batches.sqlite3` and `dir/files/`, and drops
    /// batches whose creation never finished (never acknowledged).
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let files = dir.join("files");
        std::fs::create_dir_all(&files)
            .map_err(|e| StoreError::Sqlite(format!("cannot create {}: {e}", files.display())))?;
        // One gateway per directory: a second would drop the first one's
        // creates in progress and run the same items.
        let lock_path = dir.join("lock");
        let lock_file = std::fs::File::create(&lock_path).map_err(|e| {
            StoreError::Sqlite(format!("cannot create {}: {e}", lock_path.display()))
        })?;
        if lock_file.try_lock().is_err() {
            return Err(StoreError::Sqlite(format!(
                "{} is in use by another Switchyard process (one gateway per batch directory)",
                dir.display()
            )));
        }
        let path = dir.join("batches.sqlite3");
        let write = open(&path)?;
        write.execute_batch(SCHEMA).map_err(sql("schema"))?;
        write.execute_batch(remote::SCHEMA).map_err(sql("schema"))?;
        remote::migrate(&write)?;
        let read = open(&path)?;
        let store = Self {
            write: Mutex::new(write),
            read: Mutex::new(read),
            files,
            _lock: lock_file,
        };
        store.remove_stray_files();
        let dropped = store.drop_unfinished_creates()?;
        if dropped > 0 {
            tracing::info!(
                dropped,
                "batch store: dropped batches whose creation was interrupted (never acknowledged)"
            );
        }
        Ok(store)
    }

    /// Removes part files of uploads cut short, and content whose row was
    /// never committed (a crash between the rename and the insert).
    fn remove_stray_files(&self) {
        let Ok(entries) = std::fs::read_dir(&self.files) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            let stray = match path.extension().and_then(|x| x.to_str()) {
                Some("part") => true,
                Some("jsonl") => path
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .is_some_and(|id| matches!(self.file(id), Ok(None))),
                _ => false,
            };
            if stray {
                let _ = std::fs::remove_file(&path);
            }
        }
    }

    /// Where uploaded file `id` is kept.
    pub fn file_path(&self, id: &str) -> PathBuf {
        self.files.join(format!("{id}.jsonl"))
    }

    fn drop_unfinished_creates(&self) -> Result<usize, StoreError> {
        let mut conn = lock(&self.write);
        let tx = conn.transaction().map_err(sql("begin"))?;
        let seqs: Vec<i64> = {
            let mut st = tx
                .prepare("SELECT seq FROM batches WHERE state = 'validating'")
                .map_err(sql("select validating"))?;
            st.query_map([], |r| r.get(0))
                .map_err(sql("select validating"))?
                .collect::<Result<_, _>>()
                .map_err(sql("select validating"))?
        };
        for &seq in &seqs {
            delete_batch(&tx, seq)?;
        }
        tx.commit().map_err(sql("commit"))?;
        Ok(seqs.len())
    }

    /// Records a batch as being created (`validating`: invisible, dropped
    /// at the next start unless [`Self::finish_create`] runs).
    pub fn begin_create(&self, spec: &BatchSpec) -> Result<NewBatch, StoreError> {
        let conn = lock(&self.write);
        conn.execute(
            "INSERT INTO batches (id, state, endpoint, priority, metadata, input_file_id, \
             completion_window, created_ms, deadline_ms, owner, owner_key) \
             VALUES (?1, 'validating', ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
                spec.id,
                spec.endpoint.path(),
                spec.priority,
                spec.metadata,
                spec.input_file_id,
                spec.completion_window,
                spec.created_ms,
                spec.deadline_ms,
                spec.owner,
                spec.owner_key
            ],
        )
        .map_err(sql("insert batch"))?;
        Ok(NewBatch {
            seq: conn.last_insert_rowid(),
            id: spec.id.clone(),
            next_index: 0,
            failed: 0,
        })
    }

    /// Adds items in one transaction. A duplicate `custom_id` rolls the
    /// chunk back and is reported.
    pub fn add_items(&self, batch: &mut NewBatch, items: &[NewItem]) -> Result<(), StoreError> {
        let mut conn = lock(&self.write);
        let tx = conn.transaction().map_err(sql("begin"))?;
        let mut failed = 0;
        {
            let mut st = tx
                .prepare_cached(
                    "INSERT INTO items (key, batch, custom_id, endpoint, body, state, status, \
                     response, finished_ms, cursor) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                )
                .map_err(sql("prepare insert item"))?;
            for (i, item) in items.iter().enumerate() {
                let index = batch.next_index + i as u64;
                let (state, status, response, finished, cursor) = match &item.invalid {
                    None => (ItemState::Pending, None, None, None, None),
                    Some(inv) => {
                        failed += 1;
                        (
                            ItemState::Failed,
                            inv.status,
                            Some(inv.response.as_slice()),
                            Some(inv.at_ms),
                            Some((batch.failed + failed) as i64),
                        )
                    }
                };
                let inserted = st.execute(params![
                    item_key(batch.seq, index),
                    batch.seq,
                    item.custom_id,
                    item.endpoint.path(),
                    item.body,
                    state as i64,
                    status,
                    response,
                    finished,
                    cursor
                ]);
                match inserted {
                    Ok(_) => {}
                    Err(rusqlite::Error::SqliteFailure(e, _))
                        if e.code == rusqlite::ErrorCode::ConstraintViolation =>
                    {
                        return Err(StoreError::Duplicate {
                            custom_id: item.custom_id.clone().unwrap_or_default(),
                            index,
                        });
                    }
                    Err(e) => return Err(sql("insert item")(e)),
                }
            }
        }
        tx.commit().map_err(sql("commit items"))?;
        batch.next_index += items.len() as u64;
        batch.failed += failed;
        Ok(())
    }

    /// Makes the batch visible and runnable: the create is acknowledged
    /// only after this commits.
    pub fn finish_create(&self, batch: &NewBatch) -> Result<(), StoreError> {
        let mut conn = lock(&self.write);
        let tx = conn.transaction().map_err(sql("begin"))?;
        tx.execute(
            "UPDATE batches SET state = 'in_progress', total = ?2, failed = ?3, cursor = ?3 WHERE seq = ?1",
            params![batch.seq, batch.next_index as i64, batch.failed as i64],
        )
        .map_err(sql("finish batch"))?;
        let now = super::now_ms();
        finalize_if_done(&tx, batch.seq, now)?;
        tx.commit().map_err(sql("commit batch"))
    }

    /// Removes a batch whose creation failed.
    pub fn abort_create(&self, seq: i64) -> Result<(), StoreError> {
        let mut conn = lock(&self.write);
        let tx = conn.transaction().map_err(sql("begin"))?;
        delete_batch(&tx, seq)?;
        tx.commit().map_err(sql("commit"))
    }

    pub fn batch(&self, id: &str) -> Result<Option<BatchRow>, StoreError> {
        let conn = lock(&self.read);
        conn.query_row(
            &format!("SELECT {BATCH_COLUMNS} FROM batches WHERE id = ?1 AND state != 'validating'"),
            [id],
            batch_row,
        )
        .optional()
        .map_err(sql("get batch"))
    }

    pub fn batch_by_seq(&self, seq: i64) -> Result<Option<BatchRow>, StoreError> {
        let conn = lock(&self.read);
        conn.query_row(
            &format!("SELECT {BATCH_COLUMNS} FROM batches WHERE seq = ?1"),
            [seq],
            batch_row,
        )
        .optional()
        .map_err(sql("get batch"))
    }

    /// `owner`'s batches, newest first; `after`: a batch id, list older
    /// ones. Returns up to `limit + 1` (the caller reports `has_more`).
    pub fn list(
        &self,
        limit: usize,
        after: Option<&str>,
        owner: &str,
    ) -> Result<Vec<BatchRow>, StoreError> {
        let conn = lock(&self.read);
        let before = match after {
            Some(id) => {
                let seq = conn
                    .query_row("SELECT seq FROM batches WHERE id = ?1", [id], |r| {
                        r.get::<_, i64>(0)
                    })
                    .optional()
                    .map_err(sql("list"))?;
                // An unknown cursor is the end of the list, not its start
                // (a paginating client must not loop).
                match seq {
                    Some(seq) => seq,
                    None => return Ok(Vec::new()),
                }
            }
            None => i64::MAX,
        };
        let mut st = conn
            .prepare_cached(&format!(
                "SELECT {BATCH_COLUMNS} FROM batches WHERE seq < ?1 AND state != 'validating' \
                 AND COALESCE(owner, 'default') = ?3 ORDER BY seq DESC LIMIT ?2"
            ))
            .map_err(sql("list"))?;
        st.query_map(params![before, (limit + 1) as i64, owner], batch_row)
            .map_err(sql("list"))?
            .collect::<Result<_, _>>()
            .map_err(sql("list"))
    }

    /// Batches still running.
    pub fn active(&self) -> Result<Vec<BatchRow>, StoreError> {
        let conn = lock(&self.read);
        let mut st = conn
            .prepare_cached(&format!(
                "SELECT {BATCH_COLUMNS} FROM batches WHERE state = 'in_progress' ORDER BY seq"
            ))
            .map_err(sql("active"))?;
        st.query_map([], batch_row)
            .map_err(sql("active"))?
            .collect::<Result<_, _>>()
            .map_err(sql("active"))
    }

    /// Counts of batches by state.
    pub fn batches_by_state(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let conn = lock(&self.read);
        let mut st = conn
            .prepare_cached(
                "SELECT state, count(*) FROM batches WHERE state != 'validating' GROUP BY state",
            )
            .map_err(sql("stats"))?;
        st.query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))
            .map_err(sql("stats"))?
            .collect::<Result<_, _>>()
            .map_err(sql("stats"))
    }

    /// Up to `limit` pending items of batch `seq` after key `after`.
    pub fn pending(&self, seq: i64, after: i64, limit: usize) -> Result<Vec<Pending>, StoreError> {
        let conn = lock(&self.read);
        let mut st = conn
            .prepare_cached(
                "SELECT key, endpoint, body FROM items WHERE key > ?1 AND key < ?2 AND state = 0 \
                 AND remote IS NULL ORDER BY key LIMIT ?3",
            )
            .map_err(sql("pending"))?;
        let rows = st
            .query_map(params![after, (seq + 1) << 32, limit as i64], |r| {
                let endpoint: String = r.get(1)?;
                Ok(Pending {
                    key: r.get(0)?,
                    endpoint: Endpoint::from_path(&endpoint).unwrap_or(Endpoint::ChatCompletions),
                    body: r.get(2)?,
                })
            })
            .map_err(sql("pending"))?;
        rows.collect::<Result<_, _>>().map_err(sql("pending"))
    }

    /// Records results, each only if its item is still pending, in one
    /// transaction; batches whose last item this finishes are finalized.
    /// Returns how many were recorded.
    pub fn record(&self, results: &[Finished]) -> Result<usize, StoreError> {
        let mut conn = lock(&self.write);
        let tx = conn.transaction().map_err(sql("begin"))?;
        let mut recorded = 0;
        let mut touched = Vec::new();
        {
            let mut item = tx
                .prepare_cached(
                    "UPDATE items SET state = ?2, status = ?3, response = ?4, placement = ?5, \
                     finished_ms = ?6, cursor = (SELECT cursor + 1 FROM batches WHERE seq = ?7) \
                     WHERE key = ?1 AND state = 0",
                )
                .map_err(sql("prepare record"))?;
            let mut batch = tx
                .prepare_cached(
                    "UPDATE batches SET cursor = cursor + 1, succeeded = succeeded + ?2, \
                     failed = failed + ?3, placed_local = placed_local + ?4, \
                     placed_external = placed_external + ?5, from_cache = from_cache + ?6 \
                     WHERE seq = ?1",
                )
                .map_err(sql("prepare record"))?;
            for r in results {
                let changed = item
                    .execute(params![
                        r.key,
                        r.state as i64,
                        r.status,
                        r.response,
                        r.placement,
                        r.finished_ms,
                        r.batch
                    ])
                    .map_err(sql("record item"))?;
                if changed == 0 {
                    continue;
                }
                recorded += 1;
                let p = &r.placement;
                batch
                    .execute(params![
                        r.batch,
                        i64::from(r.state == ItemState::Succeeded),
                        i64::from(r.state == ItemState::Failed),
                        i64::from(p.starts_with("local:")),
                        i64::from(p.starts_with("external:")),
                        i64::from(p == "cache")
                    ])
                    .map_err(sql("record batch"))?;
                if !touched.contains(&r.batch) {
                    touched.push(r.batch);
                }
            }
        }
        let now = super::now_ms();
        for seq in touched {
            finalize_if_done(&tx, seq, now)?;
        }
        tx.commit().map_err(sql("commit results"))?;
        Ok(recorded)
    }

    /// Ends every pending item of an in-progress batch as `to` (cancelled
    /// or expired) and the batch with it. `false` when the batch was not in
    /// progress.
    pub fn end_pending(&self, seq: i64, to: ItemState) -> Result<bool, StoreError> {
        let mut conn = lock(&self.write);
        let tx = conn.transaction().map_err(sql("begin"))?;
        let running: Option<i64> = tx
            .query_row(
                "SELECT cursor FROM batches WHERE seq = ?1 AND state = 'in_progress'",
                [seq],
                |r| r.get(0),
            )
            .optional()
            .map_err(sql("end batch"))?;
        let Some(cursor) = running else {
            return Ok(false);
        };
        let now = super::now_ms();
        // Each ended item gets a fresh cursor: past every cursor handed
        // out, distinct (its index), increasing in index order.
        let base = cursor + 1;
        let ended = tx
            .execute(
                "UPDATE items SET state = ?3, finished_ms = ?4, cursor = ?5 + (key & 4294967295) \
                 WHERE key >= ?1 AND key < ?2 AND state = 0",
                params![seq << 32, (seq + 1) << 32, to as i64, now, base],
            )
            .map_err(sql("end items"))?;
        let last: i64 = tx
            .query_row(
                "SELECT coalesce(max(cursor), 0) FROM items WHERE batch = ?1",
                [seq],
                |r| r.get(0),
            )
            .map_err(sql("end items"))?;
        let (column, state) = match to {
            ItemState::Expired => ("expired", State::Expired),
            _ => ("cancelled", State::Cancelled),
        };
        tx.execute(
            &format!(
                "UPDATE batches SET {column} = {column} + ?2, cursor = max(cursor, ?3) WHERE seq = ?1"
            ),
            params![seq, ended as i64, last],
        )
        .map_err(sql("end batch"))?;
        finish_batch(&tx, seq, state, now)?;
        tx.commit().map_err(sql("commit end"))?;
        Ok(true)
    }

    /// Results of batch `seq` after `cursor`, in cursor order.
    pub fn results(
        &self,
        seq: i64,
        cursor: i64,
        limit: usize,
    ) -> Result<Vec<ResultRow>, StoreError> {
        let conn = lock(&self.read);
        let mut st = conn
            .prepare_cached(
                "SELECT cursor, key, custom_id, state, status, response, placement, finished_ms \
                 FROM items WHERE batch = ?1 AND cursor > ?2 ORDER BY cursor LIMIT ?3",
            )
            .map_err(sql("results"))?;
        st.query_map(params![seq, cursor, limit as i64], result_row)
            .map_err(sql("results"))?
            .collect::<Result<_, _>>()
            .map_err(sql("results"))
    }

    /// Finished items of batch `seq` in index order after key `after`,
    /// those succeeded (`errors == false`) or the rest (`true`).
    pub fn finished_in_order(
        &self,
        seq: i64,
        after: i64,
        errors: bool,
        limit: usize,
    ) -> Result<Vec<ResultRow>, StoreError> {
        let conn = lock(&self.read);
        let filter = if errors { "state > 1" } else { "state = 1" };
        let mut st = conn
            .prepare_cached(&format!(
                "SELECT cursor, key, custom_id, state, status, response, placement, finished_ms \
                 FROM items WHERE key > ?1 AND key < ?2 AND {filter} ORDER BY key LIMIT ?3"
            ))
            .map_err(sql("results"))?;
        let after = after.max((seq << 32) - 1);
        st.query_map(params![after, (seq + 1) << 32, limit as i64], result_row)
            .map_err(sql("results"))?
            .collect::<Result<_, _>>()
            .map_err(sql("results"))
    }

    pub fn insert_file(&self, f: &FileRow) -> Result<(), StoreError> {
        let conn = lock(&self.write);
        conn.execute(
            "INSERT INTO files (id, purpose, filename, bytes, created_ms, kind, batch, owner) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                f.id,
                f.purpose,
                f.filename,
                f.bytes,
                f.created_ms,
                f.kind,
                f.batch,
                f.owner
            ],
        )
        .map_err(sql("insert file"))?;
        Ok(())
    }

    pub fn file(&self, id: &str) -> Result<Option<FileRow>, StoreError> {
        let conn = lock(&self.read);
        conn.query_row(
            "SELECT id, purpose, filename, bytes, created_ms, kind, batch, COALESCE(owner, 'default') \
             FROM files WHERE id = ?1",
            [id],
            file_row,
        )
        .optional()
        .map_err(sql("get file"))
    }

    /// `owner`'s files, newest first.
    pub fn files(
        &self,
        limit: usize,
        purpose: Option<&str>,
        owner: &str,
    ) -> Result<Vec<FileRow>, StoreError> {
        let conn = lock(&self.read);
        let mut st = conn
            .prepare_cached(
                "SELECT id, purpose, filename, bytes, created_ms, kind, batch, COALESCE(owner, 'default') \
                 FROM files WHERE (?1 IS NULL OR purpose = ?1) AND COALESCE(owner, 'default') = ?3 \
                 ORDER BY rowid DESC LIMIT ?2",
            )
            .map_err(sql("list files"))?;
        st.query_map(params![purpose, limit as i64, owner], file_row)
            .map_err(sql("list files"))?
            .collect::<Result<_, _>>()
            .map_err(sql("list files"))
    }

    /// Deletes an uploaded file's row (the caller removes its content).
    /// `false` when there is no such upload.
    pub fn delete_file(&self, id: &str) -> Result<bool, StoreError> {
        let conn = lock(&self.write);
        let n = conn
            .execute("DELETE FROM files WHERE id = ?1 AND kind = 'upload'", [id])
            .map_err(sql("delete file"))?;
        Ok(n > 0)
    }

    /// Items by state and placement over every batch.
    pub fn item_totals(&self) -> Result<Counts, StoreError> {
        let conn = lock(&self.read);
        conn.query_row(
            "SELECT coalesce(sum(total), 0), coalesce(sum(succeeded), 0), coalesce(sum(failed), 0), \
             coalesce(sum(cancelled), 0), coalesce(sum(expired), 0), coalesce(sum(placed_local), 0), \
             coalesce(sum(placed_external), 0), coalesce(sum(from_cache), 0) \
             FROM batches WHERE state != 'validating'",
            [],
            |r| {
                Ok(Counts {
                    total: r.get(0)?,
                    succeeded: r.get(1)?,
                    failed: r.get(2)?,
                    cancelled: r.get(3)?,
                    expired: r.get(4)?,
                    placed_local: r.get(5)?,
                    placed_external: r.get(6)?,
                    from_cache: r.get(7)?,
                })
            },
        )
        .map_err(sql("item totals"))
    }
}

fn result_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ResultRow> {
    let key: i64 = r.get(1)?;
    let state: i64 = r.get(3)?;
    Ok(ResultRow {
        cursor: r.get(0)?,
        index: (key & 0xffff_ffff) as u64,
        custom_id: r.get(2)?,
        state: ItemState::from_i64(state),
        status: r.get(4)?,
        response: r.get(5)?,
        placement: r.get::<_, Option<String>>(6)?.unwrap_or_default(),
        finished_ms: r.get::<_, Option<i64>>(7)?.unwrap_or(0),
    })
}

fn delete_batch(tx: &Transaction<'_>, seq: i64) -> Result<(), StoreError> {
    tx.execute(
        "DELETE FROM items WHERE key >= ?1 AND key < ?2",
        params![seq << 32, (seq + 1) << 32],
    )
    .map_err(sql("delete items"))?;
    tx.execute("DELETE FROM batches WHERE seq = ?1", [seq])
        .map_err(sql("delete batch"))?;
    Ok(())
}

/// Completes a running batch whose every item has finished.
fn finalize_if_done(tx: &Transaction<'_>, seq: i64, now: i64) -> Result<(), StoreError> {
    let done: bool = tx
        .query_row(
            "SELECT state = 'in_progress' AND succeeded + failed + cancelled + expired >= total \
             FROM batches WHERE seq = ?1",
            [seq],
            |r| r.get(0),
        )
        .optional()
        .map_err(sql("finalize"))?
        .unwrap_or(false);
    if done {
        finish_batch(tx, seq, State::Completed, now)?;
    }
    Ok(())
}

/// Sets a batch's final state and creates its output and error files.
fn finish_batch(tx: &Transaction<'_>, seq: i64, state: State, now: i64) -> Result<(), StoreError> {
    let id: String = tx
        .query_row("SELECT id FROM batches WHERE seq = ?1", [seq], |r| r.get(0))
        .map_err(sql("finish"))?;
    let suffix = id.strip_prefix("batch_").unwrap_or(&id);
    let output = format!("file-{suffix}-output");
    let errors = format!("file-{suffix}-errors");
    for (file, kind, name) in [(&output, "output", "output"), (&errors, "error", "errors")] {
        tx.execute(
            "INSERT OR IGNORE INTO files (id, purpose, filename, bytes, created_ms, kind, batch, owner) \
             VALUES (?1, 'batch_output', ?2, 0, ?3, ?4, ?5, (SELECT owner FROM batches WHERE seq = ?5))",
            params![file, format!("{id}_{name}.jsonl"), now, kind, seq],
        )
        .map_err(sql("output file"))?;
    }
    tx.execute(
        "UPDATE batches SET state = ?2, finished_ms = ?3, output_file_id = ?4, error_file_id = ?5 \
         WHERE seq = ?1",
        params![seq, state.as_str(), now, output, errors],
    )
    .map_err(sql("finish"))?;
    Ok(())
}

#[cfg(test)]
mod tests;
