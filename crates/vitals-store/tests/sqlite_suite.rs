//! The shared store suite against the SQLite backend, one fresh database file per case.

use std::sync::Arc;

use vitals_store::{SqliteStore, Store};

async fn fresh() -> Option<Arc<dyn Store>> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.keep().join("vitals.db");
    let store = SqliteStore::open(&path).await.expect("open sqlite");
    Some(Arc::new(store))
}

vitals_store::store_test_suite!(fresh());
