use super::*;
use crate::batch::{Invalid, now_ms};

fn spec(id: &str) -> BatchSpec {
    BatchSpec {
        id: id.into(),
        endpoint: Endpoint::ChatCompletions,
        priority: 2,
        metadata: "{}".into(),
        input_file_id: None,
        completion_window: "60s".into(),
        created_ms: now_ms(),
        deadline_ms: now_ms() + 60_000,
        owner: "default".into(),
        owner_key: None,
    }
}

fn items(ids: &[&str]) -> Vec<NewItem> {
    ids.iter()
        .map(|id| NewItem {
            custom_id: Some((*id).into()),
            endpoint: Endpoint::ChatCompletions,
            body: b"{}".to_vec(),
            invalid: None,
        })
        .collect()
}

fn done(batch: i64, key: i64, placement: &str) -> Finished {
    Finished {
        batch,
        key,
        state: ItemState::Succeeded,
        status: Some(200),
        response: b"{\"ok\":true}".to_vec(),
        placement: placement.into(),
        finished_ms: now_ms(),
    }
}

#[test]
fn a_result_counts_once_and_the_last_one_completes_the_batch() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut b = store.begin_create(&spec("batch_a")).unwrap();
    store.add_items(&mut b, &items(&["x", "y"])).unwrap();
    assert!(
        store.batch("batch_a").unwrap().is_none(),
        "invisible until finished"
    );
    store.finish_create(&b).unwrap();
    let row = store.batch_by_seq(b.seq).unwrap().unwrap();
    assert_eq!(row.state, State::InProgress);
    let pending = store.pending(b.seq, item_key(b.seq, 0) - 1, 10).unwrap();
    assert_eq!(pending.len(), 2);
    let first = done(b.seq, pending[0].key, "local:gpu");
    // The same result twice (a re-run after a crash): recorded once.
    assert_eq!(store.record(&[first.clone(), first.clone()]).unwrap(), 1);
    assert_eq!(store.record(&[first]).unwrap(), 0);
    let row = store.batch("batch_a").unwrap().unwrap();
    assert_eq!(
        (row.counts.succeeded, row.counts.placed_local, row.state),
        (1, 1, State::InProgress)
    );
    assert_eq!(
        store
            .record(&[done(b.seq, pending[1].key, "external:e")])
            .unwrap(),
        1
    );
    let row = store.batch("batch_a").unwrap().unwrap();
    assert_eq!(row.state, State::Completed);
    assert_eq!(row.counts.placed_external, 1);
    assert!(row.output_file_id.is_some() && row.error_file_id.is_some());
    let results = store.results(b.seq, 0, 10).unwrap();
    assert_eq!(results.iter().map(|r| r.cursor).collect::<Vec<_>>(), [1, 2]);
}

#[test]
fn cancel_ends_pending_items_once_and_later_results_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut b = store.begin_create(&spec("batch_c")).unwrap();
    store.add_items(&mut b, &items(&["a", "b", "c"])).unwrap();
    store.finish_create(&b).unwrap();
    store
        .record(&[done(b.seq, item_key(b.seq, 1), "local:g")])
        .unwrap();
    assert!(store.end_pending(b.seq, ItemState::Cancelled).unwrap());
    assert!(
        !store.end_pending(b.seq, ItemState::Cancelled).unwrap(),
        "only once"
    );
    // A result arriving after the cancel changes nothing.
    assert_eq!(
        store
            .record(&[done(b.seq, item_key(b.seq, 0), "local:g")])
            .unwrap(),
        0
    );
    let row = store.batch("batch_c").unwrap().unwrap();
    assert_eq!(
        (row.state, row.counts.succeeded, row.counts.cancelled),
        (State::Cancelled, 1, 2)
    );
    let results = store.results(b.seq, 0, 10).unwrap();
    assert_eq!(results.len(), 3);
    let mut cursors: Vec<i64> = results.iter().map(|r| r.cursor).collect();
    cursors.dedup();
    assert_eq!(cursors.len(), 3, "distinct cursors");
    assert_eq!(row.cursor, *cursors.iter().max().unwrap());
    // Output in index order: the succeeded one; errors: the cancelled two.
    let out = store.finished_in_order(b.seq, i64::MIN, false, 10).unwrap();
    let err = store.finished_in_order(b.seq, i64::MIN, true, 10).unwrap();
    assert_eq!(out.iter().map(|r| r.index).collect::<Vec<_>>(), [1]);
    assert_eq!(err.iter().map(|r| r.index).collect::<Vec<_>>(), [0, 2]);
}

#[test]
fn duplicates_are_refused_and_unfinished_creates_vanish_on_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        let mut b = store.begin_create(&spec("batch_d")).unwrap();
        store.add_items(&mut b, &items(&["a", "b"])).unwrap();
        let e = store.add_items(&mut b, &items(&["c", "a"])).unwrap_err();
        assert!(
            matches!(e, StoreError::Duplicate { ref custom_id, index: 3 } if custom_id == "a"),
            "{e}"
        );
        // An invalid item is recorded failed at once, with a cursor.
        let mut bad = items(&["z"]);
        bad[0].invalid = Some(Invalid::line("invalid_json_line", "line 9".into()));
        let mut v = store.begin_create(&spec("batch_v")).unwrap();
        store.add_items(&mut v, &bad).unwrap();
        store.finish_create(&v).unwrap();
        let row = store.batch_by_seq(v.seq).unwrap().unwrap();
        assert_eq!((row.state, row.counts.failed), (State::Completed, 1));
        // batch_d is never finished: the process "dies" here.
    }
    let store = Store::open(dir.path()).unwrap();
    let ids: Vec<String> = store
        .list(10, None, "default")
        .unwrap()
        .into_iter()
        .map(|b| b.id)
        .collect();
    assert_eq!(ids, ["batch_v"]);
}

#[test]
fn one_process_per_directory() {
    let dir = tempfile::tempdir().unwrap();
    let _first = Store::open(dir.path()).unwrap();
    let second = Store::open(dir.path()).unwrap_err();
    assert!(second.to_string().contains("in use by another"), "{second}");
}

#[test]
fn items_held_by_a_provider_batch_are_not_read_until_released() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut b = store.begin_create(&spec("batch_r")).unwrap();
    store.add_items(&mut b, &items(&["a", "b", "c"])).unwrap();
    store.finish_create(&b).unwrap();
    let start = item_key(b.seq, 0) - 1;
    let all: Vec<i64> = store
        .pending(b.seq, start, 10)
        .unwrap()
        .iter()
        .map(|p| p.key)
        .collect();
    let (job, claimed) = store
        .claim_remote(b.seq, "oa/gpt", Endpoint::ChatCompletions, &all[..2])
        .unwrap();
    assert_eq!(claimed, all[..2]);
    // A second job cannot claim them again.
    let (_, again) = store
        .claim_remote(b.seq, "oa/gpt", Endpoint::ChatCompletions, &all[..2])
        .unwrap();
    assert!(again.is_empty());
    let free: Vec<i64> = store
        .pending(b.seq, start, 10)
        .unwrap()
        .iter()
        .map(|p| p.key)
        .collect();
    assert_eq!(free, all[2..]);
    assert_eq!(store.remote_pending(b.seq).unwrap(), 2);
    // Unsubmitted, then submitted: what a restart finds.
    let jobs = store.remote_jobs().unwrap();
    assert_eq!(jobs.len(), 2);
    assert!(jobs[0].remote_id.is_none());
    store.remote_submitted(job, "batch_remote_1").unwrap();
    let jobs = store.remote_jobs().unwrap();
    assert_eq!(jobs[0].remote_id.as_deref(), Some("batch_remote_1"));
    assert_eq!(jobs[0].deployment, "oa/gpt");
    // One answered; the job ends; the other is released.
    assert_eq!(
        store
            .record(&[done(b.seq, all[0], "external:oa/batch")])
            .unwrap(),
        1
    );
    assert_eq!(store.remote_items(job).unwrap().len(), 1);
    let released = store.remote_finish(job).unwrap();
    assert_eq!(released.iter().map(|p| p.key).collect::<Vec<_>>(), [all[1]]);
    assert_eq!(store.remote_pending(b.seq).unwrap(), 0);
    let free: Vec<i64> = store
        .pending(b.seq, start, 10)
        .unwrap()
        .iter()
        .map(|p| p.key)
        .collect();
    assert_eq!(free, all[1..]);
    assert_eq!(
        store.remote_jobs().unwrap().len(),
        1,
        "the empty second job"
    );
    // Cancelling ends held items too.
    let (job2, _) = store
        .claim_remote(b.seq, "oa/gpt", Endpoint::ChatCompletions, &all[1..])
        .unwrap();
    assert!(store.end_pending(b.seq, ItemState::Cancelled).unwrap());
    assert!(store.remote_items(job2).unwrap().is_empty());
    let row = store.batch("batch_r").unwrap().unwrap();
    assert_eq!((row.counts.cancelled, row.counts.placed_external), (2, 1));
}

#[test]
fn a_database_from_before_provider_batches_is_migrated() {
    let dir = tempfile::tempdir().unwrap();
    {
        let conn = rusqlite::Connection::open(dir.path().join("batches.sqlite3")).unwrap();
        // The items table as it was, without `remote`.
        conn.execute_batch(
            "CREATE TABLE items (key INTEGER PRIMARY KEY, batch INTEGER NOT NULL, custom_id TEXT, \
             endpoint TEXT NOT NULL, body BLOB NOT NULL, state INTEGER NOT NULL, status INTEGER, \
             response BLOB, placement TEXT, finished_ms INTEGER, cursor INTEGER);",
        )
        .unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    let mut b = store.begin_create(&spec("batch_m")).unwrap();
    store.add_items(&mut b, &items(&["a"])).unwrap();
    store.finish_create(&b).unwrap();
    let p = store.pending(b.seq, item_key(b.seq, 0) - 1, 10).unwrap();
    assert_eq!(p.len(), 1);
    drop(store);
    // Opening again finds the column there.
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.remote_pending(b.seq).unwrap(), 0);
}
