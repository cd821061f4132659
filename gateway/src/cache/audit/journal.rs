//! Audit outcomes on disk (SQLite, WAL), so a group's window, and with it
//! its raised threshold, outlives a restart. Without it a restart would
//! serve from the configured `similarity` again until the outcomes that
//! refuted it were gathered a second time, at the cost of the false hits
//! they had caught.
//!
//! Outcomes are kept per model group and embedding model: a similarity
//! means nothing under another model, so a group's outcomes under a model
//! it no longer uses are not loaded (and stay until reset).

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, params};

use super::WINDOW;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS outcomes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    model_group TEXT NOT NULL,
    embedding_model TEXT NOT NULL,
    similarity REAL NOT NULL,
    agreed INTEGER NOT NULL,
    at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS outcomes_by_group ON outcomes (model_group, embedding_model, id);
CREATE TABLE IF NOT EXISTS totals (
    model_group TEXT NOT NULL,
    embedding_model TEXT NOT NULL,
    agreed INTEGER NOT NULL,
    disagreed INTEGER NOT NULL,
    PRIMARY KEY (model_group, embedding_model)
);
";

/// A group's saved audits.
#[derive(Debug, Default, PartialEq)]
pub struct Saved {
    /// The last [`WINDOW`] outcomes, oldest first.
    pub outcomes: VecDeque<(f32, bool)>,
    /// Every outcome ever recorded, not only the window's.
    pub agreed: u64,
    pub disagreed: u64,
}

/// The audits database of one gateway, for one embedding model.
#[derive(Debug)]
pub struct Journal {
    conn: Mutex<Connection>,
    embedding_model: String,
    /// Held across a change made both in memory and here (an outcome
    /// recorded, a reset), so that a reset cannot fall between the two
    /// halves of a recording and leave them disagreeing.
    serial: Mutex<()>,
}

impl Journal {
    /// Opens (or creates) the database at `path`; outcomes are read and
    /// written under `embedding_model`.
    pub fn open(path: &Path, embedding_model: &str) -> rusqlite::Result<Self> {
        let conn = crate::access::store::open_db(path)?;
        conn.execute_batch(SCHEMA)?;
        Ok(Self {
            conn: Mutex::new(conn),
            embedding_model: embedding_model.to_owned(),
            serial: Mutex::new(()),
        })
    }

    /// See [`Journal::serial`]'s field: take it before changing an
    /// auditor's memory together with the file.
    pub fn serial(&self) -> std::sync::MutexGuard<'_, ()> {
        self.serial.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `group`'s saved outcomes and totals. An outcome whose similarity is
    /// not a number in [-1, 1] (a damaged file) is left out.
    pub fn load(&self, group: &str) -> rusqlite::Result<Saved> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT similarity, agreed FROM (
                 SELECT id, similarity, agreed FROM outcomes
                 WHERE model_group = ?1 AND embedding_model = ?2
                 ORDER BY id DESC LIMIT ?3)
             ORDER BY id",
        )?;
        let rows = stmt.query_map(params![group, self.embedding_model, WINDOW as i64], |r| {
            Ok((r.get::<_, f64>(0)?, r.get::<_, bool>(1)?))
        })?;
        let mut saved = Saved::default();
        for row in rows {
            let (similarity, agreed) = row?;
            if (-1.0..=1.0).contains(&similarity) {
                saved.outcomes.push_back((similarity as f32, agreed));
            }
        }
        let totals = conn.query_row(
            "SELECT agreed, disagreed FROM totals WHERE model_group = ?1 AND embedding_model = ?2",
            params![group, self.embedding_model],
            |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)),
        );
        match totals {
            Ok((agreed, disagreed)) => {
                saved.agreed = agreed.max(0) as u64;
                saved.disagreed = disagreed.max(0) as u64;
            }
            Err(rusqlite::Error::QueryReturnedNoRows) => {}
            Err(e) => return Err(e),
        }
        Ok(saved)
    }

    /// Appends one outcome of `group` (at Unix second `at`) and drops the
    /// group's outcomes older than the last [`WINDOW`], in one transaction.
    pub fn append(
        &self,
        group: &str,
        similarity: f32,
        agreed: bool,
        at: u64,
    ) -> rusqlite::Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let model = &self.embedding_model;
        tx.execute(
            "INSERT INTO outcomes (model_group, embedding_model, similarity, agreed, at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![group, model, f64::from(similarity), agreed, at as i64],
        )?;
        tx.execute(
            "INSERT INTO totals (model_group, embedding_model, agreed, disagreed)
             VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (model_group, embedding_model)
             DO UPDATE SET agreed = agreed + ?3, disagreed = disagreed + ?4",
            params![group, model, i64::from(agreed), i64::from(!agreed)],
        )?;
        // The id of the group's WINDOW-th newest outcome; NULL (nothing
        // deleted) while there are fewer.
        tx.execute(
            "DELETE FROM outcomes
             WHERE model_group = ?1 AND embedding_model = ?2 AND id < (
                 SELECT id FROM outcomes
                 WHERE model_group = ?1 AND embedding_model = ?2
                 ORDER BY id DESC LIMIT 1 OFFSET ?3)",
            params![group, model, WINDOW as i64 - 1],
        )?;
        tx.commit()
    }

    /// Forgets `group`'s outcomes and totals under every embedding model
    /// (`None`: every group's); returns how many outcomes went.
    pub fn reset(&self, group: Option<&str>) -> rusqlite::Result<usize> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let removed = match group {
            Some(g) => {
                tx.execute("DELETE FROM totals WHERE model_group = ?1", [g])?;
                tx.execute("DELETE FROM outcomes WHERE model_group = ?1", [g])?
            }
            None => {
                tx.execute("DELETE FROM totals", [])?;
                tx.execute("DELETE FROM outcomes", [])?
            }
        };
        tx.commit()?;
        Ok(removed)
    }
}
