//! Copies a SQLite hub's database into PostgreSQL (`vitals-hub migrate`), idempotent and
//! resumable: every row is inserted with `ON CONFLICT DO NOTHING`, so a second run, or a run
//! after an interrupted one, adds only what is missing (rows already copied are not updated:
//! stop the SQLite hub before copying). The copy holds the target's `rollups` and
//! `retention` leases, so it refuses to run while a hub works on the target.
//!
//! Order matters, and is fixed:
//! 1. accounts, devices, pairing codes, state, settings, app store and alerts, table by
//!    table in primary-key order (both schemas name their tables and columns alike), then
//!    each device's `last_seen` (SQLite's `device_seen`, a column of `devices` in PostgreSQL);
//! 2. raw samples, device by device, through [`Store::insert_batches`] (PostgreSQL lays
//!    them out in its own partitions and shapes), skipping devices whose count already
//!    matches;
//! 3. only then the rollup tiers and their marks, as stored. Samples copied before the marks
//!    exist are plain new samples; copied after, they would count as late and be rolled up a
//!    second time. So the samples step records its end in the target's `meta`
//!    (`migrate.samples_done`), and a resumed run past it copies no samples again.

use std::collections::HashMap;

use sqlx::postgres::PgPool;
use sqlx::sqlite::SqlitePool;
use sqlx::{Column as _, Row as _, TypeInfo as _, ValueRef as _};

use crate::{PgStore, Result, SampleBatch, SqliteStore, Store, StoreError};

/// Tables copied as rows before the samples, parents first.
const BEFORE_SAMPLES: &[&str] = &[
    "users",
    "sessions",
    "api_tokens",
    "devices",
    "device_codes",
    "device_state",
    "settings",
    "meta",
    "app_records",
    "alert_docs",
    "alert_state",
    "alert_events",
    "alert_outbox",
    "alert_deliveries",
];
/// Tables copied as rows after the samples.
const AFTER_SAMPLES: &[&str] = &["rollups", "rollup_blocks", "rollup_late", "rollup_marks"];
/// Rows per read and per insert.
const CHUNK: i64 = 2000;
/// The target's `meta` key set once every sample is copied.
const SAMPLES_DONE: &str = "migrate.samples_done";

/// What the copy is doing, for a progress bar: `(step, done, total)` where `step` names a
/// table or `samples`.
pub type Progress<'a> = &'a mut (dyn FnMut(&str, u64, u64) + Send);

/// Rows the copy found and added, per table (`samples` counts samples).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CopyReport {
    pub tables: Vec<(String, u64, u64)>,
}

impl CopyReport {
    /// Rows added in all.
    pub fn added(&self) -> u64 {
        self.tables.iter().map(|(_, _, a)| a).sum()
    }
}

/// One SQLite value, as read.
#[derive(Debug, Clone)]
enum Val {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

/// Opens both databases (migrating both schemas to this build's) and copies `from`
/// (`sqlite:PATH`) into `to` (`postgres://...`).
pub async fn run(from: &str, to: &str, progress: Progress<'_>) -> Result<CopyReport> {
    let src = SqliteStore::open_url(from).await?;
    let dst = PgStore::connect(to).await?;
    let src_pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect(from)
        .await?;
    let dst_pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(to)
        .await?;
    let report = sqlite_to_postgres(&src, &src_pool, &dst, &dst_pool, progress).await;
    src_pool.close().await;
    dst_pool.close().await;
    src.close().await;
    dst.close().await;
    report
}

/// Copies everything `src` holds into `dst` (migrated, possibly partly filled). `src_pool`
/// and `dst_pool` reach the same databases as `src` and `dst`.
pub async fn sqlite_to_postgres(
    src: &dyn Store,
    src_pool: &SqlitePool,
    dst: &dyn Store,
    dst_pool: &PgPool,
    progress: Progress<'_>,
) -> Result<CopyReport> {
    for lease in ["rollups", "retention"] {
        if !dst.try_lease(lease).await? {
            return Err(StoreError::Config(
                "a hub is running on the target database (it holds the rollup or retention \
                 lease); stop it, then run the migration again"
                    .into(),
            ));
        }
    }
    let mut report = CopyReport::default();
    for t in BEFORE_SAMPLES {
        let (seen, added) = copy_table(src_pool, dst_pool, t, progress).await?;
        report.tables.push((t.to_string(), seen, added));
    }
    copy_last_seen(src_pool, dst_pool).await?;
    let (seen, added) = copy_samples(src, dst, progress).await?;
    report.tables.push(("samples".into(), seen, added));
    for t in AFTER_SAMPLES {
        let (seen, added) = copy_table(src_pool, dst_pool, t, progress).await?;
        report.tables.push((t.to_string(), seen, added));
    }
    fix_sequences(dst_pool).await?;
    Ok(report)
}

/// Each device's `last_seen`, which SQLite keeps in `device_seen` and PostgreSQL in
/// `devices`; only ever moved forward, so a second run changes nothing.
async fn copy_last_seen(src: &SqlitePool, dst: &PgPool) -> Result<()> {
    let rows: Vec<(i64, i64)> =
        sqlx::query_as("SELECT device_seq, last_seen FROM device_seen ORDER BY device_seq")
            .fetch_all(src)
            .await?;
    for chunk in rows.chunks(CHUNK as usize) {
        let (seqs, seen): (Vec<i64>, Vec<i64>) = chunk.iter().copied().unzip();
        sqlx::query(
            "UPDATE devices d SET last_seen = GREATEST(COALESCE(d.last_seen, 0), v.seen)
               FROM UNNEST($1::BIGINT[], $2::BIGINT[]) AS v(seq, seen)
              WHERE d.seq = v.seq",
        )
        .bind(&seqs)
        .bind(&seen)
        .execute(dst)
        .await?;
    }
    Ok(())
}

async fn copy_samples(
    src: &dyn Store,
    dst: &dyn Store,
    progress: Progress<'_>,
) -> Result<(u64, u64)> {
    let seqs = src.device_seqs().await?;
    let mut total = 0u64;
    for &seq in &seqs {
        total += src.count_samples(seq).await?.max(0) as u64;
    }
    // A resumed run past the samples step copies none again (the marks may be there).
    let done = dst.meta_get(SAMPLES_DONE).await?.is_some();
    let (mut seen, mut added) = (0u64, 0u64);
    progress("samples", 0, total);
    for seq in seqs {
        let have = src.count_samples(seq).await?;
        if done || dst.count_samples(seq).await? >= have {
            seen += have.max(0) as u64;
            progress("samples", seen, total);
            continue;
        }
        let mut cursor = i64::MIN;
        loop {
            let page = src.samples_page(seq, cursor, i64::MAX, CHUNK).await?;
            let Some(&last) = page.ts.last() else { break };
            let rows = page.rows();
            let n = rows.len() as u64;
            let stored = dst
                .insert_batches(&[SampleBatch {
                    device_seq: seq,
                    samples: rows,
                    now: last,
                }])
                .await?;
            added += stored.iter().sum::<u64>();
            seen += n;
            progress("samples", seen, total);
            if last == i64::MAX {
                break;
            }
            cursor = last + 1;
        }
    }
    dst.meta_set(SAMPLES_DONE, "1").await?;
    Ok((seen, added))
}

/// The primary-key columns of a SQLite table, in key order.
async fn key_columns(pool: &SqlitePool, table: &str) -> Result<Vec<String>> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!("PRAGMA table_info({table})")))
        .fetch_all(pool)
        .await?;
    let mut keys: Vec<(i64, String)> = rows
        .iter()
        .filter_map(|r| {
            let pk: i64 = r.try_get("pk").ok()?;
            let name: String = r.try_get("name").ok()?;
            (pk > 0).then_some((pk, name))
        })
        .collect();
    keys.sort();
    if keys.is_empty() {
        return Err(StoreError::Corrupt(format!(
            "table {table} has no primary key"
        )));
    }
    Ok(keys.into_iter().map(|(_, n)| n).collect())
}

/// PostgreSQL's type of each column of `table` (to bind SQLite's integers as booleans or
/// 32-bit integers, and NULLs as the type, the column wants), and whether the table has an
/// identity column (its ids are copied as they are).
async fn pg_types(pool: &PgPool, table: &str) -> Result<(HashMap<String, String>, bool)> {
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT column_name::text, data_type::text, is_identity::text \
         FROM information_schema.columns \
         WHERE table_name = $1 AND table_schema = current_schema()",
    )
    .bind(table)
    .fetch_all(pool)
    .await?;
    if rows.is_empty() {
        return Err(StoreError::Corrupt(format!(
            "PostgreSQL has no table {table}; is its schema up to date?"
        )));
    }
    let identity = rows.iter().any(|(_, _, i)| i == "YES");
    Ok((rows.into_iter().map(|(c, t, _)| (c, t)).collect(), identity))
}

fn read_val(row: &sqlx::sqlite::SqliteRow, i: usize) -> Result<Val> {
    let raw = row.try_get_raw(i)?;
    if raw.is_null() {
        return Ok(Val::Null);
    }
    let ty = raw.type_info().name().to_ascii_uppercase();
    Ok(match ty.as_str() {
        "INTEGER" | "BOOLEAN" => Val::Int(row.try_get(i)?),
        "REAL" => Val::Real(row.try_get(i)?),
        "TEXT" => Val::Text(row.try_get(i)?),
        _ => Val::Blob(row.try_get(i)?),
    })
}

/// `table` is one of this module's constants (never user input), so it is spliced into SQL.
async fn copy_table(
    src: &SqlitePool,
    dst: &PgPool,
    table: &str,
    progress: Progress<'_>,
) -> Result<(u64, u64)> {
    let keys = key_columns(src, table).await?;
    let (types, identity) = pg_types(dst, table).await?;
    if let Some(bad) = keys.iter().find(|k| !types.contains_key(*k)) {
        return Err(StoreError::Corrupt(format!(
            "the SQLite table {table} is keyed by {bad:?}, which PostgreSQL does not have"
        )));
    }
    let total: i64 =
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
            .fetch_one(src)
            .await?;
    let total = total.max(0) as u64;
    progress(table, 0, total);
    let key_list = keys.join(", ");
    let (mut seen, mut added) = (0u64, 0u64);
    let mut after: Option<Vec<Val>> = None;
    loop {
        let sql = match &after {
            None => format!("SELECT * FROM {table} ORDER BY {key_list} LIMIT {CHUNK}"),
            Some(_) => format!(
                "SELECT * FROM {table} WHERE ({key_list}) > ({}) ORDER BY {key_list} LIMIT {CHUNK}",
                vec!["?"; keys.len()].join(", ")
            ),
        };
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for v in after.iter().flatten() {
            q = match v.clone() {
                Val::Null => q.bind(None::<i64>),
                Val::Int(x) => q.bind(x),
                Val::Real(x) => q.bind(x),
                Val::Text(x) => q.bind(x),
                Val::Blob(x) => q.bind(x),
            };
        }
        let rows = q.fetch_all(src).await?;
        if rows.is_empty() {
            break;
        }
        // Only columns the target knows (a crafted file cannot name others), quoted.
        let columns: Vec<String> = rows[0]
            .columns()
            .iter()
            .map(|c| c.name().to_string())
            .collect();
        if let Some(bad) = columns.iter().find(|c| !types.contains_key(*c)) {
            return Err(StoreError::Corrupt(format!(
                "the SQLite table {table} has a column {bad:?} PostgreSQL does not; \
                 are both written by the same Vitals version?"
            )));
        }
        let mut values = Vec::with_capacity(rows.len());
        for r in &rows {
            let vals = (0..columns.len())
                .map(|i| read_val(r, i))
                .collect::<Result<Vec<_>>>()?;
            values.push(vals);
        }
        let last = values.last().cloned().unwrap_or_default();
        after = Some(
            keys.iter()
                .filter_map(|k| columns.iter().position(|c| c == k))
                .map(|i| last[i].clone())
                .collect(),
        );
        added += insert_rows(dst, table, &columns, &types, identity, &values).await?;
        seen += values.len() as u64;
        progress(table, seen, total);
    }
    Ok((seen, added))
}

async fn insert_rows(
    dst: &PgPool,
    table: &str,
    columns: &[String],
    types: &HashMap<String, String>,
    identity: bool,
    rows: &[Vec<Val>],
) -> Result<u64> {
    let quoted: Vec<String> = columns.iter().map(|c| format!("\"{c}\"")).collect();
    let mut qb = sqlx::QueryBuilder::<sqlx::Postgres>::new(format!(
        "INSERT INTO {table} ({}) {}",
        quoted.join(", "),
        if identity {
            "OVERRIDING SYSTEM VALUE "
        } else {
            ""
        }
    ));
    // Under PostgreSQL's 65535 bind parameters per statement.
    let per = (60_000 / columns.len().max(1)).max(1);
    let mut added = 0;
    for chunk in rows.chunks(per) {
        qb.reset();
        qb.push_values(chunk, |mut b, row| {
            for (v, c) in row.iter().zip(columns) {
                let ty = types.get(c).map(String::as_str).unwrap_or("");
                match (v.clone(), ty) {
                    // A NULL of the column's own type (PostgreSQL checks it).
                    (Val::Null, "bytea") => b.push_bind(None::<Vec<u8>>),
                    (Val::Null, "text") => b.push_bind(None::<String>),
                    (Val::Null, "double precision" | "real") => b.push_bind(None::<f64>),
                    (Val::Null, "boolean") => b.push_bind(None::<bool>),
                    (Val::Null, "integer") => b.push_bind(None::<i32>),
                    (Val::Null, _) => b.push_bind(None::<i64>),
                    (Val::Int(x), "boolean") => b.push_bind(x != 0),
                    (Val::Int(x), "integer") => b.push_bind(i32::try_from(x).unwrap_or(i32::MAX)),
                    (Val::Int(x), "double precision" | "real") => b.push_bind(x as f64),
                    (Val::Int(x), _) => b.push_bind(x),
                    (Val::Real(x), _) => b.push_bind(x),
                    (Val::Text(x), _) => b.push_bind(x),
                    (Val::Blob(x), _) => b.push_bind(x),
                };
            }
        });
        qb.push(" ON CONFLICT DO NOTHING");
        added += qb.build().execute(dst).await?.rows_affected();
    }
    Ok(added)
}

/// Moves every identity or serial sequence past the ids the copy inserted.
async fn fix_sequences(dst: &PgPool) -> Result<()> {
    let cols: Vec<(String, String)> = sqlx::query_as(
        "SELECT table_name::text, column_name::text FROM information_schema.columns \
         WHERE table_schema = current_schema() \
           AND (is_identity = 'YES' OR column_default LIKE 'nextval(%')",
    )
    .fetch_all(dst)
    .await?;
    for (table, column) in cols {
        // Names from the database's own catalog of our schema, quoted.
        let (t, c) = (table.replace('"', ""), column.replace('"', ""));
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT setval(pg_get_serial_sequence('\"{t}\"', '{c}'), \
                    GREATEST((SELECT COALESCE(MAX(\"{c}\"), 0) FROM \"{t}\"), 1))"
        )))
        .execute(dst)
        .await?;
    }
    Ok(())
}
